//! The plugin contract (`ferry:transfer`): which components the host loads,
//! what it learns from them, and the compatibility rule — a plugin built
//! against the frozen 0.1 contract keeps loading and downloading beside 0.2
//! plugins, in the runtime and through a real daemon's plugins directory.

use ferry::plugin::JobContext;
use ferry::plugin::{Capability, Contract, PluginRuntime, RuntimeConfig, RuntimeError};
use ferry::{ErrorClass, ErrorContext};
use ferry_tests::daemon::{Daemon, wait_for_job};
use ferry_tests::fixtures::{
    Target, future_major_plugin, hostile_plugin, legacy_plugin, mirror_example, reply_upper_plugin,
    request, runtime_with_grants, unknown_exports_plugin, upload_plugin,
};
use ferry_tests::server::{Resource, TestServer, pattern_bytes, start_with};
use sha2::{Digest, Sha256};
use std::path::Path;

fn job() -> JobContext {
    JobContext::new("contract-test")
}

/// The SHA-256 of `wit/0.1.0/transfer.wit` when 0.1.0 was frozen: the
/// contract old plugins were built against never changes.
const FROZEN_0_1: &str = "76f1fa12415a3353d4d7d863a6e2d3aa13127f8d0871cdfc7a17413e487cf3b3";

#[test]
fn the_0_1_contract_is_frozen() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../wit/0.1.0/transfer.wit");
    let text = std::fs::read(path).unwrap();
    assert_eq!(hex(&Sha256::digest(&text)), FROZEN_0_1);
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A runtime with the built-ins and `plugins` loaded, each granted loopback.
fn runtime_with(plugins: &[(String, Vec<u8>)]) -> PluginRuntime {
    let names: Vec<String> = plugins
        .iter()
        .map(|(manifest, _)| {
            ferry::plugin::manifest::Manifest::parse(manifest)
                .unwrap()
                .name
        })
        .collect();
    let grants: Vec<(&str, &[&str])> = names
        .iter()
        .map(|n| (n.as_str(), &["127.0.0.1"][..]))
        .collect();
    let mut runtime = runtime_with_grants(&grants);
    for (manifest, wasm) in plugins {
        runtime.load(manifest, wasm, false).unwrap();
    }
    runtime
}

#[tokio::test(flavor = "multi_thread")]
async fn a_0_1_plugin_and_a_0_2_plugin_load_and_download_side_by_side() {
    let server = start_with("/f", Resource::pattern(300_000)).await;
    let runtime = runtime_with(&[legacy_plugin()]);
    let contract = |name: &str| {
        runtime
            .plugins()
            .find(|p| p.manifest.name == name)
            .map(|p| p.contract)
    };
    assert_eq!(contract("legacy"), Some(Contract::V0_1));
    assert_eq!(contract("http"), Some(Contract::V0_2));

    let port = server.addr().port();
    for url in [format!("legacy://127.0.0.1:{port}/f"), server.url("/f")] {
        let target = Target::new();
        target
            .download(&runtime, request(&url, 0), 0, &job())
            .await
            .0
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        assert_eq!(target.content(), pattern_bytes(0..300_000), "{url}");
    }

    // The 0.1 plugin resumes with a range, as its contract said.
    let target = Target::with_content(&pattern_bytes(0..100_000));
    target
        .download(
            &runtime,
            request(&format!("legacy://127.0.0.1:{port}/f"), 100_000),
            100_000,
            &job(),
        )
        .await
        .0
        .unwrap();
    assert_eq!(target.content(), pattern_bytes(0..300_000));
    let last = server.requests_for("/f").pop().unwrap();
    assert_eq!(last.header("range"), Some("bytes=100000-"));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_example_plugin_for_authors_downloads_and_resumes() {
    let server = start_with("/f", Resource::pattern(200_000)).await;
    let runtime = runtime_with(&[mirror_example()]);
    let url = format!("mirror://127.0.0.1:{}/f", server.addr().port());
    let target = Target::new();
    let (result, progress) = target.download(&runtime, request(&url, 0), 0, &job()).await;
    result.unwrap();
    assert_eq!(target.content(), pattern_bytes(0..200_000));
    let validator = progress.remote.lock().unwrap().clone().unwrap().validator;
    assert!(validator.is_some(), "the server's validator is reported");
    let target = Target::with_content(&pattern_bytes(0..50_000));
    let resume = ferry::plugin::DownloadRequest {
        validator,
        ..request(&url, 50_000)
    };
    target
        .download(&runtime, resume, 50_000, &job())
        .await
        .0
        .unwrap();
    assert_eq!(target.content(), pattern_bytes(0..200_000));
    assert_eq!(
        server.requests_for("/f").pop().unwrap().header("range"),
        Some("bytes=50000-")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_0_1_plugin_reports_its_abilities_and_its_manifest_must_agree() {
    let (manifest, wasm) = legacy_plugin();
    let runtime = runtime_with(&[(manifest.clone(), wasm.clone())]);
    let legacy = runtime
        .plugins()
        .find(|p| p.manifest.name == "legacy")
        .unwrap();
    assert!(legacy.can(Capability::Download) && legacy.can(Capability::Ranges));
    assert!(!legacy.can(Capability::Upload));

    let overclaiming = manifest.replace(
        r#"capabilities = ["download", "ranges"]"#,
        r#"capabilities = ["download", "ranges", "upload"]"#,
    );
    assert_ne!(overclaiming, manifest);
    let mut runtime = PluginRuntime::new(RuntimeConfig::default()).unwrap();
    let error = runtime.load(&overclaiming, &wasm, false).unwrap_err();
    assert!(matches!(error, RuntimeError::Mismatch { .. }), "{error}");
    assert!(error.to_string().contains("lists upload"), "{error}");
}

#[test]
fn an_operators_0_1_plugin_keeps_working_in_a_daemons_plugins_directory() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = runtime.block_on(TestServer::start());
    server.put("/old.bin", Resource::pattern(250_000));
    let mut daemon = Daemon::new("\n[plugins.grants]\nlegacy = [\"127.0.0.1\"]\n");
    let plugins = daemon.state_dir.join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    let (manifest, wasm) = legacy_plugin();
    std::fs::write(plugins.join("legacy.toml"), manifest).unwrap();
    std::fs::write(plugins.join("legacy.wasm"), wasm).unwrap();
    let ferry = Path::new(env!("CARGO_BIN_EXE_ferry-cli"));
    daemon.start(ferry);

    let listed = daemon.run(ferry, &["plugins", "--json"]).ok().json();
    let legacy = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "legacy")
        .unwrap_or_else(|| panic!("legacy is listed: {listed}; log: {}", daemon.log()));
    assert_eq!(legacy["contract"], "0.1.0", "{legacy}");

    let downloads = tempfile::tempdir().unwrap();
    let dest = downloads.path().join("old.bin");
    let url = format!("legacy://127.0.0.1:{}/old.bin", server.addr().port());
    let id = daemon.create_download(ferry, &[(url.as_str(), &dest)]);
    daemon.run(ferry, &["resume", &id]).ok();
    wait_for_job(&daemon, ferry, &id, |v| v["state"] == "transferred");
    daemon.run(ferry, &["complete", &id]).ok();
    assert_eq!(std::fs::read(&dest).unwrap(), pattern_bytes(0..250_000));
    assert_eq!(daemon.terminate(), Some(0), "log: {}", daemon.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_component_of_an_unknown_major_version_is_refused_by_name() {
    let (manifest, wasm) = future_major_plugin();
    let mut runtime = PluginRuntime::new(RuntimeConfig::default()).unwrap();
    let error = runtime.load(&manifest, &wasm, false).unwrap_err();
    assert!(matches!(error, RuntimeError::Contract { .. }), "{error}");
    let message = error.to_string();
    assert!(message.contains("ferry:transfer@1.0.0"), "{message}");
    assert!(
        message.contains("0.1.0") && message.contains("0.2.0"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_component_that_exports_nothing_ferry_knows_is_refused() {
    let (manifest, wasm) = unknown_exports_plugin();
    let mut runtime = PluginRuntime::new(RuntimeConfig::default()).unwrap();
    let error = runtime.load(&manifest, &wasm, false).unwrap_err();
    assert!(matches!(error, RuntimeError::Contract { .. }), "{error}");
    let message = error.to_string();
    assert!(message.contains("exports nothing Ferry knows"), "{message}");
    assert!(message.contains("acme:widget/spin@0.1.0"), "{message}");
}

#[tokio::test(flavor = "multi_thread")]
async fn what_a_plugin_can_do_is_read_from_its_exports() {
    let runtime = runtime_with(&[hostile_plugin(), upload_plugin(), reply_upper_plugin()]);
    let abilities = |name: &str| {
        runtime
            .plugins()
            .find(|p| p.manifest.name == name)
            .map(|p| p.abilities.iter().map(|a| a.name()).collect::<Vec<_>>())
            .unwrap()
    };
    assert_eq!(abilities("hostile"), ["download", "ranges"]);
    assert_eq!(abilities("testup"), ["upload", "upload-reply"]);
    assert_eq!(abilities("reply-upper"), ["reply-processing"]);
    assert_eq!(
        abilities("http"),
        ["download", "upload", "upload-reply", "ranges"]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upload_routed_to_a_download_only_plugin_is_a_typed_error() {
    let runtime = runtime_with(&[hostile_plugin()]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("source");
    std::fs::write(&path, b"abc").unwrap();
    let file = std::sync::Arc::new(std::fs::File::open(&path).unwrap());
    let source = ferry::plugin::Source::new(file, 3, None);
    let request = ferry::plugin::UploadRequest {
        url: "hostile://ok/".into(),
        size: 3,
        name: "source".into(),
        session: None,
        protocol: None,
    };
    let error = runtime
        .upload(request, &job(), source, None)
        .await
        .unwrap_err();
    assert_eq!(
        (error.class, error.context, error.code.as_str()),
        (ErrorClass::Fatal, ErrorContext::Policy, "unsupported"),
        "{error}"
    );
    assert!(error.message.contains("hostile"), "{error}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_manifest_that_disagrees_with_the_exports_is_refused_naming_the_difference() {
    let mut runtime = PluginRuntime::new(RuntimeConfig::default()).unwrap();
    let (hostile, hostile_wasm) = hostile_plugin();
    let (upper, upper_wasm) = reply_upper_plugin();
    let (upload, upload_wasm) = upload_plugin();
    let cases = [
        // Lists an ability the component does not export.
        (
            hostile.replace(
                "schemes = [\"hostile\"]",
                "schemes = [\"hostile\"]\ncapabilities = [\"download\", \"upload\"]",
            ),
            &hostile_wasm,
            "lists upload but the component does not implement it",
        ),
        // Leaves out an ability it exports.
        (
            upload.replace(
                "schemes = [\"testup\"]",
                "schemes = [\"testup\"]\ncapabilities = [\"upload\"]",
            ),
            &upload_wasm,
            "exports upload-reply but the manifest's capabilities leave it out",
        ),
        // A transport without a scheme.
        (
            hostile.replace("schemes = [\"hostile\"]", ""),
            &hostile_wasm,
            "exports download, ranges but the manifest names no URL scheme",
        ),
        // Schemes for a component with no transport interface.
        (
            upper.replace(
                "name = \"reply-upper\"",
                "name = \"reply-upper\"\nschemes = [\"upper\"]",
            ),
            &upper_wasm,
            "exports no transport interface (it exports reply-processing)",
        ),
    ];
    for (manifest, wasm, expected) in cases {
        let error = runtime.load(&manifest, wasm, false).unwrap_err();
        assert!(matches!(error, RuntimeError::Mismatch { .. }), "{error}");
        assert!(
            error.to_string().contains(expected),
            "{error}\nexpected it to say: {expected}\nmanifest:\n{manifest}"
        );
    }
    let error = runtime.load(&hostile, b"\0asm junk", false).unwrap_err();
    assert!(matches!(error, RuntimeError::Component { .. }), "{error}");
}

//! Hostile plugins, built in this test suite, against the real runtime: each
//! misbehaviour ends in its typed error, and the host goes on serving.

use ferry::plugin::{JobContext, PluginRuntime, RuntimeConfig, RuntimeError};
use ferry::{ErrorClass, ErrorContext, TransferError};
use ferry_tests::fixtures::{Target, hostile_plugin, request};
use ferry_tests::server::{Resource, pattern_bytes, start_with};
use std::collections::HashMap;
use std::time::Duration;

fn job() -> JobContext {
    JobContext::new("hostile-test")
}

/// A runtime with the built-ins and the hostile plugin, granted `grant`.
fn runtime(grant: &[&str]) -> PluginRuntime {
    let mut grants = HashMap::new();
    grants.insert(
        "hostile".to_string(),
        grant.iter().map(|s| s.to_string()).collect(),
    );
    let mut runtime = PluginRuntime::with_builtins(RuntimeConfig {
        grants,
        ..RuntimeConfig::default()
    })
    .unwrap();
    let (manifest, wasm) = hostile_plugin();
    runtime.load(&manifest, &wasm, false).unwrap();
    runtime
}

/// Runs one hostile download; a safety net of 60 s turns a hang into a
/// failure instead of a stuck suite.
async fn hostile_download(runtime: &PluginRuntime, url: &str) -> TransferError {
    let target = Target::new();
    let job = job();
    let call = target.download(runtime, request(url, 0), 0, &job);
    let (result, _) = tokio::time::timeout(Duration::from_secs(60), call)
        .await
        .expect("the host stopped the plugin");
    result.unwrap_err()
}

/// After any misbehaviour, the same runtime still serves well-behaved calls.
async fn host_still_serves(runtime: &PluginRuntime) {
    let target = Target::new();
    target
        .download(runtime, request("hostile://ok/", 0), 0, &job())
        .await
        .0
        .unwrap();
    assert_eq!(target.content(), b"ok\n");
    let server = start_with("/f", Resource::pattern(70_000)).await;
    let target = Target::new();
    target
        .download(runtime, request(&server.url("/f"), 0), 0, &job())
        .await
        .0
        .unwrap();
    assert_eq!(target.content(), pattern_bytes(0..70_000));
}

fn assert_plugin_error(error: &TransferError, code: &str) {
    assert_eq!(error.context, ErrorContext::Plugin, "{error}");
    assert_eq!(error.class, ErrorClass::Transient, "{error}");
    assert_eq!(error.code, code, "{error}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_infinite_loop_ends_at_its_deadline() {
    let runtime = runtime(&[]);
    let error = hostile_download(&runtime, "hostile://loop/").await;
    assert_plugin_error(&error, "plugin-deadline");
    host_still_serves(&runtime).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_memory_bomb_ends_at_its_memory_limit() {
    let runtime = runtime(&[]);
    let error = hostile_download(&runtime, "hostile://memory/").await;
    assert_plugin_error(&error, "plugin-memory");
    host_still_serves(&runtime).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trap_is_a_plugin_error() {
    let runtime = runtime(&[]);
    let error = hostile_download(&runtime, "hostile://trap/").await;
    assert_plugin_error(&error, "plugin-trap");
    host_still_serves(&runtime).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn reaching_a_host_not_granted_is_refused() {
    let server = start_with("/secret", Resource::pattern(100)).await;
    // Granted another port of the same address only.
    let runtime = runtime(&["127.0.0.1:1"]);
    let error = hostile_download(
        &runtime,
        &format!("hostile://reach/{}", server.url("/secret")),
    )
    .await;
    assert_eq!(
        (error.context, error.code.as_str()),
        (ErrorContext::Policy, "host-not-granted"),
        "{error}"
    );
    assert_eq!(error.class, ErrorClass::Fatal);
    assert!(
        server.requests().is_empty(),
        "the server never saw the request"
    );
    host_still_serves(&runtime).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_third_party_plugin_is_granted_nothing_by_default() {
    let server = start_with("/secret", Resource::pattern(100)).await;
    let mut runtime = PluginRuntime::with_builtins(RuntimeConfig::default()).unwrap();
    let (manifest, wasm) = hostile_plugin();
    runtime.load(&manifest, &wasm, false).unwrap();
    let error = hostile_download(
        &runtime,
        &format!("hostile://reach/{}", server.url("/secret")),
    )
    .await;
    assert_eq!(error.code, "host-not-granted");
    assert!(server.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_calls_in_parallel_do_not_disturb_a_good_one() {
    let runtime = runtime(&[]);
    let server = start_with("/f", Resource::pattern(3 << 20)).await;
    let target = Target::new();
    let good_job = job();
    let good = target.download(&runtime, request(&server.url("/f"), 0), 0, &good_job);
    let (good, looping, bomb) = tokio::join!(
        good,
        hostile_download(&runtime, "hostile://loop/"),
        hostile_download(&runtime, "hostile://memory/"),
    );
    good.0.unwrap();
    assert_eq!(target.content(), pattern_bytes(0..3 << 20));
    assert_eq!(looping.code, "plugin-deadline");
    assert_eq!(bomb.code, "plugin-memory");
}

#[tokio::test(flavor = "multi_thread")]
async fn plugins_load_from_a_directory_and_compiled_code_is_cached() {
    let plugins = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let (manifest, wasm) = hostile_plugin();
    std::fs::write(plugins.path().join("hostile.toml"), &manifest).unwrap();
    std::fs::write(plugins.path().join("hostile.wasm"), &wasm).unwrap();
    std::fs::write(plugins.path().join("broken.toml"), "name = 'broken'").unwrap();
    std::fs::write(plugins.path().join("broken.wasm"), b"not wasm").unwrap();
    let config = || RuntimeConfig {
        cache_dir: Some(cache.path().to_path_buf()),
        ..RuntimeConfig::default()
    };

    let mut first = PluginRuntime::new(config()).unwrap();
    let (loaded, failed) = first.load_dir(plugins.path()).unwrap();
    assert_eq!(loaded, ["hostile"]);
    assert_eq!(
        failed.len(),
        1,
        "the broken plugin is reported, the good one loads"
    );
    assert!(
        matches!(failed[0], RuntimeError::Manifest { .. }),
        "{}",
        failed[0]
    );
    let cached: Vec<_> = std::fs::read_dir(cache.path()).unwrap().collect();
    assert_eq!(cached.len(), 1, "the compiled component is cached");

    // A second runtime loads the cached code and works the same.
    let mut second = PluginRuntime::new(config()).unwrap();
    second.load_dir(plugins.path()).unwrap();
    let target = Target::new();
    target
        .download(&second, request("hostile://ok/", 0), 0, &job())
        .await
        .0
        .unwrap();
    assert_eq!(target.content(), b"ok\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_cannot_take_a_scheme_already_served() {
    let (manifest, wasm) = hostile_plugin();
    let mut runtime = PluginRuntime::with_builtins(RuntimeConfig::default()).unwrap();
    let stealing = manifest
        .replace(r#"schemes = ["hostile"]"#, r#"schemes = ["http"]"#)
        .replace(r#"name = "hostile""#, r#"name = "thief""#);
    let error = runtime.load(&stealing, &wasm, false).unwrap_err();
    assert!(matches!(error, RuntimeError::SchemeTaken { .. }), "{error}");
}

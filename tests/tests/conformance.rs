//! The conformance suite tests itself: the built-in `http` plugin and the
//! example plugin pass every applicable check; each deliberately broken
//! plugin (`tests/plugins/broken-flaws`) fails exactly the checks about its
//! flaw; the reports for people, for programs (JSON) and for CI (JUnit XML)
//! say what they should; `ferry plugin new` writes a crate that passes.

use ferry::conformance::{self, Options, Outcome, Report};
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the repository")
        .to_path_buf()
}

fn read(path: impl AsRef<Path>) -> String {
    let path = repo().join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn wasm(path: &str) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("the build script built {path}: {e}"))
}

async fn suite(manifest: &str, wasm: &[u8]) -> Report {
    conformance::run(manifest, wasm, &Options::default())
        .await
        .expect("the suite runs")
}

fn http_plugin() -> (&'static str, &'static [u8]) {
    let http = ferry::plugin::builtin::BUILTINS
        .iter()
        .find(|b| b.manifest.contains("name = \"http\""))
        .expect("the http plugin is built in");
    (http.manifest, http.component)
}

/// Fails with the report for people when the report is not a success.
fn assert_passes(report: &Report) {
    assert!(report.success(), "{}", conformance::report::human(report));
}

#[test]
fn the_checks_have_stable_unique_documented_ids() {
    let checks = conformance::checks();
    let mut ids: Vec<&str> = checks.iter().map(|c| c.id).collect();
    assert!(checks.len() >= 60, "{} checks", checks.len());
    for check in checks {
        let (area, name) = check.id.split_once('.').expect("ids are AREA.NAME");
        assert!(
            [area, name].iter().all(|part| !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')),
            "{} is not kebab-case",
            check.id
        );
        assert!(
            !check.doc.is_empty() && !check.doc.contains('\n') && check.doc.ends_with('.'),
            "{}: one line of documentation",
            check.id
        );
    }
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), checks.len(), "ids are unique");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_http_plugin_passes_every_applicable_check() {
    let (manifest, component) = http_plugin();
    let report = suite(manifest, component).await;
    assert_passes(&report);
    println!(
        "http: {} checks passed ({} not applicable) in {} ms",
        report.passed(),
        report.count(|o| matches!(o, Outcome::NotApplicable)),
        report.millis
    );
    assert!(report.passed() >= 60, "{} checks passed", report.passed());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_mirror_example_passes_every_applicable_check() {
    let report = suite(
        &read("examples/mirror-plugin/manifest.toml"),
        &wasm(env!("FERRY_MIRROR_EXAMPLE")),
    )
    .await;
    assert_passes(&report);
    assert_eq!(report.url_template, "mirror://{host}:{port}{path}");
    println!("mirror: {} checks passed", report.passed());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_http_plugin_passes_the_upload_checks_and_a_reply_processor_its_own() {
    let (manifest, component) = http_plugin();
    let options = Options {
        only: vec!["upload*".into()],
        ..Options::default()
    };
    let upload = conformance::run(manifest, component, &options)
        .await
        .expect("the suite runs");
    assert_passes(&upload);
    assert_eq!(
        upload.passed(),
        12,
        "the upload and upload-reply checks ran"
    );
    let processor = suite(
        &read("tests/plugins/reply-upper/manifest.toml"),
        &wasm(env!("FERRY_REPLY_UPPER_PLUGIN")),
    )
    .await;
    assert_passes(&processor);
    let ran: Vec<&str> = processor
        .results
        .iter()
        .filter(|r| r.outcome == Outcome::Passed)
        .map(|r| r.id)
        .collect();
    assert!(ran.contains(&"reply.large-reply"), "{ran:?}");
    assert!(!ran.iter().any(|id| id.starts_with("download.")), "{ran:?}");
}

/// Each broken plugin and exactly the checks it must fail.
const BROKEN: &[(&str, &[&str])] = &[
    (
        // Ignores the validator: resumes without If-Range.
        "broken-validator",
        &[
            "download.resume-if-range-etag",
            "download.resume-if-range-date",
            "download.resume-changed-restarts",
            "download.resume-without-validator",
        ],
    ),
    (
        // Follows a redirect to an ungranted host and keeps the redirect's body.
        "broken-redirect",
        &["download.redirect-ungranted"],
    ),
    (
        // Swallows a dropped connection as success.
        "broken-drop",
        &[
            "download.short-body",
            "download.dropped-connection",
            "download.dropped-chunked",
            "download.closed-chunked",
            "download.dropped-then-resumed",
        ],
    ),
    (
        // Maps 503 as fatal.
        "broken-503",
        &["download.status-503"],
    ),
    (
        // Forwards the owner's credentials and headers across origins.
        "broken-credentials",
        &[
            "download.credentials-dropped-cross-origin",
            "download.owner-headers-dropped-cross-origin",
            "download.credentials-dropped-for-good",
        ],
    ),
    (
        // Loops forever when the server gives no size: the deadline stops it.
        "broken-loop",
        &[
            "download.no-length",
            "download.short-chunked-range",
            "download.long-chunked-range",
            "download.dropped-chunked",
            "download.closed-chunked",
        ],
    ),
];

#[tokio::test(flavor = "multi_thread")]
async fn each_broken_plugin_fails_exactly_its_checks() {
    let component = wasm(env!("FERRY_BROKEN_PLUGIN"));
    let mut wrong = Vec::new();
    for (name, expected) in BROKEN {
        let manifest = read(format!("tests/plugins/broken-flaws/manifests/{name}.toml"));
        let report = suite(&manifest, &component).await;
        let failed = report.failures();
        if failed != *expected {
            wrong.push(format!(
                "{name}: expected to fail {expected:?}, failed {failed:?}\n{}",
                conformance::report::human(&report)
            ));
        }
        println!("{name}: fails {failed:?}");
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n\n"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_that_does_not_load_fails_the_loading_check_and_runs_nothing() {
    let report = suite(
        &read("tests/plugins/unknown-exports/manifest.toml"),
        &wasm(env!("FERRY_UNKNOWN_EXPORTS_PLUGIN")),
    )
    .await;
    assert!(!report.success());
    assert!(report.load_error.is_some());
    assert_eq!(report.failures(), ["sandbox.loads"]);
    assert_eq!(report.passed(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn only_and_skip_select_checks_and_unknown_ids_are_refused() {
    let (manifest, component) = http_plugin();
    let options = Options {
        only: vec!["download.status-*".into(), "download.whole-file".into()],
        skip: vec!["download.status-404".into()],
        ..Options::default()
    };
    let report = conformance::run(manifest, component, &options)
        .await
        .expect("the suite runs");
    assert_passes(&report);
    assert_eq!(
        report.passed(),
        16,
        "15 status checks but 404, and whole-file"
    );
    let unknown = Options {
        only: vec!["download.teleport".into()],
        ..Options::default()
    };
    let error = conformance::run(manifest, component, &unknown)
        .await
        .expect_err("an unknown id is refused");
    assert_eq!(error.code(), "unknown-check");
}

fn ferry() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ferry-cli"))
}

#[test]
fn the_cli_reports_a_failure_in_json_and_junit_and_exits_non_zero() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let junit = dir.path().join("report.xml");
    let output = ferry()
        .args([
            "plugin",
            "test",
            env!("FERRY_BROKEN_PLUGIN"),
            "--json",
            "--manifest",
        ])
        .arg(repo().join("tests/plugins/broken-flaws/manifests/broken-503.toml"))
        .arg("--junit")
        .arg(&junit)
        .output()
        .expect("ferry runs");
    assert_eq!(output.status.code(), Some(1), "a failed check exits 1");
    let json: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("--json prints one JSON document");
    let checks = conformance::checks().len();
    assert_eq!(json["summary"]["total"], checks);
    assert_eq!(json["summary"]["failed"], 1);
    assert_eq!(json["summary"]["success"], false);
    let results = json["results"].as_array().expect("results");
    assert_eq!(results.len(), checks);
    let failed: Vec<&serde_json::Value> = results
        .iter()
        .filter(|r| r["outcome"] == "failed")
        .collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["id"], "download.status-503");
    assert!(
        failed[0]["expected"]
            .as_str()
            .is_some_and(|e| e.contains("transient"))
    );
    assert!(
        failed[0]["seen"]
            .as_str()
            .is_some_and(|s| s.contains("fatal"))
    );
    let requests = failed[0]["requests"]
        .as_array()
        .expect("the requests received");
    assert_eq!(requests[0]["target"], "/status-503");
    for result in results {
        assert!(result["id"].is_string() && result["doc"].is_string());
    }

    let xml = std::fs::read_to_string(&junit).expect("the JUnit file is written");
    let doc = roxmltree::Document::parse(&xml).expect("the JUnit file is XML");
    let cases: Vec<roxmltree::Node> = doc
        .descendants()
        .filter(|n| n.has_tag_name("testcase"))
        .collect();
    assert_eq!(cases.len(), checks, "one test case per check");
    let failures: Vec<&str> = cases
        .iter()
        .filter(|c| c.children().any(|n| n.has_tag_name("failure")))
        .filter_map(|c| c.attribute("name"))
        .collect();
    assert_eq!(failures, ["download.status-503"]);
    let suite = doc
        .descendants()
        .find(|n| n.has_tag_name("testsuite"))
        .expect("a test suite");
    assert_eq!(suite.attribute("failures"), Some("1"));
    assert_eq!(suite.attribute("tests"), Some(checks.to_string().as_str()));
}

#[test]
fn the_cli_prints_one_line_a_check_and_a_summary_and_exits_zero_on_success() {
    let output = ferry()
        .args(["plugin", "test", env!("FERRY_MIRROR_EXAMPLE"), "--manifest"])
        .arg(repo().join("examples/mirror-plugin/manifest.toml"))
        .args(["--only", "download.whole-file,download.redirect-*"])
        .output()
        .expect("ferry runs");
    let text = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{text}");
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("pass  ")).collect();
    assert_eq!(lines.len(), 12, "{text}");
    assert!(text.contains("12 passed, 0 failed"), "{text}");
    assert!(text.trim_end().ends_with("PASSED"), "{text}");

    let unknown = ferry()
        .args(["plugin", "test", env!("FERRY_MIRROR_EXAMPLE"), "--manifest"])
        .arg(repo().join("examples/mirror-plugin/manifest.toml"))
        .args(["--only", "nothing.such"])
        .output()
        .expect("ferry runs");
    assert_eq!(unknown.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("unknown-check"));
}

/// The guest SDK carries its own copy of the contract (so it packages on
/// its own): it is the repository's canonical `wit/`, file for file.
#[test]
fn the_sdk_carries_the_canonical_wit() {
    let root = repo();
    let mut files = vec![PathBuf::from("transfer.wit")];
    for entry in std::fs::read_dir(root.join("wit/deps")).expect("wit/deps") {
        let name = entry.expect("an entry").file_name();
        files.push(Path::new("deps").join(name));
    }
    for file in &files {
        let canonical = std::fs::read(root.join("wit").join(file)).expect("the canonical WIT");
        let copy = std::fs::read(root.join("guest-sdk/wit").join(file))
            .unwrap_or_else(|e| panic!("guest-sdk/wit/{} is missing: {e}", file.display()));
        assert!(
            canonical == copy,
            "guest-sdk/wit/{0} differs from wit/{0}: copy wit/ into guest-sdk/wit/",
            file.display()
        );
    }
    let copies = std::fs::read_dir(root.join("guest-sdk/wit/deps"))
        .expect("guest-sdk/wit/deps")
        .count();
    assert_eq!(copies + 1, files.len(), "guest-sdk/wit has no extra files");
}

/// A daemon's plugins directory with one plugin that loads and each way of
/// failing to: `ferry plugins` lists them all, a job needing a refused
/// plugin's scheme says why, and `ferry plugins reload` and SIGHUP pick up
/// changes without a restart.
#[test]
fn the_daemon_shows_refused_plugins_and_reloads_them() {
    use ferry_tests::daemon::Daemon;
    let binary = Path::new(env!("CARGO_BIN_EXE_ferry-cli"));
    let mut daemon = Daemon::new("");
    let dir = daemon.state_dir.join("plugins");
    std::fs::create_dir_all(&dir).expect("the plugins directory");
    let mirror_manifest = read("examples/mirror-plugin/manifest.toml");
    let mirror = wasm(env!("FERRY_MIRROR_EXAMPLE"));
    let write = |name: &str, bytes: &[u8]| std::fs::write(dir.join(name), bytes).expect("write");
    write("mirror.toml", mirror_manifest.as_bytes());
    write("mirror.wasm", &mirror);
    write("orphan.wasm", &mirror);
    write(
        "lonely.toml",
        b"name = \"lonely\"\nversion = \"1.0.0\"\nschemes = [\"lonely\"]\n",
    );
    write(
        "bad.toml",
        b"name = \"bad\"\nversion = \"1.0.0\"\nschemes = [\"badproto\"]\nallowed-hosts = [\"*\"]\n",
    );
    write("bad.wasm", b"\0asm this is no component");
    daemon.start(binary);

    let listed = daemon.run(binary, &["plugins", "--json"]).ok().json();
    let state = |list: &serde_json::Value, name: &str| {
        list.as_array()
            .expect("a list")
            .iter()
            .find(|p| p["name"] == name)
            .map(|p| (p["state"].clone(), p["code"].clone(), p["reason"].clone()))
    };
    let (loaded, ..) = state(&listed, "mirror").expect("mirror is listed");
    assert_eq!(loaded, "loaded");
    let (refused, code, reason) = state(&listed, "orphan").expect("orphan is listed");
    assert_eq!(
        (refused, code),
        ("refused".into(), "manifest-missing".into())
    );
    assert!(
        reason.as_str().is_some_and(|r| r.contains("orphan.toml")),
        "{reason}"
    );
    let (_, code, reason) = state(&listed, "lonely").expect("lonely is listed");
    assert_eq!(code, "component-missing");
    assert!(
        reason.as_str().is_some_and(|r| r.contains("lonely.wasm")),
        "{reason}"
    );
    let (_, code, _) = state(&listed, "bad").expect("bad is listed");
    assert_eq!(code, "component-invalid");
    let human = daemon.run(binary, &["plugins"]).ok().stdout;
    assert!(human.contains("orphan\trefused"), "{human}");

    // A job for the refused plugin's scheme says which plugin and why.
    let id = daemon.run(binary, &["create", "--json"]).ok().json()["id"]
        .as_str()
        .expect("an id")
        .to_string();
    let target = daemon.dir.path().join("out.bin");
    let add = daemon.run(
        binary,
        &[
            "add",
            &id,
            "badproto://127.0.0.1:1/f",
            target.to_str().expect("UTF-8"),
        ],
    );
    let said = format!("{}{}", add.stdout, add.stderr);
    assert!(said.contains("unsupported-scheme"), "{said}");
    assert!(
        said.contains("plugin bad") && said.contains("refused"),
        "{said}"
    );

    // Reload: a removed plugin goes, a fixed one loads.
    std::fs::remove_file(dir.join("mirror.wasm")).expect("remove");
    std::fs::remove_file(dir.join("mirror.toml")).expect("remove");
    std::fs::write(
        dir.join("orphan.toml"),
        mirror_manifest
            .replace("name = \"mirror\"", "name = \"orphan\"")
            .replace("schemes = [\"mirror\"]", "schemes = [\"orphan\"]"),
    )
    .expect("write");
    let reloaded = daemon
        .run(binary, &["plugins", "reload", "--json"])
        .ok()
        .json();
    assert_eq!(
        reloaded["removed"],
        serde_json::json!(["mirror"]),
        "{reloaded}"
    );
    assert_eq!(
        reloaded["loaded"],
        serde_json::json!(["orphan"]),
        "{reloaded}"
    );
    let (state_now, ..) = state(&reloaded["plugins"], "orphan").expect("orphan is listed");
    assert_eq!(state_now, "loaded");

    // SIGHUP does the same.
    std::fs::write(dir.join("mirror.toml"), &mirror_manifest).expect("write");
    std::fs::write(dir.join("mirror.wasm"), &mirror).expect("write");
    let log = daemon.log();
    let pid: i32 = log
        .split("pid=")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("the daemon logs its pid: {log}"));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGHUP,
    )
    .expect("SIGHUP is sent");
    let mut seen = serde_json::Value::Null;
    for _ in 0..200 {
        seen = daemon.run(binary, &["plugins", "--json"]).ok().json();
        if state(&seen, "mirror").is_some_and(|(s, ..)| s == "loaded") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(
        state(&seen, "mirror").map(|(s, ..)| s),
        Some("loaded".into()),
        "{seen}"
    );
    daemon.terminate();
}

/// `ferry plugin new` writes a crate that builds for wasm32-wasip2 against
/// the repository's SDK and passes the suite as generated.
#[test]
fn a_new_plugin_builds_and_passes_the_suite() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let crate_dir = dir.path().join("demo");
    let made = ferry()
        .args(["plugin", "new", "demo", "--dir"])
        .arg(&crate_dir)
        .arg("--sdk-path")
        .arg(repo().join("guest-sdk"))
        .output()
        .expect("ferry runs");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    for file in [
        "Cargo.toml",
        "manifest.toml",
        "src/lib.rs",
        "tests/conformance.rs",
    ] {
        assert!(crate_dir.join(file).is_file(), "{file} is written");
    }
    // Built as the generated README says, in a target directory kept
    // between runs so its dependencies compile once.
    let target_dir = repo().join("target").join("plugin-new");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(cargo);
    build
        .current_dir(&crate_dir)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--target-dir",
        ])
        .arg(&target_dir);
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
    ] {
        build.env_remove(var);
    }
    assert!(
        build.status().expect("cargo runs").success(),
        "the new plugin builds"
    );
    let wasm = target_dir.join("wasm32-wasip2/release/ferry_plugin_demo.wasm");
    let output = ferry()
        .args(["plugin", "test"])
        .arg(&wasm)
        .arg("--manifest")
        .arg(crate_dir.join("manifest.toml"))
        .output()
        .expect("ferry runs");
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{report}");
    assert!(report.contains("demo://{host}:{port}{path}"), "{report}");
}

/// The documentation lists every check, with the line of documentation the
/// suite prints for it.
#[test]
fn the_docs_list_every_check() {
    let docs = read("docs/conformance.md");
    for check in conformance::checks() {
        let row = format!(
            "| `{}` | {} | {} |",
            check.id,
            check.applies.name(),
            check.doc
        );
        assert!(
            docs.contains(&row),
            "docs/conformance.md lacks (or has another line for) {}: regenerate its table from \
             `ferry plugin test --list --json`",
            check.id
        );
    }
}

/// `host-not-granted` says which side to fix: the plugin's manifest, or the
/// operator's grant (none at all, or one for another port).
#[tokio::test(flavor = "multi_thread")]
async fn host_not_granted_says_which_side_to_fix() {
    use ferry::conformance::server::{Resource, Route, Server};
    use ferry::plugin::network::NetworkConfig;
    use ferry::plugin::{Destination, DownloadRequest, JobContext, PluginRuntime, RuntimeConfig};
    let server = Server::start("a").await.expect("a loopback server");
    server.route("/f", Route::Resource(Resource::new(b"data".to_vec())));
    let manifest = read("examples/mirror-plugin/manifest.toml");
    let component = wasm(env!("FERRY_MIRROR_EXAMPLE"));
    async fn refusal(port: u16, manifest: &str, component: &[u8], grant: Vec<String>) -> String {
        let mut runtime = PluginRuntime::new(RuntimeConfig {
            network: NetworkConfig {
                allow_private_addresses: vec!["127.0.0.0/8".into()],
                ..NetworkConfig::default()
            },
            grants: [("mirror".to_string(), grant)].into_iter().collect(),
            ..RuntimeConfig::default()
        })
        .expect("the runtime starts");
        runtime
            .load(manifest, component, false)
            .expect("mirror loads");
        let dir = tempfile::tempdir().expect("a temporary directory");
        let file = std::fs::File::create(dir.path().join("f")).expect("a file");
        let request = DownloadRequest {
            url: format!("mirror://127.0.0.1:{port}/f"),
            offset: 0,
            end: None,
            validator: None,
        };
        let destination = Destination::new(std::sync::Arc::new(file), 0, 0, true);
        let error = runtime
            .download(request, &JobContext::new("t"), destination)
            .await
            .expect_err("the host refuses the request");
        assert_eq!(error.code, "host-not-granted");
        error.message
    }
    let port = server.port();
    let none = refusal(port, &manifest, &component, Vec::new()).await;
    assert!(
        none.contains("the operator grants it no host") && none.contains("[plugins.grants] mirror"),
        "{none}"
    );
    let other_port = refusal(port, &manifest, &component, vec!["127.0.0.1:1".into()]).await;
    assert!(
        other_port.contains("the operator's grant (127.0.0.1:1) does not include"),
        "{other_port}"
    );
    let declares_other = manifest.replace(
        "allowed-hosts = [\"*\"]",
        "allowed-hosts = [\"example.com\"]",
    );
    let undeclared = refusal(port, &declares_other, &component, vec!["*".into()]).await;
    assert!(
        undeclared.contains("its manifest's allowed-hosts (example.com) does not include"),
        "{undeclared}"
    );
}

/// A plugin that panics fails its call with `plugin-trap`, and the message
/// carries the plugin's own panic message (from its standard error).
#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_panic_carries_its_message() {
    use ferry::plugin::{Destination, DownloadRequest, JobContext, PluginRuntime, RuntimeConfig};
    let mut runtime = PluginRuntime::new(RuntimeConfig::default()).expect("the runtime starts");
    let manifest = read("tests/plugins/broken-flaws/manifests/broken-panic.toml");
    runtime
        .load(&manifest, &wasm(env!("FERRY_BROKEN_PLUGIN")), false)
        .expect("the plugin loads");
    let dir = tempfile::tempdir().expect("a temporary directory");
    let file = std::fs::File::create(dir.path().join("f")).expect("a file");
    let request = DownloadRequest {
        url: "broken-panic://127.0.0.1:9/f".into(),
        offset: 0,
        end: None,
        validator: None,
    };
    let destination = Destination::new(std::sync::Arc::new(file), 0, 0, true);
    let error = runtime
        .download(request, &JobContext::new("t"), destination)
        .await
        .expect_err("the plugin panics");
    assert_eq!(error.code, "plugin-trap");
    assert!(
        error.message.contains("panicked at")
            && error
                .message
                .contains("the broken-panic plugin panics on purpose at http://127.0.0.1:9/f"),
        "{}",
        error.message
    );
}

/// The guest SDK is a crate of its own: it packages with its WIT, without
/// anything inherited from this workspace.
#[test]
fn the_sdk_packages_on_its_own() {
    let manifest = read("guest-sdk/Cargo.toml");
    assert!(
        !manifest.contains(".workspace") && !manifest.contains("workspace = true"),
        "guest-sdk/Cargo.toml inherits from the workspace:\n{manifest}"
    );
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let listed = Command::new(cargo)
        .current_dir(repo())
        .args([
            "package",
            "-p",
            "ferry-guest-sdk",
            "--list",
            "--allow-dirty",
            "--offline",
        ])
        .output()
        .expect("cargo runs");
    let files = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    for file in [
        "wit/transfer.wit",
        "wit/deps/http.wit",
        "wit/deps/io.wit",
        "src/lib.rs",
    ] {
        assert!(
            files.lines().any(|l| l == file),
            "{file} is not packaged:\n{files}"
        );
    }
}

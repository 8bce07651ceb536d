//! A plugin in a second language: `examples/python-plugin`, a `pymirror://`
//! download transport written in Python and built by the test suite's build
//! script with componentize-py. It passes every conformance check that
//! applies to it, and a real daemon loads it from its plugins directory and
//! downloads through it, resuming after a dropped connection.

use ferry::conformance::{self, Options};
use ferry_tests::daemon::{Daemon, wait_for_job};
use ferry_tests::server::{Resource, TestServer, pattern_bytes};
use std::path::{Path, PathBuf};

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/python-plugin")
}

fn manifest() -> String {
    let path = example().join("manifest.toml");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn component() -> Vec<u8> {
    let path = env!("FERRY_PYTHON_EXAMPLE");
    std::fs::read(path).unwrap_or_else(|e| panic!("the build script built {path}: {e}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_python_plugin_passes_every_applicable_check() {
    let report = conformance::run(&manifest(), &component(), &Options::default())
        .await
        .expect("the suite runs");
    assert!(report.success(), "{}", conformance::report::human(&report));
    assert_eq!(report.url_template, "pymirror://{host}:{port}{path}");
    let download_checks = conformance::checks()
        .iter()
        .filter(|c| c.id.starts_with("download."))
        .count();
    let passed_downloads = report
        .results
        .iter()
        .filter(|r| r.id.starts_with("download.") && r.outcome == conformance::Outcome::Passed)
        .count();
    assert_eq!(
        passed_downloads, download_checks,
        "every download check applies to a download transport and passed"
    );
    println!(
        "python: {} checks passed in {} ms",
        report.passed(),
        report.millis
    );
}

/// The daemon loads the Python plugin from its plugins directory, lists it,
/// and a job through it ends byte-identical although the server drops the
/// connection once part-way: the plugin reports `connection-dropped`, and
/// its second request resumes from the bytes kept with `Range` and
/// `If-Range`.
#[test]
fn a_daemon_downloads_through_the_python_plugin() {
    let len: u64 = 3 * 1024 * 1024 + 11;
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let server = runtime.block_on(TestServer::start());
    // Paced, so the plugin has read what was sent before the connection
    // drops (a reset discards what the client has not read yet).
    server.put(
        "/big.bin",
        Resource::pattern(len)
            .slow(4 * 1024 * 1024)
            .drop_after(1024 * 1024 + 5),
    );
    let mut daemon = Daemon::new("\n[plugins.grants]\npymirror = [\"127.0.0.1\"]\n");
    let plugins = daemon.state_dir.join("plugins");
    std::fs::create_dir_all(&plugins).expect("the plugins directory");
    std::fs::write(plugins.join("pymirror.toml"), manifest()).expect("the manifest");
    std::fs::write(plugins.join("pymirror.wasm"), component()).expect("the component");
    let ferry = Path::new(env!("CARGO_BIN_EXE_ferry-cli"));
    daemon.start(ferry);

    let listed = daemon.run(ferry, &["plugins", "--json"]).ok().json();
    let plugin = listed
        .as_array()
        .expect("a list")
        .iter()
        .find(|p| p["name"] == "pymirror")
        .unwrap_or_else(|| panic!("pymirror is listed: {listed}; log: {}", daemon.log()));
    assert_eq!(plugin["contract"], "0.2.0", "{plugin}");

    let dest = daemon.dir.path().join("big.bin");
    let url = format!("pymirror://127.0.0.1:{}/big.bin", server.addr().port());
    let id = daemon.create_download(ferry, &[(url.as_str(), &dest)]);
    daemon.run(ferry, &["set", &id, "--retry-delay", "1"]).ok();
    daemon.run(ferry, &["resume", &id]).ok();
    let job = wait_for_job(&daemon, ferry, &id, |v| {
        v["state"] == "transferred" || v["state"] == "error"
    });
    assert_eq!(job["state"], "transferred", "{job}; log: {}", daemon.log());
    daemon.run(ferry, &["complete", &id]).ok();
    assert!(
        std::fs::read(&dest).expect("the download") == pattern_bytes(0..len),
        "the file is byte-identical"
    );

    let gets: Vec<_> = server
        .requests_for("/big.bin")
        .into_iter()
        .filter(|r| r.method == "GET")
        .collect();
    assert_eq!(gets.len(), 2, "one drop, one resume: {gets:?}");
    assert_eq!(gets[0].header("range"), None, "{gets:?}");
    let resumed = gets[1]
        .header("range")
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|r| r.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("the resume asks for a range: {gets:?}"));
    assert!(
        resumed > 0 && resumed <= 1024 * 1024 + 5,
        "resumed from {resumed}"
    );
    assert!(gets[1].header("if-range").is_some(), "{gets:?}");
    assert!(
        gets.iter()
            .all(|r| r.header("accept-encoding") == Some("identity")),
        "{gets:?}"
    );
    assert_eq!(daemon.terminate(), Some(0), "log: {}", daemon.log());
}

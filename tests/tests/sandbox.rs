//! Hostile plugins, built in this test suite, against the real runtime: each
//! misbehaviour ends in its typed error, and the host goes on serving.

use ferry::plugin::{JobContext, PluginRuntime, RuntimeConfig, RuntimeError};
use ferry::{ErrorClass, ErrorContext, TransferError};
use ferry_tests::fixtures::{Target, hostile_plugin, loopback_config, request};
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
        ..loopback_config()
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
    let mut runtime = PluginRuntime::with_builtins(loopback_config()).unwrap();
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
        ..loopback_config()
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
    let mut runtime = PluginRuntime::with_builtins(loopback_config()).unwrap();
    let stealing = manifest
        .replace(r#"schemes = ["hostile"]"#, r#"schemes = ["http"]"#)
        .replace(r#"name = "hostile""#, r#"name = "thief""#);
    let error = runtime.load(&stealing, &wasm, false).unwrap_err();
    assert!(matches!(error, RuntimeError::SchemeTaken { .. }), "{error}");
}

// Bounds a hostile plugin cannot reset or escape (issue 12, findings 8–10).
// While each runs, the host process (these tests run the runtime in-process,
// as the daemon does) stays under a stated bound of resident memory and
// open descriptors, and goes on serving other calls.

/// Resident memory growth a hostile call may cause.
const RSS_BOUND: u64 = 256 << 20;
/// Open descriptors a hostile call may add.
const FD_BOUND: usize = 64;

/// This process's resident set in bytes, from /proc.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kib << 10
}

/// This process's open descriptors, from /proc.
fn fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Host bounds small enough for a test to reach in seconds.
fn test_limits() -> ferry::plugin::sandbox::SandboxLimits {
    ferry::plugin::sandbox::SandboxLimits {
        call_cpu: Duration::from_secs(1),
        ..Default::default()
    }
}

/// A runtime with the built-ins and the hostile plugin (granted `grant`),
/// under [`test_limits`].
fn bounded_runtime(grant: &[&str]) -> PluginRuntime {
    let mut grants = HashMap::new();
    grants.insert(
        "hostile".to_string(),
        grant.iter().map(|s| s.to_string()).collect(),
    );
    let mut runtime = PluginRuntime::with_builtins(RuntimeConfig {
        grants,
        sandbox: test_limits(),
        ..loopback_config()
    })
    .unwrap();
    let (manifest, wasm) = hostile_plugin();
    runtime.load(&manifest, &wasm, false).unwrap();
    runtime
}

/// Runs a hostile download and checks the process stayed within its bounds.
async fn bounded_hostile_download(runtime: &PluginRuntime, url: &str) -> TransferError {
    let (rss_before, fds_before) = (rss(), fds());
    let error = hostile_download(runtime, url).await;
    let (rss_after, fds_after) = (rss(), fds());
    assert!(
        rss_after.saturating_sub(rss_before) < RSS_BOUND,
        "{url}: resident memory grew from {rss_before} to {rss_after} bytes"
    );
    assert!(
        fds_after.saturating_sub(fds_before) < FD_BOUND,
        "{url}: open descriptors went from {fds_before} to {fds_after}"
    );
    error
}

#[tokio::test(flavor = "multi_thread")]
async fn a_loop_of_host_calls_ends_at_its_call_budget() {
    let runtime = bounded_runtime(&[]);
    let error = bounded_hostile_download(&runtime, "hostile://spin-host/").await;
    assert_plugin_error(&error, "plugin-deadline");
    assert!(error.message.contains("budget"), "{error}");
    host_still_serves(&runtime).await;
}

/// Counts the plugin log lines the host writes (events of the sandbox).
struct LogCounter(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl tracing::Subscriber for LogCounter {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        if event.metadata().target().ends_with("sandbox") {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

// One thread, so the counter sees every line the call writes.
#[tokio::test(flavor = "current_thread")]
async fn a_log_flood_is_rate_limited_and_ends_at_its_call_budget() {
    let lines = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let _guard = tracing::subscriber::set_default(LogCounter(lines.clone()));
    let runtime = bounded_runtime(&[]);
    let error = bounded_hostile_download(&runtime, "hostile://spin-log/").await;
    assert_plugin_error(&error, "plugin-deadline");
    let limits = test_limits();
    // The burst, the rate over the call's few seconds, the note of drops.
    let most = limits.log_burst as usize + 60 * limits.log_per_second as usize + 1;
    let written = lines.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        written <= most,
        "{written} log lines written, at most {most}"
    );
    host_still_serves(&runtime).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn resources_a_plugin_holds_are_bounded_by_the_table() {
    let runtime = bounded_runtime(&[]);
    let error = bounded_hostile_download(&runtime, "hostile://table/").await;
    assert_plugin_error(&error, "plugin-trap");
    assert!(error.message.contains("resource table"), "{error}");
    host_still_serves(&runtime).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn header_fields_are_bounded() {
    let runtime = bounded_runtime(&[]);
    let error = bounded_hostile_download(&runtime, "hostile://fields/").await;
    if error.code == "plugin-trap" {
        // The host refused the append past its bound by stopping the call.
        host_still_serves(&runtime).await;
        return;
    }
    let held: usize = error
        .message
        .strip_prefix("held ")
        .and_then(|m| m.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{error}"));
    assert!(
        held <= test_limits().header_bytes,
        "the host held {held} bytes of one plugin's header fields"
    );
    host_still_serves(&runtime).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_in_flight_per_call_are_bounded() {
    let server = start_with("/big", Resource::pattern(4 << 20)).await;
    let runtime = bounded_runtime(&["127.0.0.1"]);
    let error = bounded_hostile_download(
        &runtime,
        &format!("hostile://requests/{}", server.url("/big")),
    )
    .await;
    let numbers: Vec<usize> = error
        .message
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect();
    let [sent, refused] = numbers[..] else {
        panic!("{error}");
    };
    let limit = test_limits().requests_in_flight;
    assert!(
        sent <= limit,
        "{sent} requests in flight at once, limit {limit}"
    );
    assert_eq!(sent + refused, 200, "{error}");
    host_still_serves(&runtime).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn strings_a_plugin_chooses_are_cut_and_cleaned_before_they_are_kept() {
    let runtime = bounded_runtime(&[]);
    let target = Target::new();
    let (result, progress) = target
        .download(&runtime, request("hostile://strings/", 0), 0, &job())
        .await;
    result.unwrap();
    let remote = progress.remote.lock().unwrap().clone().unwrap();
    assert_eq!(remote.validator, None, "a 512 KiB ETag is not recorded");
    assert!(remote.location.len() <= ferry::plugin::transfer::MAX_URL);
    assert!(!remote.location.chars().any(char::is_control));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_load_time_call_that_never_returns_is_stopped_and_the_plugin_refused() {
    let (manifest, wasm) = ferry_tests::fixtures::hostile_legacy_plugin();
    let mut runtime = PluginRuntime::with_builtins(loopback_config()).unwrap();
    // The load runs on a thread of its own: a hang fails the test at the
    // safety net instead of stalling the suite.
    let (done, loaded) = std::sync::mpsc::channel();
    let loader = std::thread::spawn(move || {
        let result = runtime.load(&manifest, &wasm, false);
        let _ = done.send(result.map_err(|e| e.to_string()));
        runtime
    });
    let result = loaded
        .recv_timeout(Duration::from_secs(60))
        .expect("the load-time call was stopped");
    let error = result.unwrap_err();
    assert!(error.contains("capabilities"), "{error}");
    assert!(
        error.contains("plugin-deadline") || error.contains("budget"),
        "{error}"
    );
    let runtime = loader.join().unwrap();
    let server = start_with("/f", Resource::pattern(1000)).await;
    let target = Target::new();
    target
        .download(&runtime, request(&server.url("/f"), 0), 0, &job())
        .await
        .0
        .unwrap();
    assert_eq!(target.content(), pattern_bytes(0..1000));
}

/// Loads the hostile plugin with compiled code cached in `cache`, and checks
/// it runs as built.
async fn load_cached_and_run(cache: &std::path::Path) {
    let (manifest, wasm) = hostile_plugin();
    let mut runtime = PluginRuntime::new(RuntimeConfig {
        cache_dir: Some(cache.to_path_buf()),
        ..loopback_config()
    })
    .unwrap();
    runtime.load(&manifest, &wasm, false).unwrap();
    let target = Target::new();
    target
        .download(&runtime, request("hostile://ok/", 0), 0, &job())
        .await
        .0
        .unwrap();
    assert_eq!(target.content(), b"ok\n");
}

/// The one entry in a cache directory.
fn cache_entry(cache: &std::path::Path) -> std::path::PathBuf {
    let entries: Vec<_> = std::fs::read_dir(cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    entries[0].clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tampered_or_torn_cache_entry_is_recompiled_never_run() {
    let cache = tempfile::tempdir().unwrap();
    load_cached_and_run(cache.path()).await;
    let entry = cache_entry(cache.path());
    let good = std::fs::read(&entry).unwrap();

    // Someone flips bytes in the compiled code: it is not executed, the
    // plugin is compiled again and the entry rewritten.
    let mut tampered = good.clone();
    for at in [good.len() / 3, good.len() / 2, 2 * good.len() / 3] {
        tampered[at] ^= 0xff;
    }
    std::fs::write(&entry, &tampered).unwrap();
    load_cached_and_run(cache.path()).await;
    assert!(
        std::fs::read(&entry).unwrap() == good,
        "the tampered entry was used, not recompiled"
    );

    // A write cut short (a crash before the data reached the disk).
    std::fs::write(&entry, &good[..good.len() / 2]).unwrap();
    load_cached_and_run(cache.path()).await;
    assert!(std::fs::read(&entry).unwrap() == good);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cache_directory_others_can_write_is_never_used() {
    use std::os::unix::fs::PermissionsExt;
    let cache = tempfile::tempdir().unwrap();
    std::fs::set_permissions(cache.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    load_cached_and_run(cache.path()).await;
    let entries = std::fs::read_dir(cache.path()).unwrap().count();
    assert_eq!(
        entries, 0,
        "compiled code was cached where any user can replace it"
    );
}

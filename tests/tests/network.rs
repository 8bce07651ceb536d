//! The host's side of a plugin's network: bandwidth limit and proxy
//! settings, exercised through the real http plugin on loopback.

use ferry::plugin::network::{NetworkConfig, Proxy};
use ferry::plugin::{JobContext, PluginRuntime, RuntimeConfig};
use ferry_tests::fixtures::{Target, request};
use ferry_tests::server::{Resource, pattern_bytes, start_with};
use std::time::{Duration, Instant};

fn runtime(network: NetworkConfig) -> PluginRuntime {
    PluginRuntime::with_builtins(RuntimeConfig {
        network: NetworkConfig {
            allow_private_addresses: ferry_tests::fixtures::loopback(),
            ..network
        },
        ..RuntimeConfig::default()
    })
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_global_bandwidth_limit_holds_transfers_back() {
    let len: u64 = 768 * 1024;
    let server = start_with("/f", Resource::pattern(len)).await;
    let rate = 256 * 1024;
    let runtime = runtime(NetworkConfig {
        bandwidth_limit: Some(rate),
        // Direct to loopback, whatever the machine's `http_proxy` says.
        proxy: Proxy::None,
        ..NetworkConfig::default()
    });
    let target = Target::new();
    let started = Instant::now();
    target
        .download(
            &runtime,
            request(&server.url("/f"), 0),
            0,
            &JobContext::new("bw"),
        )
        .await
        .0
        .unwrap();
    let elapsed = started.elapsed();
    assert_eq!(target.content(), pattern_bytes(0..len));
    // 768 KiB at 256 KiB/s, less a quarter second of burst: at least 2.75 s.
    // Only a lower bound: a slow machine can only make it longer.
    assert!(
        elapsed >= Duration::from_millis(2_500),
        "took only {elapsed:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_go_through_the_configured_proxy() {
    // The "proxy" is the test server: it answers absolute-form requests by
    // path. The URL's host does not resolve, so only the proxy can answer.
    let proxy = start_with("/via-proxy", Resource::pattern(5_000)).await;
    let runtime = runtime(NetworkConfig {
        proxy: Proxy::Url(format!("http://{}", proxy.addr())),
        ..NetworkConfig::default()
    });
    let target = Target::new();
    let url = "http://ferry-test.invalid/via-proxy";
    target
        .download(&runtime, request(url, 0), 0, &JobContext::new("proxy"))
        .await
        .0
        .unwrap();
    assert_eq!(target.content(), pattern_bytes(0..5_000));
    assert_eq!(proxy.requests_for("/via-proxy").len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_proxy_an_unresolvable_host_is_a_transient_transport_error() {
    let runtime = runtime(NetworkConfig {
        proxy: Proxy::None,
        ..NetworkConfig::default()
    });
    let (result, _) = Target::new()
        .download(
            &runtime,
            request("http://ferry-test.invalid/x", 0),
            0,
            &JobContext::new("dns"),
        )
        .await;
    let error = result.unwrap_err();
    assert_eq!(error.context, ferry::ErrorContext::Transport, "{error}");
    assert_eq!(error.class, ferry::ErrorClass::Transient, "{error}");
}

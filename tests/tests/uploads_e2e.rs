//! Uploads end to end, as a user runs them: the real daemon over its socket,
//! the real `ferry` CLI, the built-in `http` plugin's upload protocols and
//! the built-in reply processors, against real servers on loopback:
//! - tus: `@tus/server` with `@tus/file-store` (installed from the pinned
//!   lockfile by the test itself, see `ferry_tests::tus`);
//! - BITS: the test suite's server of the BITS upload protocol, written to
//!   its specification (`ferry_tests::bits_server`), which also takes plain
//!   `PUT`s;
//! - a TCP proxy between them (`ferry_tests::proxy`) paces uploads and cuts
//!   connections, so a test can crash, cancel or change things mid-upload.
//!
//! Every wait is bounded: a request that never comes fails the test.

use ferry_tests::bits_server::{self, BG_E_SESSION_NOT_FOUND, BitsServer, UPLOAD_PROTOCOL};
use ferry_tests::daemon::{Daemon, wait_for_job};
use ferry_tests::proxy::Proxy;
use ferry_tests::server::pattern_bytes;
use ferry_tests::tus::{TusReply, TusServer};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

const MIB: u64 = 1 << 20;
/// The bytes of one BITS fragment of the http plugin, and of its first tus
/// PATCH of a call (the next ones double, up to `MAX_PATCH`).
const CHUNK: u64 = 8 * MIB;
const MAX_PATCH: u64 = 64 * MIB;

/// Where the http plugin's tus PATCHes of an uninterrupted upload of `size`
/// bytes begin: 8 MiB, then each twice the last, up to 64 MiB.
fn tus_patch_offsets(size: u64) -> Vec<u64> {
    let (mut offsets, mut at, mut length) = (Vec::new(), 0, CHUNK);
    while at < size {
        offsets.push(at);
        at += length.min(size - at);
        length = (length * 2).min(MAX_PATCH);
    }
    offsets
}

fn ferry() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_ferry-cli"))
}

/// A daemon whose built-in `http` plugin may reach the loopback servers.
fn daemon() -> Daemon {
    Daemon::new("\n[plugins.grants]\nhttp = [\"127.0.0.1\"]\n")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().expect("a tokio runtime")
}

/// A file of `len` bytes of the test pattern in `dir`.
fn source(dir: &Path, name: &str, len: u64) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, pattern_bytes(0..len)).expect("write the source");
    path
}

/// `ferry create --type TYPE`, `add`, and `set` with `settings`; the job
/// stays suspended. Returns its id.
fn upload_job(
    daemon: &Daemon,
    job_type: &str,
    url: &str,
    file: &Path,
    settings: &[&str],
) -> String {
    let id = daemon
        .run(ferry(), &["create", "--type", job_type, "--json"])
        .ok()
        .json()["id"]
        .as_str()
        .expect("create prints the id")
        .to_string();
    daemon
        .run(ferry(), &["add", &id, url, file.to_str().unwrap()])
        .ok();
    if !settings.is_empty() {
        let mut args = vec!["set", id.as_str()];
        args.extend_from_slice(settings);
        daemon.run(ferry(), &args).ok();
    }
    id
}

/// Waits (bounded) until job `id` is in `state`; a job that ends in `error`
/// instead fails the test with its error.
fn wait_state(daemon: &Daemon, id: &str, state: &str) -> Value {
    let job = wait_for_job(daemon, ferry(), id, |j| {
        j["state"] == state || j["state"] == "error"
    });
    assert_eq!(
        job["state"],
        state,
        "job {id}: {job:#}; log: {}",
        daemon.log()
    );
    job
}

/// Waits (bounded) until job `id` has at least `bytes` acknowledged.
fn wait_bytes(daemon: &Daemon, id: &str, bytes: u64) -> Value {
    wait_for_job(daemon, ferry(), id, |j| {
        j["files"][0]["bytes_transferred"].as_u64().unwrap_or(0) >= bytes || j["state"] == "error"
    })
}

fn error_code(job: &Value) -> &str {
    job["error"]["code"].as_str().unwrap_or("")
}

fn sha256_hex(data: &[u8]) -> String {
    bits_server::hex(&Sha256::digest(data))
}

// ---------------------------------------------------------------------------
// tus, against @tus/server
// ---------------------------------------------------------------------------

/// The one upload the tus server holds.
fn only_upload(tus: &TusServer) -> String {
    let ids = tus.upload_ids();
    assert_eq!(ids.len(), 1, "the tus server holds {ids:?}");
    ids[0].clone()
}

#[test]
fn ferry_upload_sends_64_mib_to_a_real_tus_server_byte_identical() {
    let tus = TusServer::start();
    let mut daemon = daemon();
    daemon.start(ferry());
    let files = tempfile::tempdir().unwrap();
    let size = 64 * MIB;
    let file = source(files.path(), "big.bin", size);

    // No --protocol: the plugin finds out the server speaks tus.
    let run = daemon
        .run(
            ferry(),
            &["upload", file.to_str().unwrap(), &tus.url(), "--json"],
        )
        .ok();
    let done = run.json();
    assert_eq!(done["state"], "acknowledged", "{done}");
    assert_eq!(done["bytes"], size);

    let id = only_upload(&tus);
    assert!(
        tus.upload_bytes(&id) == pattern_bytes(0..size),
        "the server's bytes differ from the source"
    );
    let upload = tus.upload_info(&id);
    assert_eq!(upload["size"], size, "{upload}");
    assert_eq!(upload["metadata"]["filename"], "big.bin", "{upload}");
    // Discovery, creation, then PATCHes contiguous from 0 in chunks.
    let methods: Vec<String> = tus
        .requests()
        .iter()
        .map(|r| r["method"].as_str().unwrap().to_string())
        .collect();
    let first = methods.iter().position(|m| m != "OPTIONS").unwrap();
    assert!(first > 0, "no discovery: {methods:?}");
    assert_eq!(methods[first], "POST", "{methods:?}");
    let offsets = tus.patch_offsets();
    let expected = tus_patch_offsets(size);
    assert_eq!(offsets, expected);
    tus.wait_for_event("the upload's end", |e| e["event"] == "finish");
}

#[test]
fn tus_checksums_go_with_every_patch_when_offered_and_a_damaged_patch_is_sent_again() {
    let tus = TusServer::start_with_checksum(true);
    let mut daemon = daemon();
    daemon.start(ferry());
    let files = tempfile::tempdir().unwrap();
    let size = 20 * MIB + 3;
    let file = source(files.path(), "checked.bin", size);
    daemon
        .run(
            ferry(),
            &[
                "upload",
                file.to_str().unwrap(),
                &tus.url(),
                "--protocol",
                "tus",
            ],
        )
        .ok();
    let id = only_upload(&tus);
    assert!(tus.upload_bytes(&id) == pattern_bytes(0..size));
    // The server found the first PATCH damaged (460) and got it again.
    let patches: Vec<(String, u64)> = tus
        .requests()
        .iter()
        .filter(|r| r["method"] == "PATCH")
        .map(|r| {
            (
                r["upload_offset"].as_str().unwrap_or("").to_string(),
                r["status"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(patches[0], ("0".to_string(), 460), "{patches:?}");
    assert_eq!(patches[1], ("0".to_string(), 204), "{patches:?}");
    assert_eq!(
        patches.len(),
        1 + tus_patch_offsets(size).len(),
        "{patches:?}"
    );
}

#[test]
fn ctrl_c_leaves_a_ferry_upload_running_in_the_daemon() {
    let rt = runtime();
    let tus = TusServer::start();
    let proxy = rt.block_on(Proxy::start(tus.addr()));
    proxy.set_rate(4 * MIB);
    let mut daemon = daemon();
    daemon.start(ferry());
    let files = tempfile::tempdir().unwrap();
    let size = 16 * MIB;
    let file = source(files.path(), "interrupted.bin", size);
    let url = format!("http://{}/files", proxy.addr());
    let mut cli = daemon
        .command(ferry())
        .args(["upload", file.to_str().unwrap(), &url])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Bounded: the job shows up with bytes on their way.
    let mut id = None;
    for _ in 0..600 {
        let jobs = daemon.run(ferry(), &["list", "--json"]).ok().json();
        if let Some(job) = jobs.as_array().unwrap().first()
            && job["state"] == "transferring"
        {
            id = job["id"].as_str().map(str::to_string);
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let id = id.expect("ferry upload started no job");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(cli.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let status = cli.wait().unwrap();
    let mut stderr = String::new();
    cli.stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert_eq!(status.code(), Some(130), "{stderr}");
    assert!(stderr.contains(&format!("job {id} goes on")), "{stderr}");
    proxy.set_rate(0);
    wait_state(&daemon, &id, "transferred");
    daemon.run(ferry(), &["complete", &id]).ok();
    assert!(tus.upload_bytes(&only_upload(&tus)) == pattern_bytes(0..size));
}

#[test]
fn a_connection_dropped_mid_patch_resumes_from_the_tus_servers_offset() {
    let rt = runtime();
    let tus = TusServer::start();
    let proxy = rt.block_on(Proxy::start(tus.addr()));
    let mut daemon = daemon();
    daemon.start(ferry());
    let files = tempfile::tempdir().unwrap();
    let size = 24 * MIB;
    let file = source(files.path(), "cut.bin", size);
    // Cut the connection in the middle of the second PATCH's body.
    proxy.cut_after(CHUNK + 3 * MIB);
    let url = format!("http://{}/files", proxy.addr());
    daemon
        .run(
            ferry(),
            &["upload", file.to_str().unwrap(), &url, "--protocol", "tus"],
        )
        .ok();

    assert_eq!(proxy.cuts(), 1, "the proxy cut no connection");
    let id = only_upload(&tus);
    assert!(tus.upload_bytes(&id) == pattern_bytes(0..size));
    // The server's log: after the broken PATCH at CHUNK, a HEAD told the
    // offset the server had kept, and the next PATCH started there, not at 0.
    let requests = tus.requests();
    let head = requests
        .iter()
        .position(|r| r["method"] == "HEAD")
        .unwrap_or_else(|| panic!("no HEAD after the cut: {requests:#?}"));
    let kept: u64 = requests[head]["answer_offset"]
        .as_u64()
        .or_else(|| requests[head]["answer_offset"].as_str()?.parse().ok())
        .unwrap_or_else(|| panic!("the HEAD has no offset: {:?}", requests[head]));
    assert!(
        kept > CHUNK,
        "the server kept nothing of the broken PATCH: {kept}"
    );
    let next_patch = requests[head..]
        .iter()
        .find(|r| r["method"] == "PATCH")
        .expect("a PATCH after the HEAD");
    assert_eq!(next_patch["upload_offset"], kept.to_string());
    assert!(
        !tus.patch_offsets()[1..].contains(&0),
        "a PATCH started over from zero: {:?}",
        tus.patch_offsets()
    );
    // Nothing the server held was sent twice: beyond the request heads and
    // the chunked framing of the bodies, not even one MiB more than the file.
    assert!(
        proxy.bytes_sent() < size + MIB,
        "{} bytes sent for {size}",
        proxy.bytes_sent()
    );
}

#[test]
fn kill_9_mid_tus_upload_goes_on_from_the_servers_offset_after_restart() {
    let rt = runtime();
    let tus = TusServer::start();
    let proxy = rt.block_on(Proxy::start(tus.addr()));
    proxy.set_rate(8 * MIB);
    let mut daemon = daemon();
    daemon.start(ferry());
    let files = tempfile::tempdir().unwrap();
    let size = 32 * MIB;
    let file = source(files.path(), "crash.bin", size);
    let url = format!("http://{}/files", proxy.addr());
    let id = upload_job(&daemon, "upload", &url, &file, &["--protocol", "tus"]);
    daemon.run(ferry(), &["resume", &id]).ok();
    let before = wait_bytes(&daemon, &id, CHUNK);
    assert_ne!(before["state"], "error", "{before:#}");

    daemon.kill();
    let sent_before = proxy.bytes_sent();
    proxy.set_rate(0);
    daemon.start(ferry());
    let job = wait_state(&daemon, &id, "transferred");
    assert_eq!(job["files"][0]["bytes_transferred"], size);
    daemon.run(ferry(), &["complete", &id]).ok();

    let upload = only_upload(&tus);
    assert!(tus.upload_bytes(&upload) == pattern_bytes(0..size));
    // After the restart the upload went on where the server stood: one
    // HEAD, then PATCHes from its offset; what was sent again is less than
    // one chunk (the checkpoint interval of an acknowledged PATCH).
    let offsets = tus.patch_offsets();
    assert!(
        offsets.iter().filter(|&&o| o == 0).count() == 1,
        "the upload started over: {offsets:?}"
    );
    assert!(
        proxy.bytes_sent() < size + CHUNK,
        "{} bytes sent for {size} ({sent_before} before the crash)",
        proxy.bytes_sent()
    );
}

#[test]
fn cancel_terminates_the_upload_on_the_tus_server() {
    let rt = runtime();
    let tus = TusServer::start();
    let proxy = rt.block_on(Proxy::start(tus.addr()));
    proxy.set_rate(4 * MIB);
    let mut daemon = daemon();
    daemon.start(ferry());
    let files = tempfile::tempdir().unwrap();
    let file = source(files.path(), "cancel.bin", 32 * MIB);
    let url = format!("http://{}/files", proxy.addr());
    let id = upload_job(&daemon, "upload", &url, &file, &["--protocol", "tus"]);
    daemon.run(ferry(), &["resume", &id]).ok();
    wait_bytes(&daemon, &id, CHUNK);
    let upload = only_upload(&tus);
    proxy.set_rate(0);

    daemon.run(ferry(), &["cancel", &id]).ok();
    tus.wait_for_event("the upload's termination", |e| {
        e["event"] == "terminate" || (e["method"] == "DELETE" && e["status"] == 204)
    });
    assert!(
        tus.upload_ids().is_empty(),
        "the server still holds {upload}: {:?}",
        tus.upload_ids()
    );
}

#[test]
fn a_source_changed_mid_tus_upload_is_local_file_changed() {
    let rt = runtime();
    let tus = TusServer::start();
    let proxy = rt.block_on(Proxy::start(tus.addr()));
    proxy.set_rate(4 * MIB);
    let mut daemon = daemon();
    daemon.start(ferry());
    let files = tempfile::tempdir().unwrap();
    let size = 32 * MIB;
    let file = source(files.path(), "changing.bin", size);
    let url = format!("http://{}/files", proxy.addr());
    let id = upload_job(&daemon, "upload", &url, &file, &["--protocol", "tus"]);
    daemon.run(ferry(), &["resume", &id]).ok();
    wait_bytes(&daemon, &id, CHUNK);

    // Same size, other bytes, a later modification time.
    std::thread::sleep(Duration::from_millis(20));
    let mut other = pattern_bytes(0..size);
    other.reverse();
    std::fs::write(&file, other).unwrap();
    proxy.set_rate(0);
    let job = wait_for_job(&daemon, ferry(), &id, |j| j["state"] == "error");
    assert_eq!(error_code(&job), "local-file-changed", "{job:#}");
    assert_eq!(job["error"]["context"], "local-file");
}

#[test]
fn digest_verify_passes_against_the_tus_servers_repr_digest() {
    let tus = TusServer::start_with(TusReply::Digest);
    let mut daemon = daemon();
    daemon.start(ferry());
    let files = tempfile::tempdir().unwrap();
    let file = source(files.path(), "verified.bin", 3 * MIB + 7);
    let id = upload_job(
        &daemon,
        "upload-reply",
        &tus.url(),
        &file,
        &["--protocol", "tus", "--reply-processor", "digest-verify"],
    );
    daemon.run(ferry(), &["resume", &id]).ok();
    wait_state(&daemon, &id, "transferred");
    let reply = daemon.run(ferry(), &["reply", &id, "--json"]).ok().json();
    assert_eq!(reply["status"], 200, "{reply}");
    assert_eq!(reply["processor"], "digest-verify");
    let body: Value = serde_json::from_str(reply["data"].as_str().unwrap()).unwrap();
    assert_eq!(body["sha256"], sha256_hex(&std::fs::read(&file).unwrap()));
    daemon.run(ferry(), &["complete", &id]).ok();
}

#[test]
fn digest_verify_fails_the_job_when_the_tus_server_reports_another_digest() {
    let tus = TusServer::start_with(TusReply::WrongDigest);
    let mut daemon = daemon();
    daemon.start(ferry());
    let files = tempfile::tempdir().unwrap();
    let file = source(files.path(), "tampered.bin", MIB);
    let id = upload_job(
        &daemon,
        "upload-reply",
        &tus.url(),
        &file,
        &["--protocol", "tus", "--reply-processor", "digest-verify"],
    );
    daemon.run(ferry(), &["resume", &id]).ok();
    let job = wait_for_job(&daemon, ferry(), &id, |j| j["state"] == "error");
    assert_eq!(error_code(&job), "digest-mismatch", "{job:#}");
    assert_eq!(job["error"]["class"], "fatal");
    let refused = daemon.run(ferry(), &["reply", &id, "--json"]);
    assert_ne!(
        refused.status, 0,
        "a job in error has no reply: {}",
        refused.stdout
    );
}

#[test]
fn digest_verify_checks_a_resumed_upload_against_the_whole_source() {
    let rt = runtime();
    let tus = TusServer::start_with(TusReply::Digest);
    let proxy = rt.block_on(Proxy::start(tus.addr()));
    let mut daemon = daemon();
    daemon.start(ferry());
    let files = tempfile::tempdir().unwrap();
    let file = source(files.path(), "resumed.bin", 24 * MIB);
    let url = format!("http://{}/files", proxy.addr());
    let settings = [
        "--protocol",
        "tus",
        "--reply-processor",
        "digest-verify",
        "--reply-option",
        "unverifiable=fail",
    ];
    let id = upload_job(&daemon, "upload-reply", &url, &file, &settings);
    // It gets under way, then the daemon dies: after the restart the plugin
    // reads only what the server lacks, and the host takes the digest of the
    // whole source from the file instead.
    proxy.set_rate(8 * MIB);
    daemon.run(ferry(), &["resume", &id]).ok();
    wait_bytes(&daemon, &id, CHUNK);
    daemon.run(ferry(), &["suspend", &id]).ok();
    daemon.kill();
    proxy.set_rate(0);
    daemon.start(ferry());
    daemon.run(ferry(), &["resume", &id]).ok();
    wait_state(&daemon, &id, "transferred");
    let reply = daemon.run(ferry(), &["reply", &id, "--json"]).ok().json();
    assert_eq!(reply["processor"], "digest-verify", "{reply}");
    let body: Value = serde_json::from_str(reply["data"].as_str().unwrap()).unwrap();
    assert_eq!(body["sha256"], sha256_hex(&std::fs::read(&file).unwrap()));
}

// ---------------------------------------------------------------------------
// The BITS upload protocol, against the suite's BITS server
// ---------------------------------------------------------------------------

/// One raw request over a fresh connection: the status, the headers.
fn raw(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Vec<(String, String)>) {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).unwrap();
    let text = String::from_utf8_lossy(&answer);
    let mut lines = text.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let headers = lines
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers)
}

fn get<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

#[test]
fn the_bits_server_follows_the_specification() {
    let rt = runtime();
    let server = rt.block_on(BitsServer::start());
    let addr = server.addr();
    let post =
        |headers: &[(&str, &str)], body: &[u8]| raw(addr, "BITS_POST", "/bits/f", headers, body);

    let (status, h) = post(&[("bits-packet-type", "Ping")], b"");
    assert_eq!((status, get(&h, "bits-packet-type")), (200, Some("Ack")));
    let (status, h) = post(
        &[
            ("bits-packet-type", "Create-Session"),
            ("bits-supported-protocols", UPLOAD_PROTOCOL),
        ],
        b"",
    );
    assert_eq!(status, 200);
    assert_eq!(get(&h, "bits-protocol"), Some(UPLOAD_PROTOCOL));
    let session = get(&h, "bits-session-id").unwrap().to_string();
    let fragment = |range: &str, body: &[u8]| {
        post(
            &[
                ("bits-packet-type", "Fragment"),
                ("bits-session-id", &session),
                ("content-range", range),
            ],
            body,
        )
    };

    // Fragments are contiguous from 0.
    let (status, h) = fragment("bytes 0-3/10", b"0123");
    assert_eq!(
        (status, get(&h, "bits-received-content-range")),
        (200, Some("4"))
    );
    // A gap: 416, and the offset the next fragment must start at.
    let (status, h) = fragment("bytes 6-7/10", b"67");
    assert_eq!(
        (status, get(&h, "bits-received-content-range")),
        (416, Some("4"))
    );
    // An overlap: the same, nothing taken twice.
    let (status, h) = fragment("bytes 2-5/10", b"2345");
    assert_eq!(
        (status, get(&h, "bits-received-content-range")),
        (416, Some("4"))
    );
    assert_eq!(server.sessions()[0].received, b"0123");
    // A range the body does not match: E_INVALIDARG.
    let (status, h) = fragment("bytes 4-9/10", b"45");
    assert_eq!(
        (status, get(&h, "bits-error-code")),
        (400, Some(bits_server::E_INVALIDARG))
    );
    // The last fragment names the reply.
    let (status, h) = fragment("bytes 4-9/10", b"456789");
    assert_eq!(
        (status, get(&h, "bits-received-content-range")),
        (200, Some("10"))
    );
    let reply_url = get(&h, "bits-reply-url").expect("a reply URL").to_string();
    let (status, h) = raw(addr, "GET", &reply_url, &[], b"");
    assert_eq!(status, 200);
    assert!(get(&h, "repr-digest").is_some());
    let (status, _) = post(
        &[
            ("bits-packet-type", "Close-Session"),
            ("bits-session-id", &session),
        ],
        b"",
    );
    assert_eq!(status, 200);
    assert!(server.sessions()[0].closed);

    // An unknown session: 500, BG_E_SESSION_NOT_FOUND.
    let (status, h) = post(
        &[
            ("bits-packet-type", "Fragment"),
            ("bits-session-id", "{00000000-0000-0000-0000-000000000000}"),
            ("content-range", "bytes 0-0/1"),
        ],
        b"x",
    );
    assert_eq!(
        (status, get(&h, "bits-error-code")),
        (500, Some(BG_E_SESSION_NOT_FOUND))
    );
    assert_eq!(get(&h, "bits-error-context"), Some("0x5"));

    // Close before the last fragment deletes what came.
    let (_, h) = post(
        &[
            ("bits-packet-type", "Create-Session"),
            ("bits-supported-protocols", UPLOAD_PROTOCOL),
        ],
        b"",
    );
    let early = get(&h, "bits-session-id").unwrap().to_string();
    post(
        &[
            ("bits-packet-type", "Fragment"),
            ("bits-session-id", &early),
            ("content-range", "bytes 0-1/4"),
        ],
        b"ab",
    );
    let (status, _) = post(
        &[
            ("bits-packet-type", "Close-Session"),
            ("bits-session-id", &early),
        ],
        b"",
    );
    assert_eq!(status, 400);
    let deleted = server
        .sessions()
        .into_iter()
        .find(|s| s.id == early)
        .unwrap();
    assert!(
        deleted.deleted && deleted.received.is_empty(),
        "{deleted:?}"
    );
}

/// Asserts that every request of `server` with a body declared its length
/// (`Content-Length`), and none came in chunked coding: the BITS upload
/// protocol gives a Fragment's length there, and a known length is what curl
/// sends.
fn assert_bodies_declare_their_length(server: &BitsServer) {
    let with_body: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|r| r.body_len > 0)
        .collect();
    assert!(!with_body.is_empty());
    for r in with_body {
        assert!(!r.chunked, "{r:?}");
        assert_eq!(r.declared_length, Some(r.body_len.to_string()), "{r:?}");
    }
}

/// The Fragment requests the server answered, as (Content-Range, status).
fn fragments(server: &BitsServer) -> Vec<(String, u16)> {
    server
        .requests()
        .into_iter()
        .filter(|r| r.packet.as_deref() == Some("Fragment"))
        .map(|r| (r.range.unwrap_or_default(), r.status))
        .collect()
}

#[test]
fn bits_upload_reply_through_the_cli_fetches_the_reply_before_close_session() {
    let rt = runtime();
    let server = rt.block_on(BitsServer::start());
    let mut daemon = daemon();
    daemon.start(ferry());
    let files = tempfile::tempdir().unwrap();
    let size = 20 * MIB + 5;
    let file = source(files.path(), "report.bin", size);

    // No --protocol: not tus (OPTIONS), but a BITS Ping is acknowledged.
    let done = daemon
        .run(
            ferry(),
            &[
                "upload",
                file.to_str().unwrap(),
                &server.bits_url("report.bin"),
                "--reply",
                "--json",
            ],
        )
        .ok()
        .json();
    assert_eq!(done["state"], "acknowledged", "{done}");
    let reply: Value = serde_json::from_str(done["reply"]["body"].as_str().unwrap()).unwrap();
    assert_eq!(reply["sha256"], sha256_hex(&pattern_bytes(0..size)));
    assert_eq!(reply["name"], "report.bin");

    let sessions = server.sessions();
    assert_eq!(sessions.len(), 1);
    assert!(sessions[0].closed);
    assert!(sessions[0].received == pattern_bytes(0..size));
    // Fragments contiguous from 0, each acknowledged.
    let ranges = fragments(&server);
    let expected: Vec<(String, u16)> = (0..size)
        .step_by(CHUNK as usize)
        .map(|first| {
            (
                format!("bytes {first}-{}/{size}", (first + CHUNK).min(size) - 1),
                200,
            )
        })
        .collect();
    assert_eq!(ranges, expected, "{}", daemon.log());
    assert_bodies_declare_their_length(&server);
    // The reply was fetched before Close-Session.
    let order: Vec<String> = server
        .requests()
        .iter()
        .map(|r| r.packet.clone().unwrap_or_else(|| r.method.clone()))
        .filter(|p| p != "Fragment")
        .collect();
    assert_eq!(
        order,
        ["OPTIONS", "Ping", "Create-Session", "GET", "Close-Session"]
    );
}

#[test]
fn a_bits_fragment_cut_mid_body_resumes_at_the_servers_received_range() {
    let rt = runtime();
    let server = rt.block_on(BitsServer::start());
    let proxy = rt.block_on(Proxy::start(server.addr()));
    let mut daemon = daemon();
    daemon.start(ferry());
    let files = tempfile::tempdir().unwrap();
    let size = 20 * MIB;
    let file = source(files.path(), "cut.bin", size);
    proxy.cut_after(CHUNK + MIB);
    let url = format!("http://{}/bits/cut.bin", proxy.addr());
    daemon
        .run(
            ferry(),
            &["upload", file.to_str().unwrap(), &url, "--protocol", "bits"],
        )
        .ok();
    assert_eq!(proxy.cuts(), 1);
    let session = &server.sessions()[0];
    assert!(session.closed && session.received == pattern_bytes(0..size));
    // The broken fragment was dropped whole by the server; the next one,
    // one byte at zero, overlapped and was answered 416 with where to go on.
    let ranges = fragments(&server);
    assert_eq!(ranges[0], (format!("bytes 0-{}/{size}", CHUNK - 1), 200));
    assert_eq!(ranges[1], (format!("bytes 0-0/{size}"), 416));
    assert_eq!(
        ranges[2].0,
        format!("bytes {CHUNK}-{}/{size}", 2 * CHUNK - 1)
    );
}

#[test]
fn kill_9_mid_bits_upload_resumes_the_session_and_cancel_cancels_it() {
    let rt = runtime();
    let server = rt.block_on(BitsServer::start());
    let proxy = rt.block_on(Proxy::start(server.addr()));
    proxy.set_rate(8 * MIB);
    let mut daemon = daemon();
    daemon.start(ferry());
    let files = tempfile::tempdir().unwrap();
    let size = 32 * MIB;
    let file = source(files.path(), "crash.bin", size);
    let url = format!("http://{}/bits/crash.bin", proxy.addr());
    let id = upload_job(&daemon, "upload", &url, &file, &["--protocol", "bits"]);
    daemon.run(ferry(), &["resume", &id]).ok();
    wait_bytes(&daemon, &id, CHUNK);
    daemon.kill();
    proxy.set_rate(0);
    daemon.start(ferry());
    wait_state(&daemon, &id, "transferred");
    daemon.run(ferry(), &["complete", &id]).ok();
    let sessions = server.sessions();
    assert_eq!(
        sessions.len(),
        1,
        "the restart made a new session: {sessions:?}"
    );
    assert!(sessions[0].closed && sessions[0].received == pattern_bytes(0..size));
    assert!(
        proxy.bytes_sent() < size + CHUNK,
        "{} bytes sent for {size}",
        proxy.bytes_sent()
    );

    // Cancel mid-upload: Cancel-Session, and the server drops it.
    proxy.set_rate(4 * MIB);
    let id = upload_job(&daemon, "upload", &url, &file, &["--protocol", "bits"]);
    daemon.run(ferry(), &["resume", &id]).ok();
    wait_bytes(&daemon, &id, CHUNK);
    proxy.set_rate(0);
    daemon.run(ferry(), &["cancel", &id]).ok();
    for _ in 0..600 {
        if server.sessions().get(1).is_some_and(|s| s.deleted) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "the server never got Cancel-Session: {:?}",
        server.requests()
    );
}

#[test]
fn an_expired_bits_session_starts_over_with_a_new_one() {
    let rt = runtime();
    let server = rt.block_on(BitsServer::start());
    let proxy = rt.block_on(Proxy::start(server.addr()));
    proxy.set_rate(8 * MIB);
    let mut daemon = daemon();
    daemon.start(ferry());
    let files = tempfile::tempdir().unwrap();
    let size = 24 * MIB;
    let file = source(files.path(), "expired.bin", size);
    let url = format!("http://{}/bits/expired.bin", proxy.addr());
    let id = upload_job(&daemon, "upload", &url, &file, &["--protocol", "bits"]);
    daemon.run(ferry(), &["resume", &id]).ok();
    wait_bytes(&daemon, &id, CHUNK);
    daemon.kill();
    let first = server.sessions()[0].id.clone();
    server.forget_session(&first);
    proxy.set_rate(0);
    daemon.start(ferry());
    wait_state(&daemon, &id, "transferred");
    let sessions = server.sessions();
    assert_eq!(sessions.len(), 1);
    assert_ne!(sessions[0].id, first);
    assert!(sessions[0].closed && sessions[0].received == pattern_bytes(0..size));
}

// ---------------------------------------------------------------------------
// Single-shot PUT
// ---------------------------------------------------------------------------

#[test]
fn a_single_shot_put_uploads_and_an_interruption_starts_it_over_from_zero() {
    let rt = runtime();
    let server = rt.block_on(BitsServer::start());
    let proxy = rt.block_on(Proxy::start(server.addr()));
    let mut daemon = daemon();
    daemon.start(ferry());
    let files = tempfile::tempdir().unwrap();
    let size = 6 * MIB;
    let file = source(files.path(), "plain.bin", size);
    proxy.cut_after(2 * MIB);
    let url = format!("http://{}/plain/plain.bin", proxy.addr());
    let id = upload_job(
        &daemon,
        "upload-reply",
        &url,
        &file,
        &["--protocol", "put", "--retry-delay", "5"],
    );
    daemon.run(ferry(), &["resume", &id]).ok();
    let failed = wait_for_job(&daemon, ferry(), &id, |j| {
        j["state"] == "transient_error" || j["state"] == "transferred" || j["state"] == "error"
    });
    assert_eq!(failed["state"], "transient_error", "{failed:#}");
    let message = failed["error"]["message"].as_str().unwrap_or("");
    assert!(message.contains("starts over from zero"), "{message}");
    assert_eq!(failed["files"][0]["bytes_transferred"], 0);
    // The retry sends it all again, in one PUT.
    wait_state(&daemon, &id, "transferred");
    assert!(server.plain("plain.bin").unwrap() == pattern_bytes(0..size));
    let reply = daemon.run(ferry(), &["reply", &id, "--json"]).ok().json();
    assert_eq!(reply["status"], 201);
    assert!(
        proxy.bytes_sent() > size + MIB,
        "the retry did not start from zero"
    );
    assert_bodies_declare_their_length(&server);
}

// ---------------------------------------------------------------------------
// Replies and reply processors
// ---------------------------------------------------------------------------

#[test]
fn json_value_extracts_a_field_of_the_reply_as_ferry_reply_shows_it() {
    let rt = runtime();
    let server = rt.block_on(BitsServer::start());
    let mut daemon = daemon();
    daemon.start(ferry());
    let files = tempfile::tempdir().unwrap();
    let file = source(files.path(), "doc.bin", 100_000);
    let id = upload_job(
        &daemon,
        "upload-reply",
        &server.bits_url("doc.bin"),
        &file,
        &[
            "--protocol",
            "bits",
            "--reply-processor",
            "json-value",
            "--reply-option",
            "pointer=/sha256",
        ],
    );
    daemon.run(ferry(), &["resume", &id]).ok();
    let job = wait_state(&daemon, &id, "transferred");
    assert_eq!(job["reply"]["status"], 200, "{job:#}");
    let digest = sha256_hex(&pattern_bytes(0..100_000));
    let human = daemon.run(ferry(), &["reply", &id]).ok();
    assert_eq!(human.stdout, digest);
    let json = daemon.run(ferry(), &["reply", &id, "--json"]).ok().json();
    assert_eq!(json["data"], digest.as_str());
    assert_eq!(json["processor"], "json-value");
    let done = daemon
        .run(ferry(), &["complete", &id, "--json"])
        .ok()
        .json();
    assert_eq!(done["reply"]["data"], digest.as_str());

    // A pointer to nothing fails the job with a typed error.
    let id = upload_job(
        &daemon,
        "upload-reply",
        &server.bits_url("doc2.bin"),
        &file,
        &[
            "--reply-processor",
            "json-value",
            "--reply-option",
            "pointer=/nothing",
        ],
    );
    daemon.run(ferry(), &["resume", &id]).ok();
    let job = wait_for_job(&daemon, ferry(), &id, |j| j["state"] == "error");
    assert_eq!(error_code(&job), "json-pointer-not-found", "{job:#}");
}

#[test]
fn digest_verify_passes_and_a_mismatch_is_digest_mismatch() {
    let rt = runtime();
    let server = rt.block_on(BitsServer::start());
    let mut daemon = daemon();
    daemon.start(ferry());
    let files = tempfile::tempdir().unwrap();
    let file = source(files.path(), "checked.bin", 9 * MIB);
    let settings = ["--protocol", "bits", "--reply-processor", "digest-verify"];
    let id = upload_job(
        &daemon,
        "upload-reply",
        &server.bits_url("a"),
        &file,
        &settings,
    );
    daemon.run(ferry(), &["resume", &id]).ok();
    wait_state(&daemon, &id, "transferred");
    let reply = daemon.run(ferry(), &["reply", &id, "--json"]).ok().json();
    assert_eq!(reply["processor"], "digest-verify");
    daemon.run(ferry(), &["complete", &id]).ok();

    // The JSON field instead of the header.
    let json_settings = [
        "--protocol",
        "bits",
        "--reply-processor",
        "digest-verify",
        "--reply-option",
        "json=/sha256",
    ];
    let id = upload_job(
        &daemon,
        "upload-reply",
        &server.bits_url("b"),
        &file,
        &json_settings,
    );
    daemon.run(ferry(), &["resume", &id]).ok();
    wait_state(&daemon, &id, "transferred");

    server.set_wrong_digest();
    let id = upload_job(
        &daemon,
        "upload-reply",
        &server.bits_url("c"),
        &file,
        &settings,
    );
    daemon.run(ferry(), &["resume", &id]).ok();
    let job = wait_for_job(&daemon, ferry(), &id, |j| j["state"] == "error");
    assert_eq!(error_code(&job), "digest-mismatch", "{job:#}");
    assert_eq!(job["error"]["class"], "fatal");
    assert_eq!(job["error"]["context"], "remote-file");
}

#[test]
fn a_5_mib_reply_lands_in_the_reply_file_on_complete_and_without_one_is_reply_too_large() {
    let rt = runtime();
    let server = rt.block_on(BitsServer::start());
    server.set_reply_size(5 * MIB);
    let mut daemon = daemon();
    daemon.start(ferry());
    let files = tempfile::tempdir().unwrap();
    let file = source(files.path(), "big-reply.bin", MIB);
    let reply_file = files.path().join("reply.out");
    let id = upload_job(
        &daemon,
        "upload-reply",
        &server.bits_url("r"),
        &file,
        &[
            "--protocol",
            "bits",
            "--reply-file",
            reply_file.to_str().unwrap(),
        ],
    );
    daemon.run(ferry(), &["resume", &id]).ok();
    let job = wait_state(&daemon, &id, "transferred");
    assert_eq!(job["reply"]["bytes"], 5 * MIB);
    assert!(
        !reply_file.exists(),
        "the reply file is there before complete"
    );
    // Over 1 MiB there is no reply data: the reply file gets it all.
    let reply = daemon.run(ferry(), &["reply", &id]).ok();
    assert_eq!(reply.stdout, "");
    assert!(reply.stderr.contains("no reply data"), "{}", reply.stderr);
    let reply = daemon.run(ferry(), &["reply", &id, "--json"]).ok().json();
    assert_eq!(
        (reply["bytes"].as_u64(), reply["in_file"].as_bool()),
        (Some(5 * MIB), Some(true))
    );
    assert_eq!(reply["data_base64"], "");
    daemon.run(ferry(), &["complete", &id]).ok();
    // A job without a reply: a typed refusal.
    let download = daemon.run(ferry(), &["create", "--json"]).ok().json();
    let refused = daemon.run(
        ferry(),
        &["reply", download["id"].as_str().unwrap(), "--json"],
    );
    assert_eq!(refused.status, 1);
    assert_eq!(error_code(&refused.json()), "invalid-state");
    assert!(std::fs::read(&reply_file).unwrap() == pattern_bytes(0..5 * MIB));

    let id = upload_job(
        &daemon,
        "upload-reply",
        &server.bits_url("s"),
        &file,
        &["--protocol", "bits"],
    );
    daemon.run(ferry(), &["resume", &id]).ok();
    let job = wait_for_job(&daemon, ferry(), &id, |j| j["state"] == "error");
    assert_eq!(error_code(&job), "reply-too-large", "{job:#}");
}

//! The local API itself, over the real socket: the OpenAPI document matches
//! the server route for route, bad input gets typed errors and leaves the
//! daemon unharmed, and users only see their own jobs (with real Unix users
//! when the tests run as root).

use bytes::Bytes;
use ferry::api::{ROUTES, views::HealthView};
use ferry::cli::client::Client;
use ferry_tests::daemon::{Daemon, Run, wait_for_job};
use ferry_tests::server::{Resource, TestServer, pattern_bytes};
use ferry_tests::users::TestUser;
use http::{Method, StatusCode};
use std::collections::BTreeSet;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;

fn ferry() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_ferry-cli"))
}

const OPENAPI: &str = include_str!("../../host/openapi.json");

async fn call(
    client: &mut Client,
    method: Method,
    path: &str,
    body: &str,
) -> (StatusCode, serde_json::Value) {
    let (status, bytes) = client
        .raw(method, path, Bytes::from(body.to_string()))
        .await
        .expect("the daemon answers");
    let value = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    (status, value)
}

async fn new_job(client: &mut Client) -> String {
    let (status, body) = call(client, Method::POST, "/v1/jobs", "{}").await;
    assert_eq!(status, StatusCode::CREATED);
    body["id"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_and_the_server_have_the_same_routes_and_statuses() {
    let doc: serde_json::Value = serde_json::from_str(OPENAPI).unwrap();
    let documented: BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .map(move |m| (m.to_uppercase(), path.clone()))
        })
        .collect();
    let served: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(m, p, _)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(
        documented, served,
        "host/openapi.json and the route table differ"
    );

    let mut daemon = Daemon::new("");
    tokio::task::block_in_place(|| daemon.start(ferry()));
    let mut client = Client::connect(&daemon.socket).await.unwrap();
    for (method, path) in &documented {
        // Each route on a fresh job, with an empty JSON object as the body.
        let id = new_job(&mut client).await;
        let concrete = path.replace("{id}", &id);
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let body = if method == Method::GET { "" } else { "{}" };
        let (status, bytes) = if path.ends_with("events") {
            // An event stream never ends by itself: only its head is checked.
            let stream = client.events(&concrete).await;
            assert!(stream.is_ok(), "{path}: {:?}", stream.err());
            (StatusCode::OK, Bytes::new())
        } else {
            client
                .raw(method.clone(), &concrete, Bytes::from(body))
                .await
                .unwrap()
        };
        let responses = &doc["paths"][path][method.as_str().to_lowercase()]["responses"];
        assert!(
            responses.get(status.as_str()).is_some(),
            "{method} {path} answered {status}, which is not documented: {}",
            String::from_utf8_lossy(&bytes)
        );
    }
    let (status, served_doc) = call(&mut client, Method::GET, "/v1/openapi.json", "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(served_doc, doc);
    // Undocumented routes and methods do not exist.
    let (status, body) = call(&mut client, Method::GET, "/v1/secret", "").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("no-such-route"))
    );
    let (status, body) = call(&mut client, Method::DELETE, "/v1/jobs", "").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::METHOD_NOT_ALLOWED, Some("method-not-allowed"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_typed_errors_and_leaves_the_daemon_unharmed() {
    let server = TestServer::start().await;
    server.put("/ok.bin", Resource::pattern(50_000));
    let mut daemon = Daemon::new("");
    tokio::task::block_in_place(|| daemon.start(ferry()));
    let mut client = Client::connect(&daemon.socket).await.unwrap();
    let id = new_job(&mut client).await;
    let files = format!("/v1/jobs/{id}/files");
    let dir = tempfile::tempdir().unwrap();
    let good_local = dir.path().join("ok.bin");
    let huge = format!("{{\"name\": \"{}\"}}", "x".repeat(2 << 20));
    let cases: Vec<(Method, String, String, StatusCode, &str)> = vec![
        (
            Method::POST,
            "/v1/jobs".into(),
            "{\"name\": ".into(),
            StatusCode::BAD_REQUEST,
            "invalid-json",
        ),
        (
            Method::POST,
            "/v1/jobs".into(),
            "not json at all".into(),
            StatusCode::BAD_REQUEST,
            "invalid-json",
        ),
        (
            Method::POST,
            "/v1/jobs".into(),
            "{\"nmae\": \"typo\"}".into(),
            StatusCode::BAD_REQUEST,
            "invalid-argument",
        ),
        (
            Method::POST,
            "/v1/jobs".into(),
            "{\"priority\": \"urgent\"}".into(),
            StatusCode::BAD_REQUEST,
            "invalid-argument",
        ),
        (
            Method::POST,
            "/v1/jobs".into(),
            huge,
            StatusCode::PAYLOAD_TOO_LARGE,
            "body-too-large",
        ),
        (
            Method::POST,
            files.clone(),
            format!("{{\"remote\": \"not a url\", \"local\": {:?}}}", good_local),
            StatusCode::BAD_REQUEST,
            "invalid-url",
        ),
        (
            Method::POST,
            files.clone(),
            format!(
                "{{\"remote\": \"gopher://h/x\", \"local\": {:?}}}",
                good_local
            ),
            StatusCode::BAD_REQUEST,
            "unsupported-scheme",
        ),
        (
            Method::POST,
            files.clone(),
            format!(
                "{{\"remote\": {:?}, \"local\": \"relative/x\"}}",
                server.url("/ok.bin")
            ),
            StatusCode::BAD_REQUEST,
            "invalid-local-path",
        ),
        (
            Method::POST,
            files.clone(),
            format!(
                "{{\"remote\": {:?}, \"local\": {:?}}}",
                server.url("/ok.bin"),
                dir.path().join("no/such/dir/x")
            ),
            StatusCode::BAD_REQUEST,
            "invalid-local-path",
        ),
        (
            Method::POST,
            files.clone(),
            format!(
                "{{\"remote\": {:?}, \"local\": {:?}}}",
                server.url("/ok.bin"),
                dir.path()
            ),
            StatusCode::BAD_REQUEST,
            "invalid-local-path",
        ),
        (
            Method::POST,
            files.clone(),
            format!(
                "{{\"remote\": {:?}, \"local\": {:?}, \"extra\": 1}}",
                server.url("/ok.bin"),
                good_local
            ),
            StatusCode::BAD_REQUEST,
            "invalid-argument",
        ),
        (
            Method::POST,
            files.clone(),
            format!(
                "{{\"remote\": {:?}, \"local\": {:?}, \"ranges\": [{{\"offset\": 0, \"length\": 10}}, {{\"offset\": 5, \"length\": 10}}]}}",
                server.url("/ok.bin"),
                good_local
            ),
            StatusCode::BAD_REQUEST,
            "overlapping-ranges",
        ),
        (
            Method::PATCH,
            format!("/v1/jobs/{id}"),
            "{\"headers\": [{\"name\": \"Bad Name\", \"value\": \"v\"}]}".into(),
            StatusCode::BAD_REQUEST,
            "invalid-argument",
        ),
        (
            Method::PATCH,
            format!("/v1/jobs/{id}"),
            "{\"credentials\": {\"scheme\": \"magic\"}}".into(),
            StatusCode::BAD_REQUEST,
            "invalid-argument",
        ),
        (
            Method::POST,
            format!("/v1/jobs/{id}/resume"),
            "{\"force\": true}".into(),
            StatusCode::BAD_REQUEST,
            "invalid-argument",
        ),
        (
            Method::POST,
            format!("/v1/jobs/{id}/resume"),
            String::new(),
            StatusCode::CONFLICT,
            "empty",
        ),
        (
            Method::GET,
            "/v1/jobs?everyone=1".into(),
            String::new(),
            StatusCode::BAD_REQUEST,
            "invalid-argument",
        ),
        (
            Method::GET,
            "/v1/jobs/no-such-job".into(),
            String::new(),
            StatusCode::NOT_FOUND,
            "not-found",
        ),
    ];
    for (method, path, body, status, code) in cases {
        let (got, answer) = call(&mut client, method.clone(), &path, &body).await;
        assert_eq!(
            (got, answer["error"]["code"].as_str()),
            (status, Some(code)),
            "{method} {path} {}: {answer}",
            &body[..body.len().min(200)]
        );
        assert!(
            answer["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
        // The daemon is unharmed: a new connection is served.
        let mut fresh = Client::connect(&daemon.socket).await.unwrap();
        let health: HealthView = fresh
            .call(Method::GET, "/v1/health", None::<&()>)
            .await
            .unwrap();
        assert_eq!(health.version, env!("CARGO_PKG_VERSION"));
        client = fresh;
    }
    // A huge body without a declared length (chunked) is refused as well,
    // and the refusal reaches a client that only reads once it sent it all.
    let answer = tokio::task::block_in_place(|| chunked_post(&daemon.socket, 2 << 20));
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("\"body-too-large\""), "{answer}");
    // Nothing lost: the job is still there, unchanged, and still works.
    let (status, job) = call(&mut client, Method::GET, &format!("/v1/jobs/{id}"), "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(job["state"], "suspended");
    assert_eq!(job["files"], serde_json::json!([]));
    let body = format!(
        "{{\"remote\": {:?}, \"local\": {:?}}}",
        server.url("/ok.bin"),
        good_local
    );
    assert_eq!(
        call(&mut client, Method::POST, &files, &body).await.0,
        StatusCode::OK
    );
    assert_eq!(
        call(
            &mut client,
            Method::POST,
            &format!("/v1/jobs/{id}/resume"),
            ""
        )
        .await
        .0,
        StatusCode::OK
    );
    tokio::task::block_in_place(|| {
        wait_for_job(&daemon, ferry(), &id, |j| j["state"] == "transferred");
    });
    assert_eq!(
        call(
            &mut client,
            Method::POST,
            &format!("/v1/jobs/{id}/complete"),
            "{}"
        )
        .await
        .0,
        StatusCode::OK
    );
    assert_eq!(
        std::fs::read(&good_local).unwrap(),
        pattern_bytes(0..50_000)
    );
}

/// Sends `POST /v1/jobs` with a chunked body of `len` bytes, written in full
/// before the answer is read, and returns the answer as text.
fn chunked_post(socket: &Path, len: usize) -> String {
    use std::io::{Read, Write};
    let mut stream = std::os::unix::net::UnixStream::connect(socket).unwrap();
    stream
        .write_all(b"POST /v1/jobs HTTP/1.1\r\nHost: ferry\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
        .unwrap();
    let chunk = vec![b' '; 64 * 1024];
    for _ in 0..len / chunk.len() {
        stream
            .write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
            .unwrap();
        stream.write_all(&chunk).unwrap();
        stream.write_all(b"\r\n").unwrap();
    }
    stream.write_all(b"0\r\n\r\n").unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
}

/// What these tests do as a throw-away user.
trait AsUser {
    fn run(&self, daemon: &Daemon, args: &[&str]) -> Run;
}

impl AsUser for TestUser {
    /// `ferry ARGS` run as this user with their groups (as in a login
    /// session: the daemon takes the caller's groups from the process),
    /// never starting a daemon. The binary is the copy in the daemon's
    /// directory (see `shared_binary`): the build's own directory may not be
    /// open to other users.
    fn run(&self, daemon: &Daemon, args: &[&str]) -> Run {
        let mut command = daemon.command(&daemon.dir.path().join("ferry-cli"));
        command
            .arg("--no-start")
            .args(args)
            .env("HOME", "/")
            .current_dir("/");
        let name = std::ffi::CString::new(self.name.clone()).unwrap();
        let groups =
            nix::unistd::getgrouplist(&name, nix::unistd::Gid::from_raw(self.gid)).unwrap();
        let (uid, gid) = (self.uid, self.gid);
        // SAFETY: between fork and exec only the setgroups, setgid and
        // setuid system calls run, on memory prepared before the fork.
        unsafe {
            command.pre_exec(move || {
                nix::unistd::setgroups(&groups)?;
                nix::unistd::setgid(nix::unistd::Gid::from_raw(gid))?;
                nix::unistd::setuid(nix::unistd::Uid::from_raw(uid))?;
                Ok(())
            });
        }
        Run::from(command.output().unwrap())
    }
}

fn code(run: &Run) -> String {
    run.json()["error"]["code"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

#[test]
fn users_see_and_change_only_their_own_jobs_and_root_sees_all() {
    if !nix::unistd::geteuid().is_root() {
        println!("skipped: creating throw-away users needs root");
        return;
    }
    // Alice is also in the system's `users` group.
    let users_gid = nix::unistd::Group::from_name("users")
        .ok()
        .flatten()
        .map(|g| g.gid.as_raw());
    let alice_groups: &[&str] = if users_gid.is_some() { &["users"] } else { &[] };
    let (Some(alice), Some(bob)) = (
        TestUser::create("a", alice_groups),
        TestUser::create("b", &[]),
    ) else {
        println!("skipped: useradd is not available");
        return;
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = runtime.block_on(TestServer::start());
    server.put("/o.bin", Resource::pattern(30_000));
    let mut daemon = Daemon::new("");
    // Everyone must reach the socket inside the temporary directory.
    std::fs::set_permissions(daemon.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&daemon.config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let shared_binary = daemon.dir.path().join("ferry-cli");
    std::fs::copy(ferry(), &shared_binary).unwrap();
    std::fs::set_permissions(&shared_binary, std::fs::Permissions::from_mode(0o755)).unwrap();
    daemon.start(ferry());

    // Alice's private download directory.
    let alice_dir = daemon.dir.path().join("alice");
    std::fs::create_dir(&alice_dir).unwrap();
    std::os::unix::fs::chown(&alice_dir, Some(alice.uid), Some(alice.gid)).unwrap();
    std::fs::set_permissions(&alice_dir, std::fs::Permissions::from_mode(0o700)).unwrap();

    let id = alice
        .run(&daemon, &["create", "--name", "mine", "--json"])
        .ok()
        .json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let dest = alice_dir.join("o.bin");
    alice
        .run(
            &daemon,
            &["add", &id, &server.url("/o.bin"), dest.to_str().unwrap()],
        )
        .ok();
    let notified = alice_dir.join("notified");
    alice
        .run(
            &daemon,
            &[
                "set",
                &id,
                "--notify-command",
                &format!("(id -u; id -G) > '{}'", notified.display()),
            ],
        )
        .ok();

    // Bob can neither see nor touch it, nor write into Alice's directory.
    for args in [
        vec!["info", id.as_str()],
        vec!["set", id.as_str(), "--priority", "low"],
        vec!["resume", id.as_str()],
        vec!["suspend", id.as_str()],
        vec!["complete", id.as_str()],
        vec!["cancel", id.as_str()],
        vec!["take-ownership", id.as_str()],
    ] {
        let mut with_json = args.clone();
        with_json.push("--json");
        let run = bob.run(&daemon, &with_json);
        assert_eq!(
            (run.status, code(&run)),
            (1, "access-denied".to_string()),
            "bob {args:?}"
        );
    }
    let bobs = bob.run(&daemon, &["list", "--json"]).ok().json();
    assert_eq!(bobs, serde_json::json!([]));
    let all = bob.run(&daemon, &["list", "--all-users", "--json"]);
    assert_eq!(code(&all), "access-denied");
    let bob_job = bob.run(&daemon, &["create", "--json"]).ok().json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let sneaky = alice_dir.join("from-bob");
    let denied = bob.run(
        &daemon,
        &[
            "add",
            &bob_job,
            &server.url("/o.bin"),
            sneaky.to_str().unwrap(),
            "--json",
        ],
    );
    assert_eq!(
        (denied.status, code(&denied)),
        (1, "permission-denied".to_string())
    );

    // Root lists everyone's jobs.
    let everyone = daemon
        .run(ferry(), &["list", "--all-users", "--json"])
        .ok()
        .json();
    let owners: BTreeSet<u64> = everyone
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["owner"].as_u64().unwrap())
        .collect();
    assert_eq!(
        owners,
        BTreeSet::from([u64::from(alice.uid), u64::from(bob.uid)])
    );

    // Alice's job runs as Alice: her file, her notify command.
    alice.run(&daemon, &["resume", &id]).ok();
    wait_for_job(&daemon, ferry(), &id, |j| j["state"] == "transferred");
    for _ in 0..600 {
        if std::fs::read_to_string(&notified).is_ok_and(|t| t.lines().count() == 2) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let notified = std::fs::read_to_string(&notified).unwrap_or_default();
    let mut lines = notified.lines();
    assert_eq!(
        lines.next(),
        Some(alice.uid.to_string().as_str()),
        "the notify command runs as the owner"
    );
    let groups: Vec<u32> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .map(|g| g.parse().unwrap())
        .collect();
    assert!(groups.contains(&alice.gid), "{groups:?}");
    assert!(!groups.contains(&0), "none of root's groups: {groups:?}");
    if let Some(users) = users_gid {
        assert!(
            groups.contains(&users),
            "with the owner's supplementary groups: {groups:?}"
        );
    }
    alice.run(&daemon, &["complete", &id]).ok();
    let meta = std::fs::metadata(&dest).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid()),
        (alice.uid, alice.gid),
        "the file belongs to its owner"
    );
    assert_eq!(std::fs::read(&dest).unwrap(), pattern_bytes(0..30_000));

    // Root may take Bob's job.
    let taken = daemon
        .run(ferry(), &["take-ownership", &bob_job, "--json"])
        .ok()
        .json();
    assert_eq!(taken["owner"], 0);
    assert_eq!(
        bob.run(&daemon, &["list", "--json"]).ok().json(),
        serde_json::json!([])
    );
}

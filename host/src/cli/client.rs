//! The CLI's side of the local API: one HTTP/1.1 connection over the Unix
//! socket, JSON in and out, the event stream, and starting a per-user
//! daemon when none answers.

use crate::api::ApiErrorView;
use crate::api::ErrorBody;
use crate::config::Paths;
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::net::UnixStream;

/// How long a freshly started daemon may take to answer (the first start
/// compiles the built-in plugins).
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// Why a request got no useful answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// The daemon refused, with a typed error.
    #[error("{}: {}", .0.code, .0.message)]
    Refused(ApiErrorView),
    /// No daemon answers, and none could be started.
    #[error("{0}")]
    Unreachable(String),
    /// The daemon answered something this CLI does not understand.
    #[error("{0}")]
    BadAnswer(String),
}

impl ClientError {
    pub fn code(&self) -> &str {
        match self {
            ClientError::Refused(v) => &v.code,
            ClientError::Unreachable(_) => "daemon-unreachable",
            ClientError::BadAnswer(_) => "bad-answer",
        }
    }
}

/// A connection to the daemon.
pub struct Client {
    socket: PathBuf,
    sender: SendRequest<Full<Bytes>>,
}

async fn handshake(socket: &Path) -> std::io::Result<SendRequest<Full<Bytes>>> {
    let stream = UnixStream::connect(socket).await?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

impl Client {
    /// Connects to the daemon on `socket`.
    pub async fn connect(socket: &Path) -> Result<Client, ClientError> {
        let sender = handshake(socket).await.map_err(|e| no_daemon(socket, e))?;
        Ok(Client {
            socket: socket.to_path_buf(),
            sender,
        })
    }

    /// Connects, first starting `ferry daemon` (this executable) with the
    /// same socket, state directory and configuration if none answers.
    pub async fn connect_or_start(paths: &Paths) -> Result<Client, ClientError> {
        if let Ok(client) = Client::connect(&paths.socket).await {
            return Ok(client);
        }
        start_daemon(paths).await?;
        Client::connect(&paths.socket).await
    }

    /// One request; `body` is sent as JSON. A 2xx answer is parsed as `T`,
    /// anything else as the API's typed error.
    pub async fn call<T: DeserializeOwned>(
        &mut self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T, ClientError> {
        let bytes = match body {
            Some(b) => Bytes::from(serde_json::to_vec(b).expect("requests serialise")),
            None => Bytes::new(),
        };
        let (status, answer) = self.raw(method, path, bytes).await?;
        parse(status, &answer)
    }

    /// One request with a raw body; the status and the raw answer.
    pub async fn raw(
        &mut self,
        method: Method,
        path: &str,
        body: Bytes,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let socket = self.socket.display().to_string();
        let lost = |e: hyper::Error| {
            ClientError::Unreachable(format!("the daemon on {socket} did not answer: {e}"))
        };
        if self.sender.ready().await.is_err() {
            // The daemon closed the kept-alive connection (it was idle for
            // `idle-timeout-secs`), before this request was sent: a new one.
            self.sender = handshake(&self.socket)
                .await
                .map_err(|e| no_daemon(&self.socket, e))?;
            self.sender.ready().await.map_err(lost)?;
        }
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, "ferry")
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(body))
            .expect("a valid request");
        let response = self.sender.send_request(request).await.map_err(lost)?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(lost)?
            .to_bytes();
        Ok((status, body))
    }

    /// Opens an event stream (on its own connection).
    pub async fn events(&self, path: &str) -> Result<EventStream, ClientError> {
        let mut sender = handshake(&self.socket)
            .await
            .map_err(|e| no_daemon(&self.socket, e))?;
        let request = Request::builder()
            .method(Method::GET)
            .uri(path)
            .header(http::header::HOST, "ferry")
            .header(http::header::ACCEPT, "text/event-stream")
            .body(Full::new(Bytes::new()))
            .expect("a valid request");
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| ClientError::Unreachable(format!("the event stream failed: {e}")))?;
        let status = response.status();
        if !status.is_success() {
            let body = response
                .into_body()
                .collect()
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default();
            return Err(parse::<serde_json::Value>(status, &body).unwrap_err());
        }
        Ok(EventStream {
            body: response.into_body(),
            buffer: Vec::new(),
        })
    }
}

/// Nothing answers on `socket`: `e` says why.
fn no_daemon(socket: &Path, e: std::io::Error) -> ClientError {
    ClientError::Unreachable(format!("no daemon answers on {}: {e}", socket.display()))
}

fn parse<T: DeserializeOwned>(status: StatusCode, body: &[u8]) -> Result<T, ClientError> {
    if status.is_success() {
        serde_json::from_slice(body).map_err(|e| {
            ClientError::BadAnswer(format!("the daemon's answer is not understood: {e}"))
        })
    } else {
        match serde_json::from_slice::<ErrorBody>(body) {
            Ok(error) => Err(ClientError::Refused(error.error)),
            Err(_) => Err(ClientError::BadAnswer(format!(
                "the daemon answered {status}: {}",
                String::from_utf8_lossy(body)
            ))),
        }
    }
}

/// One server-sent event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    pub event: String,
    pub data: String,
}

/// An open event stream.
pub struct EventStream {
    body: hyper::body::Incoming,
    buffer: Vec<u8>,
}

impl EventStream {
    /// The next event; `None` when the daemon ended the stream.
    pub async fn next(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(end) = self.buffer.windows(2).position(|w| w == b"\n\n") {
                let block: Vec<u8> = self.buffer.drain(..end + 2).collect();
                let text = String::from_utf8_lossy(&block);
                let (mut event, mut data) = (String::from("message"), String::new());
                for line in text.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        event = v.trim().to_string();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        if !data.is_empty() {
                            data.push('\n');
                        }
                        data.push_str(v.trim_start());
                    }
                }
                if data.is_empty() {
                    continue; // a comment (keep-alive)
                }
                return Some(SseEvent { event, data });
            }
            let frame = self.body.frame().await?.ok()?;
            if let Ok(data) = frame.into_data() {
                self.buffer.extend_from_slice(&data);
            }
        }
    }
}

/// Starts `ferry daemon` in its own session, detached from this terminal
/// (a Ctrl-C here must not stop it), logging to `daemon.log` in the state
/// directory, and waits until its socket answers.
async fn start_daemon(paths: &Paths) -> Result<(), ClientError> {
    use std::os::unix::fs::DirBuilderExt;
    use std::os::unix::process::CommandExt;
    let unreachable = |m: String| ClientError::Unreachable(m);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&paths.state_dir)
        .map_err(|e| {
            unreachable(format!(
                "cannot create the state directory {}: {e}",
                paths.state_dir.display()
            ))
        })?;
    let log_path = paths.state_dir.join("daemon.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| unreachable(format!("cannot open {}: {e}", log_path.display())))?;
    let exe = std::env::current_exe()
        .map_err(|e| unreachable(format!("cannot find the ferry executable: {e}")))?;
    let mut command = std::process::Command::new(exe);
    command
        .arg("daemon")
        .arg("--socket")
        .arg(&paths.socket)
        .arg("--state-dir")
        .arg(&paths.state_dir);
    if paths.config_required {
        command.arg("--config").arg(&paths.config);
    }
    command
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .process_group(0);
    let mut child = command
        .spawn()
        .map_err(|e| unreachable(format!("cannot start the daemon: {e}")))?;
    let deadline = tokio::time::Instant::now() + START_TIMEOUT;
    loop {
        if UnixStream::connect(&paths.socket).await.is_ok() {
            // Reap it in the background if it ever exits while we run.
            std::thread::spawn(move || child.wait());
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            let tail = std::fs::read_to_string(&log_path)
                .map(|t| t.lines().rev().take(5).collect::<Vec<_>>().join(" / "))
                .unwrap_or_default();
            return Err(unreachable(format!(
                "the daemon exited at start ({status}); see {}: {tail}",
                log_path.display()
            )));
        }
        if tokio::time::Instant::now() > deadline {
            return Err(unreachable(format!(
                "the daemon started but does not answer on {}; see {}",
                paths.socket.display(),
                log_path.display()
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

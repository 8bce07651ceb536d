//! What a plugin writes to standard error during one call, kept only so a
//! trap can say why: a Rust plugin's panic message goes there before the
//! `unreachable` that ends the call.
//!
//! The capture is bounded (the last [`KEPT`] bytes) and never fails a
//! write, so a plugin that writes a lot loses nothing but old lines; nothing
//! of it reaches the daemon's own output.

use bytes::Bytes;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi_io::poll::Pollable;
use wasmtime_wasi_io::streams::{OutputStream, StreamResult};

/// How much of the end of standard error is kept.
pub const KEPT: usize = 4096;

/// The tail of one call's standard error. Clones share it.
#[derive(Clone, Default)]
pub struct StderrTail {
    buffer: Arc<Mutex<Vec<u8>>>,
}

impl StderrTail {
    pub fn new() -> StderrTail {
        StderrTail::default()
    }

    fn push(&self, bytes: &[u8]) {
        let mut buffer = self.buffer.lock().unwrap_or_else(|e| e.into_inner());
        buffer.extend_from_slice(bytes);
        if buffer.len() > KEPT {
            let excess = buffer.len() - KEPT;
            buffer.drain(..excess);
        }
    }

    /// What was kept, as text.
    pub fn text(&self) -> String {
        let buffer = self.buffer.lock().unwrap_or_else(|e| e.into_inner());
        String::from_utf8_lossy(&buffer).into_owned()
    }

    /// The last panic message written, as `panicked at FILE:LINE:COL: MESSAGE`,
    /// if there is one.
    pub fn panic_message(&self) -> Option<String> {
        panic_message(&self.text())
    }
}

/// Finds the last Rust panic report in `text`: `thread '...' panicked at
/// LOCATION:` followed by the message, up to the `note:` line.
fn panic_message(text: &str) -> Option<String> {
    let start = text.rfind("panicked at ")?;
    let rest = &text[start + "panicked at ".len()..];
    let (location, message) = match rest.split_once(":\n") {
        Some((location, message)) => (location.trim(), message),
        // Older formats put the message first: `panicked at 'MESSAGE', FILE`.
        None => return Some(rest.lines().next().unwrap_or("").trim().to_string()),
    };
    let message: Vec<&str> = message
        .lines()
        .take_while(|line| !line.starts_with("note:"))
        .collect();
    let message = message.join(" ");
    Some(format!("panicked at {location}: {}", message.trim()))
}

impl IsTerminal for StderrTail {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for StderrTail {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[async_trait::async_trait]
impl OutputStream for StderrTail {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(KEPT)
    }
}

#[async_trait::async_trait]
impl Pollable for StderrTail {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for StderrTail {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_last_panic_and_keeps_only_the_tail() {
        let tail = StderrTail::new();
        tail.push(b"thread '<unnamed>' panicked at src/lib.rs:3:5:\nfirst\n");
        tail.push(b"thread '<unnamed>' panicked at src/lib.rs:9:1:\nthe disk is\non fire\nnote: run with `RUST_BACKTRACE=1`\n");
        assert_eq!(
            tail.panic_message().as_deref(),
            Some("panicked at src/lib.rs:9:1: the disk is on fire")
        );
        tail.push(&[b'x'; 2 * KEPT]);
        assert_eq!(tail.text().len(), KEPT);
        assert_eq!(tail.panic_message(), None);
    }
}

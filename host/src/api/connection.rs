//! How long one connection may take, for the API socket and the metrics
//! listener alike ([`ConnectionLimits`]).
//!
//! Two bounds, each for what it names, as nginx has them: a request head must
//! arrive in full within `header_read_timeout` (of the connection's opening
//! for its first request, of its first byte for the next ones: a client that
//! connects and sends nothing, or trickles a head, is closed), and a
//! connection may go `idle_timeout` without a byte either way (a kept-alive
//! connection waiting for its next request is idle, not slow). hyper's own header timer cannot tell the two apart: it starts
//! after every response, so it would close a kept-alive connection after the
//! head timeout, however long the idle timeout. This module keeps the time
//! itself: the stream sees the bytes, the service sees a head complete, and
//! the answer's body, once hyper is done with it, marks the connection as
//! between requests again.

use super::ConnectionLimits;
use super::routes::Body;
use bytes::Bytes;
use http::{Request, Response};
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Serves HTTP/1.1 on `stream` with `answer`, bounded by `limits`.
pub async fn serve<S, A, F>(stream: S, limits: ConnectionLimits, answer: A) -> hyper::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    A: Fn(Request<Incoming>) -> F + Send + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    // The first request's head is due from the connection's opening.
    let opened = Instant::now();
    let phase = Arc::new(Mutex::new(Phase::Between {
        head_since: Some(opened),
    }));
    let stream = Timed {
        inner: stream,
        limits,
        phase: phase.clone(),
        last: opened,
        timer: Box::pin(tokio::time::sleep(limits.idle_timeout)),
    };
    let requests = AtomicU64::new(0);
    let service = hyper::service::service_fn(move |request| {
        let request_number = requests.fetch_add(1, Ordering::Relaxed) + 1;
        set(&phase, Phase::Answering(request_number));
        let answered = answer(request);
        let phase = phase.clone();
        async move {
            let response = answered.await;
            Ok::<_, Infallible>(response.map(|body| Answer {
                body,
                phase,
                request_number,
            }))
        }
    });
    hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .await
}

/// Where the connection is between two requests.
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Waiting for a request; since when its head's first byte came, if it
    /// did.
    Between { head_since: Option<Instant> },
    /// The head of request `.0` (counted from 1) arrived; its answer is not
    /// sent in full yet.
    Answering(u64),
}

fn set(phase: &Mutex<Phase>, to: Phase) {
    *phase.lock().unwrap_or_else(|e| e.into_inner()) = to;
}

/// An answer's body: when hyper drops it (sent in full, or the connection
/// ended), the connection waits for its next request, unless that one's
/// head came already.
struct Answer {
    body: Body,
    phase: Arc<Mutex<Phase>>,
    request_number: u64,
}

impl Drop for Answer {
    fn drop(&mut self) {
        let mut phase = self.phase.lock().unwrap_or_else(|e| e.into_inner());
        if let Phase::Answering(n) = *phase
            && n == self.request_number
        {
            *phase = Phase::Between { head_since: None };
        }
    }
}

impl http_body::Body for Answer {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The connection's stream, failing with `TimedOut` once a bound passed.
struct Timed<S> {
    inner: S,
    limits: ConnectionLimits,
    phase: Arc<Mutex<Phase>>,
    /// The last byte either way.
    last: Instant,
    timer: Pin<Box<tokio::time::Sleep>>,
}

impl<S> Timed<S> {
    fn deadline(&self) -> (Instant, &'static str) {
        let idle = (self.last + self.limits.idle_timeout, "idle too long");
        match *self.phase.lock().unwrap_or_else(|e| e.into_inner()) {
            Phase::Between {
                head_since: Some(since),
            } if since + self.limits.header_read_timeout < idle.0 => (
                since + self.limits.header_read_timeout,
                "too slow to send its request head",
            ),
            _ => idle,
        }
    }

    /// A read brought `read` bytes: the first between requests starts the
    /// head's clock.
    fn bytes_read(&mut self, read: usize) {
        self.last = Instant::now();
        if read == 0 {
            return;
        }
        let mut phase = self.phase.lock().unwrap_or_else(|e| e.into_inner());
        if let Phase::Between { head_since: None } = *phase {
            *phase = Phase::Between {
                head_since: Some(self.last),
            };
        }
    }

    /// After the inner stream said `Pending`: an error once a bound passed.
    fn check(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Error> {
        loop {
            let (deadline, what) = self.deadline();
            if Instant::now() >= deadline {
                return Poll::Ready(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("the connection was {what}"),
                ));
            }
            self.timer
                .as_mut()
                .reset(tokio::time::Instant::from_std(deadline));
            if self.timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Timed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(result) => {
                let read = buf.filled().len() - before;
                self.bytes_read(read);
                Poll::Ready(result)
            }
            Poll::Pending => self.check(cx).map(Err),
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Timed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write(cx, data) {
            Poll::Ready(result) => {
                self.last = Instant::now();
                Poll::Ready(result)
            }
            Poll::Pending => self.check(cx).map(Err),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// How long a test waits for what must happen first.
    const BOUND: Duration = Duration::from_secs(20);

    /// A server of `limits` on one end of a socket pair; the other end.
    fn connection(limits: ConnectionLimits) -> tokio::net::UnixStream {
        let (client, server) = tokio::net::UnixStream::pair().unwrap();
        tokio::spawn(serve(server, limits, |_request| async {
            Response::new(super::super::routes::full(Bytes::from_static(b"ok")))
        }));
        client
    }

    fn limits(head_ms: u64, idle_ms: u64) -> ConnectionLimits {
        ConnectionLimits {
            header_read_timeout: Duration::from_millis(head_ms),
            idle_timeout: Duration::from_millis(idle_ms),
            ..ConnectionLimits::default()
        }
    }

    const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: ferry\r\n\r\n";

    /// Reads one short answer (status line to body) off `client`.
    async fn answer(client: &mut tokio::net::UnixStream) -> String {
        let mut buf = vec![0; 4096];
        let n = tokio::time::timeout(BOUND, client.read(&mut buf))
            .await
            .expect("an answer in time")
            .unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    /// Reads until the server closes, which it must well before [`BOUND`]
    /// (the bound under test is far shorter, the other far longer).
    async fn closed(client: &mut tokio::net::UnixStream) {
        let mut rest = Vec::new();
        tokio::time::timeout(BOUND, client.read_to_end(&mut rest))
            .await
            .expect("closed by the bound under test")
            .unwrap();
    }

    #[tokio::test]
    async fn a_kept_alive_connection_waits_the_idle_timeout_not_the_head_timeout() {
        let mut client = connection(limits(100, 5_000));
        client.write_all(GET).await.unwrap();
        assert!(answer(&mut client).await.starts_with("HTTP/1.1 200"));
        // Longer than the head timeout, well within the idle one.
        tokio::time::sleep(Duration::from_millis(600)).await;
        client.write_all(GET).await.unwrap();
        let second = answer(&mut client).await;
        assert!(second.starts_with("HTTP/1.1 200"), "{second:?}");
    }

    #[tokio::test]
    async fn a_head_sent_too_slowly_is_closed_on_the_head_timeout() {
        let mut client = connection(limits(200, 60_000));
        client.write_all(GET).await.unwrap();
        assert!(answer(&mut client).await.starts_with("HTTP/1.1 200"));
        // The next head, half of it, then nothing.
        client.write_all(b"GET / HTTP/1.1\r\nHo").await.unwrap();
        closed(&mut client).await;
    }

    #[tokio::test]
    async fn a_new_connection_without_a_byte_is_closed_on_the_head_timeout() {
        let mut client = connection(limits(200, 60_000));
        closed(&mut client).await;
    }

    #[tokio::test]
    async fn a_kept_alive_connection_is_closed_on_the_idle_timeout() {
        let mut client = connection(limits(60_000, 300));
        client.write_all(GET).await.unwrap();
        assert!(answer(&mut client).await.starts_with("HTTP/1.1 200"));
        closed(&mut client).await;
    }
}

//! A TCP proxy on loopback between a client and a server, for what a real
//! network does to uploads: it paces the bytes the client sends (so a test
//! can act while an upload is under way) and can cut a connection once a
//! given number of client bytes went through (a connection dropped mid-body).
//!
//! It counts every byte the client sent, so a test can tell how much was
//! sent again after an interruption.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

#[derive(Default)]
struct State {
    /// Client-to-server bytes per second; 0 = unpaced.
    rate: AtomicU64,
    /// Cut the connection that carries the client's byte number N (counted
    /// over all connections); `u64::MAX` = never. Fires once.
    cut_at: AtomicU64,
    /// Client-to-server bytes, over all connections.
    sent: AtomicU64,
    /// Connections cut so far.
    cuts: AtomicU64,
}

/// A running proxy; stops when dropped (open connections with it).
pub struct Proxy {
    addr: SocketAddr,
    state: Arc<State>,
    accept: JoinHandle<()>,
}

impl Proxy {
    /// A proxy on `127.0.0.1` (an ephemeral port) to `upstream`, on the
    /// current tokio runtime.
    pub async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let addr = listener.local_addr().expect("the proxy's address");
        let state = Arc::new(State::default());
        state.cut_at.store(u64::MAX, Ordering::Relaxed);
        let accept = tokio::spawn(accept_loop(listener, upstream, state.clone()));
        Proxy {
            addr,
            state,
            accept,
        }
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Paces what clients send to `bytes_per_sec` (0: as fast as it comes).
    pub fn set_rate(&self, bytes_per_sec: u64) {
        self.state.rate.store(bytes_per_sec, Ordering::Relaxed);
    }

    /// Cuts the connection once clients have sent `bytes` more bytes
    /// through the proxy (once).
    pub fn cut_after(&self, bytes: u64) {
        let now = self.state.sent.load(Ordering::Relaxed);
        self.state.cut_at.store(now + bytes, Ordering::Relaxed);
    }

    /// Every byte clients sent so far (headers included).
    pub fn bytes_sent(&self) -> u64 {
        self.state.sent.load(Ordering::Relaxed)
    }

    /// How many connections the proxy cut.
    pub fn cuts(&self) -> u64 {
        self.state.cuts.load(Ordering::Relaxed)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn accept_loop(listener: TcpListener, upstream: SocketAddr, state: Arc<State>) {
    let mut connections = tokio::task::JoinSet::new();
    while let Ok((client, _)) = listener.accept().await {
        let state = state.clone();
        connections.spawn(async move {
            if let Ok(server) = TcpStream::connect(upstream).await {
                relay(client, server, state).await;
            }
        });
    }
}

/// Relays one connection until either side closes or the cut comes.
async fn relay(client: TcpStream, server: TcpStream, state: Arc<State>) {
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let up = async {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let rate = state.rate.load(Ordering::Relaxed);
            let want = if rate == 0 {
                buf.len()
            } else {
                // About 50 paced chunks a second.
                ((rate / 50).max(1) as usize).min(buf.len())
            };
            let n = match client_read.read(&mut buf[..want]).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let before = state.sent.fetch_add(n as u64, Ordering::Relaxed);
            let cut_at = state.cut_at.load(Ordering::Relaxed);
            if before + n as u64 >= cut_at
                && state
                    .cut_at
                    .compare_exchange(cut_at, u64::MAX, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
            {
                // Forward what came before the cut, then drop both sides.
                let keep = cut_at.saturating_sub(before) as usize;
                let _ = server_write.write_all(&buf[..keep.min(n)]).await;
                state.cuts.fetch_add(1, Ordering::Relaxed);
                return;
            }
            if server_write.write_all(&buf[..n]).await.is_err() {
                return;
            }
            if rate > 0 {
                tokio::time::sleep(Duration::from_secs_f64(n as f64 / rate as f64)).await;
            }
        }
    };
    let down = async {
        let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
    };
    // Either direction ending ends the connection: both halves drop.
    tokio::select! {
        () = up => {}
        () = down => {}
    }
}

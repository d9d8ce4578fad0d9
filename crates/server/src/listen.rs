//! The socket side: accepting connections up to a cap, TLS with ALPN, and
//! HTTP/1.1 and HTTP/2 with timeouts, so slow or silent clients cannot hold
//! the server. It knows nothing of routes: each request goes to the router
//! with the peer's address and the connection's framing flag attached.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::guard::ConflictingFraming;
use crate::ServerConfig;

/// Serve `router` on `listener` until `shutdown` resolves, then drain,
/// within the limits (and with the TLS) that `limits` sets.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Arc<ServerConfig>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let tls = limits.tls.clone().map(TlsAcceptor::from);
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        // Take a permit before accepting: past the cap, clients wait in the
        // backlog instead of costing a task and a buffer each.
        let permit = tokio::select! {
            permit = Arc::clone(&permits).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    accept_failed(error).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Tokens go out as small writes; Nagle's algorithm would hold one
        // back until the client acknowledges the last.
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "could not set TCP_NODELAY");
        }
        while connections.try_join_next().is_some() {}
        let router = router.clone();
        let tls = tls.clone();
        let limits = Arc::clone(&limits);
        let stop = stop_rx.clone();
        connections.spawn(async move {
            let _permit = permit;
            let Some(tls) = tls else {
                return serve_connection(stream, false, peer, router, &limits, stop).await;
            };
            match tokio::time::timeout(limits.header_timeout, tls.accept(stream)).await {
                Ok(Ok(stream)) => {
                    let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                    serve_connection(stream, h2, peer, router, &limits, stop).await;
                }
                Ok(Err(error)) => tracing::debug!(%error, %peer, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
    tracing::info!("shutting down: draining in-flight requests");
    drop(listener);
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(limits.drain_timeout, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!("drain timeout reached; closing remaining connections");
        // Dropping a connection drops its response bodies, which cancels
        // their generations.
        connections.abort_all();
        while connections.join_next().await.is_some() {}
    }
    Ok(())
}

/// Out of file descriptors (or a similar fault): back off instead of
/// spinning; a client that gave up mid-handshake is not worth a pause.
async fn accept_failed(error: io::Error) {
    use io::ErrorKind as K;
    if matches!(
        error.kind(),
        K::ConnectionRefused | K::ConnectionAborted | K::ConnectionReset
    ) {
        return;
    }
    tracing::error!(%error, "accepting a connection failed");
    tokio::time::sleep(Duration::from_millis(200)).await;
}

/// Run a connection until it ends, or until `trigger` resolves; then shut it
/// down gracefully (requests in flight finish). A connection whose writes
/// stay blocked (a client that stopped reading) is dropped either way. A
/// macro because hyper's two connection types share no trait for
/// `graceful_shutdown`.
macro_rules! drive {
    ($connection:expr, $trigger:expr, $stalled:expr) => {{
        let connection = $connection;
        tokio::pin!(connection);
        let stalled = $stalled;
        tokio::pin!(stalled);
        tokio::select! {
            _ = connection.as_mut() => return,
            () = $trigger => {}
            () = stalled.as_mut() => return,
        }
        connection.as_mut().graceful_shutdown();
        tokio::select! {
            _ = connection.as_mut() => {}
            () = stalled => {}
        }
    }};
}

async fn serve_connection<S>(
    stream: S,
    h2: bool,
    peer: SocketAddr,
    router: Router,
    limits: &ServerConfig,
    mut stop: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let framing = ConflictingFraming::default();
    let io = Watched::new(stream, (!h2).then(|| Arc::clone(&framing.0)));
    let activity = io.activity();
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        request.extensions_mut().insert(framing.clone());
        tower::ServiceExt::oneshot(router.clone(), request)
    });
    let io = TokioIo::new(io);
    if h2 {
        let mut builder = http2::Builder::new(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .max_concurrent_streams(64)
            // No keep-alive pings: their answers would count as traffic and
            // keep a silent connection from ever going idle.
            .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
        drive!(
            builder.serve_connection(io, service),
            until_stopped_or_idle(&mut stop, &activity, limits.idle_timeout),
            stalled(&activity, limits.idle_timeout)
        );
    } else {
        let mut builder = http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout)
            .max_header_size(limits.max_header_bytes)
            .max_buf_size(limits.max_header_bytes.max(8192) + 8192);
        drive!(
            builder.serve_connection(io, service),
            until_stopped_or_idle(&mut stop, &activity, limits.idle_timeout),
            stalled(&activity, limits.idle_timeout)
        );
    }
}

/// Resolves when the server stops, or when the connection has seen no
/// traffic for `idle`.
async fn until_stopped_or_idle(
    stop: &mut watch::Receiver<bool>,
    activity: &Activity,
    idle: Duration,
) {
    let idle_out = async {
        loop {
            let quiet = activity.quiet_for();
            if quiet >= idle {
                return;
            }
            tokio::time::sleep(idle - quiet).await;
        }
    };
    tokio::select! {
        _ = stop.wait_for(|stopped| *stopped) => {}
        () = idle_out => {}
    }
}

/// Resolves once the connection's writes have been blocked for `limit`
/// without a byte going out: the client has stopped reading.
async fn stalled(activity: &Activity, limit: Duration) {
    loop {
        let blocked = activity.blocked_for();
        if blocked >= limit {
            return;
        }
        // Not blocked now: look again after a whole `limit`.
        let wait = if blocked.is_zero() {
            limit
        } else {
            limit - blocked
        };
        tokio::time::sleep(wait).await;
    }
}

/// When a connection last moved a byte, and since when its writes wait.
#[derive(Debug, Clone)]
struct Activity {
    base: Instant,
    last_ms: Arc<AtomicU64>,
    /// Milliseconds since `base`, plus one, when a write last found the
    /// socket full; 0 while writes go through.
    blocked_since: Arc<AtomicU64>,
}

impl Activity {
    fn now_ms(&self) -> u64 {
        self.base.elapsed().as_millis() as u64
    }

    fn touch(&self) {
        self.last_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    fn write_blocked(&self) {
        let now = self.now_ms() + 1;
        let _ = self
            .blocked_since
            .compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
    }

    fn write_went_through(&self) {
        self.blocked_since.store(0, Ordering::Relaxed);
    }

    fn blocked_for(&self) -> Duration {
        match self.blocked_since.load(Ordering::Relaxed) {
            0 => Duration::ZERO,
            since => Duration::from_millis(self.now_ms().saturating_sub(since - 1)),
        }
    }

    fn quiet_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.base.elapsed().saturating_sub(last)
    }
}

/// A stream that notes its traffic and, for HTTP/1, watches request heads
/// for both `Content-Length` and `Transfer-Encoding`: hyper resolves that
/// conflict silently, and a proxy in front might resolve it the other way.
struct Watched<S> {
    inner: S,
    activity: Activity,
    sniffer: Option<Sniffer>,
}

impl<S> Watched<S> {
    fn new(inner: S, conflict: Option<Arc<AtomicBool>>) -> Self {
        let activity = Activity {
            base: Instant::now(),
            last_ms: Arc::new(AtomicU64::new(0)),
            blocked_since: Arc::new(AtomicU64::new(0)),
        };
        Self {
            inner,
            activity,
            sniffer: conflict.map(Sniffer::new),
        }
    }

    fn activity(&self) -> Activity {
        self.activity.clone()
    }

    /// Note a write that moved bytes, or found the socket full.
    fn wrote(&self, result: Poll<io::Result<usize>>) -> Poll<io::Result<usize>> {
        match result {
            Poll::Ready(Ok(n)) if n > 0 => {
                self.activity.touch();
                self.activity.write_went_through();
            }
            Poll::Pending => self.activity.write_blocked(),
            _ => {}
        }
        result
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = result {
            if buf.filled().len() > before {
                this.activity.touch();
                if let Some(sniffer) = &mut this.sniffer {
                    sniffer.scan(&buf.filled()[before..]);
                }
            }
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write(cx, data);
        this.wrote(result)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.wrote(result)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Reads header lines as they stream past. A blank line ends a block; a
/// block naming both framing headers raises the flag.
struct Sniffer {
    conflict: Arc<AtomicBool>,
    /// The start of the current line, lower-cased.
    line: [u8; 32],
    len: usize,
    content_length: bool,
    transfer_encoding: bool,
}

impl Sniffer {
    fn new(conflict: Arc<AtomicBool>) -> Self {
        Self {
            conflict,
            line: [0; 32],
            len: 0,
            content_length: false,
            transfer_encoding: false,
        }
    }

    fn scan(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if b == b'\n' {
                self.end_line();
            } else if b != b'\r' {
                if self.len < self.line.len() {
                    self.line[self.len] = b.to_ascii_lowercase();
                }
                self.len += 1;
            }
        }
    }

    fn end_line(&mut self) {
        let line = &self.line[..self.len.min(self.line.len())];
        if self.len == 0 {
            self.content_length = false;
            self.transfer_encoding = false;
        } else if header_named(line, b"content-length") {
            self.content_length = true;
        } else if header_named(line, b"transfer-encoding") {
            self.transfer_encoding = true;
        }
        if self.content_length && self.transfer_encoding {
            self.conflict.store(true, Ordering::Release);
        }
        self.len = 0;
    }
}

/// Whether `line` starts `NAME:` (spaces before the colon allowed, as
/// lenient parsers take them).
fn header_named(line: &[u8], name: &[u8]) -> bool {
    line.strip_prefix(name)
        .is_some_and(|rest| rest.iter().find(|b| **b != b' ' && **b != b'\t') == Some(&b':'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sniff(chunks: &[&str]) -> bool {
        let flag = Arc::new(AtomicBool::new(false));
        let mut sniffer = Sniffer::new(Arc::clone(&flag));
        for chunk in chunks {
            sniffer.scan(chunk.as_bytes());
        }
        flag.load(Ordering::Acquire)
    }

    #[test]
    fn both_framing_headers_in_one_head_are_caught_across_reads() {
        assert!(sniff(&[
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Len",
            "gth: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
        ]));
        assert!(sniff(&[
            "POST / HTTP/1.1\r\ntransfer-encoding : chunked\r\ncontent-length:4\r\n\r\n"
        ]));
    }

    #[test]
    fn one_framing_header_per_head_is_fine() {
        assert!(!sniff(&[
            "POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        ]));
        assert!(!sniff(&[
            "GET / HTTP/1.1\r\nX-Content-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"
        ]));
    }
}

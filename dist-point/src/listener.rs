//! The HTTP accept loop of a distribution point, with the limits a public listener needs.
//!
//! - At most `max_connections` connections are served at once; one more is answered with a
//!   503 and `Retry-After` and closed, so idle or slow clients cannot take every file
//!   descriptor (and an out-of-descriptors error is never seen by the content store).
//! - A client has [`HEADER_TIMEOUT`] to send a request's headers, on a new connection and
//!   between requests of a kept-alive one.
//! - A client that takes no bytes for [`crate::serve::SEND_TIMEOUT`] is disconnected
//!   ([`WriteDeadline`]).
//! - An error from `accept` (out of descriptors, for one) is logged and retried after a pause;
//!   it never stops the server.
//!
//! What it is not: routing. The routes are [`crate::serve::router`] and the DP's own.

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::Sleep;

/// How long a client has to send a request's headers (also the idle time allowed between
/// requests on a kept-alive connection).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// The connection cap for an open-file limit of `nofile`: half of what is left after a
/// reserve for the store, the QUIC socket and the logs, within 16..=8192.
pub fn max_connections(nofile: u64) -> usize {
    (nofile.saturating_sub(128) / 2).clamp(16, 8192) as usize
}

/// Serves `app` on `listener` until `shutdown` completes (see the module doc).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    max_connections: usize,
    shutdown: impl Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(max_connections));
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => return,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "cannot accept an HTTP connection; retrying shortly");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!(%peer, max_connections, "connection refused: too many connections");
            tokio::spawn(refuse(stream, max_connections));
            continue;
        };
        let app = app.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let io = TokioIo::new(WriteDeadline::new(stream, crate::serve::SEND_TIMEOUT));
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT);
            if let Err(e) = http
                .serve_connection(io, TowerToHyperService::new(app))
                .await
            {
                tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
            }
        });
    }
}

/// Answers a connection over the cap with a 503 and closes it.
async fn refuse(mut stream: tokio::net::TcpStream, cap: usize) {
    let body = format!("{cap} connections are open to this distribution point; retry later\n");
    let head = format!(
        "HTTP/1.1 503 Service Unavailable\r\nRetry-After: {}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        crate::serve::RETRY_AFTER_SECS,
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body.as_bytes()).await?;
        stream.shutdown().await
    })
    .await;
}

/// A stream whose writes fail once they have waited `stall` without progress: a client
/// that stops reading is disconnected instead of holding its connection forever.
pub struct WriteDeadline<S> {
    inner: S,
    stall: Duration,
    /// Armed when a write first waits; disarmed by any progress.
    timer: Option<Pin<Box<Sleep>>>,
}

impl<S> WriteDeadline<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, stall: Duration) -> Self {
        WriteDeadline {
            inner,
            stall,
            timer: None,
        }
    }

    /// After the inner stream answered `r`: disarm on progress, else arm and check the timer.
    fn check<T>(&mut self, cx: &mut Context<'_>, r: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        match r {
            Poll::Ready(x) => {
                self.timer = None;
                Poll::Ready(x)
            }
            Poll::Pending => {
                let stall = self.stall;
                let t = self
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(stall)));
                match t.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("the client took no bytes for {stall:?}"),
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteDeadline<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.check(cx, r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.check(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        self.check(cx, r)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_client_that_takes_no_bytes_is_disconnected() {
        use tokio::io::AsyncReadExt;
        // A peer with a 64-byte window that reads 64 bytes once, then nothing.
        let (a, mut b) = tokio::io::duplex(64);
        let mut w = WriteDeadline::new(a, Duration::from_secs(30));
        let started = tokio::time::Instant::now();
        let writer = tokio::spawn(async move { w.write_all(&[7u8; 4096]).await });
        let mut first = [0u8; 64];
        b.read_exact(&mut first).await.unwrap();
        let err = writer.await.unwrap().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_secs(30) && waited < Duration::from_secs(31),
            "{waited:?}"
        );
    }

    #[test]
    fn the_connection_cap_leaves_room_for_the_store() {
        assert_eq!(max_connections(1024), 448);
        assert_eq!(max_connections(64), 16);
        assert_eq!(max_connections(1 << 20), 8192);
    }
}

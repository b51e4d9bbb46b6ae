//! Accepting connections without letting one client hurt the others.
//!
//! Invariants:
//! - At most `max_connections` connections per listener; the next one is
//!   closed at once instead of queueing.
//! - A client must send its first bytes (the HTTP/2 preface) within
//!   [`FIRST_BYTES_WITHIN`], or its connection is closed: an idle socket
//!   cannot hold a slot forever.
//! - An accept error (out of file descriptors, say) pauses accepting
//!   briefly instead of spinning.
//! - Refusals are logged at most once per 10 s per listener, with how many
//!   were suppressed ([`crate::log_limit`]): a flood cannot fill the disk.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::Sleep;
use tokio_util::sync::CancellationToken;

/// How long a new connection has to send its first bytes.
pub const FIRST_BYTES_WITHIN: Duration = Duration::from_secs(10);
/// The HTTP/2 client preface is 24 bytes.
const PREFACE_LEN: usize = 24;

/// A TCP connection holding its slot, with a deadline on its first bytes.
#[derive(Debug)]
pub struct Guarded {
    inner: TcpStream,
    deadline: Option<Pin<Box<Sleep>>>,
    still_needed: usize,
    _slot: OwnedSemaphorePermit,
}

impl Guarded {
    fn new(inner: TcpStream, slot: OwnedSemaphorePermit) -> Guarded {
        Guarded {
            inner,
            deadline: Some(Box::pin(tokio::time::sleep(FIRST_BYTES_WITHIN))),
            still_needed: PREFACE_LEN,
            _slot: slot,
        }
    }
}

impl AsyncRead for Guarded {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(deadline) = this.deadline.as_mut()
            && deadline.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client sent nothing in time",
            )));
        }
        let before = buf.filled().len();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &result {
            let read = buf.filled().len() - before;
            this.still_needed = this.still_needed.saturating_sub(read);
            if this.still_needed == 0 || read == 0 {
                this.deadline = None;
            }
        }
        result
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl tonic::transport::server::Connected for Guarded {
    type ConnectInfo = <TcpStream as tonic::transport::server::Connected>::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

/// Accepts on `listener` until `shutdown`, handing guarded connections to
/// the returned channel.
pub fn accept_loop(
    listener: TcpListener,
    max_connections: usize,
    shutdown: CancellationToken,
) -> mpsc::Receiver<Guarded> {
    let (tx, rx) = mpsc::channel(64);
    let slots = Arc::new(Semaphore::new(max_connections));
    let refused_log = crate::log_limit::LogLimit::new();
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                () = shutdown.cancelled() => return,
                a = listener.accept() => a,
            };
            let (stream, peer): (TcpStream, SocketAddr) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "Accept failed; pausing.");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                if let Some(suppressed) = refused_log.check() {
                    tracing::warn!(%peer, max_connections, suppressed, "Too many connections; closing a new one.");
                }
                continue;
            };
            let _ = stream.set_nodelay(true);
            if tx.send(Guarded::new(stream, slot)).await.is_err() {
                return;
            }
        }
    });
    rx
}

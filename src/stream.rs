//! Byte streams to peers: a shared TCP socket, or any boxed stream (TLS) behind a lock.
//!
//! Both kinds are cheap handles that can be cloned, so one task can read from a peer while it
//! writes to it (a request body going up while the response comes down). This file holds no
//! protocol logic.

use std::io;
use std::net::{Shutdown, TcpStream};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use async_io::Async;
use futures_lite::{AsyncRead, AsyncWrite};

/// Anything that can carry a connection: TLS sessions over TCP or over another stream.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// A TCP socket shared between the reading and the writing side of one task.
#[derive(Clone, Debug)]
pub struct Tcp(pub Arc<Async<TcpStream>>);

impl Tcp {
    /// Wraps a connected socket; Nagle is off because heads are written in one piece.
    pub fn new(stream: Async<TcpStream>) -> Tcp {
        let _ = stream.get_ref().set_nodelay(true);
        Tcp(Arc::new(stream))
    }

    /// Closes our sending side, telling the peer there is no more data (half-close).
    pub fn shutdown_write(&self) {
        let _ = self.0.get_ref().shutdown(Shutdown::Write);
    }

    /// Makes the next close a reset (SO_LINGER 0): the only way to tell a client that reads
    /// until close that its response was cut short, rather than complete.
    pub fn abort_on_close(&self) {
        let _ = rustix::net::sockopt::set_socket_linger(
            self.0.get_ref(),
            Some(std::time::Duration::ZERO),
        );
    }

    /// Whether the peer has closed or sent something unexpected: used before reusing an idle
    /// pooled connection, which must have nothing to read.
    pub fn is_stale(&self) -> bool {
        let mut byte = [0u8; 1];
        !matches!(self.0.get_ref().peek(&mut byte), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }
}

impl AsyncRead for Tcp {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut &*self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Tcp {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut &*self.0).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut &*self.0).poll_flush(cx)
    }
    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.shutdown_write();
        Poll::Ready(Ok(()))
    }
}

/// A connection toward an origin or upstream proxy.
#[derive(Clone)]
pub enum Stream {
    /// Plain TCP.
    Tcp(Tcp),
    /// A layered stream (TLS, or a hop reached through another proxy), locked per poll.
    Shared(Arc<Mutex<Box<dyn Io>>>),
}

impl Stream {
    /// Wraps a layered stream.
    pub fn shared(io: impl Io + 'static) -> Stream {
        Stream::Shared(Arc::new(Mutex::new(Box::new(io))))
    }
}

/// Runs `f` on the locked inner stream. A poisoned lock only means another poll panicked,
/// which we never do on purpose; the stream is then reported as broken.
fn with<R>(
    m: &Mutex<Box<dyn Io>>,
    f: impl FnOnce(Pin<&mut Box<dyn Io>>) -> Poll<io::Result<R>>,
) -> Poll<io::Result<R>> {
    match m.lock() {
        Ok(mut guard) => f(Pin::new(&mut *guard)),
        Err(_) => Poll::Ready(Err(io::Error::other("stream lock poisoned"))),
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(t) => Pin::new(t).poll_read(cx, buf),
            Stream::Shared(m) => with(m, |s| s.poll_read(cx, buf)),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(t) => Pin::new(t).poll_write(cx, buf),
            Stream::Shared(m) => with(m, |s| s.poll_write(cx, buf)),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(t) => Pin::new(t).poll_flush(cx),
            Stream::Shared(m) => with(m, |s| s.poll_flush(cx)),
        }
    }
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(t) => Pin::new(t).poll_close(cx),
            Stream::Shared(m) => with(m, |s| s.poll_close(cx)),
        }
    }
}

/// A stream that first yields bytes already read from it (after a CONNECT answer, or the
/// first bytes of an intercepted tunnel).
pub struct Prefixed {
    /// The bytes read early.
    early: Vec<u8>,
    /// How many of them were handed out.
    at: usize,
    /// The stream itself.
    inner: Stream,
}

impl Prefixed {
    /// `inner`, reading `early` first.
    pub fn new(early: Vec<u8>, inner: Stream) -> Prefixed {
        Prefixed {
            early,
            at: 0,
            inner,
        }
    }
}

impl AsyncRead for Prefixed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        if self.at < self.early.len() {
            let n = buf.len().min(self.early.len() - self.at);
            buf[..n].copy_from_slice(&self.early[self.at..self.at + n]);
            self.at += n;
            return Poll::Ready(Ok(n));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

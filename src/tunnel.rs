//! Two-way byte relay for CONNECT tunnels and upgraded (WebSocket) connections.
//!
//! Each direction is copied until its sender closes, then the close is passed on as a
//! half-close, so protocols that shut down one side first keep working. A tunnel is closed
//! when neither direction moved a byte for the idle timeout. Between TCP sockets a direction
//! waits for readability before it takes a copy buffer and returns it as soon as the socket
//! has nothing more, so an idle tunnel holds no buffer at all.

use std::io::{self, Read, Write};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use futures_lite::{future, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, FutureExt};

use crate::alarm::Alarm;
use crate::spare::{Lease, Spares};
use crate::stream::{Stream, Tcp};

/// Copy buffers for busy directions. 64 KiB lets one read drain a full socket buffer burst,
/// which measured close to the direct-connection ceiling on loopback; 32 spares (2 MiB) cover
/// the busy tunnels of a small machine without an allocation or zeroing per burst.
pub static COPY_BUFFERS: Spares = Spares::new(64 * 1024, 32);

/// Bytes moved through the generic relay's two directions, which run as two futures.
#[derive(Default)]
struct Counts {
    /// From the client toward the origin.
    up: AtomicU64,
    /// From the origin toward the client.
    down: AtomicU64,
}

/// Shared idle clock of the generic relay: the last time either direction moved data.
struct Activity {
    /// When the tunnel started.
    start: Instant,
    /// Milliseconds after `start` of the last activity.
    last: AtomicU64,
}

impl Activity {
    fn touch(&self) {
        self.last
            .store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// When the tunnel counts as idle unless something moves before then.
    fn due(&self, idle: Duration) -> Instant {
        self.start + Duration::from_millis(self.last.load(Ordering::Relaxed)) + idle
    }
}

/// Delivers bytes already read from either side before a relay starts: `up` to the origin,
/// then `down` to the client. Returns their counts (toward the origin, toward the client), or
/// `None` when a write failed and the tunnel is over.
pub async fn deliver(
    client: &Stream,
    up: &[u8],
    origin: &Stream,
    down: &[u8],
) -> Option<(u64, u64)> {
    if origin.clone().write_all(up).await.is_err() || client.clone().write_all(down).await.is_err()
    {
        return None;
    }
    Some((up.len() as u64, down.len() as u64))
}

/// Relays between `client` and `origin` until both sides are closed, one fails, or the
/// tunnel is idle. Bytes already read from either side go first ([`deliver`]). Returns the
/// bytes moved (toward the origin, toward the client).
pub async fn relay(client: Stream, origin: Stream, idle: Duration) -> (u64, u64) {
    match (client, origin) {
        (Stream::Tcp(client), Stream::Tcp(origin)) => TcpRelay::new(client, origin, idle).await,
        // Boxed: its two generic pumps are several times the size of a TCP relay, and an
        // async fn's state is as big as its biggest branch.
        (client, origin) => Box::pin(relay_any(client, origin, idle)).await,
    }
}

/// The relay for streams that are not plain TCP (TLS, or a hop reached through another proxy):
/// a pump per direction, each with its own buffer.
async fn relay_any(client: Stream, origin: Stream, idle: Duration) -> (u64, u64) {
    let counts = Counts::default();
    let activity = Activity {
        start: Instant::now(),
        last: AtomicU64::new(0),
    };
    let _ = future::try_zip(
        pump(client.clone(), origin.clone(), &activity, idle, &counts.up),
        pump(origin, client, &activity, idle, &counts.down),
    )
    .await;
    (counts.up.into_inner(), counts.down.into_inner())
}

/// Waits until `ready` completes or the whole tunnel has been idle for `idle`: the other
/// direction being busy keeps this one alive too.
async fn wait_active<F: std::future::Future<Output = io::Result<()>>>(
    ready: F,
    activity: &Activity,
    idle: Duration,
    alarm: &mut Alarm,
) -> io::Result<()> {
    ready
        .or(async {
            alarm.wait(|| activity.due(idle)).await;
            Err(io::ErrorKind::TimedOut.into())
        })
        .await
}

/// Bytes one direction moves before it lets other connections run.
const TURN_BYTES: usize = 1024 * 1024;

/// A tunnel between two TCP sockets: both directions and the idle timeout in one hand-written
/// future, so that an idle tunnel costs this struct (about 250 bytes) and holds no buffer.
struct TcpRelay {
    client: Tcp,
    origin: Tcp,
    /// Client to origin.
    up: Flow,
    /// Origin to client.
    down: Flow,
    idle: Duration,
    /// Fires at the idle deadline as it was when last armed; re-armed if data moved since.
    alarm: Alarm,
    /// When a byte last moved in either direction.
    last: Instant,
}

impl TcpRelay {
    fn new(client: Tcp, origin: Tcp, idle: Duration) -> TcpRelay {
        let now = Instant::now();
        TcpRelay {
            client,
            origin,
            up: Flow::default(),
            down: Flow::default(),
            idle,
            alarm: Alarm::default(),
            last: now,
        }
    }
}

impl std::future::Future for TcpRelay {
    type Output = (u64, u64);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<(u64, u64)> {
        let this = self.get_mut();
        let before = (this.up.moved, this.down.moved, this.up.done, this.down.done);
        let up = this.up.poll(cx, &this.client, &this.origin);
        let down = this.down.poll(cx, &this.origin, &this.client);
        let counts = (this.up.moved, this.down.moved);
        match (up, down) {
            // One side failed (reset, or a write the peer refused): the tunnel is over.
            (Poll::Ready(Err(_)), _) | (_, Poll::Ready(Err(_))) => return Poll::Ready(counts),
            (Poll::Ready(Ok(())), Poll::Ready(Ok(()))) => return Poll::Ready(counts),
            _ => {}
        }
        if before != (this.up.moved, this.down.moved, this.up.done, this.down.done) {
            this.last = Instant::now();
        }
        match this.alarm.poll_at(cx, this.last + this.idle) {
            Poll::Ready(()) => Poll::Ready(counts),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// One direction of a [`TcpRelay`].
#[derive(Default)]
struct Flow {
    /// Read and not yet written: `buf[start..end]`. Held only while data flows.
    buf: Option<Lease>,
    start: usize,
    end: usize,
    /// Set once this direction carried a full buffer (a bulk flow): from then on it moves data
    /// with splice(2) through this pipe, kernel to kernel.
    pipe: Option<Pipe>,
    /// Bytes in the pipe not yet written.
    held: usize,
    /// Bytes written to the destination.
    moved: u64,
    /// The source's end of stream was passed on.
    done: bool,
}

impl Flow {
    /// Moves what `src` has into `dst`; ready when the direction is finished (end of stream
    /// passed on as a half-close) or failed. Pending while it waits for either socket, or
    /// after [`TURN_BYTES`] to let others run (it then wakes itself).
    fn poll(&mut self, cx: &mut Context<'_>, src: &Tcp, dst: &Tcp) -> Poll<io::Result<()>> {
        use rustix::io::Errno;
        use rustix::pipe::{splice, SpliceFlags};
        let flags = SpliceFlags::MOVE | SpliceFlags::NONBLOCK;
        let mut turn = 0;
        while !self.done {
            // Write out what was read.
            if let Some(buf) = &self.buf {
                while self.start < self.end {
                    match dst.0.get_ref().write(&buf.buf[self.start..self.end]) {
                        Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                        Ok(n) => {
                            self.start += n;
                            self.moved += n as u64;
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            ready!(dst.0.poll_writable_io(cx))?
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Poll::Ready(Err(e)),
                    }
                }
                if self.pipe.is_some() {
                    // Switched to splice: the copy buffer is never used again.
                    self.buf = None;
                }
            }
            if let Some(pipe) = &self.pipe {
                while self.held > 0 {
                    match splice(&pipe.rx, None, dst.0.get_ref(), None, self.held, flags) {
                        Ok(n) => {
                            self.held -= n;
                            self.moved += n as u64;
                        }
                        Err(Errno::AGAIN) => ready!(dst.0.poll_writable_io(cx))?,
                        Err(Errno::INTR) => {}
                        Err(e) => return Poll::Ready(Err(e.into())),
                    }
                }
            }
            if turn >= TURN_BYTES {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            // Read more, until a read finds nothing: with the edge-triggered reactor
            // (vendor/README.md) only a wait after that costs no system call, so a wait after a
            // short read would cost an epoll_ctl, as much as the read it saves.
            let n = if let Some(pipe) = &self.pipe {
                match splice(src.0.get_ref(), None, &pipe.tx, None, pipe.capacity, flags) {
                    Ok(n) => {
                        self.held = n;
                        n
                    }
                    Err(Errno::AGAIN) => {
                        ready!(src.0.poll_readable_io(cx))?;
                        continue;
                    }
                    Err(Errno::INTR) => continue,
                    Err(e) => return Poll::Ready(Err(e.into())),
                }
            } else {
                let buf = self.buf.get_or_insert_with(|| COPY_BUFFERS.take());
                match src.0.get_ref().read(&mut buf.buf) {
                    Ok(n) => {
                        (self.start, self.end) = (0, n);
                        if n == buf.buf.len() {
                            // A bulk flow: switch to splice if the system gives us a pipe (it
                            // may not: out of descriptors), else keep copying.
                            self.pipe = Pipe::new();
                        }
                        n
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        // Nothing to move: an idle direction holds no buffer.
                        self.buf = None;
                        ready!(src.0.poll_readable_io(cx))?;
                        continue;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Poll::Ready(Err(e)),
                }
            };
            if n == 0 {
                dst.shutdown_write();
                self.done = true;
                (self.buf, self.pipe) = (None, None);
            }
            turn += n;
        }
        Poll::Ready(Ok(()))
    }
}

/// A pipe for moving one direction's bytes with splice(2) (Linux).
struct Pipe {
    /// The read end.
    rx: rustix::fd::OwnedFd,
    /// The write end.
    tx: rustix::fd::OwnedFd,
    /// Bytes the pipe can hold (what the kernel granted).
    capacity: usize,
}

/// Pipe size asked for: a few socket buffers' worth, so one splice moves a lot.
const PIPE_SIZE: usize = 1024 * 1024;

impl Pipe {
    fn new() -> Option<Pipe> {
        use rustix::pipe::{fcntl_setpipe_size, pipe_with, PipeFlags};
        let (rx, tx) = pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK).ok()?;
        // The default is 64 KiB; a larger pipe halves the system calls of a bulk flow.
        let capacity = fcntl_setpipe_size(&tx, PIPE_SIZE).unwrap_or(64 * 1024);
        Some(Pipe { rx, tx, capacity })
    }
}

/// One direction between any two streams (TLS, proxied hops).
async fn pump<R, W>(
    mut src: R,
    mut dst: W,
    activity: &Activity,
    idle: Duration,
    count: &AtomicU64,
) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 16 * 1024];
    let mut alarm = Alarm::default();
    loop {
        let mut n = 0;
        wait_active(
            async {
                n = src.read(&mut buf).await?;
                Ok(())
            },
            activity,
            idle,
            &mut alarm,
        )
        .await?;
        if n == 0 {
            let _ = dst.close().await;
            return Ok(());
        }
        activity.touch();
        dst.write_all(&buf[..n]).or(write_deadline(idle)).await?;
        dst.flush().await?;
        count.fetch_add(n as u64, Ordering::Relaxed);
    }
}

async fn write_deadline(idle: Duration) -> io::Result<()> {
    crate::alarm::sleep(idle).await;
    Err(io::ErrorKind::TimedOut.into())
}

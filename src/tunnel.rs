//! Two-way byte relay for CONNECT tunnels and upgraded (WebSocket) connections.
//!
//! Each direction is copied until its sender closes, then the close is passed on as a
//! half-close, so protocols that shut down one side first keep working. A tunnel is closed
//! when neither direction moved a byte for the idle timeout. Between TCP sockets a direction
//! waits for readability before it takes a copy buffer and returns it as soon as the socket
//! has nothing more, so an idle tunnel holds no buffer at all.

use std::io::{self, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_io::Timer;
use futures_lite::{future, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, FutureExt};

use crate::alarm::Alarm;
use crate::stream::{Stream, Tcp};

/// Copy buffer per busy direction. 64 KiB lets one read drain a full socket buffer burst,
/// which measured close to the direct-connection ceiling on loopback.
const BUFFER_SIZE: usize = 64 * 1024;
/// Copy buffers kept for reuse once their direction went quiet: a burst then costs neither an
/// allocation nor zeroing 64 KiB. 32 covers the busy tunnels of a small machine (2 MiB).
const MAX_SPARE: usize = 32;

static SPARE: Mutex<Vec<Box<[u8]>>> = Mutex::new(Vec::new());

/// A copy buffer held while a direction has data to move, returned to [`SPARE`] on drop.
struct Lease(Box<[u8]>);

impl Lease {
    fn take() -> Lease {
        let spare = SPARE.lock().ok().and_then(|mut s| s.pop());
        Lease(spare.unwrap_or_else(|| vec![0u8; BUFFER_SIZE].into_boxed_slice()))
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Ok(mut spare) = SPARE.lock() {
            if spare.len() < MAX_SPARE {
                spare.push(std::mem::take(&mut self.0));
            }
        }
    }
}

/// Bytes moved by a tunnel.
#[derive(Debug, Default)]
pub struct Counts {
    /// From the client toward the origin.
    pub up: AtomicU64,
    /// From the origin toward the client.
    pub down: AtomicU64,
}

/// Shared idle clock: the last time either direction moved data.
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

/// Relays between `client` and `origin` until both sides are closed, one fails, or the
/// tunnel is idle. `early_up`/`early_down` are bytes already read from either side.
pub async fn relay(
    client: Tcp,
    early_up: &[u8],
    origin: Stream,
    early_down: &[u8],
    idle: Duration,
    counts: &Counts,
) {
    let mut origin_w = origin.clone();
    let mut client_w = client.clone();
    if origin_w.write_all(early_up).await.is_err() || client_w.write_all(early_down).await.is_err()
    {
        return;
    }
    counts
        .up
        .fetch_add(early_up.len() as u64, Ordering::Relaxed);
    counts
        .down
        .fetch_add(early_down.len() as u64, Ordering::Relaxed);
    let activity = Activity {
        start: Instant::now(),
        last: AtomicU64::new(0),
    };
    let result = match origin {
        Stream::Tcp(o) => {
            future::try_zip(
                pump_tcp(&client, &o, &activity, idle, &counts.up),
                pump_tcp(&o, &client, &activity, idle, &counts.down),
            )
            .await
        }
        other => {
            future::try_zip(
                pump(client.clone(), other.clone(), &activity, idle, &counts.up),
                pump(other, client.clone(), &activity, idle, &counts.down),
            )
            .await
        }
    };
    drop(result);
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

/// One direction between two TCP sockets, holding a buffer only while data flows.
async fn pump_tcp(
    src: &Tcp,
    dst: &Tcp,
    activity: &Activity,
    idle: Duration,
    count: &AtomicU64,
) -> io::Result<()> {
    let mut alarm = Alarm::default();
    // Set once this direction has carried a bulk flow: from then on it moves data with
    // splice(2) through this pipe, kernel to kernel, instead of copying through a buffer.
    let mut pipe: Option<Pipe> = None;
    loop {
        wait_active(src.0.readable(), activity, idle, &mut alarm).await?;
        if let Some(pipe) = &mut pipe {
            if pipe.pump(src, dst, activity, idle, count).await? {
                dst.shutdown_write();
                return Ok(());
            }
            continue;
        }
        let mut buf = Lease::take();
        loop {
            match src.0.get_ref().read(&mut buf.0) {
                Ok(0) => {
                    dst.shutdown_write();
                    return Ok(());
                }
                Ok(n) => {
                    activity.touch();
                    (&*dst.0)
                        .write_all(&buf.0[..n])
                        .or(write_deadline(idle))
                        .await?;
                    count.fetch_add(n as u64, Ordering::Relaxed);
                    if n == buf.0.len() {
                        // A full buffer: this is a bulk flow. Switch to splice if the system
                        // gives us a pipe (it may not: out of descriptors), else keep copying,
                        // letting the other connections run between buffers.
                        pipe = Pipe::new();
                        if pipe.is_some() {
                            break;
                        }
                        future::yield_now().await;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
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

    /// Moves what `src` has now into `dst` through the pipe; returns true at end of stream.
    async fn pump(
        &mut self,
        src: &Tcp,
        dst: &Tcp,
        activity: &Activity,
        idle: Duration,
        count: &AtomicU64,
    ) -> io::Result<bool> {
        use rustix::io::Errno;
        use rustix::pipe::{splice, SpliceFlags};
        let flags = SpliceFlags::MOVE | SpliceFlags::NONBLOCK;
        loop {
            // The pipe is empty here: fill it from the source.
            let n = match splice(src.0.get_ref(), None, &self.tx, None, self.capacity, flags) {
                Ok(0) => return Ok(true),
                Ok(n) => n,
                Err(Errno::AGAIN) => return Ok(false),
                Err(Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            };
            activity.touch();
            // Drain it into the destination, waiting while the destination is full.
            let mut left = n;
            while left > 0 {
                match splice(&self.rx, None, dst.0.get_ref(), None, left, flags) {
                    Ok(m) => {
                        left -= m;
                        count.fetch_add(m as u64, Ordering::Relaxed);
                    }
                    Err(Errno::AGAIN) => dst.0.writable().or(write_deadline(idle)).await?,
                    Err(Errno::INTR) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            // A flow that never runs dry must still let the other connections run.
            future::yield_now().await;
        }
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
    Timer::after(idle).await;
    Err(io::ErrorKind::TimedOut.into())
}

//! Listening, accepting, limits and shutdown.
//!
//! All configuration has been checked before this runs; listening starts here. The accept
//! loop never dies on resource exhaustion (EMFILE, ENOMEM): it backs off and tries again.
//! Beyond `--max-connections` a new client gets a 503 with Retry-After. SIGINT or SIGTERM stops
//! accepting, lets requests in flight finish for up to [`GRACE`], and exits 0; with
//! `--reuse-port` other processes on the same port go on accepting meanwhile. SIGHUP reads
//! the configuration's files again (`reload.rs`) and serving goes on. A connection from a
//! `--proxy-protocol-from` peer is first relieved of its PROXY protocol header (parsed in
//! `proxy_protocol.rs`), and the client it names is the peer from then on. The
//! `--metrics-listen` listener is bound here too and handed to `scrape.rs`.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_io::{Async, Timer};
use async_signal::{Signal, Signals};
use futures_lite::{future, AsyncWriteExt, FutureExt, StreamExt};
use smol::channel::Sender;
use smol::Executor;

use crate::capture::Capture;
use crate::config::Config;
use crate::connection;
use crate::error::Error;
use crate::log::Log;
use crate::metrics::Refusal;
use crate::proxy::Proxy;
use crate::proxy_protocol;
use crate::scrape;
use crate::stream::Tcp;

/// How long requests in flight may take to finish after SIGINT/SIGTERM.
pub const GRACE: Duration = Duration::from_secs(5);
/// Pending connections the kernel queues per listener before accept (see `somaxconn`).
const LISTEN_BACKLOG: i32 = 1024;
/// Pause after an accept error such as EMFILE before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Clients being turned away with 503 at once; beyond it excess connections are just closed.
const MAX_REJECTING: usize = 64;
/// How long a 503 may take to be written to a client that is turned away.
const REJECT_TIMEOUT: Duration = Duration::from_secs(1);

/// A running proxy's listeners, bound and announced.
pub struct Server {
    /// The shared state.
    proxy: Arc<Proxy>,
    /// Bound listening sockets, and whether each is a TLS listener (`--listen-tls`).
    listeners: Vec<(Async<TcpListener>, bool)>,
    /// The metrics listener (`--metrics-listen`), served by threads of its own.
    metrics: Option<TcpListener>,
    /// Dropping it starts shutdown.
    stop_tx: Sender<()>,
    /// SIGTERM, SIGINT and SIGHUP, caught from before listening is announced: a SIGHUP sent
    /// as soon as the proxy is up (a service manager's reload) must not end it.
    signals: Signals,
}

impl Server {
    /// Opens the log and binds every listen address. Errors are one line for the user.
    pub fn bind(cfg: Config) -> Result<Server, String> {
        let log = Log::open(cfg.access_log.as_deref(), cfg.log_format).map_err(|e| {
            format!(
                "cannot open access log {}: {}",
                cfg.access_log.as_deref().unwrap_or("-"),
                crate::error::describe(&e)
            )
        })?;
        let capture = match &cfg.capture {
            Some(path) => Some(
                Capture::open(path, cfg.capture_body_limit, cfg.capture_secrets).map_err(|e| {
                    format!(
                        "cannot open capture file {path}: {}",
                        crate::error::describe(&e)
                    )
                })?,
            ),
            None => None,
        };
        let mut listeners = Vec::new();
        let plain = cfg.listen.iter().map(|a| (a, false));
        for (addr, tls) in plain.chain(cfg.listen_tls.iter().map(|a| (a, true))) {
            let l = listen(*addr, cfg.reuse_port)
                .map_err(|e| format!("cannot listen on {addr}: {}", crate::error::describe(&e)))?;
            listeners.push((l, tls));
        }
        let metrics =
            match cfg.metrics_listen {
                Some(addr) => Some(TcpListener::bind(addr).map_err(|e| {
                    format!("cannot listen on {addr}: {}", crate::error::describe(&e))
                })?),
                None => None,
            };
        let (proxy, stop_tx) = Proxy::new(cfg, log, capture)?;
        let proxy = Arc::new(proxy);
        let signals = Signals::new([Signal::Term, Signal::Int, Signal::Hup])
            .map_err(|e| format!("cannot catch signals: {}", crate::error::describe(&e)))?;
        Ok(Server {
            proxy,
            listeners,
            metrics,
            stop_tx,
            signals,
        })
    }

    /// The addresses actually bound (port 0 resolved), each with whether it is a TLS listener.
    pub fn local_addrs(&self) -> Vec<(SocketAddr, bool)> {
        self.listeners
            .iter()
            .filter_map(|(l, tls)| Some((l.get_ref().local_addr().ok()?, *tls)))
            .collect()
    }

    /// The metrics listener's address actually bound, with `--metrics-listen`.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref()?.local_addr().ok()
    }

    /// Serves until SIGINT or SIGTERM, then drains and returns; SIGHUP reloads.
    pub fn run(self) -> std::io::Result<()> {
        let ex: Arc<Executor<'static>> = Arc::new(Executor::new());
        for _ in 1..self.proxy.cfg.threads {
            let ex = ex.clone();
            std::thread::spawn(move || async_io::block_on(ex.run(future::pending::<()>())));
        }
        let Server {
            proxy,
            listeners,
            metrics,
            stop_tx,
            signals,
        } = self;
        if let Some(l) = metrics {
            // Not stopped at shutdown: /healthz says 503 while the others drain.
            scrape::spawn(proxy.clone(), l)?;
        }
        // async_io's block_on polls the reactor on this thread while the executor is idle;
        // futures_lite's would leave it to a helper thread and pay two context switches for
        // every socket event.
        async_io::block_on(ex.run(async {
            for (l, tls) in listeners {
                ex.spawn(accept(proxy.clone(), l, tls, ex.clone())).detach();
            }
            // The proxy's timeouts fire only while this runs (see alarm.rs).
            ex.spawn(crate::alarm::watch()).detach();
            // Every MAX_IDLE/2: idle origin connections past MAX_IDLE are closed, and spare
            // buffers unused since the last round are freed (a burst's buffers go back to the
            // allocator within two rounds of the load ending).
            let janitor = proxy.clone();
            ex.spawn(async move {
                loop {
                    crate::alarm::sleep(crate::pool::MAX_IDLE / 2).await;
                    janitor.pool.sweep();
                    crate::reader::READ_BUFFERS.trim();
                    crate::tunnel::COPY_BUFFERS.trim();
                }
            })
            .detach();
            // A task of its own: block_on polls its own future at every wake-up of this thread,
            // and a signal stream polled there would try a read (EAGAIN) each time.
            let reloader = proxy.clone();
            ex.spawn(async move {
                let mut signals = signals;
                while let Some(Ok(Signal::Hup)) = signals.next().await {
                    // Files are read on the blocking pool, not on the executor's threads; one
                    // reload at a time, since the next signal is taken only after this one.
                    let p = reloader.clone();
                    smol::unblock(move || crate::reload::reload(&p)).await;
                }
            })
            .await;
            proxy.stop(stop_tx);
            let deadline = Instant::now() + GRACE;
            while proxy.active.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
                Timer::after(Duration::from_millis(20)).await;
            }
        }));
        if let Some(capture) = &proxy.capture {
            capture.finish();
        }
        Ok(())
    }
}

/// Binds a listening socket as std does (close-on-exec, SO_REUSEADDR so that a restart need
/// not wait for old connections in TIME_WAIT), plus SO_REUSEPORT with `--reuse-port`, which
/// std cannot set before bind(2).
fn listen(addr: SocketAddr, reuse_port: bool) -> std::io::Result<Async<TcpListener>> {
    use rustix::net::{self, sockopt, AddressFamily, SocketFlags, SocketType};
    let family = match addr {
        SocketAddr::V4(_) => AddressFamily::INET,
        SocketAddr::V6(_) => AddressFamily::INET6,
    };
    let fd = net::socket_with(family, SocketType::STREAM, SocketFlags::CLOEXEC, None)?;
    sockopt::set_socket_reuseaddr(&fd, true)?;
    if reuse_port {
        sockopt::set_socket_reuseport(&fd, true)?;
    }
    net::bind(&fd, &addr)?;
    // std listens with a backlog of 128; a burst of clients (a LAN waking up) should queue in
    // the kernel rather than have its SYNs dropped.
    net::listen(&fd, LISTEN_BACKLOG)?;
    Async::new(TcpListener::from(fd))
}

/// Accepts clients on one listener until shutdown; `tls` for a `--listen-tls` one.
async fn accept(
    p: Arc<Proxy>,
    listener: Async<TcpListener>,
    tls: bool,
    ex: Arc<Executor<'static>>,
) {
    let mut warned = false;
    loop {
        let next = async { Some(accept_one(&listener).await) }
            .or(async {
                p.stopped().await;
                None
            })
            .await;
        let (stream, peer) = match next {
            None => return,
            Some(Ok(pair)) => pair,
            Some(Err(e)) => {
                // EMFILE, ENFILE, ENOMEM and friends: the pending connection stays queued in
                // the kernel; wait for descriptors or memory to free up and try again.
                if !warned {
                    eprintln!(
                        "warning: accept failed: {}; backing off",
                        crate::error::describe(&e)
                    );
                    warned = true;
                }
                Timer::after(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        warned = false;
        p.metrics.accepted();
        if p.active.load(Ordering::Relaxed) >= p.cfg.max_connections {
            p.metrics.refused(Refusal::MaxConnections);
            if p.rejecting.fetch_add(1, Ordering::Relaxed) < MAX_REJECTING {
                ex.spawn(reject(p.clone(), stream)).detach();
            } else {
                p.rejecting.fetch_sub(1, Ordering::Relaxed);
            }
            continue;
        }
        p.active.fetch_add(1, Ordering::SeqCst);
        let p2 = p.clone();
        ex.spawn(async move {
            let _guard = Active(p2.clone());
            // SPEC §12: a listed load balancer's header names the client; nobody else's is read.
            let peer = match p2
                .cfg
                .proxy_protocol_from
                .iter()
                .any(|n| n.contains(peer.ip()))
            {
                false => peer,
                // Boxed, and freed once the header is read: a future's state is as big as its
                // biggest await, and this one would otherwise more than double the task that
                // every idle tunnel keeps (measured: a 672-byte task per tunnel).
                true => match Box::pin(proxied(&stream, peer, p2.cfg.header_timeout)).await {
                    Ok(Some(client)) => client,
                    Ok(None) => return,
                    Err(why) => return bad_header(&p2, peer, why),
                },
            };
            // Boxed so that the connection's state is freed when it hands over a tunnel.
            let tunnel = match tls {
                false => Box::pin(connection::serve(p2, Tcp::new(stream), peer)).await,
                true => Box::pin(connection::serve_tls(p2, Tcp::new(stream), peer)).await,
            };
            if let Some(tunnel) = tunnel {
                tunnel.await;
            }
        })
        .detach();
    }
}

/// Accepts one connection as `Async::accept` does, but with the socket made non-blocking by
/// accept4(2) itself: that saves the ioctl(FIONBIO) `Async::new` would make per connection.
async fn accept_one(
    listener: &Async<TcpListener>,
) -> std::io::Result<(Async<TcpStream>, SocketAddr)> {
    use rustix::net::{acceptfrom_with, SocketFlags};
    let flags = SocketFlags::NONBLOCK | SocketFlags::CLOEXEC;
    // Every poll tries accept(2) first, so a wait follows an accept that found nothing: with
    // the edge-triggered reactor (vendor/README.md) such a wait costs no system call.
    let (fd, addr) = future::poll_fn(|cx| loop {
        match acceptfrom_with(listener.get_ref(), flags) {
            Err(rustix::io::Errno::AGAIN) => std::task::ready!(listener.poll_readable_io(cx))?,
            Err(rustix::io::Errno::INTR) => {}
            got => return std::task::Poll::Ready(got.map_err(std::io::Error::from)),
        }
    })
    .await?;
    let peer = addr
        .and_then(|a| SocketAddr::try_from(a).ok())
        .ok_or_else(|| std::io::Error::other("accepted a connection with no IP address"))?;
    Ok((Async::new_nonblocking(TcpStream::from(fd))?, peer))
}

/// Reads the PROXY protocol header a `--proxy-protocol-from` peer must send first, within
/// `limit`, taking exactly its bytes: what follows is the client's (an HTTP or SOCKS request,
/// a TLS ClientHello). Returns the client it names, `peer` itself for LOCAL and UNKNOWN, or
/// `None` when the connection is to be closed without a word: the peer went away without
/// sending a byte, or sent a LOCAL header and nothing after it (a health check).
async fn proxied(
    stream: &Async<TcpStream>,
    peer: SocketAddr,
    limit: Duration,
) -> Result<Option<SocketAddr>, &'static str> {
    // On the heap and only for this, so that every connection's task stays small; one byte
    // more than a header, to peek past the longest.
    let mut buf = vec![0u8; proxy_protocol::MAX + 1];
    let mut len = 0;
    // Set once a LOCAL or UNKNOWN header is in: the connection is the balancer's own.
    let mut own = false;
    let read = async {
        loop {
            // Peeked, then read only as far as the header goes. Incomplete means every byte
            // peeked is the header's, so they are read and the next peek waits for more.
            let n = match stream.peek(&mut buf[len..]).await {
                Ok(0) | Err(_) if len == 0 || own => return Ok(None),
                Ok(0) => return Err("connection closed inside the header"),
                Ok(n) => n,
                Err(_) => return Err("connection failed inside the header"),
            };
            if own {
                return Ok(Some(peer));
            }
            let header = proxy_protocol::parse(&buf[..len + n])?;
            let end = header.map_or(len + n, |h| h.len);
            let part = buf.get_mut(len..end).ok_or("header parse out of step")?;
            // Those bytes were peeked, so they wait in the socket: a plain read gets them.
            std::io::Read::read_exact(&mut stream.get_ref(), part).map_err(|_| "read failed")?;
            len = end;
            match header.map(|h| h.source) {
                None => {}
                Some(Some(client)) => return Ok(Some(client)),
                // A health check ends here: waiting for a first byte and closing unheard
                // keeps the log quiet (were the balancer outside --allow-client, each check
                // would be a 403 line).
                Some(None) => own = true,
            }
        }
    };
    let result = read
        .or(async {
            crate::alarm::sleep(limit).await;
            Err("no header within --header-timeout")
        })
        .await;
    match result {
        // A LOCAL connection that stays silent is served, and judged, like any other.
        Err(_) if own => Ok(Some(peer)),
        r => r,
    }
}

/// Counts a connection closed for its PROXY protocol header, and says so on stderr for the
/// 1st, 2nd, 4th, 8th... one, so that a misconfigured load balancer cannot flood the log.
fn bad_header(p: &Proxy, peer: SocketAddr, why: &str) {
    let n = p.metrics.refused(Refusal::ProxyProtocol);
    if n.is_power_of_two() {
        eprintln!("PROXY protocol: {why} from {peer}; closed ({n} so far)");
    }
}

/// Decrements the active count when a connection task ends, however it ends.
struct Active(Arc<Proxy>);

impl Drop for Active {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Tells a client over the limit to come back later.
async fn reject(p: Arc<Proxy>, stream: Async<TcpStream>) {
    let msg = Error::Unavailable("too many connections".into()).reply("Retry-After: 1\r\n", true);
    let _ = (&stream)
        .write_all(&msg)
        .or(async {
            Timer::after(REJECT_TIMEOUT).await;
            Ok(())
        })
        .await;
    p.rejecting.fetch_sub(1, Ordering::Relaxed);
}

//! Listening, accepting, limits and shutdown.
//!
//! All configuration has been checked before this runs; listening starts here. The accept
//! loop never dies on resource exhaustion (EMFILE, ENOMEM): it backs off and tries again.
//! Beyond `--max-connections` a new client gets a 503 with Retry-After. SIGINT or SIGTERM stops
//! accepting, lets requests in flight finish for up to [`GRACE`], and exits 0. The
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
            let l = Async::<TcpListener>::bind(*addr)
                .map_err(|e| format!("cannot listen on {addr}: {}", crate::error::describe(&e)))?;
            // std listens with a backlog of 128; a burst of clients (a LAN waking up) should
            // queue in the kernel rather than have its SYNs dropped. Linux lets listen() be
            // called again to raise it.
            let _ = rustix::net::listen(l.get_ref(), LISTEN_BACKLOG);
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
        Ok(Server {
            proxy,
            listeners,
            metrics,
            stop_tx,
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

    /// Serves until SIGINT or SIGTERM, then drains and returns.
    pub fn run(self) -> std::io::Result<()> {
        let signals = Signals::new([Signal::Term, Signal::Int])?;
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
            let janitor = proxy.clone();
            ex.spawn(async move {
                loop {
                    Timer::after(crate::pool::MAX_IDLE / 2).await;
                    janitor.pool.sweep();
                }
            })
            .detach();
            let mut signals = signals;
            signals.next().await;
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

/// Accepts clients on one listener until shutdown; `tls` for a `--listen-tls` one.
async fn accept(
    p: Arc<Proxy>,
    listener: Async<TcpListener>,
    tls: bool,
    ex: Arc<Executor<'static>>,
) {
    let mut warned = false;
    loop {
        let next = async { Some(listener.accept().await) }
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

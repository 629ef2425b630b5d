//! The state every connection shares: the checked configuration, the access log, the origin
//! pool, the capture writer, the authorization service's client and cache, the metrics, and
//! the counters and signal that the accept loop and shutdown use.
//!
//! It sits on a low floor on purpose: the stages (authz, forward, upstream, connection) read it,
//! and it names only the modules below them. Building it and running the listeners is
//! `server.rs`'s job; nothing here touches a socket.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use smol::channel::{Receiver, Sender};

use crate::authz::Authz;
use crate::capture::Capture;
use crate::config::Config;
use crate::log::{Entry, Log};
use crate::metrics::{Metrics, Sampled};
use crate::pool::Pool;

/// State shared by every connection.
pub struct Proxy {
    /// The checked configuration.
    pub cfg: Config,
    /// The access log.
    pub log: Log,
    /// Idle origin connections.
    pub pool: Pool,
    /// The capture file's writer, with `--capture`.
    pub capture: Option<Capture>,
    /// The authorization service client and its decision cache, with `--authz-url`.
    pub authz: Option<Authz>,
    /// Counters for `--metrics-listen`, always kept.
    pub metrics: Metrics,
    /// The interception CA and its leaves, with `--intercept`.
    #[cfg(feature = "tls-server")]
    pub intercept: Option<crate::intercept::Interceptor>,
    /// Client connections being served.
    pub active: AtomicUsize,
    /// Clients being turned away with 503 (see `server.rs`).
    pub rejecting: AtomicUsize,
    /// Set once shutdown has begun.
    stopping: AtomicBool,
    /// Closed at shutdown; waiting on it wakes every idle connection.
    stop_rx: Receiver<()>,
}

impl Proxy {
    /// The shared state for `cfg` (its files read), and the sender whose drop (see
    /// [`Proxy::stop`]) starts shutdown.
    pub fn new(
        cfg: Config,
        log: Log,
        capture: Option<Capture>,
    ) -> Result<(Proxy, Sender<()>), String> {
        let (stop_tx, stop_rx) = smol::channel::bounded(1);
        let authz = cfg.authz.clone().map(Authz::new);
        #[cfg(feature = "tls-server")]
        let intercept = match cfg.intercept.as_ref().and_then(|i| i.ca.clone()) {
            Some(ca) => Some(crate::intercept::Interceptor::new(ca)?),
            None => None,
        };
        let proxy = Proxy {
            authz,
            #[cfg(feature = "tls-server")]
            intercept,
            cfg,
            log,
            pool: Pool::default(),
            capture,
            metrics: Metrics::new(),
            active: AtomicUsize::new(0),
            rejecting: AtomicUsize::new(0),
            stopping: AtomicBool::new(false),
            stop_rx,
        };
        Ok((proxy, stop_tx))
    }

    /// Begins shutdown: marks it and drops `stop_tx`, which wakes every idle connection.
    pub fn stop(&self, stop_tx: Sender<()>) {
        self.stopping.store(true, Ordering::SeqCst);
        drop(stop_tx);
    }

    /// Whether shutdown has begun.
    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }

    /// Ends a request or tunnel: its access-log line and its counts in the metrics, in one
    /// place so that the two always agree.
    pub fn report(&self, entry: &Entry) {
        let e = entry;
        self.metrics.request(e.status, &e.route, e.up, e.down);
        self.log.write(e);
    }

    /// The metrics' text, with the values sampled from the rest of the proxy now.
    pub fn render_metrics(&self) -> String {
        let capture = self.capture.as_ref();
        self.metrics.render(&Sampled {
            connections: self.active.load(Ordering::Relaxed),
            capture_records: capture.map_or(0, Capture::written),
            capture_backlog: capture.map_or(0, Capture::backlog),
        })
    }

    /// Completes when shutdown begins.
    pub async fn stopped(&self) {
        let _ = self.stop_rx.recv().await;
    }
}

//! The state every connection shares: the checked configuration, the access log, the origin
//! pool, the capture writer, the authorization service's client and cache, the metrics, and
//! the counters and signal that the accept loop and shutdown use.
//!
//! What SIGHUP reads again (`reload.rs`) is apart from the static configuration: a [`Live`]
//! snapshot (users, egress policy with this host's addresses, CA trust, the TLS listener's and
//! the interception CA's certificates) that a reload replaces whole. A connection takes it once
//! ([`Proxy::live`]: an `Arc` clone, no lock held) and, between requests, looks at one counter
//! to see whether a newer one exists ([`Proxy::refresh`]); what it already opened (a tunnel, a
//! TLS session, a request in flight) goes on with the snapshot it started with.
//!
//! It sits on a low floor on purpose: the stages (authz, forward, upstream, connection) read it,
//! and it names only the modules below them. Building it and running the listeners is
//! `server.rs`'s job; nothing here touches a socket.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use smol::channel::{Receiver, Sender};

use crate::auth::Access;
use crate::authz::Authz;
use crate::capture::Capture;
use crate::config::Config;
use crate::log::{Entry, Log};
use crate::metrics::{Metrics, Sampled};
use crate::policy::Policy;
use crate::pool::Pool;
use crate::tls::Trust;

/// What SIGHUP reads again, as one immutable snapshot (see the top of this file).
pub struct Live {
    /// Client networks, users (those of `--auth-file` read again) and realm.
    pub access: Access,
    /// Egress rules, with this host's addresses read again for `--block-private`.
    pub policy: Policy,
    /// Trusted CA certificates for TLS to upstreams, origins and the authorization service.
    pub trust: Trust,
    /// The TLS listeners' certificate and key, with `--listen-tls`.
    #[cfg(feature = "tls-server")]
    pub tls_server: Option<crate::tls::ServerSettings>,
    /// The interception CA and its leaves, with `--intercept`; a new CA comes with an empty
    /// leaf cache.
    #[cfg(feature = "tls-server")]
    pub intercept: Option<Arc<crate::intercept::Interceptor>>,
    /// Which reload made it (0: start); compared with [`Proxy::refresh`]'s counter.
    pub generation: usize,
}

/// State shared by every connection.
pub struct Proxy {
    /// The checked configuration. Its users, policy, trust and TLS settings are the ones read
    /// at start: connections use [`Proxy::live`]'s instead, which SIGHUP replaces.
    pub cfg: Config,
    /// The access log.
    pub log: Log,
    /// Idle origin connections.
    pub pool: Pool,
    /// The capture file's writer, with `--capture`.
    pub capture: Option<Capture>,
    /// The authorization service client and its decision cache, with `--authz-url`.
    pub authz: Option<Authz>,
    /// The current snapshot of what SIGHUP reads again.
    live: RwLock<Arc<Live>>,
    /// The generation of the current snapshot, read without the lock between requests.
    generation: AtomicUsize,
    /// Counters for `--metrics-listen`, always kept.
    pub metrics: Metrics,
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
            Some(ca) => Some(Arc::new(crate::intercept::Interceptor::new(ca)?)),
            None => None,
        };
        let live = Live {
            access: cfg.access.clone(),
            policy: cfg.policy.clone(),
            trust: cfg.trust.clone(),
            #[cfg(feature = "tls-server")]
            tls_server: cfg.tls_server.clone(),
            #[cfg(feature = "tls-server")]
            intercept,
            generation: 0,
        };
        let proxy = Proxy {
            authz,
            live: RwLock::new(Arc::new(live)),
            generation: AtomicUsize::new(0),
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

    /// The current snapshot of what SIGHUP reads again. Cloned out, so no lock is held while
    /// it is used.
    pub fn live(&self) -> Arc<Live> {
        // A panic while the lock was held cannot leave a half-made snapshot: it is swapped whole.
        self.live.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replaces `live` by the current snapshot if a reload made a newer one: one atomic load
    /// when nothing changed, so it can run before every request.
    pub fn refresh(&self, live: &mut Arc<Live>) {
        if live.generation != self.generation.load(Ordering::Acquire) {
            *live = self.live();
        }
    }

    /// Installs a snapshot made by a reload; connections see it from their next request.
    pub fn replace_live(&self, mut next: Live) {
        let mut current = self.live.write().unwrap_or_else(|e| e.into_inner());
        next.generation = current.generation + 1;
        let generation = next.generation;
        *current = Arc::new(next);
        drop(current);
        self.generation.store(generation, Ordering::Release);
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

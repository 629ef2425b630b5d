//! A small idle pool of origin connections, keyed by destination.
//!
//! After a response whose framing was known and that left the connection open, the origin
//! connection is parked here and reused by the next request to the same place: plain TCP, or
//! a TLS session with its socket. A parked connection is dropped when it has been idle too
//! long, when the origin closed it or sent anything (a peek at the socket before reuse; for
//! TLS that includes a close_notify), or when the pool is full.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::stream::{Stream, Tcp};

/// Idle connections kept per destination: enough that a burst of concurrent clients of one
/// origin (a page's parallel requests, a load test's 50 connections) does not close and redial
/// connections between responses. Measured with scripts/bench.sh: at 8, a third of the proxy's
/// time under 50 concurrent keep-alive clients went to new origin connections.
const PER_DESTINATION: usize = 64;
/// Idle connections kept in all; each is one descriptor and about 300 bytes.
const TOTAL: usize = 256;
/// How long an idle connection is kept. Below common origin keep-alive timeouts
/// (nginx 75 s, Apache 5 s is caught by the staleness check instead).
pub const MAX_IDLE: Duration = Duration::from_secs(30);

/// Where a pooled connection leads: the hop actually dialled and what was asked of it, which
/// names the route: `upstream CHAIN` for absolute-form requests to an HTTP upstream (the whole
/// chain, see `upstream::open`), else `scheme://host:port` of the origin, reached directly or
/// tunnelled through SOCKS5 — the same destination always takes the same route while the
/// proxy runs, so the destination names the route too.
pub type Key = String;

/// The pool itself.
#[derive(Default)]
pub struct Pool {
    idle: Mutex<Idle>,
}

/// The pool's state, behind its lock.
#[derive(Default)]
struct Idle {
    /// Idle connections per destination, oldest first: the stream, its socket (for the
    /// staleness peek) and the time it was parked.
    by_key: HashMap<Key, Vec<(Stream, Tcp, Instant)>>,
    /// Connections in `by_key`, all destinations together.
    total: usize,
}

impl Pool {
    /// Closes connections idle for longer than [`MAX_IDLE`]; called periodically so that a
    /// quiet proxy does not keep origin sockets open.
    pub fn sweep(&self) {
        if let Ok(mut idle) = self.idle.lock() {
            let now = Instant::now();
            let mut total = 0;
            idle.by_key.retain(|_, list| {
                list.retain(|(_, _, since)| now - *since < MAX_IDLE);
                total += list.len();
                !list.is_empty()
            });
            idle.total = total;
        }
    }

    /// Takes a live idle connection to `key`, newest first: the stream and its socket.
    pub fn take(&self, key: &str) -> Option<(Stream, Tcp)> {
        let mut idle = self.idle.lock().ok()?;
        let Idle { by_key, total } = &mut *idle;
        let list = by_key.get_mut(key)?;
        let mut found = None;
        while let Some((stream, tcp, since)) = list.pop() {
            *total -= 1;
            if since.elapsed() < MAX_IDLE && !tcp.is_stale() {
                found = Some((stream, tcp));
                break;
            }
        }
        if list.is_empty() {
            by_key.remove(key);
        }
        found
    }

    /// Parks a connection that is ready for another request. When the pool is full the
    /// connection is closed instead; expired ones are left to [`Pool::sweep`].
    pub fn put(&self, key: &str, stream: Stream, tcp: Tcp) {
        let Ok(mut idle) = self.idle.lock() else {
            return;
        };
        if idle.total >= TOTAL {
            return;
        }
        let parked = (stream, tcp, Instant::now());
        match idle.by_key.get_mut(key) {
            Some(list) if list.len() >= PER_DESTINATION => return,
            Some(list) => list.push(parked),
            // The key is copied only for a destination not in the pool yet.
            None => {
                idle.by_key.insert(key.to_owned(), vec![parked]);
            }
        }
        idle.total += 1;
    }
}

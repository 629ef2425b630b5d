//! A small idle pool of origin connections, keyed by destination.
//!
//! After a response whose framing was known and that left the connection open, the origin
//! connection is parked here and reused by the next request to the same place. A parked
//! connection is dropped when it has been idle too long, when the origin closed it (checked
//! with a non-blocking peek before reuse), or when the pool is full.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::stream::Tcp;

/// Idle connections kept per destination: enough for a browser's parallel requests.
const PER_DESTINATION: usize = 8;
/// Idle connections kept in all; each is one descriptor and a few hundred bytes.
const TOTAL: usize = 128;
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
    /// Idle connections per destination, oldest first, with the time each was parked.
    idle: Mutex<HashMap<Key, Vec<(Tcp, Instant)>>>,
}

impl Pool {
    /// Closes connections idle for longer than [`MAX_IDLE`]; called periodically so that a
    /// quiet proxy does not keep origin sockets open.
    pub fn sweep(&self) {
        if let Ok(mut idle) = self.idle.lock() {
            prune(&mut idle);
        }
    }

    /// Takes a live idle connection to `key`, newest first.
    pub fn take(&self, key: &str) -> Option<Tcp> {
        let mut idle = self.idle.lock().ok()?;
        let list = idle.get_mut(key)?;
        while let Some((conn, since)) = list.pop() {
            if since.elapsed() < MAX_IDLE && !conn.is_stale() {
                return Some(conn);
            }
        }
        idle.remove(key);
        None
    }

    /// Parks a connection that is ready for another request.
    pub fn put(&self, key: Key, conn: Tcp) {
        let Ok(mut idle) = self.idle.lock() else {
            return;
        };
        let total = prune(&mut idle);
        let list = idle.entry(key).or_default();
        if list.len() >= PER_DESTINATION || total >= TOTAL {
            return;
        }
        list.push((conn, Instant::now()));
    }
}

/// Drops expired connections; returns how many are left.
fn prune(idle: &mut HashMap<Key, Vec<(Tcp, Instant)>>) -> usize {
    let now = Instant::now();
    let mut total = 0;
    idle.retain(|_, list| {
        list.retain(|(_, since)| now - *since < MAX_IDLE);
        total += list.len();
        !list.is_empty()
    });
    total
}

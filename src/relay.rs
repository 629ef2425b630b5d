//! An open tunnel's life after the connection that opened it: relayed on its own (so an idle
//! tunnel holds only what relaying needs, not the connection's reading state), then one
//! access-log line and, when capturing, one record. Every tunnel ends here: HTTP CONNECT,
//! SOCKS CONNECT, and an intercepted CONNECT that turned out not to be TLS.

use std::sync::Arc;
use std::time::Instant;

use crate::capture::Trace;
use crate::head::Request;
use crate::log::Entry;
use crate::proxy::Proxy;
use crate::stream::Stream;
use crate::tunnel;

/// A relaying tunnel, detached from the connection that opened it.
pub type Tunnel = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// What a tunnel's log line and capture record need once it ends. Boxed: an idle tunnel
/// carries it for its whole life, so what only the capture needs is kept only when capturing.
pub struct Done {
    /// The access-log entry, status and bytes so far.
    pub entry: Entry,
    /// When the CONNECT head was complete.
    pub started: Instant,
    /// The CONNECT request and its timings, when a capture record will be written.
    pub record: Option<Box<(Request, Trace)>>,
}

/// Relays an open tunnel until it ends, then logs and records it.
pub async fn run_tunnel(
    p: Arc<Proxy>,
    client: Stream,
    origin: Stream,
    early: Vec<u8>,
    mut done: Box<Done>,
) {
    p.metrics.tunnel_opened();
    let (up, down) = tunnel::relay(client, &early, origin, &[], p.cfg.idle_timeout).await;
    p.metrics.tunnel_closed();
    drop(early);
    // Only pointers are kept across the capture's wait: a local copy of the entry or the
    // request would make every idle tunnel's future larger.
    done.entry.up += up;
    done.entry.down += down;
    done.entry.duration = done.started.elapsed();
    p.report(&done.entry);
    if let (Some(capture), Some(record)) = (&p.capture, &mut done.record) {
        record.1.tunnel = Some((up, down));
        Box::pin(capture.write(&done.entry, &record.0, &record.1)).await;
    }
}

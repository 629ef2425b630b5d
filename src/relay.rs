//! An open tunnel's life after the connection that opened it: relayed on its own (so an idle
//! tunnel holds only what relaying needs, not the connection's reading state), then one
//! access-log line and, when capturing, one record. Every tunnel ends here: HTTP CONNECT,
//! SOCKS CONNECT, an intercepted CONNECT that turned out not to be TLS, and a request upgraded
//! by a `101 Switching Protocols` (WebSocket).

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
    /// An upgraded request (101) rather than a tunnel: logged and recorded as the request it
    /// was, and not counted among the tunnels in the metrics.
    pub upgraded: bool,
}

/// Bytes already read from either side when a tunnel starts: the client's after its request
/// (toward the origin), the origin's or last hop's after its answer (toward the client).
/// Delivered first, in order, then freed. Most tunnels have none: see [`Early::new`].
pub struct Early {
    /// From the client, for the origin.
    up: Vec<u8>,
    /// From the origin, for the client.
    down: Vec<u8>,
}

impl Early {
    /// The early bytes, boxed, or `None` when there are none: a relaying tunnel then carries
    /// one pointer for them, not two vectors for its whole life.
    pub fn new(up: Vec<u8>, down: Vec<u8>) -> Option<Box<Early>> {
        (!up.is_empty() || !down.is_empty()).then(|| Box::new(Early { up, down }))
    }
}

/// Relays an open tunnel until it ends, then logs and records it.
pub async fn run_tunnel(
    p: Arc<Proxy>,
    client: Stream,
    origin: Stream,
    early: Option<Box<Early>>,
    mut done: Box<Done>,
) {
    let counted = !done.upgraded;
    if counted {
        p.metrics.tunnel_opened();
    }
    let delivered = match early {
        Some(e) => tunnel::deliver(&client, &e.up, &origin, &e.down).await,
        None => Some((0, 0)),
    };
    let (up, down) = match delivered {
        Some((up, down)) => {
            let (more_up, more_down) = tunnel::relay(client, origin, p.cfg.idle_timeout).await;
            (up + more_up, down + more_down)
        }
        None => (0, 0),
    };
    if counted {
        p.metrics.tunnel_closed();
    }
    // Only pointers are kept across the capture's wait: a local copy of the entry or the
    // request would make every idle tunnel's future larger.
    done.entry.up += up;
    done.entry.down += down;
    done.entry.duration = done.started.elapsed();
    p.report(&done.entry);
    if let (Some(capture), Some(record)) = (&p.capture, &mut done.record) {
        if counted {
            record.1.tunnel = Some((up, down));
        }
        Box::pin(capture.write(&done.entry, &record.0, &record.1)).await;
    }
}

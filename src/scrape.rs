//! The `--metrics-listen` endpoint (SPEC §12): `GET /metrics` answers the Prometheus text
//! format ([`crate::metrics`]), `GET /healthz` answers `ok` while serving and 503 once
//! shutdown has begun, so a load balancer drains the instance. HEAD is answered as GET
//! without the body; another method on those paths is 405, any other path 404, a malformed
//! head 400.
//!
//! Deliberately small: plain HTTP/1.1 over blocking sockets on threads of its own (a few at
//! most), one request per connection (`Connection: close`), no credentials, no proxying,
//! nothing else served. It keeps answering during the shutdown grace period, so the 503 of
//! `/healthz` is seen; it ends with the process.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::client::LINGER;
use crate::date::http_date;
use crate::error::reason;
use crate::proxy::Proxy;

/// Scrapes answered at once, each on a thread of its own; beyond it a connection is closed
/// unanswered. A scraper asks every few seconds, a load balancer's check as often: a handful
/// is plenty, and a client that sends nothing holds up only its own thread.
const MAX_SCRAPES: usize = 8;
/// Stack of a scrape's thread: it holds one request head and little else.
const STACK: usize = 64 * 1024;
/// Largest request head read; Prometheus sends about 300 bytes.
const MAX_HEAD: usize = 4096;
/// Header fields read from a scrape request; Prometheus sends about five.
const MAX_FIELDS: usize = 32;
/// Most bytes read and dropped after answering (a request body nobody reads), so that
/// closing does not reset the answer away.
const DRAIN: usize = 64 * 1024;
/// Pause after an accept error such as EMFILE before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// The content type of the text exposition format 0.0.4.
const METRICS_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// The content type of every other answer.
const TEXT_TYPE: &str = "text/plain; charset=utf-8";

/// Scrapes being answered.
static BUSY: AtomicUsize = AtomicUsize::new(0);

/// Answers scrapes on `listener` for as long as the process runs, from a thread of its own:
/// blocking sockets keep this small, and scrapes never wait for the proxy's executor.
pub fn spawn(p: Arc<Proxy>, listener: TcpListener) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("metrics".into())
        .stack_size(STACK)
        .spawn(move || serve(&p, &listener))?;
    Ok(())
}

/// The accept loop.
fn serve(p: &Arc<Proxy>, listener: &TcpListener) {
    for stream in listener.incoming() {
        let Ok(stream) = stream else {
            // EMFILE and friends: the connection stays queued; try again shortly.
            std::thread::sleep(ACCEPT_BACKOFF);
            continue;
        };
        if BUSY.fetch_add(1, Ordering::Relaxed) >= MAX_SCRAPES {
            BUSY.fetch_sub(1, Ordering::Relaxed);
            continue;
        }
        let p = p.clone();
        let thread = std::thread::Builder::new().stack_size(STACK);
        let spawned = thread.spawn(move || {
            answer(&p, stream);
            BUSY.fetch_sub(1, Ordering::Relaxed);
        });
        if spawned.is_err() {
            BUSY.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Reads one request head within `--header-timeout`, answers it, and closes.
fn answer(p: &Proxy, mut stream: TcpStream) {
    let deadline = Instant::now() + p.cfg.header_timeout;
    let mut buf = [0u8; MAX_HEAD];
    let mut len = 0;
    let reply = loop {
        // Each read may take only what is left of the time: a trickle does not extend it.
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            return;
        }
        match stream.read(&mut buf[len..]) {
            Ok(0) if len == 0 => return,
            Ok(0) => break bad_request(),
            Ok(n) => len += n,
            Err(_) => return,
        }
        if let Some(reply) = respond(p, &buf[..len]) {
            break reply;
        }
        if len == buf.len() {
            break bad_request();
        }
    };
    let _ = stream.set_write_timeout(Some(p.cfg.header_timeout));
    if stream.write_all(&reply).is_err() || stream.shutdown(Shutdown::Write).is_err() {
        return;
    }
    // Whatever the client still sends is read and dropped until it closes, for a moment.
    if stream.set_read_timeout(Some(LINGER)).is_err() {
        return;
    }
    let mut drained = 0;
    while drained < DRAIN {
        match stream.read(&mut buf) {
            Ok(n) if n > 0 => drained += n,
            _ => break,
        }
    }
}

/// The answer to a malformed request.
fn bad_request() -> Vec<u8> {
    reply(400, "", TEXT_TYPE, "bad request\n", false)
}

/// The complete answer to the request in `head`; `None` while it is incomplete.
fn respond(p: &Proxy, head: &[u8]) -> Option<Vec<u8>> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_FIELDS];
    let mut req = httparse::Request::new(&mut fields);
    let (method, target) = match req.parse(head) {
        Ok(httparse::Status::Partial) => return None,
        Ok(httparse::Status::Complete(_)) => (req.method?, req.path?),
        Err(_) => return Some(bad_request()),
    };
    Some(route(p, method, target))
}

/// The answer to `method target`.
fn route(p: &Proxy, method: &str, target: &str) -> Vec<u8> {
    let path = target.split('?').next().unwrap_or_default();
    if path != "/metrics" && path != "/healthz" {
        return reply(404, "", TEXT_TYPE, "not found\n", method == "HEAD");
    }
    let head_only = method == "HEAD";
    if method != "GET" && !head_only {
        return reply(405, "Allow: GET, HEAD\r\n", TEXT_TYPE, "use GET\n", false);
    }
    match path {
        "/metrics" => reply(200, "", METRICS_TYPE, &p.render_metrics(), head_only),
        _ if p.stopping() => reply(503, "", TEXT_TYPE, "shutting down\n", head_only),
        _ => reply(200, "", TEXT_TYPE, "ok\n", head_only),
    }
}

/// An answer with `status`, `extra` header lines, and `body` (its length only when
/// `head_only`).
fn reply(status: u16, extra: &str, kind: &str, body: &str, head_only: bool) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status} {}\r\nDate: ", reason(status));
    out.push_str(&http_date(SystemTime::now()));
    out.push_str("\r\nContent-Type: ");
    out.push_str(kind);
    out.push_str("\r\nContent-Length: ");
    out.push_str(&body.len().to_string());
    out.push_str("\r\nConnection: close\r\n");
    out.push_str(extra);
    out.push_str("\r\n");
    if !head_only {
        out.push_str(body);
    }
    out.into_bytes()
}

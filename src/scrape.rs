//! The `--metrics-listen` endpoint (SPEC §12): `GET /metrics` answers the Prometheus text
//! format ([`crate::metrics`]), `GET /healthz` answers `ok` while serving and 503 once
//! shutdown has begun, so a load balancer drains the instance. HEAD is answered as GET
//! without the body; another method on those paths is 405, any other path 404, a malformed
//! head 400.
//!
//! Deliberately small: plain HTTP/1.1, one request per connection (`Connection: close`), no
//! credentials, no proxying, nothing else served. It keeps answering during the shutdown
//! grace period, so the 503 of `/healthz` is seen; it ends with the process.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_io::{Async, Timer};
use futures_lite::FutureExt;
use smol::lock::Semaphore;
use smol::Executor;

use crate::client::{linger, Client};
use crate::date::http_date;
use crate::error::reason;
use crate::forward::write_with_timeout;
use crate::proxy::Proxy;
use crate::reader::{HeadError, Reader};
use crate::stream::{Stream, Tcp};

/// Scrapes answered at once; more wait in the kernel's queue. A scraper asks every few
/// seconds, a load balancer's check as often: a handful is plenty and bounds the memory.
const MAX_SCRAPES: usize = 8;
/// Header fields read from a scrape request; Prometheus sends about five.
const MAX_FIELDS: usize = 32;
/// Pause after an accept error such as EMFILE before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// The content type of the text exposition format 0.0.4.
const METRICS_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// The content type of every other answer.
const TEXT_TYPE: &str = "text/plain; charset=utf-8";

static SCRAPES: Semaphore = Semaphore::new(MAX_SCRAPES);

/// Answers scrapes on `listener` for as long as the process runs.
pub async fn serve(p: Arc<Proxy>, listener: Async<TcpListener>, ex: Arc<Executor<'static>>) {
    loop {
        let slot = SCRAPES.acquire().await;
        let Ok((stream, _)) = listener.accept().await else {
            // EMFILE and friends: the connection stays queued; try again shortly.
            Timer::after(ACCEPT_BACKOFF).await;
            continue;
        };
        let p = p.clone();
        ex.spawn(async move {
            answer(&p, Tcp::new(stream)).await;
            drop(slot);
        })
        .detach();
    }
}

/// Reads one request head within `--header-timeout`, answers it, and closes.
async fn answer(p: &Proxy, tcp: Tcp) {
    let client = Client {
        io: Stream::Tcp(tcp.clone()),
        tcp,
    };
    let limit = p.cfg.header_timeout;
    let mut reader = Reader::new(client.io.clone(), limit);
    let head = reader
        .read_head()
        .or(async {
            Timer::after(limit).await;
            Err(HeadError::Io(std::io::ErrorKind::TimedOut.into()))
        })
        .await;
    let reply = match head {
        Ok(n) => respond(p, &reader.buffered()[..n]),
        Err(HeadError::TooLarge | HeadError::LineTooLong | HeadError::Closed(true)) => {
            reply(400, "", TEXT_TYPE, "bad request\n", false)
        }
        // Nothing sent, or not in time: nothing to answer.
        Err(HeadError::Closed(false) | HeadError::Io(_)) => return,
    };
    drop(reader);
    if write_with_timeout(&mut client.io.clone(), &reply, p)
        .await
        .is_ok()
    {
        linger(&client).await;
    }
}

/// The complete answer to one request head.
fn respond(p: &Proxy, head: &[u8]) -> Vec<u8> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_FIELDS];
    let mut req = httparse::Request::new(&mut fields);
    let (Ok(httparse::Status::Complete(_)), Some(method), Some(target)) =
        (req.parse(head), req.method, req.path)
    else {
        return reply(400, "", TEXT_TYPE, "bad request\n", false);
    };
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
    let mut out = format!(
        "HTTP/1.1 {status} {}\r\nDate: {}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\n\
         Connection: close\r\n{extra}\r\n",
        reason(status),
        http_date(SystemTime::now()),
        body.len()
    );
    if !head_only {
        out.push_str(body);
    }
    out.into_bytes()
}

//! Forwarding one HTTP request to its origin and the response back (RFC 9110 §7.6, RFC 9112).
//!
//! The request head is rewritten for the next hop (origin-form and a Host made from the
//! target, hop-by-hop fields removed, Via added, Max-Forwards decremented), then the request
//! body goes up while the response comes down, concurrently, so `Expect: 100-continue` and
//! early responses work. 1xx responses are passed on to HTTP/1.1 clients; a 101 after an
//! Upgrade request turns the exchange into a tunnel. The response is streamed in its own
//! framing, or decoded for HTTP/1.0 clients. This file does not decide where a request may go.

use std::io;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::time::{Instant, SystemTime};

use futures_lite::{AsyncWriteExt, FutureExt};

use crate::body::{self, BodyError, Mode};
use crate::capture::{Answer, Trace};
use crate::date::http_date;
use crate::error::Error;
use crate::head::{parse_response, Framing, Request, Response};
use crate::proxy::Proxy;
use crate::reader::{HeadError, Reader};
use crate::stream::{Stream, Tcp};
use crate::target::decimal;

/// Fields never forwarded in either direction (RFC 9110 §7.6.1), besides those that
/// Connection names.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "proxy-authenticate",
    "te",
    "trailer",
    "upgrade",
];

/// Largest body sent in the same write as its head when it arrived with it.
const COALESCE_MAX: u64 = 16 * 1024;

/// How a forwarded exchange ended.
pub struct Outcome {
    /// Final status sent to the client.
    pub status: u16,
    /// Request body bytes read from the client.
    pub up: u64,
    /// Response bytes written to the client.
    pub down: u64,
    /// Whether the client connection can carry another request.
    pub keep_alive: bool,
    /// Part of the request body was never read (the response came first): the connection
    /// must be closed gently, see `connection::linger`.
    pub unread_body: bool,
    /// After a 101: the origin side, with anything it sent after the 101 head.
    pub upgraded: Option<Reader<Stream>>,
}

/// Why an exchange failed.
pub enum Failure {
    /// Nothing was sent to the client yet: answer with this error.
    Reply(Error),
    /// As `Reply`, but the next hop closed or reset the connection before a single byte of a
    /// response (or took no request at all): on a pooled connection this is the origin having
    /// closed it meanwhile, and an idempotent request may be retried on a fresh one.
    Stale(Error),
    /// A response was already under way; the client connection must be closed. Carries the
    /// status that was sent and the bytes written.
    Broken(u16, u64),
}

/// Where the request goes over the wire: a connection and how the head must be written.
pub struct Hop<'a> {
    /// The connection to the origin (or to the upstream proxy in absolute-form mode).
    pub stream: Stream,
    /// The socket under `stream`, when the connection can be parked in the pool: a direct
    /// connection, plain or TLS (through a chain the socket is the first hop's).
    pub socket: Option<Tcp>,
    /// Whether it came from the idle pool (and may have been closed by the peer meanwhile).
    pub reused: bool,
    /// Write the target in absolute-form (to an HTTP upstream proxy) instead of origin-form.
    pub absolute: bool,
    /// Extra header lines for the next hop (e.g. its own Proxy-Authorization), CRLF-ended.
    pub extra: &'a str,
    /// Where the connection is parked in the idle pool after a reusable exchange; from
    /// `name_at` on, also how to name the next hop in error messages.
    pub key: std::borrow::Cow<'a, str>,
    pub name_at: usize,
}

/// Sends `req` over `hop` and relays the response to `client`, noting in `trace` what the
/// capture needs (timings, the response head, the first bytes of both bodies).
pub async fn exchange(
    p: &Proxy,
    client: &mut Reader<Stream>,
    req: &Request,
    hop: Hop<'_>,
    trace: &mut Trace,
) -> Result<Outcome, Failure> {
    trace.ready = trace.stamp();
    let keep_head = trace.on;
    let (up_tap, answer) = (&mut trace.request_body, &mut trace.answer);
    let head = request_head(p, req, &hop);
    let key = hop.key;
    let socket = hop.socket;
    let name = &key[hop.name_at..];
    let via_proxy = hop.absolute;
    let mut origin = Reader::new(hop.stream, p.cfg.idle_timeout);
    if let Err(e) = write_with_timeout(&mut origin.io, &head, p).await {
        return Err(Failure::Stale(Error::upstream(
            format!("cannot send to {name}"),
            &e,
        )));
    }

    let progress = Progress::default();
    let (up_result, down_result) = {
        let mut writer = origin.io.clone();
        let client_w = client.io.clone();
        let mut up = pin!(async {
            let sent = match req.framing {
                Framing::Empty => Ok(0),
                framing => {
                    let timeout = p.cfg.idle_timeout;
                    let tap = keep_head.then_some(up_tap);
                    body::relay_tap(client, &mut writer, framing, Mode::Pass, timeout, tap).await
                }
            };
            progress.request_done.store(sent.is_ok(), Ordering::Relaxed);
            sent
        });
        let next_hop = (name, via_proxy);
        let mut down = pin!(respond(
            p,
            &mut origin,
            client_w,
            req,
            next_hop,
            (answer, &progress),
            keep_head
        ));
        enum First<U, D> {
            Up(U),
            Down(D),
        }
        let first = async { First::Up(up.as_mut().await) }
            .or(async { First::Down(down.as_mut().await) })
            .await;
        match first {
            First::Up(u) => {
                if let Err(BodyError::Read(_) | BodyError::Malformed(_)) = &u {
                    // The client stopped sending or sent a broken body: the origin will never
                    // see a whole request. Answer if we still can (no final response head has
                    // gone out yet), and close both sides.
                    let status = progress.status.load(Ordering::Relaxed);
                    return Err(match &u {
                        Err(BodyError::Malformed(why)) if status == 0 => {
                            Failure::Reply(Error::BadRequest(format!("request body: {why}")))
                        }
                        _ => Failure::Broken(status, progress.written.load(Ordering::Relaxed)),
                    });
                }
                (Some(u), down.as_mut().await)
            }
            // The origin answered before the whole body was sent (e.g. 413): the rest of the
            // body is still on the client connection, which therefore cannot be reused.
            First::Down(d) => (None, d),
        }
    };
    let down = down_result?;
    let body_done = matches!(up_result, Some(Ok(_)));
    let up_bytes = match up_result {
        Some(Ok(n)) => n,
        _ => 0,
    };
    let reusable = body_done && down.origin_reusable && !down.upgraded;
    if reusable && origin.buffered().is_empty() {
        if let Some(tcp) = socket {
            p.pool.put(&key, origin.io.clone(), tcp);
        }
    }
    let upgraded = down.upgraded.then_some(origin);
    Ok(Outcome {
        status: down.status,
        up: up_bytes,
        down: down.written,
        keep_alive: body_done && down.client_reusable,
        unread_body: !body_done,
        upgraded,
    })
}

/// How far the response to the client got, readable while it is still being relayed.
#[derive(Default)]
struct Progress {
    /// The final status, once its head has started to go out (0 before).
    status: AtomicU16,
    /// Bytes written to the client, heads included (bodies counted when done).
    written: AtomicU64,
    /// The request body has been relayed whole (or there was none).
    request_done: AtomicBool,
}

/// What the response side reports.
struct Down {
    /// Final status.
    status: u16,
    /// Bytes written to the client.
    written: u64,
    /// The origin connection is at a message boundary and open.
    origin_reusable: bool,
    /// The client connection is at a message boundary and open.
    client_reusable: bool,
    /// A 101 was relayed: the caller tunnels.
    upgraded: bool,
}

/// Relays the response: 1xx heads, then the final head and its body. Notes the final head
/// (when `keep_head`), its timing and the body's first bytes in `answer`.
async fn respond(
    p: &Proxy,
    origin: &mut Reader<Stream>,
    mut client: Stream,
    req: &Request,
    (hop_name, via_proxy): (&str, bool),
    (answer, progress): (&mut Answer, &Progress),
    keep_head: bool,
) -> Result<Down, Failure> {
    let mut written = 0u64;
    loop {
        let n = match origin.read_head().await {
            Ok(n) => n,
            Err(e) => {
                let err = match &e {
                    HeadError::Closed(_) => Error::BadGateway(format!(
                        "{hop_name} closed the connection without a response"
                    )),
                    HeadError::TooLarge | HeadError::LineTooLong => Error::BadGateway(format!(
                        "invalid response from {hop_name}: head too large"
                    )),
                    HeadError::Io(e) => Error::upstream(format!("no response from {hop_name}"), e),
                };
                // Not one byte of a response: closed, or reset, with nothing buffered.
                let stale = match &e {
                    HeadError::Closed(some) => !some,
                    HeadError::Io(e) => {
                        use io::ErrorKind::{ConnectionAborted, ConnectionReset};
                        matches!(e.kind(), ConnectionReset | ConnectionAborted)
                            && origin.buffered().is_empty()
                    }
                    _ => false,
                };
                return Err(if written != 0 {
                    Failure::Broken(0, written)
                } else if stale {
                    Failure::Stale(err)
                } else {
                    Failure::Reply(err)
                });
            }
        };
        let res = match parse_response(&origin.buffered()[..n], req.method == "HEAD") {
            Ok(r) => r,
            Err(why) => {
                let err = Error::BadGateway(format!("invalid response from {hop_name}: {why}"));
                return Err(if written == 0 {
                    Failure::Reply(err)
                } else {
                    Failure::Broken(0, written)
                });
            }
        };
        origin.consume(n);
        if via_proxy && res.code == 407 {
            // SPEC §4: an upstream that wants credentials is the proxy's problem, not the
            // client's; its challenge must not reach the client as if it were ours.
            let err = Error::BadGateway(format!("{hop_name} asks for proxy credentials (407)"));
            return Err(if written == 0 {
                Failure::Reply(err)
            } else {
                Failure::Broken(0, written)
            });
        }
        // The final response (a 101 only where an upgrade was asked for) is the captured one.
        if res.code >= 200 || (res.code == 101 && req.is_upgrade()) {
            answer.at = keep_head.then(Instant::now);
            answer.head = keep_head.then(|| res.clone());
        }
        if res.code == 101 {
            if !req.is_upgrade() {
                let err = Error::BadGateway(format!(
                    "invalid response from {hop_name}: 101 without upgrade"
                ));
                return Err(Failure::Reply(err));
            }
            let head = response_head(p, req, &res, Framing::Empty, true);
            write_with_timeout(&mut client, &head, p)
                .await
                .map_err(|_| Failure::Broken(101, written))?;
            written += head.len() as u64;
            answer.done = answer.at;
            return Ok(Down {
                status: 101,
                written,
                origin_reusable: false,
                client_reusable: false,
                upgraded: true,
            });
        }
        if res.code < 200 {
            // RFC 9110 §15.2: forward 1xx, but never to an HTTP/1.0 client.
            if req.minor == 1 {
                let head = response_head(p, req, &res, Framing::Empty, true);
                write_with_timeout(&mut client, &head, p)
                    .await
                    .map_err(|_| Failure::Broken(0, written))?;
                written += head.len() as u64;
            }
            continue;
        }
        // A chunked body cannot go to an HTTP/1.0 client (RFC 9112 §7.1): decode it and
        // delimit by close. A close-delimited body ends the client connection too.
        let decode = req.minor == 0 && res.framing == Framing::Chunked;
        let out_framing = if decode { Framing::Close } else { res.framing };
        // A response that comes before the whole request body (an early 413 or 401) ends the
        // connection: the rest of the body is still on it. Said in the head, so the client
        // stops sending rather than finding out from a closed socket.
        let client_reusable = req.keep_alive()
            && out_framing != Framing::Close
            && !p.stopping()
            && progress.request_done.load(Ordering::Relaxed);
        let mut head = response_head(p, req, &res, out_framing, client_reusable);
        // A small body that already arrived with the head goes out with it: one write, one
        // packet, the common case of an API or keep-alive response.
        let whole = match res.framing {
            Framing::Length(n) if n <= COALESCE_MAX => usize::try_from(n).ok(),
            _ => None,
        }
        .filter(|&n| origin.buffered().len() >= n);
        if let Some(n) = whole {
            head.extend_from_slice(&origin.buffered()[..n]);
            if keep_head {
                answer.body.take(&origin.buffered()[..n]);
            }
            origin.consume(n);
        }
        progress.status.store(res.code, Ordering::Relaxed);
        if let Err(_e) = write_with_timeout(&mut client, &head, p).await {
            return Err(Failure::Broken(res.code, written));
        }
        written += head.len() as u64;
        progress.written.store(written, Ordering::Relaxed);
        if whole.is_none() {
            let mode = if decode { Mode::Decode } else { Mode::Pass };
            let timeout = p.cfg.idle_timeout;
            let tap = keep_head.then_some(&mut answer.body);
            match body::relay_tap(origin, &mut client, res.framing, mode, timeout, tap).await {
                Ok(n) => written += n,
                // Truncation is shown to the client by closing its connection mid-body.
                Err(_) => return Err(Failure::Broken(res.code, written)),
            }
        }
        answer.done = keep_head.then(Instant::now);
        return Ok(Down {
            status: res.code,
            written,
            origin_reusable: res.keep_alive(),
            client_reusable,
            upgraded: false,
        });
    }
}

/// Builds the head sent to the next hop.
fn request_head(p: &Proxy, req: &Request, hop: &Hop<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(req.head.raw().len() + 128);
    out.extend_from_slice(req.method.as_bytes());
    out.push(b' ');
    if hop.absolute {
        out.extend_from_slice(req.target.to_string().as_bytes());
    } else if req.target.path.is_empty() {
        // RFC 9112 §3.2.4: an empty path is `*` for OPTIONS and `/` otherwise.
        out.push(if req.method == "OPTIONS" { b'*' } else { b'/' });
    } else {
        out.extend_from_slice(req.target.path.as_bytes());
    }
    out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    out.extend_from_slice(req.target.host_header().as_bytes());
    out.extend_from_slice(b"\r\n");
    let upgrade = req.is_upgrade();
    let max_forwards = matches!(req.method.as_str(), "OPTIONS" | "TRACE");
    for (name, value) in req.head.fields() {
        let is = |other: &str| name.eq_ignore_ascii_case(other);
        let keep_upgrade = upgrade && is("upgrade");
        if (is_hop_by_hop(name, &req.connection) && !keep_upgrade)
            || is("host")
            || is("content-length")
            || (max_forwards && is("max-forwards"))
        {
            continue;
        }
        push_field(&mut out, name, value);
    }
    if upgrade {
        out.extend_from_slice(b"Connection: upgrade\r\n");
    }
    match req.framing {
        Framing::Length(n) => push_field(&mut out, "Content-Length", n.to_string().as_bytes()),
        // An explicit zero length is kept: some origins refuse a POST or PUT without one (411).
        Framing::Empty if req.head.get("content-length").is_some() => {
            push_field(&mut out, "Content-Length", b"0")
        }
        _ => {}
    }
    if max_forwards {
        if let Some(n) = max_forwards_value(req) {
            push_field(
                &mut out,
                "Max-Forwards",
                n.saturating_sub(1).to_string().as_bytes(),
            );
        }
    }
    if let Some(name) = &p.cfg.via {
        push_via(&mut out, req.minor, name);
    }
    out.extend_from_slice(hop.extra.as_bytes());
    out.extend_from_slice(b"\r\n");
    out
}

/// Builds the head sent to the client. `framing` is the framing as sent; `keep_alive` says
/// whether the connection stays open (for final responses).
fn response_head(
    p: &Proxy,
    req: &Request,
    res: &Response,
    framing: Framing,
    keep_alive: bool,
) -> Vec<u8> {
    // 1xx, 101 included: no Date, no Connection of ours but the upgrade's.
    let interim = res.code < 200;
    let mut out = Vec::with_capacity(res.head.raw().len() + 128);
    out.extend_from_slice(b"HTTP/1.1 ");
    decimal(res.code.into(), |d| out.push(d));
    out.push(b' ');
    out.extend_from_slice(res.reason.as_bytes());
    out.extend_from_slice(b"\r\n");
    let switching = res.code == 101;
    let decoded = framing != res.framing && !interim;
    let mut has_date = false;
    for (name, value) in res.head.fields() {
        let is = |other: &str| name.eq_ignore_ascii_case(other);
        if (is_hop_by_hop(name, &res.connection) && !(switching && is("upgrade")))
            || (decoded && is("transfer-encoding"))
        {
            continue;
        }
        has_date |= is("date");
        // RFC 9112 §5.2: obs-fold is replaced by spaces when forwarding.
        if value.iter().any(|&b| b == b'\r' || b == b'\n') {
            let unfolded: Vec<u8> = value
                .iter()
                .map(|&b| if b == b'\r' || b == b'\n' { b' ' } else { b })
                .collect();
            push_field(&mut out, name, &unfolded);
        } else {
            push_field(&mut out, name, value);
        }
    }
    if let Some(name) = &p.cfg.via {
        push_via(&mut out, res.minor, name);
    }
    if !has_date && !interim {
        // RFC 9110 §6.6.1: a recipient with a clock adds Date when forwarding without one.
        push_field(&mut out, "Date", http_date(SystemTime::now()).as_bytes());
    }
    if switching {
        out.extend_from_slice(b"Connection: upgrade\r\n");
    } else if !interim {
        if !keep_alive {
            out.extend_from_slice(b"Connection: close\r\n");
        } else if req.minor == 0 {
            out.extend_from_slice(b"Connection: keep-alive\r\n");
        }
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// Whether a field name is hop-by-hop here, including those Connection names (`connection`
/// holds lowercased tokens). The framing fields are never dropped because Connection names
/// them: the body is relayed in the framing they declare, and without them the next hop could
/// not find the message's end (and would read what follows as another message: request
/// smuggling).
fn is_hop_by_hop(name: &str, connection: &[String]) -> bool {
    let is = |other: &str| name.eq_ignore_ascii_case(other);
    HOP_BY_HOP.iter().any(|h| is(h))
        || (connection.iter().any(|c| is(c)) && !is("content-length") && !is("transfer-encoding"))
}

/// Appends our `Via: 1.MINOR NAME` field (RFC 9110 §7.6.3), MINOR being the version of the
/// message received.
fn push_via(out: &mut Vec<u8>, minor: u8, name: &str) {
    out.extend_from_slice(b"Via: 1.");
    decimal(minor.into(), |d| out.push(d));
    out.push(b' ');
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\r\n");
}

fn push_field(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// The request's Max-Forwards as a number, if present and valid.
pub fn max_forwards_value(req: &Request) -> Option<u64> {
    let v = req.head.get("max-forwards")?;
    std::str::from_utf8(v).ok()?.trim().parse().ok()
}

/// Writes all of `data` or fails after the idle timeout.
pub async fn write_with_timeout<W: futures_lite::AsyncWrite + Unpin>(
    w: &mut W,
    data: &[u8],
    p: &Proxy,
) -> io::Result<()> {
    let timeout = p.cfg.idle_timeout;
    // Flushed: a TLS session may keep records back until asked.
    async {
        w.write_all(data).await?;
        w.flush().await
    }
    .or(async {
        crate::alarm::sleep(timeout).await;
        Err(io::ErrorKind::TimedOut.into())
    })
    .await
}

/// Whether the exchange may be retried on a fresh connection after a reused one failed
/// before any response ([`Failure::Stale`]): only an idempotent method (RFC 9110 §9.2.2, RFC
/// 9112 §9.3.1.1) with no body (a body cannot be replayed).
pub fn retryable(req: &Request) -> bool {
    req.framing == Framing::Empty
        && matches!(
            req.method.as_str(),
            "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE"
        )
}

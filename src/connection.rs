//! One client connection, from its first request to its close.
//!
//! The connection's life reads as a sentence: read a head → check it → decide → route →
//! forward or tunnel → log, and again while the connection is kept alive. Requests are handled
//! one at a time in arrival order, so pipelined requests are answered in order. Between
//! requests the connection holds no read buffer and gives up after the idle timeout or at
//! shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_io::Timer;
use futures_lite::{AsyncReadExt, FutureExt};

use crate::alarm::Alarm;
use crate::capture::Trace;
use crate::error::Error;
use crate::forward::{self, max_forwards_value, write_with_timeout, Failure};
use crate::head::{parse_request_in, Request};
use crate::log::Entry;
use crate::proxy::Proxy;
use crate::reader::{HeadError, Reader};
use crate::stream::{Stream, Tcp};
use crate::target::{Scheme, Target};
use crate::tunnel;
use crate::{authz, route, socks, upstream};

/// The client's side of a connection.
#[derive(Clone)]
struct Client {
    /// The socket.
    tcp: Tcp,
    /// What requests are read from and answers written to: the socket itself, or the TLS
    /// session over it inside an intercepted tunnel.
    io: Stream,
}

/// An intercepted tunnel whose requests are being served (SPEC §10).
struct Inside {
    /// The server the tunnel was opened for, as an `https://` target without a path.
    target: Target,
    /// The user who opened it: requests inside carry no proxy credentials.
    user: Option<String>,
    /// The client's SNI when it names another server than the tunnel's: every request inside
    /// is then misdirected (421).
    other_sni: Option<String>,
}

/// What a request left open when the connection stops reading requests.
enum Opened {
    /// A CONNECT tunnel to relay: the stream to the destination and the client's early bytes.
    Tunnel(Stream, Vec<u8>),
    /// A CONNECT tunnel to intercept, with the client's early bytes.
    #[cfg_attr(not(feature = "tls-server"), allow(dead_code))] // made only with tls-server
    Intercept(Vec<u8>),
}

/// Serves one accepted client until it closes, errs, idles out, or the proxy stops.
pub async fn serve(p: Arc<Proxy>, tcp: Tcp, peer: SocketAddr) -> Option<Tunnel> {
    let client = Client {
        io: Stream::Tcp(tcp.clone()),
        tcp,
    };
    serve_client(p, client, peer).await
}

/// Serves one client of a TLS listener (`--listen-tls`, SPEC §11): the TLS handshake, then
/// the same proxy inside it. A failed handshake is one line on stderr.
pub async fn serve_tls(p: Arc<Proxy>, tcp: Tcp, peer: SocketAddr) -> Option<Tunnel> {
    #[cfg(feature = "tls-server")]
    {
        let settings = p.cfg.tls_server.clone()?;
        let timeout = p.cfg.header_timeout;
        match crate::tls::server::accept(&settings, tcp.clone(), timeout).await {
            Ok(io) => serve_client(p, Client { tcp, io }, peer).await,
            Err(why) => {
                eprintln!("TLS listener: handshake with {peer} failed: {why}");
                None
            }
        }
    }
    #[cfg(not(feature = "tls-server"))]
    {
        let _ = (p, tcp, peer); // --listen-tls is refused at start in this build
        None
    }
}

/// Serves a client connection, plain or TLS.
async fn serve_client(p: Arc<Proxy>, client: Client, peer: SocketAddr) -> Option<Tunnel> {
    // Clients outside --allow-client are turned away before a request is read from them.
    if let Err(err) = p.cfg.access.admit(peer.ip()) {
        Box::pin(refuse(&p, &client, peer, &err)).await;
        return None;
    }
    let mut reader = Reader::new(client.io.clone(), p.cfg.idle_timeout);
    if matches!(client.io, Stream::Tcp(_)) {
        // SPEC §11: on a plain port the first byte tells SOCKS5 (5) and SOCKS4 (4) from HTTP
        // (a method's first letter). Read here, not peeked: the reader keeps it for either.
        let started = Instant::now();
        let limit = p.cfg.header_timeout;
        let first = reader
            .fill()
            .or(async {
                Timer::after(limit).await;
                Err(std::io::ErrorKind::TimedOut.into())
            })
            .await;
        match first {
            Ok(n) if n > 0 => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                let mut entry = Entry::new(peer);
                let err = Error::HeadTimeout;
                Box::pin(finish_with_error(&p, &client, &err, &mut entry, started)).await;
                return None;
            }
            _ => return None,
        }
        if let Some(&(socks::message::V4 | socks::message::V5)) = reader.buffered().first() {
            return Box::pin(socks(p, client, reader, peer)).await;
        }
    }
    requests(p, client, reader, peer, None).await
}

/// A SOCKS client (`socks.rs`): its handshake, then the tunnel it opened, relayed like an
/// HTTP one. With `--socks off` it is closed with one log line.
async fn socks(
    p: Arc<Proxy>,
    client: Client,
    mut reader: Reader<Stream>,
    peer: SocketAddr,
) -> Option<Tunnel> {
    if !p.cfg.socks {
        let mut entry = Entry::new(peer);
        entry.method = "SOCKS".into();
        entry.rule = Some("SOCKS is off (--socks off)".into());
        entry.denied = true;
        p.log.write(&entry);
        return None;
    }
    let relay = socks::serve(&p, &client.io, &client.tcp, &mut reader, peer).await?;
    // Bytes the client sent right after its request belong to the tunnel.
    let early = reader.buffered().to_vec();
    reader.consume(early.len());
    drop(reader);
    let done = Box::new(Done {
        entry: relay.entry,
        started: relay.started,
        record: relay.record.map(Box::new),
    });
    Some(Box::pin(run_tunnel(
        p,
        client.io,
        relay.origin,
        early,
        done,
    )))
}

/// Reads and handles requests one after another, on a client connection or inside an
/// intercepted tunnel; returns a tunnel left open by CONNECT.
async fn requests(
    p: Arc<Proxy>,
    client: Client,
    mut reader: Reader<Stream>,
    peer: SocketAddr,
    inside: Option<&Inside>,
) -> Option<Tunnel> {
    // Only interception (the tls-server feature) serves requests inside a tunnel; without it
    // the compiler sees `None` and leaves that code out (SPEC §9's 700 KB).
    let inside = inside.filter(|_| cfg!(feature = "tls-server"));
    let mut first = true;
    // One timer each for the idle wait and the head timeout, kept across requests (see alarm.rs).
    let (mut idle_alarm, mut head_alarm) = (Alarm::default(), Alarm::default());
    loop {
        if !first && reader.buffered().is_empty() && !matches!(client.io, Stream::Tcp(_)) {
            // Idle inside TLS (a TLS listener's client, an intercepted session): the session
            // may hold decrypted bytes that the socket no longer shows, so wait by reading
            // (the reader's timeout is the idle timeout).
            let more = async { matches!(reader.fill().await, Ok(n) if n > 0) };
            let stop = async {
                p.stopped().await;
                false
            };
            if !more.or(stop).await {
                return None;
            }
        } else if !first && reader.buffered().is_empty() {
            // Idle between requests: no buffer held, woken by data, the idle timer or shutdown.
            reader.release();
            let readable = async { client.tcp.0.readable().await.is_ok() };
            let idle_since = Instant::now();
            let idle = async {
                idle_alarm.wait(|| idle_since + p.cfg.idle_timeout).await;
                false
            };
            let stop = async {
                p.stopped().await;
                false
            };
            if !readable.or(idle).or(stop).await {
                return None;
            }
        }
        first = false;
        let started = Instant::now();
        let header_timeout = p.cfg.header_timeout;
        let head = reader
            .read_head()
            .or(async {
                head_alarm.wait(|| started + header_timeout).await;
                Err(HeadError::Io(std::io::ErrorKind::TimedOut.into()))
            })
            .await;
        let mut entry = Entry::new(peer);
        let len = match head {
            Ok(n) => n,
            Err(HeadError::Closed(false)) => return None,
            Err(e) => {
                let err = match e {
                    HeadError::TooLarge => Error::HeadTooLarge,
                    HeadError::LineTooLong => Error::UriTooLong,
                    HeadError::Io(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                        Error::HeadTimeout
                    }
                    HeadError::Closed(true) => Error::BadRequest(
                        "connection closed in the middle of a request head".into(),
                    ),
                    HeadError::Io(_) | HeadError::Closed(false) => return None,
                };
                entry.up = reader.buffered().len() as u64;
                Box::pin(finish_with_error(&p, &client, &err, &mut entry, started)).await;
                return None;
            }
        };
        entry.up = len as u64;
        let req = match parse_request_in(&reader.buffered()[..len], inside.map(|i| &i.target)) {
            Ok(r) => r,
            Err(err) => {
                (entry.method, entry.target) = request_line(&reader.buffered()[..len]);
                Box::pin(finish_with_error(&p, &client, &err, &mut entry, started)).await;
                return None;
            }
        };
        reader.consume(len);
        entry.method = req.method.clone();
        entry.target = req.uri.clone();

        let mut trace = Trace::new(p.capture.as_ref(), started);
        trace.intercepted = inside.is_some();
        let mut opened = None;
        let keep_alive = Box::pin(handle(
            &p,
            &mut reader,
            &client,
            &req,
            (&mut entry, &mut trace),
            &mut opened,
            inside,
        ))
        .await;
        if let Some(opened) = opened {
            // An open tunnel outlives everything this connection held for reading requests:
            // it goes on as a future of its own, so an idle tunnel costs only its relay.
            let target = req.target.clone();
            let done = Box::new(Done {
                entry,
                started,
                record: p.capture.is_some().then(|| Box::new((req, trace))),
            });
            return Some(match opened {
                Opened::Tunnel(origin, early) => {
                    Box::pin(run_tunnel(p, client.io, origin, early, done))
                }
                Opened::Intercept(early) => {
                    Box::pin(run_intercepted(p, client, early, done, target))
                }
            });
        }
        entry.duration = started.elapsed();
        p.log.write(&entry);
        if let Some(capture) = &p.capture {
            // Waits while the capture queue is full: a slow disk slows this client down.
            Box::pin(capture.write(&entry, &req, &trace)).await;
        }
        if !keep_alive || p.stopping() {
            return None;
        }
    }
}

/// Handles one parsed request; returns whether the connection can carry another.
async fn handle(
    p: &Proxy,
    reader: &mut Reader<Stream>,
    client: &Client,
    req: &Request,
    (entry, trace): (&mut Entry, &mut Trace),
    opened: &mut Option<Opened>,
    inside: Option<&Inside>,
) -> bool {
    if let Some(inside) = inside.filter(|_| cfg!(feature = "tls-server")) {
        // The tunnel's CONNECT carried the credentials; its user is this request's.
        entry.user.clone_from(&inside.user);
        if let Some(sni) = &inside.other_sni {
            let err = Error::Misdirected(format!(
                "this TLS session is for {sni}, not {}",
                inside.target.host_port()
            ));
            return reply(p, client, &err, req, entry).await;
        }
    } else {
        // Credentials before anything else is acted on (RFC 9110 §11.7.2). A 407 keeps a
        // kept-alive connection open so the client can retry on it with credentials.
        match p
            .cfg
            .access
            .authenticate(entry.client.ip(), req.head.all("proxy-authorization"))
        {
            Ok(user) => entry.user = user,
            Err(denial) => {
                entry.rule = Some(denial.to_string());
                return reply(p, client, &Error::AuthRequired, req, entry).await;
            }
        }
    }
    match decide(p, req) {
        Ok(Decision::Forward) => {}
        Ok(Decision::Answer) => {
            let keep = can_continue(p, req);
            let bytes = answer_here(req, keep);
            entry.status = 200;
            entry.down = bytes.len() as u64;
            let sent = write_with_timeout(&mut client.io.clone(), &bytes, p)
                .await
                .is_ok();
            if sent && !keep {
                linger(client).await;
            }
            return sent && keep;
        }
        Err(err) => return reply(p, client, &err, req, entry).await,
    }
    // SPEC §6: the authorization service has its say before any byte goes out.
    // (Boxed so that the connection's future does not carry its state; skipped when unset.)
    if p.authz.is_some() {
        let body = match Box::pin(hold_body(reader, req)).await {
            Ok(body) => body,
            Err(err) => return reply(p, client, &err, req, entry).await,
        };
        let asked = authz::check(p.authz.as_ref(), &p.cfg, req, &body, entry);
        if let Err(err) = Box::pin(asked).await {
            entry.rule = Some(err.to_string());
            entry.denied = true;
            return reply(p, client, &err, req, entry).await;
        }
    }
    // SPEC §4: the custom chain, the system proxy or direct, named in the log either way.
    let route = route::decide(
        &p.cfg.routing,
        req.target.scheme,
        &req.target.host,
        req.target.port,
    );
    entry.route = route.label().to_owned();
    if req.target.scheme == Scheme::Connect {
        // Boxed, like the other long-lived branches below: the connection's future is then
        // as small as its largest *short* step, and an idle tunnel holds only what relaying needs.
        *opened = Box::pin(connect(p, reader, client, req, entry, trace, route.hops())).await;
        return false;
    }
    if req.target.scheme == Scheme::Https && !cfg!(feature = "tls") {
        let err = Error::NotImplemented(
            "https:// in absolute-form needs a TLS build; use CONNECT".into(),
        );
        return reply(p, client, &err, req, entry).await;
    }
    let mut reused_failed = false;
    loop {
        let hop = match Box::pin(upstream::open(p, route.hops(), req, reused_failed)).await {
            Ok(h) => h,
            Err(err) => return reply(p, client, &err, req, entry).await,
        };
        let reused = hop.reused;
        match Box::pin(forward::exchange(p, reader, req, hop, trace)).await {
            Ok(out) => {
                entry.status = out.status;
                entry.up += out.up;
                entry.down = out.down;
                if let Some(origin) = out.upgraded {
                    let early = reader.buffered().to_vec();
                    reader.consume(early.len());
                    let (up, down) = Box::pin(tunnel::relay(
                        client.io.clone(),
                        &early,
                        origin.io.clone(),
                        origin.buffered(),
                        p.cfg.idle_timeout,
                    ))
                    .await;
                    entry.up += up;
                    entry.down += down;
                    return false;
                }
                if out.unread_body {
                    linger(client).await;
                }
                return out.keep_alive;
            }
            // A pooled connection the origin had closed meanwhile: try once more on a fresh
            // one when the request can be replayed.
            Err(Failure::Stale(_)) if reused && forward::retryable(req) => {
                reused_failed = true;
            }
            Err(Failure::Reply(err) | Failure::Stale(err)) => {
                return reply(p, client, &err, req, entry).await
            }
            Err(Failure::Broken(status, down)) => {
                entry.status = status;
                entry.down = down;
                // The response is cut short: reset rather than close, so that a client reading
                // until close (HTTP/1.0, close-delimited) does not take it as complete.
                client.tcp.abort_on_close();
                return false;
            }
        }
    }
}

/// The request body the authorization service is shown (SPEC §6, §10): read ahead into the
/// reader, not consumed, when its length is known and at most [`authz::HELD_BODY`] and the
/// client is not waiting for `100 Continue` before sending it; otherwise nothing.
async fn hold_body(reader: &mut Reader<Stream>, req: &Request) -> Result<Vec<u8>, Error> {
    let crate::head::Framing::Length(n) = req.framing else {
        return Ok(Vec::new());
    };
    if n > authz::HELD_BODY || req.expects_continue() {
        return Ok(Vec::new());
    }
    let n = n as usize; // at most HELD_BODY
    while reader.buffered().len() < n {
        match reader.fill().await {
            Ok(0) => {
                return Err(Error::BadRequest(
                    "connection closed in the request body".into(),
                ))
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                return Err(Error::BadRequest(
                    "request body not received in time".into(),
                ))
            }
            Err(e) => {
                return Err(Error::BadRequest(format!(
                    "request body: {}",
                    crate::error::describe(&e)
                )))
            }
        }
    }
    Ok(reader.buffered()[..n].to_vec())
}

/// What the proxy does with a request before any next hop is involved.
enum Decision {
    /// Send it on.
    Forward,
    /// Answer it here ([`answer_here`]).
    Answer,
}

/// The checks made before routing: loops, Max-Forwards, CONNECT ports, egress rules.
fn decide(p: &Proxy, req: &Request) -> Result<Decision, Error> {
    if let Some(name) = &p.cfg.via {
        if req.passed_through(name) {
            return Err(Error::Loop(format!(
                "request already passed through {name} (Via)"
            )));
        }
    }
    // RFC 9110 §7.6.2: at Max-Forwards 0 the proxy is the final recipient.
    if matches!(req.method.as_str(), "OPTIONS" | "TRACE") && max_forwards_value(req) == Some(0) {
        return Ok(Decision::Answer);
    }
    if req.target.scheme == Scheme::Connect {
        p.cfg
            .connect_ports
            .permits(req.target.port)
            .map_err(Error::Forbidden)?;
    }
    // SPEC §4: the egress rules on what the client named; the addresses a name resolves to
    // are judged as they are dialled (crate::upstream).
    let t = &req.target;
    p.cfg
        .policy
        .permits(&t.host, t.port)
        .map_err(Error::Forbidden)?;
    Ok(Decision::Forward)
}

/// The proxy's own answer to OPTIONS or TRACE with Max-Forwards: 0.
fn answer_here(req: &Request, keep_alive: bool) -> Vec<u8> {
    let keep = if keep_alive { "keep-alive" } else { "close" };
    if req.method == "OPTIONS" {
        return format!(
            "HTTP/1.1 200 OK\r\nAllow: GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS, TRACE, CONNECT\r\n\
             Content-Length: 0\r\nConnection: {keep}\r\n\r\n"
        )
        .into_bytes();
    }
    // TRACE echoes the request as received, minus credentials (RFC 9110 §9.3.8).
    let mut body = format!("{} {} HTTP/1.{}\r\n", req.method, req.uri, req.minor).into_bytes();
    for (name, value) in req.head.fields() {
        if ["proxy-authorization", "authorization", "cookie"]
            .iter()
            .any(|s| name.eq_ignore_ascii_case(s))
        {
            continue;
        }
        body.extend_from_slice(name.as_bytes());
        body.extend_from_slice(b": ");
        body.extend_from_slice(value);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"\r\n");
    let mut out = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: message/http\r\nContent-Length: {}\r\nConnection: {keep}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(&body);
    out
}

/// CONNECT: reach the target, say 200, then relay bytes both ways. A destination that
/// `--intercept` names is not reached yet: what the client sends decides (`run_intercepted`).
#[allow(clippy::too_many_arguments)] // each is a distinct part of the request's state
async fn connect(
    p: &Proxy,
    reader: &mut Reader<Stream>,
    client: &Client,
    req: &Request,
    entry: &mut Entry,
    trace: &mut Trace,
    hops: &[route::Upstream],
) -> Option<Opened> {
    let t = &req.target;
    let origin = if intercepts(p, t) {
        None
    } else {
        match Box::pin(upstream::tunnel(p, hops, &t.host, t.port)).await {
            Ok(stream) => Some(stream),
            Err(err) => {
                reply(p, client, &err, req, entry).await;
                return None;
            }
        }
    };
    trace.ready = trace.stamp();
    let ok = b"HTTP/1.1 200 Connection established\r\n\r\n";
    if write_with_timeout(&mut client.io.clone(), ok, p)
        .await
        .is_err()
    {
        return None;
    }
    entry.status = 200;
    entry.down = ok.len() as u64;
    // Bytes the client sent right after the CONNECT head belong to the tunnel.
    let early = reader.buffered().to_vec();
    reader.consume(early.len());
    reader.release();
    Some(match origin {
        Some(origin) => Opened::Tunnel(origin, early),
        None => Opened::Intercept(early),
    })
}

/// Whether `--intercept` names this CONNECT destination (never without the tls-server
/// feature, which refuses the flag: the compiler then leaves the interception path out).
fn intercepts(p: &Proxy, t: &Target) -> bool {
    cfg!(feature = "tls-server")
        && p.cfg
            .intercept
            .as_ref()
            .is_some_and(|i| i.patterns.matches(&t.host, t.port).is_some())
}

/// A relaying tunnel, detached from the connection that opened it.
pub type Tunnel = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// What a tunnel's log line and capture record need once it ends. Boxed: an idle tunnel
/// carries it for its whole life, so what only the capture needs is kept only when capturing.
struct Done {
    /// The access-log entry, status and bytes so far.
    entry: Entry,
    /// When the CONNECT head was complete.
    started: Instant,
    /// The CONNECT request and its timings, when a capture record will be written.
    record: Option<Box<(Request, Trace)>>,
}

/// Relays an open tunnel until it ends, then logs and records it.
async fn run_tunnel(
    p: Arc<Proxy>,
    client: Stream,
    origin: Stream,
    early: Vec<u8>,
    mut done: Box<Done>,
) {
    let (up, down) = tunnel::relay(client, &early, origin, &[], p.cfg.idle_timeout).await;
    drop(early);
    // Only pointers are kept across the capture's wait: a local copy of the entry or the
    // request would make every idle tunnel's future larger.
    done.entry.up += up;
    done.entry.down += down;
    done.entry.duration = done.started.elapsed();
    p.log.write(&done.entry);
    if let (Some(capture), Some(record)) = (&p.capture, &mut done.record) {
        record.1.tunnel = Some((up, down));
        Box::pin(capture.write(&done.entry, &record.0, &record.1)).await;
    }
}

/// An intercepted CONNECT after its 200 (SPEC §10): a TLS client gets a session whose
/// requests are served like absolute-form `https://` ones; anything else is relayed opaque,
/// as if it had not been intercepted. The CONNECT's own log line comes when it ends.
#[cfg(feature = "tls-server")]
async fn run_intercepted(
    p: Arc<Proxy>,
    client: Client,
    mut early: Vec<u8>,
    mut done: Box<Done>,
    target: Target,
) {
    use crate::config::show_duration;
    use crate::intercept::{self, Peek};
    let Some(interceptor) = &p.intercept else {
        return;
    };
    let name = target.host_port();
    match intercept::peek(&client.io, &mut early).await {
        Peek::Tls => {
            match interceptor
                .accept(client.io.clone(), early, &target.host, p.cfg.header_timeout)
                .await
            {
                Ok(session) => {
                    let inside = Inside {
                        other_sni: session.sni.filter(|sni| *sni != target.host),
                        target: Target {
                            scheme: Scheme::Https,
                            path: String::new(),
                            ..target
                        },
                        user: done.entry.user.clone(),
                    };
                    let client = Client {
                        tcp: client.tcp,
                        io: session.stream,
                    };
                    let peer = done.entry.client;
                    serve_session(p.clone(), client.clone(), peer, &inside).await;
                    // close_notify, so the client knows the session ended whole.
                    let _ = futures_lite::AsyncWriteExt::close(&mut client.io.clone())
                        .or(async {
                            Timer::after(LINGER).await;
                            Ok(())
                        })
                        .await;
                }
                Err(why) => {
                    // A client that does not trust the CA, or pins its certificates.
                    eprintln!(
                        "intercept: TLS with {} for {name} failed: {why}",
                        done.entry.client
                    );
                    done.entry.rule = Some(format!("interception failed: {why}"));
                }
            }
        }
        peek @ (Peek::Other(_) | Peek::Silent) => {
            let what = match peek {
                Peek::Other(byte) => format!("not TLS (first byte 0x{byte:02x})"),
                _ => format!(
                    "the client sent nothing for {}",
                    show_duration(intercept::SILENT_CLIENT)
                ),
            };
            eprintln!("intercept: {name}: {what}; relayed as an opaque tunnel");
            let route = route::decide(&p.cfg.routing, Scheme::Connect, &target.host, target.port);
            match Box::pin(upstream::tunnel(
                &p,
                route.hops(),
                &target.host,
                target.port,
            ))
            .await
            {
                Ok(origin) => {
                    if let Some(record) = &mut done.record {
                        record.1.ready = record.1.stamp();
                    }
                    return run_tunnel(p, client.io, origin, early, done).await;
                }
                Err(err) => {
                    // The 200 is out: the client learns it from the closed tunnel.
                    eprintln!("intercept: {name}: {err}");
                    done.entry.rule = Some(err.to_string());
                    done.entry.denied = matches!(err, Error::Forbidden(_));
                }
            }
        }
        Peek::Closed => {}
    }
    done.entry.duration = done.started.elapsed();
    p.log.write(&done.entry);
}

/// The requests of an intercepted session. A plain function returning a boxed future, because
/// the session's future is inside the future of the connection that opened it: the type ends
/// the cycle the compiler would otherwise have to see through to know it is `Send`.
#[cfg(feature = "tls-server")]
fn serve_session(
    p: Arc<Proxy>,
    client: Client,
    peer: SocketAddr,
    inside: &Inside,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Option<Tunnel>> + Send + '_>> {
    let reader = Reader::new(client.io.clone(), p.cfg.idle_timeout);
    Box::pin(requests(p, client, reader, peer, Some(inside)))
}

/// Without the `tls-server` feature no CONNECT is intercepted: `--intercept` is refused.
#[cfg(not(feature = "tls-server"))]
async fn run_intercepted(_: Arc<Proxy>, _: Client, _: Vec<u8>, _: Box<Done>, _: Target) {}

/// Whether the connection can carry another request after this one is answered here, without
/// its body being read: a body still on the wire would be read as the next request.
fn can_continue(p: &Proxy, req: &Request) -> bool {
    req.keep_alive() && req.framing == crate::head::Framing::Empty && !p.stopping()
}

/// Sends an error reply for a parsed request; returns whether the connection stays usable.
async fn reply(p: &Proxy, client: &Client, err: &Error, req: &Request, entry: &mut Entry) -> bool {
    let keep = err.keeps_connection() && can_continue(p, req);
    if let Error::Forbidden(rule) = err {
        // Also a denial found while dialling: an address the egress policy refused.
        entry.rule = Some(rule.clone());
    }
    if matches!(err, Error::Forbidden(_) | Error::AuthRequired) {
        entry.denied = true;
    }
    let extra = match err {
        Error::AuthRequired => p.cfg.access.challenge(),
        _ => String::new(),
    };
    let sent = send_error(p, client, err, &extra, !keep, entry).await;
    if sent && !keep {
        linger(client).await;
    }
    sent && keep
}

/// Writes `err`'s reply (`extra` header lines, `close` for Connection) and notes its status
/// and size in `entry`; returns whether it was sent.
async fn send_error(
    p: &Proxy,
    client: &Client,
    err: &Error,
    extra: &str,
    close: bool,
    entry: &mut Entry,
) -> bool {
    let bytes = err.reply(extra, close);
    entry.status = err.status().0;
    entry.down = bytes.len() as u64;
    write_with_timeout(&mut client.io.clone(), &bytes, p)
        .await
        .is_ok()
}

/// Answers a request that could not be read or parsed, logs it, and lets the caller close.
async fn finish_with_error(
    p: &Proxy,
    client: &Client,
    err: &Error,
    entry: &mut Entry,
    started: Instant,
) {
    let sent = send_error(p, client, err, "", true, entry).await;
    entry.duration = started.elapsed();
    p.log.write(entry);
    if sent {
        linger(client).await;
    }
}

/// How long a refused client may go on sending before the connection is dropped.
const LINGER: Duration = Duration::from_secs(1);
/// Most bytes read and dropped from a refused client.
const LINGER_BYTES: usize = 64 * 1024;

/// Turns away a client outside `--allow-client`: a complete 403, one log line, then close.
async fn refuse(p: &Proxy, client: &Client, peer: SocketAddr, err: &Error) {
    let mut entry = Entry::new(peer);
    entry.rule = Some(err.to_string());
    entry.denied = true;
    finish_with_error(p, client, err, &mut entry, Instant::now()).await;
}

/// Closes a connection whose client may still be sending without destroying the reply just
/// written: closing a socket with unread input sends a TCP reset, which can discard the reply
/// before the client reads it (RFC 9112 §9.6). So: half-close, then drop what arrives until
/// the client closes, for at most [`LINGER`] and [`LINGER_BYTES`].
async fn linger(client: &Client) {
    let client = &client.tcp;
    client.shutdown_write();
    let mut sink = vec![0u8; 4096];
    let mut left = LINGER_BYTES;
    let drain = async {
        while left > 0 {
            match client.clone().read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    };
    drain
        .or(async {
            Timer::after(LINGER).await;
        })
        .await;
}

/// Method and target of a head that failed to parse, made safe for one log field each.
fn request_line(head: &[u8]) -> (String, String) {
    /// Longest field copied into the log from a rejected head.
    const MAX_FIELD: usize = 256;
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let mut words = line.split(|&b| b == b' ').filter(|w| !w.is_empty());
    let mut field = || {
        let word = words.next().unwrap_or(b"-");
        let text: String = String::from_utf8_lossy(&word[..word.len().min(MAX_FIELD)])
            .chars()
            .map(|c| {
                if c.is_control() || c.is_whitespace() {
                    '?'
                } else {
                    c
                }
            })
            .collect();
        if text.is_empty() {
            "-".to_string()
        } else {
            text
        }
    };
    let method = field();
    (method, without_userinfo(&field()))
}

/// A request target with any userinfo (`user:password@`) cut out of its authority: a target
/// refused for carrying credentials must not put them in the log.
fn without_userinfo(target: &str) -> String {
    let start = target.find("://").map_or(0, |i| i + 3);
    let end = target[start..]
        .find(['/', '?', '#'])
        .map_or(target.len(), |i| start + i);
    match target[start..end].rfind('@') {
        Some(at) => format!("{}{}", &target[..start], &target[start + at + 1..]),
        None => target.to_string(),
    }
}

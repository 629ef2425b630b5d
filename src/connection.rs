//! One client connection, from its first request to its close.
//!
//! The connection's life reads as a sentence: read a head → check it → decide → route →
//! forward or tunnel → log, and again while the connection is kept alive. Requests are handled
//! one at a time in arrival order, so pipelined requests are answered in order. Between
//! requests the connection holds no read buffer and gives up after the idle timeout or at
//! shutdown. The first byte of a plain connection may say it is a SOCKS client instead
//! (`socks.rs`); a TLS listener's client (`--listen-tls`) and an intercepted tunnel's session
//! (`--intercept`) run the same loop inside TLS. What the proxy answers itself is
//! `client.rs`; a tunnel, once open, lives on in `relay.rs`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use futures_lite::FutureExt;

use crate::alarm::Alarm;
use crate::capture::Trace;
use crate::client::{
    answer_here, can_continue, finish_with_error, linger, refuse, reply, request_line, Client,
};
use crate::error::Error;
use crate::forward::{self, max_forwards_value, write_with_timeout, Failure};
use crate::head::{parse_request_in, Request};
use crate::log::Entry;
use crate::proxy::{Live, Proxy};
use crate::reader::{HeadError, Reader};
use crate::relay::{run_tunnel, Done, Early, Tunnel};
use crate::stream::{Stream, Tcp};
use crate::target::{Scheme, Target};
use crate::{authz, route, socks, upstream};

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
    /// A CONNECT tunnel to relay: the stream to the destination and the bytes either side
    /// sent early.
    Tunnel(Stream, Option<Box<Early>>),
    /// A request upgraded by a 101 (WebSocket): relayed like a tunnel, logged as a request.
    Upgraded(Stream, Option<Box<Early>>),
    /// A CONNECT tunnel to intercept, with the client's early bytes.
    #[cfg_attr(not(feature = "tls-server"), allow(dead_code))] // made only with tls-server
    Intercept(Vec<u8>),
}

/// Serves one accepted client until it closes, errs, idles out, or the proxy stops.
pub async fn serve(p: Arc<Proxy>, tcp: Tcp, peer: SocketAddr) -> Option<Tunnel> {
    let client = Client {
        io: Stream::Tcp(tcp.clone()),
        tcp,
        live: p.live(),
    };
    serve_client(p, client, peer).await
}

/// Serves one client of a TLS listener (`--listen-tls`, SPEC §11): the TLS handshake, then
/// the same proxy inside it. A failed handshake is one line on stderr.
pub async fn serve_tls(p: Arc<Proxy>, tcp: Tcp, peer: SocketAddr) -> Option<Tunnel> {
    #[cfg(feature = "tls-server")]
    {
        // The certificate is the one current when the client connected (SIGHUP may change it).
        let live = p.live();
        let settings = live.tls_server.clone()?;
        let timeout = p.cfg.header_timeout;
        match crate::tls::server::accept(&settings, tcp.clone(), timeout).await {
            Ok(io) => serve_client(p, Client { tcp, io, live }, peer).await,
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
        p.metrics.refused(crate::metrics::Refusal::AllowClient);
        Box::pin(refuse(&p, &client, peer, &err)).await;
        return None;
    }
    let mut reader = Reader::new(client.io.clone(), p.cfg.idle_timeout);
    // The head timeout's timer, armed here for the first bytes and reused for the first head
    // (moving its deadline later costs no system call, see alarm.rs).
    let mut head_alarm = Alarm::default();
    if matches!(client.io, Stream::Tcp(_)) {
        // SPEC §11: on a plain port the first byte tells SOCKS5 (5) and SOCKS4 (4) from HTTP
        // (a method's first letter). Read here, not peeked: the reader keeps it for either.
        let started = Instant::now();
        let limit = p.cfg.header_timeout;
        let first = reader
            .fill()
            .or(async {
                head_alarm.wait(|| started + limit).await;
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
    requests(p, client, reader, peer, None, head_alarm).await
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
        p.report(&entry);
        return None;
    }
    let relay = socks::serve(&p, &client.io, &client.tcp, &mut reader, peer).await?;
    // Bytes the client sent right after its request belong to the tunnel.
    let early = Early::new(reader.take_buffered(), relay.early);
    drop(reader);
    let done = Box::new(Done {
        entry: relay.entry,
        started: relay.started,
        record: relay.record.map(Box::new),
        upgraded: false,
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
    mut client: Client,
    mut reader: Reader<Stream>,
    peer: SocketAddr,
    inside: Option<&Inside>,
    mut head_alarm: Alarm,
) -> Option<Tunnel> {
    // Only interception (the tls-server feature) serves requests inside a tunnel; without it
    // the compiler sees `None` and leaves that code out (SPEC §9's 700 KB).
    let inside = inside.filter(|_| cfg!(feature = "tls-server"));
    let mut first = true;
    // One timer each for the idle wait and the head timeout (`head_alarm`, from the caller), kept
    // across requests (see alarm.rs).
    let mut idle_alarm = Alarm::default();
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
        // A kept-alive connection takes what a SIGHUP reloaded from its next request on: the
        // snapshot is checked once the request's head is in, not when the wait for it began.
        p.refresh(&mut client.live);
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
                upgraded: matches!(opened, Opened::Upgraded(..)),
            });
            return Some(match opened {
                Opened::Tunnel(origin, early) | Opened::Upgraded(origin, early) => {
                    Box::pin(run_tunnel(p, client.io, origin, early, done))
                }
                Opened::Intercept(early) => {
                    Box::pin(run_intercepted(p, client, early, done, target))
                }
            });
        }
        entry.duration = started.elapsed();
        p.report(&entry);
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
        match client
            .live
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
    match decide(p, &client.live, req) {
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
        let asked = authz::check(
            p.authz.as_ref(),
            &client.live.trust,
            &p.metrics,
            req,
            &body,
            entry,
        );
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
        let hop = match Box::pin(upstream::open(p, &route, req, reused_failed)).await {
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
                    // Relayed on its own like a CONNECT tunnel, after the bytes either side
                    // sent past its head; the reading state of both is freed.
                    let early = Early::new(reader.take_buffered(), origin.buffered().to_vec());
                    *opened = Some(Opened::Upgraded(origin.io, early));
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
fn decide(p: &Proxy, live: &Live, req: &Request) -> Result<Decision, Error> {
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
    live.policy
        .permits(&t.host, t.port)
        .map_err(Error::Forbidden)?;
    Ok(Decision::Forward)
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
        match Box::pin(upstream::tunnel_open(p, hops, &t.host, t.port)).await {
            Ok(opened) => Some(opened),
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
    let up = reader.take_buffered();
    Some(match origin {
        Some((origin, down)) => Opened::Tunnel(origin, Early::new(up, down)),
        None => Opened::Intercept(up),
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
    // The CA current when the tunnel was opened.
    let Some(interceptor) = client.live.intercept.clone() else {
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
                        live: client.live,
                    };
                    let peer = done.entry.client;
                    // A request upgraded inside the session (WebSocket) is relayed here.
                    if let Some(tunnel) =
                        serve_session(p.clone(), client.clone(), peer, &inside).await
                    {
                        tunnel.await;
                    }
                    // close_notify, so the client knows the session ended whole.
                    let _ = futures_lite::AsyncWriteExt::close(&mut client.io.clone())
                        .or(async {
                            async_io::Timer::after(crate::client::LINGER).await;
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
            match Box::pin(upstream::tunnel_open(
                &p,
                route.hops(),
                &target.host,
                target.port,
            ))
            .await
            {
                Ok((origin, down)) => {
                    if let Some(record) = &mut done.record {
                        record.1.ready = record.1.stamp();
                    }
                    let early = Early::new(early, down);
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
    p.report(&done.entry);
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
    Box::pin(requests(
        p,
        client,
        reader,
        peer,
        Some(inside),
        Alarm::default(),
    ))
}

/// Without the `tls-server` feature no CONNECT is intercepted: `--intercept` is refused.
#[cfg(not(feature = "tls-server"))]
async fn run_intercepted(_: Arc<Proxy>, _: Client, _: Vec<u8>, _: Box<Done>, _: Target) {}

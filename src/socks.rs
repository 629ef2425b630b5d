//! SOCKS clients on the proxy's ports (SPEC §11): SOCKS5 (RFC 1928, RFC 1929) and SOCKS4/4a,
//! told apart from HTTP by their first byte (`connection.rs` looks).
//!
//! A SOCKS CONNECT is handled as the HTTP CONNECT it stands for: the same users (username and
//! password compared in constant time; `--auth-exempt` clients need none), `--connect-ports`,
//! the egress rules before and after DNS, the authorization service (asked about
//! `https://host:port` with method `CONNECT`, as for HTTP), the route and upstream chains, and
//! then the same relay as an HTTP tunnel, with one access-log line (method `SOCKS5` or
//! `SOCKS4`) and one capture record (`"inbound": "socks5"`). Failures become the reply codes of
//! RFC 1928 §6; BIND is refused (0x07); UDP ASSOCIATE is `socks/udp.rs`. SOCKS4 carries no
//! password, so where credentials are needed it is refused. The messages themselves are pure
//! code in `socks/message.rs`.

use std::net::SocketAddr;
use std::time::Instant;

use async_io::Timer;
use futures_lite::FutureExt;

use crate::capture::Trace;
use crate::error::Error;
use crate::forward::write_with_timeout;
use crate::head::{parse_request, Request};
use crate::log::Entry;
use crate::proxy::Proxy;
use crate::reader::Reader;
use crate::stream::{Stream, Tcp};
use crate::target::{authority, Scheme};
use crate::{authz, route, upstream};

pub mod message;
mod udp;

use message::{reply, Command, Request as Ask};

/// An opened SOCKS tunnel, for `connection.rs` to relay like an HTTP one.
pub struct Relay {
    /// The stream to the destination.
    pub origin: Stream,
    /// Bytes the last hop sent right after its answer, for the client first.
    pub early: Vec<u8>,
    /// The log entry so far.
    pub entry: Entry,
    /// The CONNECT the request stands for, and its trace, when capturing.
    pub record: Option<(Request, Trace)>,
    /// When the request was complete.
    pub started: Instant,
}

/// Why a SOCKS request was not served: the reply code (`None`: just close) and what to log
/// as status and reason.
struct Refusal {
    /// The SOCKS5 reply code to send, if any.
    code: Option<u8>,
    /// The HTTP status that says the same in the access log.
    status: u16,
    /// The reason, for the log's rule field.
    why: String,
}

impl Refusal {
    /// A refusal that sends `code` and logs `status` and `why`.
    fn new(code: u8, status: u16, why: impl Into<String>) -> Refusal {
        Refusal {
            code: Some(code),
            status,
            why: why.into(),
        }
    }

    /// The reply code and status for an error from the checks or the route.
    fn from_error(err: &Error) -> Refusal {
        let text = err.to_string();
        let code = match err {
            Error::Forbidden(_) => reply::RULESET,
            Error::GatewayTimeout(_) => reply::TIMEOUT,
            // `crate::error::describe`'s words for the failures SOCKS has codes for.
            Error::BadGateway(m) if m.ends_with("connection refused") => reply::REFUSED,
            Error::BadGateway(m) if m.contains("network is unreachable") => reply::NETWORK,
            Error::BadGateway(m)
                if m.contains("name does not resolve") || m.contains("no route to host") =>
            {
                reply::HOST
            }
            _ => reply::GENERAL,
        };
        Refusal {
            code: Some(code),
            status: err.status().0,
            why: text,
        }
    }
}

/// Serves a SOCKS client whose first byte is in `reader` (the socket is `io`); returns the
/// tunnel to relay for a CONNECT that succeeded.
pub async fn serve(
    p: &Proxy,
    io: &Stream,
    tcp: &Tcp,
    reader: &mut Reader<Stream>,
    peer: SocketAddr,
) -> Option<Relay> {
    let started = Instant::now();
    let mut entry = Entry::new(peer);
    let version = reader.buffered().first().copied().unwrap_or(0);
    entry.method = if version == message::V5 {
        "SOCKS5"
    } else {
        "SOCKS4"
    }
    .into();
    // The handshake, up to the request, within --header-timeout as an HTTP head is.
    let limit = p.cfg.header_timeout;
    let asked = handshake(p, io, reader, &mut entry)
        .or(async {
            Timer::after(limit).await;
            Err(Refusal {
                code: None,
                status: 408,
                why: "SOCKS handshake not received in time".into(),
            })
        })
        .await;
    let result = match asked {
        Ok(ask) => match ask.command {
            Command::Connect => connect(p, &ask, &mut entry, started).await,
            Command::UdpAssociate => {
                let refused = udp::associate(p, io, tcp, reader, &ask, &mut entry).await;
                refused.map(|()| None)
            }
            Command::Bind => Err(Refusal::new(reply::COMMAND, 501, "BIND is not supported")),
        },
        Err(refusal) => Err(refusal),
    };
    match result {
        Ok(Some(relay)) => {
            let bound = local_addr(&relay.origin);
            let ok = match version {
                message::V5 => message::reply5(reply::OK, bound),
                _ => message::reply4(true, bound).to_vec(),
            };
            if write_with_timeout(&mut io.clone(), &ok, p).await.is_err() {
                return None;
            }
            Some(relay)
        }
        Ok(None) => {
            entry.duration = started.elapsed();
            p.report(&entry);
            None
        }
        Err(refusal) => {
            if let Some(code) = refusal.code {
                let unbound = SocketAddr::from(([0, 0, 0, 0], 0));
                let answer = match version {
                    message::V5 => message::reply5(code, unbound),
                    _ => message::reply4(false, unbound).to_vec(),
                };
                let _ = write_with_timeout(&mut io.clone(), &answer, p).await;
            }
            entry.status = refusal.status;
            entry.denied |= matches!(refusal.status, 403 | 407);
            entry.rule = Some(refusal.why);
            entry.duration = started.elapsed();
            p.report(&entry);
            // A refused request is captured as a refused HTTP CONNECT is, once its
            // destination is known.
            if let (Some(capture), false) = (&p.capture, entry.target.is_empty()) {
                let head = format!("CONNECT {0} HTTP/1.1\r\nHost: {0}\r\n\r\n", entry.target);
                if let Ok(req) = parse_request(head.as_bytes()) {
                    let mut trace = Trace::new(Some(capture), started);
                    trace.inbound = Some(inbound(version));
                    Box::pin(capture.write(&entry, &req, &trace)).await;
                }
            }
            None
        }
    }
}

/// Method selection, credentials and the request (SOCKS5), or the request (SOCKS4).
async fn handshake(
    p: &Proxy,
    io: &Stream,
    reader: &mut Reader<Stream>,
    entry: &mut Entry,
) -> Result<Ask, Refusal> {
    // The users current when the client connected (SIGHUP may change them).
    let live = p.live();
    let access = &live.access;
    let needs_credentials =
        access.asks_credentials() && !access.exempt.iter().any(|n| n.contains(entry.client.ip()));
    // A malformed request gets its reply code; a malformed greeting or credentials message
    // just a close (its answer would be a method or a status, not a request reply).
    let bad = |code: u8| Refusal::new(code, 400, "malformed SOCKS request");
    let garbled = |_| Refusal {
        code: None,
        status: 400,
        why: "malformed SOCKS greeting".into(),
    };
    let send = |bytes: Vec<u8>| async move {
        write_with_timeout(&mut io.clone(), &bytes, p)
            .await
            .map_err(|_| Refusal {
                code: None,
                status: 0,
                why: "client went away".into(),
            })
    };
    if reader.buffered().first() == Some(&message::V4) {
        let ask = next(reader, message::request4).await?.map_err(bad)?;
        entry.target = authority(&ask.dest.host(), ask.port);
        if needs_credentials {
            // SOCKS4 has no password to check.
            return Err(Refusal::new(
                reply::GENERAL,
                407,
                "SOCKS4 carries no password and credentials are needed",
            ));
        }
        return Ok(ask);
    }
    let offered = next(reader, |b| {
        message::greeting(b).map(|m| m.map(|(methods, n)| (methods.to_vec(), n)))
    })
    .await?
    .map_err(garbled)?;
    let method = message::choose(&offered, needs_credentials);
    send(vec![message::V5, method]).await?;
    if method == message::NO_ACCEPTABLE {
        let why = match needs_credentials {
            true => "no acceptable SOCKS5 method: credentials are needed",
            false => "no acceptable SOCKS5 method",
        };
        return Err(Refusal {
            code: None,
            status: 407,
            why: why.into(),
        });
    }
    if method == message::USER_PASS {
        let (user, password) = next(reader, |b| {
            message::credentials(b).map(|m| m.map(|(u, pw, n)| ((u.to_vec(), pw.to_vec()), n)))
        })
        .await?
        .map_err(garbled)?;
        // `user:password`, as Basic carries it: a colon in the user name can match nobody.
        let given = [&user[..], b":", &password[..]].concat();
        let found = match user.contains(&b':') {
            true => None,
            false => crate::auth::check(&access.users, &given),
        };
        // Wrong credentials refuse only a client that needs them (an exempt client that
        // offered them anyway goes on without a user, as over HTTP).
        let refused = found.is_none() && needs_credentials;
        send(vec![1, u8::from(refused)]).await?;
        if refused {
            return Err(Refusal {
                code: None,
                status: 407,
                why: "proxy credentials wrong".into(),
            });
        }
        entry.user = found.map(|u| u.name.clone());
    }
    let ask = next(reader, message::request5).await?.map_err(bad)?;
    entry.target = authority(&ask.dest.host(), ask.port);
    Ok(ask)
}

/// Reads until `parse` finds a whole message (consumed) or an error; the outer error is a
/// closed or failed connection.
async fn next<T>(
    reader: &mut Reader<Stream>,
    parse: impl Fn(&[u8]) -> Result<Option<(T, usize)>, u8>,
) -> Result<Result<T, u8>, Refusal> {
    loop {
        match parse(reader.buffered()) {
            Ok(Some((value, n))) => {
                reader.consume(n);
                return Ok(Ok(value));
            }
            Err(code) => return Ok(Err(code)),
            Ok(None) => {}
        }
        match reader.fill().await {
            Ok(n) if n > 0 => {}
            _ => {
                return Err(Refusal {
                    code: None,
                    status: 0,
                    why: "connection closed in the SOCKS handshake".into(),
                })
            }
        }
    }
}

/// CONNECT: the checks an HTTP CONNECT gets, then the route.
async fn connect(
    p: &Proxy,
    ask: &Ask,
    entry: &mut Entry,
    started: Instant,
) -> Result<Option<Relay>, Refusal> {
    let (host, port) = (ask.dest.host(), ask.port);
    let target = authority(&host, port);
    // The CONNECT this stands for: what the checks, the authorization service and the capture
    // see. The name was checked as a host by the message parser; the target parser judges it.
    let head = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n");
    let req = parse_request(head.as_bytes())
        .map_err(|_| Refusal::new(reply::HOST, 400, format!("bad destination {target}")))?;
    let live = p.live();
    let checks = async {
        p.cfg
            .connect_ports
            .permits(port)
            .map_err(Error::Forbidden)?;
        live.policy
            .permits(&req.target.host, port)
            .map_err(Error::Forbidden)?;
        if p.authz.is_some() {
            authz::check(p.authz.as_ref(), &live.trust, &p.metrics, &req, b"", entry).await?;
        }
        Ok::<(), Error>(())
    };
    checks.await.map_err(|e| Refusal::from_error(&e))?;
    let route = route::decide(&p.cfg.routing, Scheme::Connect, &req.target.host, port);
    entry.route = route.label().to_owned();
    let mut trace = Trace::new(p.capture.as_ref(), started);
    trace.inbound = Some(if ask.version == message::V5 {
        "socks5"
    } else {
        "socks4"
    });
    let (origin, early) = Box::pin(upstream::tunnel_open(
        p,
        route.hops(),
        &req.target.host,
        port,
    ))
    .await
    .map_err(|e| Refusal::from_error(&e))?;
    trace.ready = trace.stamp();
    entry.status = 200;
    Ok(Some(Relay {
        origin,
        early,
        entry: {
            let client = entry.client;
            std::mem::replace(entry, Entry::new(client))
        },
        record: p.capture.is_some().then_some((req, trace)),
        started,
    }))
}

/// How capture records name a SOCKS version.
fn inbound(version: u8) -> &'static str {
    if version == message::V5 {
        "socks5"
    } else {
        "socks4"
    }
}

/// The local address of the proxy's end of `stream` (BND.ADDR, BND.PORT), or 0.0.0.0:0 when
/// it is not a plain socket (a hop through a TLS upstream).
fn local_addr(stream: &Stream) -> SocketAddr {
    match stream {
        Stream::Tcp(tcp) => tcp.0.get_ref().local_addr().ok(),
        Stream::Shared(_) => None,
    }
    .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)))
}

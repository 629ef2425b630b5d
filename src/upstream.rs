//! Walking a route: the connection a request goes over, direct or through a chain of proxies.
//!
//! The chain is a list of hops walked by one plain loop: dial the first hop, then reach each
//! next hop through the previous one (HTTP CONNECT, or SOCKS5 CONNECT per RFC 1928), wrapping
//! the stream in TLS after every `https://` hop. At the end of the chain, a plain http request
//! to an HTTP upstream is sent to it in absolute-form (RFC 9112 §3.2.2); everything else
//! (CONNECT, https, and any request through SOCKS5) tunnels to the origin through the last
//! hop. For a tunnel, the look at a name's addresses, the walk through the hops and the
//! handshake with the last one share one `--connect-timeout`; for an absolute-form request
//! the look at addresses, the walk and a TLS handshake with the origin each have their own
//! ([`crate::tls::connect`], as for every TLS hop). Each hop's credentials go only to that hop.
//! A refusal anywhere is a 502 naming the hop. Which route to take is decided in
//! [`crate::route`], not here.

use std::borrow::Cow;
use std::future::Future;
use std::io;
use std::net::IpAddr;

use async_io::Timer;
use futures_lite::{AsyncWriteExt, FutureExt};

use crate::dial::{self, DialError};
use crate::error::{describe, Error};
use crate::forward::Hop;
use crate::head::{parse_response, Request};
use crate::metrics::Fault;
use crate::proxy::Proxy;
use crate::reader::{HeadError, Reader};
use crate::route::{chain, Decision, Kind, Upstream};
use crate::socks5::{self, Addr};
use crate::stream::{Prefixed, Stream, Tcp};
use crate::target::{authority, Scheme};
use crate::tls;

/// Opens the connection an HTTP request goes over: from the idle pool unless `fresh`, else
/// by walking the route's hops (none: direct), with TLS to the origin for `https://` targets.
pub async fn open<'a>(
    p: &Proxy,
    route: &Decision<'a>,
    req: &Request,
    fresh: bool,
) -> Result<Hop<'a>, Error> {
    let hops = route.hops();
    let t = &req.target;
    let plain = matches!(t.scheme, Scheme::Http | Scheme::Ws);
    let absolute = hops.last().filter(|last| plain && last.is_http());
    let (key, name_at, extra) = match absolute {
        Some(last) => {
            // The upstream resolves the name; the egress IP rules get their look here first.
            let what = || format!("cannot check the addresses of {}", t.host_port());
            within(p, what, destination(p, last, &t.host, t.port))
                .await
                .map_err(|e| counted(p, false, e))?;
            // The pool key names the whole chain: connections through different chains never
            // mix. Made once at start.
            (
                Cow::Borrowed(route.pool_key()),
                0,
                last.proxy_authorization(),
            )
        }
        None => {
            // The route of a destination never changes while the proxy runs, so a key by
            // destination is a key by route too. Its host:port part names the hop.
            let scheme = t.scheme.name();
            let key = format!("{scheme}://{}", t.host_port());
            (Cow::Owned(key), scheme.len() + 3, "")
        }
    };
    let name = &key[name_at..];
    // CONNECT never comes here; every other direct connection can be pooled, TLS too.
    let pooled = if fresh { None } else { p.pool.take(&key) };
    let reused = pooled.is_some();
    p.metrics.pool(reused);
    let (stream, socket) = match (pooled, absolute) {
        (Some((stream, tcp)), _) => (stream, Some(tcp)),
        (None, Some(_)) => {
            let stream = within(p, || format!("cannot reach {name}"), reach(p, hops))
                .await
                .map_err(|e| counted(p, false, e))?;
            let socket = socket_of(&stream);
            (stream, socket)
        }
        (None, None) => {
            let stream = tunnel(p, hops, &t.host, t.port).await?;
            let socket = socket_of(&stream);
            if t.scheme == Scheme::Https {
                let live = p.live();
                let handshake = tls::connect(&live.trust, &t.host, stream);
                let stream = within(p, || format!("TLS with {name}"), async {
                    handshake
                        .await
                        .map_err(|e| Error::upstream(format!("TLS with {name}"), &e))
                })
                .await
                // The origin's failure, whatever the route to it.
                .map_err(|e| counted(p, true, e))?;
                (stream, socket)
            } else {
                (stream, socket)
            }
        }
    };
    Ok(Hop {
        stream,
        socket,
        reused,
        absolute: absolute.is_some(),
        extra,
        key,
        name_at,
    })
}

/// The socket of a stream that is plain TCP; a stream through a proxy has none to pool by.
fn socket_of(stream: &Stream) -> Option<Tcp> {
    match stream {
        Stream::Tcp(tcp) => Some(tcp.clone()),
        Stream::Shared(_) => None,
    }
}

/// A byte stream to `host:port`: dialled directly when `hops` is empty, else through them.
/// A failure is counted in the metrics.
pub async fn tunnel(p: &Proxy, hops: &[Upstream], host: &str, port: u16) -> Result<Stream, Error> {
    let (stream, early) = tunnel_open(p, hops, host, port).await?;
    Ok(prefixed(stream, early))
}

/// [`tunnel`] for a relay: the stream, and apart from it the bytes the last hop sent right
/// after its answer, which belong to the tunnel ahead of anything read from the stream. Kept
/// apart so that a plain socket stays one, and the relay can splice(2) it.
pub async fn tunnel_open(
    p: &Proxy,
    hops: &[Upstream],
    host: &str,
    port: u16,
) -> Result<(Stream, Vec<u8>), Error> {
    let Some(last) = hops.last() else {
        // Only addresses the egress policy accepts are dialled (SPEC §4: no DNS rebinding).
        let live = p.live();
        let admit = |ip| live.policy.check_address(host, port, ip);
        return match dial::connect_checked(host, port, p.cfg.connect_timeout, &admit).await {
            Ok(tcp) => Ok((Stream::Tcp(tcp), Vec::new())),
            Err(DialError::Refused(rule)) => Err(Error::Forbidden(rule)),
            Err(DialError::Io(e)) => Err(counted(
                p,
                true,
                Error::upstream(format!("cannot connect to {}", authority(host, port)), &e),
            )),
        };
    };
    let what = || {
        format!(
            "cannot reach {} through upstream {}",
            authority(host, port),
            chain(hops, " -> ")
        )
    };
    within(p, what, async {
        let dest = destination(p, last, host, port).await?;
        let stream = reach(p, hops).await?;
        handshake(p, last, stream, &dest, port).await
    })
    .await
    .map_err(|e| counted(p, false, e))
}

/// Counts a failure to reach the next hop in the metrics, by its kind: a dial error when
/// `direct` (to the origin), else an upstream error. A refusal by the egress policy is
/// neither.
fn counted(p: &Proxy, direct: bool, err: Error) -> Error {
    if let Some(fault) = Fault::of(&err) {
        p.metrics.hop_error(direct, fault);
    }
    err
}

/// The host to ask the last hop for, once the egress policy has seen where it leads.
///
/// A `socks5://` hop gets an address resolved here: the first the policy accepts, exactly
/// as a direct dial would. Hops that resolve names themselves (HTTP, `socks5h://`) cannot be
/// watched; when address rules exist, the name is resolved here as well and every address
/// must pass, and a name that does not resolve here is refused, since where it leads cannot
/// be known. The far resolver may still answer differently (split DNS, rebinding between
/// the two lookups): docs/policy.md says so.
async fn destination(p: &Proxy, last: &Upstream, host: &str, port: u16) -> Result<String, Error> {
    let live = p.live();
    let policy = &live.policy;
    if let Ok(ip) = host.parse::<IpAddr>() {
        policy
            .check_address(host, port, ip)
            .map_err(Error::Forbidden)?;
        return Ok(host.to_string());
    }
    let here = last.kind == Kind::Socks5;
    if !here && !policy.has_address_rules() {
        return Ok(host.to_string());
    }
    let addrs = dial::resolve(host, port).await.map_err(|e| {
        if here {
            Error::upstream(format!("cannot resolve {host} for upstream {last}"), &e)
        } else {
            Error::Forbidden(format!(
                "denied: the IP rules cannot be checked for {host}: {} here (upstream {last} \
                 resolves it)",
                describe(&e)
            ))
        }
    })?;
    let mut verdicts = addrs
        .iter()
        .map(|a| (a.ip(), policy.check_address(host, port, a.ip())));
    if here {
        let mut refused = None;
        for (ip, verdict) in verdicts {
            match verdict {
                Ok(()) => return Ok(ip.to_string()),
                Err(rule) => {
                    refused.get_or_insert(rule);
                }
            }
        }
        return Err(Error::Forbidden(refused.unwrap_or_default()));
    }
    match verdicts.find_map(|(_, verdict)| verdict.err()) {
        Some(rule) => Err(Error::Forbidden(rule)),
        None => Ok(host.to_string()),
    }
}

/// A stream to the last hop: dial the first, then each next one through the previous.
async fn reach(p: &Proxy, hops: &[Upstream]) -> Result<Stream, Error> {
    let Some(first) = hops.first() else {
        return Err(Error::BadGateway("empty upstream chain".into()));
    };
    let tcp = dial::connect(&first.host, first.port, p.cfg.connect_timeout)
        .await
        .map_err(|e| Error::upstream(format!("cannot connect to upstream {first}"), &e))?;
    let mut stream = secure(p, first, Stream::Tcp(tcp)).await?;
    for pair in hops.windows(2) {
        let (via, next) = (&pair[0], &pair[1]);
        let (through, early) = handshake(p, via, stream, &next.host, next.port).await?;
        stream = secure(p, next, prefixed(through, early)).await?;
    }
    Ok(stream)
}

/// `stream` with `early` bytes (already read from it) put back in front.
fn prefixed(stream: Stream, early: Vec<u8>) -> Stream {
    if early.is_empty() {
        stream
    } else {
        Stream::shared(Prefixed::new(early, stream))
    }
}

/// TLS to an `https://` hop (SNI from its URL host); other hops are left as they are.
async fn secure(p: &Proxy, hop: &Upstream, stream: Stream) -> Result<Stream, Error> {
    if hop.kind != Kind::Https {
        return Ok(stream);
    }
    tls::connect(&p.live().trust, &hop.host, stream)
        .await
        .map_err(|e| Error::upstream(format!("TLS with upstream {hop}"), &e))
}

/// Asks `via` for a tunnel to `host:port` over `stream`, which already reaches `via`: the
/// tunnel, and any bytes `via` sent after its answer (the tunnel's first).
async fn handshake(
    p: &Proxy,
    via: &Upstream,
    stream: Stream,
    host: &str,
    port: u16,
) -> Result<(Stream, Vec<u8>), Error> {
    match via.kind {
        Kind::Http | Kind::Https => http_connect(p, via, stream, &authority(host, port)).await,
        Kind::Socks5 | Kind::Socks5h => Ok((socks(via, stream, host, port).await?, Vec::new())),
    }
}

/// HTTP CONNECT (RFC 9110 §9.3.6): any 2xx opens the tunnel; anything else is a 502 that
/// names the hop and what it answered. Returns the tunnel and the bytes that came after the
/// 2xx head.
async fn http_connect(
    p: &Proxy,
    via: &Upstream,
    mut stream: Stream,
    target: &str,
) -> Result<(Stream, Vec<u8>), Error> {
    let head = format!(
        "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n{}\r\n",
        via.proxy_authorization()
    );
    let failed =
        |e: &io::Error| Error::upstream(format!("upstream {via} during CONNECT to {target}"), e);
    stream
        .write_all(head.as_bytes())
        .await
        .map_err(|e| failed(&e))?;
    stream.flush().await.map_err(|e| failed(&e))?;
    let mut r = Reader::new(stream, p.cfg.connect_timeout);
    let n = r.read_head().await.map_err(|e| match e {
        HeadError::Io(e) => failed(&e),
        HeadError::Closed(_) => Error::BadGateway(format!(
            "upstream {via} closed the connection on CONNECT to {target}"
        )),
        HeadError::TooLarge | HeadError::LineTooLong => Error::BadGateway(format!(
            "upstream {via} sent an oversized answer to CONNECT"
        )),
    })?;
    // A 2xx answer to CONNECT has no body (RFC 9110 §9.3.6): parsed like one to HEAD.
    let (code, reason) = match parse_response(&r.buffered()[..n], true) {
        Ok(res) => (res.code, res.reason),
        Err(why) => {
            return Err(Error::BadGateway(format!(
                "upstream {via} sent an invalid answer to CONNECT: {why}"
            )))
        }
    };
    if !(200..300).contains(&code) {
        let hint = match (code, &via.credentials) {
            (407, None) => " (it wants credentials: add user:password@ to its URL)",
            (407, Some(_)) => " (it rejected the credentials)",
            _ => "",
        };
        return Err(Error::BadGateway(format!(
            "upstream {via} refused CONNECT to {target}: {code} {reason}{hint}"
        )));
    }
    r.consume(n);
    // Bytes the far end sent right after the 200 belong to the tunnel.
    let early = r.take_buffered();
    Ok((r.io, early))
}

/// SOCKS5 CONNECT; `socks5://` resolves the name here, `socks5h://` lets the proxy do it.
async fn socks(via: &Upstream, mut stream: Stream, host: &str, port: u16) -> Result<Stream, Error> {
    let target = authority(host, port);
    let addr = match (host.parse::<IpAddr>(), via.kind) {
        (Ok(ip), _) => Addr::Ip(ip),
        (Err(_), Kind::Socks5h) => Addr::Name(host),
        // The first address in the resolver's order of preference: one SOCKS connection
        // can try only one, and a refusal is an answer, not a reason to try the next.
        (Err(_), _) => match dial::resolve(host, port).await {
            Ok(addrs) => Addr::Ip(addrs[0].ip()),
            Err(e) => {
                return Err(Error::upstream(
                    format!("cannot resolve {host} for upstream {via}"),
                    &e,
                ))
            }
        },
    };
    let creds = via
        .credentials
        .as_ref()
        .map(|(u, p)| (u.as_str(), p.as_str()));
    match socks5::handshake(&mut stream, creds, addr, port).await {
        Ok(()) => Ok(stream),
        Err(socks5::Failure::Io(e)) => Err(Error::upstream(
            format!("upstream {via} during SOCKS5 CONNECT to {target}"),
            &e,
        )),
        Err(socks5::Failure::Refused(why)) => Err(Error::BadGateway(format!(
            "upstream {via} refused CONNECT to {target}: {why}"
        ))),
    }
}

/// `host:port`, IPv6 in brackets.
/// Runs `fut` under `--connect-timeout`; on expiry a 504 saying `what` was being done (put
/// into words only then).
async fn within<T>(
    p: &Proxy,
    what: impl FnOnce() -> String,
    fut: impl Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    let limit = p.cfg.connect_timeout;
    fut.or(async {
        Timer::after(limit).await;
        Err(Error::GatewayTimeout(format!("{}: timed out", what())))
    })
    .await
}

//! The client's side of a connection, and the answers the proxy gives it itself: error
//! replies (one place writes them, from [`Error::reply`]), the 403 that turns away a client
//! outside `--allow-client`, the answer to OPTIONS or TRACE at Max-Forwards 0, and the gentle
//! close (linger) after a reply that ends a connection. Also the log fields of a head that
//! could not be parsed, with any credentials cut out.
//!
//! The request loop that decides when to call these is `connection.rs`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_io::Timer;
use futures_lite::{AsyncReadExt, FutureExt};

use crate::error::Error;
use crate::forward::write_with_timeout;
use crate::head::Request;
use crate::log::Entry;
use crate::proxy::{Live, Proxy};
use crate::stream::{Stream, Tcp};

/// The client's side of a connection.
#[derive(Clone)]
pub struct Client {
    /// The socket.
    pub tcp: Tcp,
    /// What requests are read from and answers written to: the socket itself, or the TLS
    /// session over it inside an intercepted tunnel.
    pub io: Stream,
    /// The users, policy and certificates this connection is served with, brought up to date
    /// before each request (see `proxy.rs`).
    pub live: Arc<Live>,
}

/// The proxy's own answer to OPTIONS or TRACE with Max-Forwards: 0.
pub fn answer_here(req: &Request, keep_alive: bool) -> Vec<u8> {
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

/// Whether the connection can carry another request after this one is answered here, without
/// its body being read: a body still on the wire would be read as the next request.
pub fn can_continue(p: &Proxy, req: &Request) -> bool {
    req.keep_alive() && req.framing == crate::head::Framing::Empty && !p.stopping()
}

/// Sends an error reply for a parsed request; returns whether the connection stays usable.
pub async fn reply(
    p: &Proxy,
    client: &Client,
    err: &Error,
    req: &Request,
    entry: &mut Entry,
) -> bool {
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
pub async fn send_error(
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
pub async fn finish_with_error(
    p: &Proxy,
    client: &Client,
    err: &Error,
    entry: &mut Entry,
    started: Instant,
) {
    let sent = send_error(p, client, err, "", true, entry).await;
    entry.duration = started.elapsed();
    p.report(entry);
    if sent {
        linger(client).await;
    }
}

/// How long a refused client may go on sending before the connection is dropped.
pub const LINGER: Duration = Duration::from_secs(1);
/// Most bytes read and dropped from a refused client.
pub const LINGER_BYTES: usize = 64 * 1024;

/// Turns away a client outside `--allow-client`: a complete 403, one log line, then close.
pub async fn refuse(p: &Proxy, client: &Client, peer: SocketAddr, err: &Error) {
    let mut entry = Entry::new(peer);
    entry.rule = Some(err.to_string());
    entry.denied = true;
    finish_with_error(p, client, err, &mut entry, Instant::now()).await;
}

/// Closes a connection whose client may still be sending without destroying the reply just
/// written: closing a socket with unread input sends a TCP reset, which can discard the reply
/// before the client reads it (RFC 9112 §9.6). So: half-close, then drop what arrives until
/// the client closes, for at most [`LINGER`] and [`LINGER_BYTES`].
pub async fn linger(client: &Client) {
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
pub fn request_line(head: &[u8]) -> (String, String) {
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
pub fn without_userinfo(target: &str) -> String {
    let start = target.find("://").map_or(0, |i| i + 3);
    let end = target[start..]
        .find(['/', '?', '#'])
        .map_or(target.len(), |i| start + i);
    match target[start..end].rfind('@') {
        Some(at) => format!("{}{}", &target[..start], &target[start + at + 1..]),
        None => target.to_string(),
    }
}

//! The one error type of the proxy and the one place that turns it into a reply.
//!
//! Every failure that reaches a client is a variant here; each variant maps to exactly one
//! status of SPEC §3. Messages are short, lowercase, and say what failed and where, e.g.
//! `cannot connect to example.com:80: connection refused`. I/O errors are classified once, in
//! [`Error::upstream`]: a timeout is 504, anything else 502.

use std::fmt;
use std::io;

/// A failure that ends one request with a status chosen by the proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// 400: malformed request, bad target or framing violation.
    BadRequest(String),
    /// 403: a policy or client ACL denied it; the message names the rule.
    Forbidden(String),
    /// 407: credentials missing or wrong.
    AuthRequired,
    /// 408: the request head did not arrive in time.
    HeadTimeout,
    /// 421: inside an intercepted tunnel, a request for another server than the tunnel's.
    Misdirected(String),
    /// 414: the request line is longer than [`crate::head::MAX_URI`].
    UriTooLong,
    /// 431: the head is larger than [`crate::head::MAX_HEAD`] or has too many fields.
    HeadTooLarge,
    /// 501: a method, scheme or transfer coding this proxy does not implement.
    NotImplemented(String),
    /// 502: the next hop could not be reached or answered badly.
    BadGateway(String),
    /// 503: too busy, or a required service is down.
    Unavailable(String),
    /// 504: the next hop did not answer in time.
    GatewayTimeout(String),
    /// 505: a well-formed request line with a major HTTP version other than 1 (RFC 9112 §2.3).
    VersionNotSupported,
    /// 508: the request already passed through this proxy.
    Loop(String),
}

impl Error {
    /// Classifies an I/O failure toward `what` (e.g. `cannot connect to host:80`).
    pub fn upstream(what: impl fmt::Display, err: &io::Error) -> Error {
        let msg = format!("{what}: {}", describe(err));
        if err.kind() == io::ErrorKind::TimedOut {
            Error::GatewayTimeout(msg)
        } else {
            Error::BadGateway(msg)
        }
    }

    /// The status code and its reason phrase.
    pub fn status(&self) -> (u16, &'static str) {
        let code = match self {
            Error::BadRequest(_) => 400,
            Error::Forbidden(_) => 403,
            Error::AuthRequired => 407,
            Error::HeadTimeout => 408,
            Error::UriTooLong => 414,
            Error::Misdirected(_) => 421,
            Error::HeadTooLarge => 431,
            Error::NotImplemented(_) => 501,
            Error::BadGateway(_) => 502,
            Error::Unavailable(_) => 503,
            Error::GatewayTimeout(_) => 504,
            Error::VersionNotSupported => 505,
            Error::Loop(_) => 508,
        };
        (code, reason(code))
    }

    /// Whether the client connection can still be trusted for another request afterwards.
    ///
    /// Errors found while reading or framing the request leave the stream at an unknown
    /// position, so the connection is closed after the reply.
    pub fn keeps_connection(&self) -> bool {
        matches!(
            self,
            Error::Forbidden(_)
                | Error::AuthRequired
                | Error::BadGateway(_)
                | Error::GatewayTimeout(_)
                | Error::Loop(_)
                | Error::Misdirected(_)
                | Error::Unavailable(_)
        )
    }

    /// Renders the complete reply: status line, headers and a one-line `text/plain` body.
    ///
    /// `extra` holds additional header lines (each ending in CRLF), e.g. `Proxy-Authenticate`.
    pub fn reply(&self, extra: &str, close: bool) -> Vec<u8> {
        let (code, reason) = self.status();
        let body = format!("{code} {reason}: {self}\n");
        let connection = if close { "close" } else { "keep-alive" };
        format!(
            "HTTP/1.1 {code} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\n\
             Content-Length: {}\r\nConnection: {connection}\r\n{extra}\r\n{body}",
            body.len()
        )
        .into_bytes()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::BadRequest(m)
            | Error::Forbidden(m)
            | Error::NotImplemented(m)
            | Error::BadGateway(m)
            | Error::Unavailable(m)
            | Error::GatewayTimeout(m)
            | Error::Misdirected(m)
            | Error::Loop(m) => f.write_str(m),
            Error::AuthRequired => f.write_str("proxy credentials missing or wrong"),
            Error::HeadTimeout => f.write_str("request head not received in time"),
            Error::UriTooLong => f.write_str("request target too long"),
            Error::HeadTooLarge => f.write_str("request head too large"),
            Error::VersionNotSupported => f.write_str("only HTTP/1.x is supported"),
        }
    }
}

/// Reason phrases of the statuses the proxy itself answers with (RFC 9110 §15); empty for
/// any other code.
pub fn reason(code: u16) -> &'static str {
    match code {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        414 => "URI Too Long",
        421 => "Misdirected Request",
        431 => "Request Header Fields Too Large",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        508 => "Loop Detected",
        _ => "",
    }
}

/// Describes an I/O error in a few lowercase words, without the `(os error N)` suffix.
pub fn describe(err: &io::Error) -> String {
    use io::ErrorKind::*;
    let text = match err.kind() {
        ConnectionRefused => "connection refused",
        ConnectionReset => "connection reset",
        ConnectionAborted => "connection aborted",
        TimedOut => "timed out",
        UnexpectedEof => "connection closed early",
        BrokenPipe => "connection closed",
        AddrNotAvailable => "address not available",
        _ => {
            let full = err.to_string();
            let s = full.split(" (os error").next().unwrap_or_default();
            // getaddrinfo errors arrive as "failed to lookup address information: ...". The
            // C library's messages are ASCII (the proxy never sets a locale): ASCII lowercase
            // spares the binary Unicode's case tables.
            return match s.strip_prefix("failed to lookup address information: ") {
                Some(why) => format!("name does not resolve: {}", why.to_ascii_lowercase()),
                None => s.to_ascii_lowercase(),
            };
        }
    };
    text.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_is_complete_and_plain() {
        let err = Error::upstream(
            "cannot connect to example.com:80",
            &io::Error::from(io::ErrorKind::ConnectionRefused),
        );
        let text = String::from_utf8(err.reply("", true)).unwrap();
        assert!(text.starts_with("HTTP/1.1 502 Bad Gateway\r\n"));
        assert!(text.ends_with(
            "\r\n\r\n502 Bad Gateway: cannot connect to example.com:80: connection refused\n"
        ));
        let body_len = text.split("\r\n\r\n").nth(1).unwrap().len();
        assert!(text.contains(&format!("Content-Length: {body_len}\r\n")));
    }

    #[test]
    fn timeouts_are_504() {
        let err = Error::upstream("x", &io::Error::from(io::ErrorKind::TimedOut));
        assert_eq!(err.status().0, 504);
    }
}

//! Message heads: parsing and validating request and response heads, and deciding framing.
//!
//! Pure functions over bytes (RFC 9112 §2–§7). httparse does the tokenizing; this module adds
//! what a proxy must be strict about, because a proxy that frames a message differently from
//! the origin enables request smuggling: Content-Length and Transfer-Encoding together, differing
//! Content-Length values, a final coding other than chunked, a missing or repeated Host.
//! It does not read sockets: [`crate::reader::Reader`] finds the end of a head and calls in here.

use crate::error::Error;
use crate::target::{Target, TargetError};

/// Largest request or response head accepted, in bytes; beyond it 431 (requests) or 502.
/// 16 KiB is what nginx and tinyproxy accept by default and fits a router's RAM many times.
pub const MAX_HEAD: usize = 16 * 1024;
/// Longest request target accepted (414 beyond). 8 KiB, as common origins allow.
pub const MAX_URI: usize = 8 * 1024;
/// Most header fields in one head (431 beyond); real browsers send fewer than 40.
pub const MAX_HEADERS: usize = 100;

/// The header fields of a head: one owned copy of the bytes plus ranges into it.
#[derive(Debug, Clone, Default)]
pub struct Head {
    /// The raw head bytes as received (a request's newer HTTP/1 minor version reads 1.1).
    raw: Vec<u8>,
    /// Name and value ranges of each field, in order, duplicates kept.
    fields: Vec<(std::ops::Range<usize>, std::ops::Range<usize>)>,
}

impl Head {
    fn new(buf: &[u8], headers: &[httparse::Header<'_>]) -> Head {
        let base = buf.as_ptr() as usize;
        let range = |s: &[u8]| {
            let start = s.as_ptr() as usize - base;
            start..start + s.len()
        };
        Head {
            raw: buf.to_vec(),
            fields: headers
                .iter()
                .map(|h| (range(h.name.as_bytes()), range(h.value)))
                .collect(),
        }
    }

    /// All fields in order as (name, value).
    pub fn fields(&self) -> impl Iterator<Item = (&str, &[u8])> + '_ {
        self.fields.iter().map(|(n, v)| {
            // Names were validated as tokens by httparse, so they are ASCII.
            (
                std::str::from_utf8(&self.raw[n.clone()]).unwrap_or(""),
                &self.raw[v.clone()],
            )
        })
    }

    /// Values of every field called `name` (case-insensitive).
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        // Bytes compared directly: no UTF-8 check per field per lookup.
        self.fields
            .iter()
            .filter(move |(n, _)| self.raw[n.clone()].eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| &self.raw[v.clone()])
    }

    /// The first value of `name`.
    pub fn get<'a>(&'a self, name: &'a str) -> Option<&'a [u8]> {
        self.all(name).next()
    }

    /// The comma-separated elements of every `name` field, trimmed and lowercased.
    pub fn tokens(&self, name: &str) -> Vec<String> {
        // Trimmed as bytes (space and tab are ASCII, so this is what trimming the text would
        // give) and empty tokens skipped before any string is made: this runs for every message.
        let blank = |b: &u8| *b == b' ' || *b == b'\t';
        self.all(name)
            .flat_map(|v| v.split(|&b| b == b','))
            .map(|t| {
                let start = t.iter().position(|b| !blank(b)).unwrap_or(t.len());
                let end = t.iter().rposition(|b| !blank(b)).map_or(start, |i| i + 1);
                &t[start..end]
            })
            .filter(|t| !t.is_empty())
            .map(|t| String::from_utf8_lossy(t).to_ascii_lowercase())
            .collect()
    }

    /// The head as received, except that a request's newer HTTP/1 minor version reads 1.1.
    pub fn raw(&self) -> &[u8] {
        &self.raw
    }
}

/// How the length of a message body is determined (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body at all.
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Everything until the connection closes (responses only).
    Close,
}

/// A parsed, validated request head.
#[derive(Debug, Clone)]
pub struct Request {
    /// The method, case preserved (methods are case-sensitive).
    pub method: String,
    /// Where the request goes.
    pub target: Target,
    /// The target as received, for logs.
    pub uri: String,
    /// HTTP minor version: 0 or 1 (a newer HTTP/1 minor version is processed as 1).
    pub minor: u8,
    /// The header fields.
    pub head: Head,
    /// How the request body is framed.
    pub framing: Framing,
    /// Lowercased tokens of the Connection field.
    pub connection: Vec<String>,
}

impl Request {
    /// Whether the client allows the connection to stay open after this exchange.
    pub fn keep_alive(&self) -> bool {
        let has = |t: &str| self.connection.iter().any(|c| c == t);
        if self.minor == 0 {
            has("keep-alive")
        } else {
            !has("close")
        }
    }

    /// Whether this is a protocol upgrade request (e.g. WebSocket), RFC 9110 §7.8.
    pub fn is_upgrade(&self) -> bool {
        self.minor == 1
            && self.connection.iter().any(|c| c == "upgrade")
            && self.head.get("upgrade").is_some()
    }

    /// Whether the client waits for `100 Continue` before sending the body (RFC 9110 §10.1.1).
    pub fn expects_continue(&self) -> bool {
        self.minor == 1
            && self
                .head
                .tokens("expect")
                .iter()
                .any(|t| t == "100-continue")
    }

    /// Whether a Via field already names `name` as a recipient: the request is looping.
    pub fn passed_through(&self, name: &str) -> bool {
        self.head.tokens("via").iter().any(|hop| {
            // Each element is `protocol received-by [comment]`.
            hop.split_whitespace()
                .nth(1)
                .is_some_and(|by| by.eq_ignore_ascii_case(name))
        })
    }
}

/// A parsed, validated response head.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code, 100..=999.
    pub code: u16,
    /// Reason phrase as received.
    pub reason: String,
    /// HTTP minor version of the origin.
    pub minor: u8,
    /// The header fields.
    pub head: Head,
    /// How the response body is framed.
    pub framing: Framing,
    /// Lowercased tokens of the Connection field.
    pub connection: Vec<String>,
}

impl Response {
    /// Whether the origin keeps the connection open after this response.
    pub fn keep_alive(&self) -> bool {
        let has = |t: &str| self.connection.iter().any(|c| c == t);
        self.framing != Framing::Close
            && if self.minor == 0 {
                has("keep-alive")
            } else {
                !has("close")
            }
    }
}

/// Parses a complete request head (`buf` ends with the blank line).
pub fn parse_request(buf: &[u8]) -> Result<Request, Error> {
    parse_request_in(buf, None)
}

/// Parses a request head; inside an intercepted tunnel to `tunnel` (an `https://` target
/// without a path), as an origin server would: origin-form targets are that server's, an
/// absolute-form one must name it, and so must Host (RFC 9110 §7.4: else 421). The request's
/// `uri` is then the absolute URL it stands for, for logs and the capture.
pub fn parse_request_in(buf: &[u8], tunnel: Option<&Target>) -> Result<Request, Error> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let rewritten;
    let (buf, parsed) = match req.parse(buf) {
        // httparse says where it stopped, not what is wrong: a space in the target makes it
        // read the rest of the target as the version. The request line itself decides.
        Err(e) => match request_line(buf)? {
            Line::Sound => (buf, Err(e)),
            // RFC 9112 §2.3: a newer HTTP/1 minor version is processed as 1.1. httparse only
            // knows 1.0 and 1.1, so a copy that says HTTP/1.1 (same length) is parsed instead.
            Line::NewerMinor(at) => {
                rewritten = as_http11(buf, at);
                req = httparse::Request::new(&mut headers);
                (&rewritten[..], req.parse(&rewritten))
            }
        },
        parsed => (buf, parsed),
    };
    match parsed {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(bad("incomplete request head")),
        // The request line passed `request_line`, so what failed is in the fields.
        Err(httparse::Error::TooManyHeaders) => return Err(Error::HeadTooLarge),
        Err(e) => return Err(bad(&format!("malformed request head: {}", parse_error(e)))),
    }
    let method = req.method.unwrap_or_default().to_string();
    let uri = req.path.unwrap_or_default().to_string();
    let minor = req.version.unwrap_or(1);
    if uri.len() > MAX_URI {
        return Err(Error::UriTooLong);
    }
    let target = match tunnel {
        // Only interception (the tls-server feature) serves requests inside a tunnel.
        #[cfg(feature = "tls-server")]
        Some(tunnel) => inside(&method, &uri, tunnel)?,
        _ if method == "CONNECT" => Target::parse_authority(&uri).map_err(target_error)?,
        _ => Target::parse_absolute(&uri).map_err(target_error)?,
    };
    let head = Head::new(buf, req.headers);

    // RFC 9112 §3.2: exactly one Host in HTTP/1.1; never more than one.
    let hosts = head.all("host").count();
    if hosts > 1 || (minor == 1 && hosts == 0) {
        return Err(bad("a request needs exactly one Host header"));
    }
    let framing = request_framing(&head, minor)?;
    if method == "CONNECT" && framing != Framing::Empty {
        return Err(bad("CONNECT with a body"));
    }
    #[cfg(feature = "tls-server")]
    if let Some(tunnel) = tunnel {
        same_server(&head, tunnel)?;
    }
    let connection = head.tokens("connection");
    let uri = match tunnel {
        Some(_) => target.to_string(),
        None => uri,
    };
    Ok(Request {
        method,
        target,
        uri,
        minor,
        head,
        framing,
        connection,
    })
}

/// What the request line says once its shape is checked.
#[derive(Debug, PartialEq, Eq)]
enum Line {
    /// Well formed, HTTP/1.0 or HTTP/1.1.
    Sound,
    /// Well formed, HTTP/1.x with x > 1; the version token starts at this offset of the head.
    NewerMinor(usize),
}

/// Checks the request line of a head on its own (RFC 9112 §3): exactly
/// `method SP request-target SP HTTP-version`, a token as method, no whitespace or control
/// character in the target, and `HTTP/DIGIT.DIGIT` with a case-sensitive name (§2.3).
/// A malformed line is 400 whatever its version; a well-formed one with a major version other
/// than 1 is 505.
fn request_line(buf: &[u8]) -> Result<Line, Error> {
    // RFC 9112 §2.2: empty lines before the request line are ignored, as httparse does.
    let mut start = 0;
    while let Some(rest) = buf.get(start..) {
        match rest {
            [b'\r', b'\n', ..] => start += 2,
            [b'\n', ..] => start += 1,
            _ => break,
        }
    }
    let rest = buf.get(start..).unwrap_or_default();
    let line = rest.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    // Single spaces are the only separators; any other whitespace (HTAB, VT, FF, a bare CR)
    // or control character has no place in any of the three parts.
    if line.iter().any(|&b| b != b' ' && (b < 0x21 || b == 0x7f)) {
        return Err(bad(
            "bad request line: whitespace other than single spaces, or a control character",
        ));
    }
    let mut parts = line.split(|&b| b == b' ');
    let (method, target, version) = match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(m), Some(t), Some(v), None) if !m.is_empty() && !t.is_empty() && !v.is_empty() => {
            (m, t, v)
        }
        (_, _, Some(_), _) => {
            return Err(bad(
                "bad request line: extra space (a space in the target must be sent as %20)",
            ))
        }
        _ => {
            return Err(bad(
                "bad request line: it needs a method, a target and an HTTP version",
            ))
        }
    };
    if !method.iter().all(|&b| is_tchar(b)) {
        return Err(bad("bad request line: invalid method"));
    }
    match version {
        [b'H', b'T', b'T', b'P', b'/', major @ b'0'..=b'9', b'.', minor @ b'0'..=b'9'] => {
            match (major, minor) {
                (b'1', b'0' | b'1') => Ok(Line::Sound),
                (b'1', _) => Ok(Line::NewerMinor(start + method.len() + target.len() + 2)),
                _ => Err(Error::VersionNotSupported),
            }
        }
        _ => Err(bad(
            "bad request line: the version is not HTTP/<digit>.<digit>",
        )),
    }
}

/// A copy of `buf` whose version token at `at` says HTTP/1.1 (the same length, so every
/// offset into it stays valid).
fn as_http11(buf: &[u8], at: usize) -> Vec<u8> {
    let mut copy = buf.to_vec();
    // Always in range (`request_line` found the 8-byte token there); if not, the copy keeps
    // its version and httparse rejects it: 400, never a panic or a loop.
    if let Some(version) = copy.get_mut(at..at.saturating_add(8)) {
        version.copy_from_slice(b"HTTP/1.1");
    }
    copy
}

/// A token character (RFC 9110 §5.6.2).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// The reply for a target that cannot be forwarded.
fn target_error(e: TargetError) -> Error {
    match e {
        TargetError::NotProxy => bad(
            "this is a proxy: send the full URL (absolute-form, e.g. GET http://host/path) \
             or use CONNECT",
        ),
        TargetError::Scheme(s) => Error::NotImplemented(format!("scheme {s}:// is not supported")),
        TargetError::Invalid(why) => bad(&format!("bad request target: {why}")),
    }
}

/// The target of a request inside an intercepted tunnel to `tunnel`.
#[cfg(feature = "tls-server")]
fn inside(method: &str, uri: &str, tunnel: &Target) -> Result<Target, Error> {
    if method == "CONNECT" {
        return Err(bad("CONNECT inside an intercepted tunnel"));
    }
    // RFC 9112 §3.2.1 (origin-form) and §3.2.4 (asterisk-form, OPTIONS only).
    if uri.starts_with('/') || (uri == "*" && method == "OPTIONS") {
        return Ok(Target {
            path: uri.to_string(),
            ..tunnel.clone()
        });
    }
    let t = Target::parse_absolute(uri).map_err(target_error)?;
    if t.scheme != crate::target::Scheme::Https || t.host != tunnel.host || t.port != tunnel.port {
        return Err(Error::Misdirected(format!(
            "{uri} is not on {}, which this tunnel was opened for",
            tunnel.host_port()
        )));
    }
    Ok(t)
}

/// RFC 9110 §7.4: inside a tunnel, Host must name the tunnel's server (port 443 if none).
#[cfg(feature = "tls-server")]
fn same_server(head: &Head, tunnel: &Target) -> Result<(), Error> {
    let Some(value) = head.get("host") else {
        return Ok(()); // HTTP/1.0 without Host: the tunnel says where it goes.
    };
    let value = std::str::from_utf8(value).unwrap_or("").trim();
    let named =
        Target::parse_absolute(&format!("https://{value}/")).map_err(|_| bad("bad Host header"))?;
    if named.host != tunnel.host || named.port != tunnel.port {
        return Err(Error::Misdirected(format!(
            "Host {value} is not {}, which this tunnel was opened for",
            tunnel.host_port()
        )));
    }
    Ok(())
}

/// RFC 9112 §6.1–§6.3 for requests.
fn request_framing(head: &Head, minor: u8) -> Result<Framing, Error> {
    let length = content_length(head).map_err(bad)?;
    let codings = head.tokens("transfer-encoding");
    if codings.is_empty() && head.get("transfer-encoding").is_none() {
        return Ok(match length {
            Some(0) | None => Framing::Empty,
            Some(n) => Framing::Length(n),
        });
    }
    if minor == 0 {
        // §6.1: an HTTP/1.0 message with Transfer-Encoding has faulty framing.
        return Err(bad("transfer-encoding in an HTTP/1.0 request"));
    }
    if length.is_some() {
        return Err(bad("both transfer-encoding and content-length"));
    }
    match codings.iter().position(|c| c == "chunked") {
        Some(i) if i + 1 == codings.len() => Ok(Framing::Chunked),
        Some(_) => Err(bad(
            "chunked must be the final transfer coding, applied once",
        )),
        None => Err(Error::NotImplemented(format!(
            "transfer coding '{}' is not supported",
            codings.last().map(String::as_str).unwrap_or("")
        ))),
    }
}

/// The Content-Length of a head, if any: every value (and list element) must be the same
/// decimal number (RFC 9110 §8.6).
fn content_length(head: &Head) -> Result<Option<u64>, &'static str> {
    let mut length = None;
    for value in head.all("content-length") {
        for element in value.split(|&b| b == b',') {
            let digits = trim(element);
            // 19 digits always fit in u64; more are an overflow attempt.
            if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
                return Err("invalid content-length");
            }
            let n = digits
                .iter()
                .fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
            if length.is_some_and(|l| l != n) {
                return Err("differing content-length values");
            }
            length = Some(n);
        }
    }
    Ok(length)
}

/// Parses a complete response head. `head_request` marks a response to HEAD (no body).
/// The error string says what is wrong, for a 502.
pub fn parse_response(buf: &[u8], head_request: bool) -> Result<Response, String> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut res = httparse::Response::new(&mut headers);
    let parsed = httparse::ParserConfig::default()
        // RFC 9112 §5.2 lets a proxy replace obs-fold with spaces; we do when forwarding.
        .allow_obsolete_multiline_headers_in_responses(true)
        // RFC 9112 §5.1: whitespace before the colon is removed from responses.
        .allow_spaces_after_header_name_in_responses(true)
        .parse_response(&mut res, buf);
    match parsed {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err("incomplete response head".into()),
        Err(e) => return Err(format!("invalid response head: {}", parse_error(e))),
    }
    let code = res.code.unwrap_or(0);
    if !(100..=999).contains(&code) {
        return Err("invalid status code".into());
    }
    let reason = res.reason.unwrap_or("").to_string();
    let minor = res.version.unwrap_or(1);
    let head = Head::new(buf, res.headers);
    let no_body = head_request || (100..200).contains(&code) || code == 204 || code == 304;
    let length = content_length(&head).map_err(str::to_string)?;
    let has_te = head.get("transfer-encoding").is_some();
    let framing = if no_body {
        Framing::Empty
    } else if has_te {
        if length.is_some() {
            return Err("both transfer-encoding and content-length".into());
        }
        if minor == 0 {
            return Err("transfer-encoding in an HTTP/1.0 response".into());
        }
        let codings = head.tokens("transfer-encoding");
        match codings.iter().position(|c| c == "chunked") {
            Some(i) if i + 1 == codings.len() => Framing::Chunked,
            Some(_) => return Err("chunked applied more than once or not last".into()),
            // §6.3: a final coding other than chunked means read until close.
            None => Framing::Close,
        }
    } else {
        match length {
            Some(0) => Framing::Empty,
            Some(n) => Framing::Length(n),
            None => Framing::Close,
        }
    };
    let connection = head.tokens("connection");
    Ok(Response {
        code,
        reason,
        minor,
        head,
        framing,
        connection,
    })
}

fn bad(why: &str) -> Error {
    Error::BadRequest(why.to_string())
}

fn trim(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|c| !matches!(c, b' ' | b'\t'))
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| !matches!(c, b' ' | b'\t'))
        .map_or(start, |e| e + 1);
    &b[start..end]
}

fn parse_error(e: httparse::Error) -> &'static str {
    match e {
        httparse::Error::HeaderName => "invalid header name",
        httparse::Error::HeaderValue => "invalid header value",
        httparse::Error::NewLine => "invalid line ending",
        httparse::Error::Status => "invalid status",
        httparse::Error::Token => "invalid token",
        httparse::Error::Version => "invalid version",
        httparse::Error::TooManyHeaders => "too many headers",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One line per case: raw head → expected status (or framing when accepted).
    macro_rules! requests {
        ($($raw:expr => $expect:expr;)*) => {$(
            let got = match parse_request($raw) {
                Ok(r) => Ok(r.framing),
                Err(e) => Err(e.status().0),
            };
            assert_eq!(got, $expect, "{:?}", String::from_utf8_lossy($raw));
        )*};
    }

    #[test]
    fn request_framing_and_smuggling() {
        use Framing::*;
        requests! {
            b"GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n" => Ok(Empty);
            b"POST http://a/ HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n" => Ok(Length(5));
            b"POST http://a/ HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n" => Ok(Length(5));
            b"POST http://a/ HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n" => Ok(Length(5));
            b"POST http://a/ HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n" => Err(400);
            b"POST http://a/ HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 6\r\n\r\n" => Err(400);
            b"POST http://a/ HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n" => Err(400);
            b"POST http://a/ HTTP/1.1\r\nHost: a\r\nContent-Length: 0x5\r\n\r\n" => Err(400);
            b"POST http://a/ HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n" => Err(400);
            b"POST http://a/ HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n\r\n" => Err(400);
            b"POST http://a/ HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" => Ok(Chunked);
            b"POST http://a/ HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: ChUnKeD\r\n\r\n" => Ok(Chunked);
            b"POST http://a/ HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n" => Ok(Chunked);
            b"POST http://a/ HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n" => Err(400);
            b"POST http://a/ HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n" => Err(400);
            b"POST http://a/ HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n" => Err(400);
            b"POST http://a/ HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n" => Err(501);
            b"POST http://a/ HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n" => Err(501);
            b"POST http://a/ HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n\r\n" => Err(501);
            b"POST http://a/ HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n" => Err(400);
            b"GET http://a/ HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n" => Err(400);
            b"GET http://a/ HTTP/1.1\r\nHost: a\r\nX-A: b\rc\r\n\r\n" => Err(400);
            b"GET http://a/ HTTP/1.1\r\nHost: a\r\nX-A: b\0c\r\n\r\n" => Err(400);
            b"GET http://a/ HTTP/1.1\r\nHost: a\r\nX A: b\r\n\r\n" => Err(400);
            b"GET http://a/ HTTP/1.1\r\nHost: a\r\nX-A : b\r\n\r\n" => Err(400);
            b"GET http://a/ HTTP/1.1\r\nHost: a\r\n(X): b\r\n\r\n" => Err(400);
            b"GET http://a/ HTTP/1.1\r\n\r\n" => Err(400);
            b"GET http://a/ HTTP/1.0\r\n\r\n" => Ok(Empty);
            b"GET http://a/ HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n" => Err(400);
            b"GET http://a/ HTTP/2.0\r\nHost: a\r\n\r\n" => Err(505);
            b"GET http://a/ HTTP/1.1\nHost: a\n\n" => Ok(Empty);
            b"GET /index.html HTTP/1.1\r\nHost: a\r\n\r\n" => Err(400);
            b"GET ftp://a/ HTTP/1.1\r\nHost: a\r\n\r\n" => Err(501);
            b"GET http://a:99999/ HTTP/1.1\r\nHost: a\r\n\r\n" => Err(400);
            b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n" => Ok(Empty);
            b"CONNECT [::1]:443 HTTP/1.1\r\nHost: [::1]:443\r\n\r\n" => Ok(Empty);
            b"CONNECT a HTTP/1.1\r\nHost: a\r\n\r\n" => Err(400);
            b"CONNECT a:65536 HTTP/1.1\r\nHost: a\r\n\r\n" => Err(400);
            b"CONNECT a:443 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\n" => Err(400);
        }
    }

    /// One line per case: raw head → the HTTP minor version it is processed as, or the status.
    macro_rules! request_lines {
        ($($raw:expr => $expect:expr;)*) => {$(
            let got = match parse_request($raw) {
                Ok(r) => Ok(r.minor),
                Err(e) => Err(e.status().0),
            };
            assert_eq!(got, $expect, "{:?}", String::from_utf8_lossy($raw));
        )*};
    }

    /// RFC 9112 §2.3 and §3: the status says what is wrong with the line, whatever httparse
    /// reported (its `Error::Version` covers both `HTTP/1.2` and `GET /a b HTTP/1.1`).
    #[test]
    fn request_lines() {
        request_lines! {
            b"GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n" => Ok(1);
            b"GET http://a/ HTTP/1.0\r\n\r\n" => Ok(0);
            // A newer HTTP/1 minor version is processed as 1.1, Host rule included.
            b"GET http://a/ HTTP/1.2\r\nHost: a\r\n\r\n" => Ok(1);
            b"GET http://a/ HTTP/1.9\r\nHost: a\r\n\r\n" => Ok(1);
            b"GET http://a/ HTTP/1.2\nHost: a\n\n" => Ok(1);
            b"\r\n\nGET http://a/ HTTP/1.2\r\nHost: a\r\n\r\n" => Ok(1);
            b"GET http://a/ HTTP/1.2\r\n\r\n" => Err(400);
            b"GET http://a/ HTTP/1.2\r\nHost: a\r\nX A: b\r\n\r\n" => Err(400);
            b"GET /a HTTP/1.2\r\nHost: a\r\n\r\n" => Err(400);
            b"GET ftp://a/ HTTP/1.2\r\nHost: a\r\n\r\n" => Err(501);
            // Another major version, in a well-formed line.
            b"GET http://a/ HTTP/2.0\r\nHost: a\r\n\r\n" => Err(505);
            b"GET http://a/ HTTP/3.0\r\nHost: a\r\n\r\n" => Err(505);
            b"GET http://a/ HTTP/0.9\r\nHost: a\r\n\r\n" => Err(505);
            b"PRI * HTTP/2.0\r\n\r\n" => Err(505);
            // Whitespace in the target: never 505, whatever the version.
            b"GET http://a/a b HTTP/1.1\r\nHost: a\r\n\r\n" => Err(400);
            b"GET http://a/a b HTTP/2.0\r\nHost: a\r\n\r\n" => Err(400);
            b"GET http://a/a\tb HTTP/1.1\r\nHost: a\r\n\r\n" => Err(400);
            b"GET http://a/a\x0bb HTTP/1.1\r\nHost: a\r\n\r\n" => Err(400);
            b"GET http://a/a\x0cb HTTP/1.1\r\nHost: a\r\n\r\n" => Err(400);
            b"GET http://a/a\rb HTTP/1.1\r\nHost: a\r\n\r\n" => Err(400);
            b"GET http://a/a\x7fb HTTP/1.1\r\nHost: a\r\n\r\n" => Err(400);
            b"GET http://a/\t HTTP/2.0\r\nHost: a\r\n\r\n" => Err(400);
            // Missing parts.
            b"GET http://a/\r\nHost: a\r\n\r\n" => Err(400);
            b"GET http://a/ \r\nHost: a\r\n\r\n" => Err(400);
            b"GET /\r\n\r\n" => Err(400);
            b"GET\r\n\r\n" => Err(400);
            b"GET  HTTP/1.1\r\nHost: a\r\n\r\n" => Err(400);
            // Extra parts and extra spaces.
            b"GET http://a/ HTTP/1.1 x\r\nHost: a\r\n\r\n" => Err(400);
            b"GET http://a/ HTTP/2.0 x\r\nHost: a\r\n\r\n" => Err(400);
            b"GET http://a/ HTTP/1.2 x\r\nHost: a\r\n\r\n" => Err(400);
            b"GET http://a/ HTTP/1.1 \r\nHost: a\r\n\r\n" => Err(400);
            b"GET  http://a/ HTTP/1.1\r\nHost: a\r\n\r\n" => Err(400);
            b"GET http://a/  HTTP/1.1\r\nHost: a\r\n\r\n" => Err(400);
            b"GET http://a/  HTTP/2.0\r\nHost: a\r\n\r\n" => Err(400);
            b" GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n" => Err(400);
            b"GET\thttp://a/ HTTP/1.1\r\nHost: a\r\n\r\n" => Err(400);
            // Malformed versions: the name is case-sensitive, one digit each side of the dot.
            b"GET http://a/ HTTP/1\r\nHost: a\r\n\r\n" => Err(400);
            b"GET http://a/ HTTP/2\r\nHost: a\r\n\r\n" => Err(400);
            b"GET http://a/ HTTP/1.10\r\nHost: a\r\n\r\n" => Err(400);
            b"GET http://a/ HTTP/11.1\r\nHost: a\r\n\r\n" => Err(400);
            b"GET http://a/ http/1.1\r\nHost: a\r\n\r\n" => Err(400);
            b"GET http://a/ HTTP/1.x\r\nHost: a\r\n\r\n" => Err(400);
            b"GET http://a/ HTTP/1.1\r\r\nHost: a\r\n\r\n" => Err(400);
            b"GET http://a/ HTTP/1.1\rHost: a\r\n\r\n" => Err(400);
            // A bad method is a bad line, even with an unsupported version.
            b"G(T http://a/ HTTP/2.0\r\nHost: a\r\n\r\n" => Err(400);
            // A lone CR is not an empty line.
            b"\rGET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n" => Err(400);
        }
    }

    #[test]
    fn newer_minor_version_is_forwarded_as_1_1() {
        let r = parse_request(b"GET http://a/x HTTP/1.2\r\nHost: a\r\nX-A: b\r\n\r\n").unwrap();
        assert_eq!(
            (r.method.as_str(), r.uri.as_str(), r.minor),
            ("GET", "http://a/x", 1)
        );
        assert_eq!(
            r.head.raw(),
            b"GET http://a/x HTTP/1.1\r\nHost: a\r\nX-A: b\r\n\r\n"
        );
        let fields: Vec<_> = r.head.fields().collect();
        assert_eq!(fields, [("Host", &b"a"[..]), ("X-A", &b"b"[..])]);
        assert!(r.keep_alive());
    }

    #[test]
    fn too_many_headers_is_431() {
        let mut raw = b"GET http://a/ HTTP/1.1\r\nHost: a\r\n".to_vec();
        for i in 0..MAX_HEADERS {
            raw.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        raw.extend_from_slice(b"\r\n");
        assert_eq!(parse_request(&raw).unwrap_err().status().0, 431);
    }

    #[test]
    fn long_uri_is_414() {
        let raw = format!(
            "GET http://a/{} HTTP/1.1\r\nHost: a\r\n\r\n",
            "x".repeat(MAX_URI)
        );
        assert_eq!(
            parse_request(raw.as_bytes()).unwrap_err(),
            Error::UriTooLong
        );
        // The same long target with a newer minor version is still too long; with a space
        // in it the line is malformed first.
        let newer = raw.replace("HTTP/1.1", "HTTP/1.2");
        assert_eq!(
            parse_request(newer.as_bytes()).unwrap_err(),
            Error::UriTooLong
        );
        let spaced = raw.replace("x HTTP", "x y HTTP");
        assert_eq!(
            parse_request(spaced.as_bytes()).unwrap_err().status().0,
            400
        );
    }

    #[test]
    fn request_properties() {
        let r = parse_request(
            b"GET http://a/ HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, close\r\nUpgrade: websocket\r\n\
              Via: 1.0 other, 1.1 SmolProxy (x)\r\nExpect: 100-Continue\r\n\r\n",
        )
        .unwrap();
        assert!(r.is_upgrade());
        assert!(!r.keep_alive());
        assert!(r.expects_continue());
        assert!(r.passed_through("smolproxy"));
        assert!(!r.passed_through("other2"));
        let r = parse_request(b"GET http://a/ HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").unwrap();
        assert!(r.keep_alive());
    }

    macro_rules! responses {
        ($($raw:expr, $head_req:expr => $expect:expr;)*) => {$(
            let got = parse_response($raw, $head_req).map(|r| r.framing).map_err(|_| ());
            assert_eq!(got, $expect, "{:?}", String::from_utf8_lossy($raw));
        )*};
    }

    #[test]
    fn response_framing() {
        use Framing::*;
        responses! {
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", false => Ok(Length(3));
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", true => Ok(Empty);
            b"HTTP/1.1 204 No Content\r\n\r\n", false => Ok(Empty);
            b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n", false => Ok(Empty);
            b"HTTP/1.1 100 Continue\r\n\r\n", false => Ok(Empty);
            b"HTTP/1.1 200 OK\r\n\r\n", false => Ok(Close);
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", false => Ok(Chunked);
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", false => Ok(Close);
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n", false => Err(());
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", false => Err(());
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", false => Err(());
            b"HTTP/1.1 2000 OK\r\n\r\n", false => Err(());
            b"HTTP/1.1 099 OK\r\n\r\n", false => Err(());
            b"HTTX/1.1 200 OK\r\n\r\n", false => Err(());
            b"HTTP/1.0 200 OK\r\n\r\n", false => Ok(Close);
            b"HTTP/2.0 200 OK\r\n\r\n", false => Err(());
            b"HTTP/1.1  200 OK\r\n\r\n", false => Err(());
            b"garbage\r\n\r\n", false => Err(());
            b"HTTP/1.1 200 OK\r\nX-A : b\r\nContent-Length: 0\r\n\r\n", false => Ok(Empty);
            b"HTTP/1.1 200 OK\r\nX-A: b\r\n c\r\nContent-Length: 1\r\n\r\n", false => Ok(Length(1));
        }
    }
}

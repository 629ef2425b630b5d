//! Request targets: the absolute-form URI of a proxied request and the authority of CONNECT.
//!
//! Pure parsing (RFC 9112 §3.2, RFC 3986 §3.2). Hosts are lowercased, IPv6 literals are kept
//! without brackets, the port is always explicit. Userinfo in a target is rejected (RFC 9110
//! §4.2.4), as are fragments. This module does not resolve names or decide anything.

use std::fmt;
use std::net::Ipv6Addr;

/// The scheme of a request target; CONNECT targets have [`Scheme::Connect`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// `http://`: forwarded in plain text.
    Http,
    /// `https://` in absolute-form: fetched over TLS by the proxy.
    Https,
    /// `ws://`: plain WebSocket, forwarded like http.
    Ws,
    /// An authority-form CONNECT target.
    Connect,
}

impl Scheme {
    /// The port used when the target names none.
    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Http | Scheme::Ws => 80,
            Scheme::Https | Scheme::Connect => 443,
        }
    }

    /// The lowercase scheme name; CONNECT counts as https (SPEC §4).
    pub fn name(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https | Scheme::Connect => "https",
            Scheme::Ws => "ws",
        }
    }
}

/// Where a request goes: scheme, host, port and (for absolute-form) the path and query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The scheme, or `Connect` for authority-form.
    pub scheme: Scheme,
    /// Lowercased host name or IP literal, IPv6 without brackets, no trailing dot removed.
    pub host: String,
    /// The port, explicit or the scheme's default.
    pub port: u16,
    /// Path and query as sent (`/a?b`), empty when the URI had no path; empty for CONNECT.
    pub path: String,
}

/// Why a target was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetError {
    /// Syntax error: the reason is a short phrase.
    Invalid(&'static str),
    /// A scheme this proxy does not forward (e.g. `ftp`).
    Scheme(String),
    /// An origin-form (`/path`) or asterisk-form target sent to a proxy.
    NotProxy,
}

impl Target {
    /// Parses the request-target of a non-CONNECT request; it must be in absolute-form.
    pub fn parse_absolute(uri: &str) -> Result<Target, TargetError> {
        if uri.starts_with('/') || uri == "*" {
            return Err(TargetError::NotProxy);
        }
        let (scheme, rest) = uri
            .split_once("://")
            .ok_or(TargetError::Invalid("not a URI"))?;
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "http" => Scheme::Http,
            "https" => Scheme::Https,
            "ws" => Scheme::Ws,
            _ if is_scheme(scheme) => return Err(TargetError::Scheme(scheme.to_ascii_lowercase())),
            _ => return Err(TargetError::Invalid("bad scheme")),
        };
        if rest.contains('#') {
            return Err(TargetError::Invalid("fragment in request target"));
        }
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(end);
        let (host, port) = parse_authority(authority, Some(scheme.default_port()))?;
        let path = if path.starts_with('?') {
            format!("/{path}")
        } else {
            path.to_string()
        };
        Ok(Target {
            scheme,
            host,
            port,
            path,
        })
    }

    /// Parses the authority-form target of CONNECT (`host:port`, port required).
    pub fn parse_authority(authority: &str) -> Result<Target, TargetError> {
        let (host, port) = parse_authority(authority, None)?;
        Ok(Target {
            scheme: Scheme::Connect,
            host,
            port,
            path: String::new(),
        })
    }

    /// The host as it appears in a URI or Host header: IPv6 literals in brackets.
    pub fn host_for_uri(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        }
    }

    /// `host:port` with brackets for IPv6, the port always present.
    pub fn host_port(&self) -> String {
        authority(&self.host, self.port)
    }

    /// The value of the Host header toward the origin: the port only when not the default.
    pub fn host_header(&self) -> String {
        if self.port == self.scheme.default_port() {
            self.host_for_uri()
        } else {
            self.host_port()
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.scheme {
            Scheme::Connect => f.write_str(&self.host_port()),
            s => write!(f, "{}://{}{}", s.name(), self.host_header(), self.path),
        }
    }
}

/// RFC 3986 §3.1: ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )
fn is_scheme(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
}

/// Splits `host[:port]` into a lowercased host and a port. `default` is used when the port is
/// absent or empty; `None` makes the port required.
pub fn parse_authority(
    authority: &str,
    default: Option<u16>,
) -> Result<(String, u16), TargetError> {
    if authority.contains('@') {
        return Err(TargetError::Invalid("userinfo in request target"));
    }
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (v6, after) = rest
            .split_once(']')
            .ok_or(TargetError::Invalid("unclosed '['"))?;
        if v6.parse::<Ipv6Addr>().is_err() {
            return Err(TargetError::Invalid("bad IPv6 address"));
        }
        let port = match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or(TargetError::Invalid("junk after ']'"))?,
            ),
        };
        (v6.to_ascii_lowercase(), port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, _)) if h.contains(':') => {
                return Err(TargetError::Invalid("IPv6 address without brackets"))
            }
            Some((h, p)) => (h.to_ascii_lowercase(), Some(p)),
            None => (authority.to_ascii_lowercase(), None),
        }
    };
    if host.is_empty() {
        return Err(TargetError::Invalid("empty host"));
    }
    if !host.contains(':') && !is_reg_name(&host) {
        return Err(TargetError::Invalid("bad host"));
    }
    let port = match (port, default) {
        (None | Some(""), Some(d)) => d,
        (None | Some(""), None) => return Err(TargetError::Invalid("port required")),
        (Some(p), _) => parse_port(p).ok_or(TargetError::Invalid("bad port"))?,
    };
    Ok((host, port))
}

/// A decimal port 1..=65535 with no sign or spaces.
fn parse_port(p: &str) -> Option<u16> {
    if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    p.parse::<u16>().ok().filter(|&n| n != 0)
}

/// RFC 3986 reg-name (unreserved / pct-encoded / sub-delims), which also covers IPv4.
/// Narrowed to what DNS can carry: letters, digits, `-`, `.`, `_`.
fn is_reg_name(host: &str) -> bool {
    host.len() <= 255
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
        && !host.starts_with('.')
        && !host.as_bytes().windows(2).any(|w| w == b"..")
}

/// `host:port` with brackets for an IPv6 literal, the port always present.
pub fn authority(host: &str, port: u16) -> String {
    // Built by hand: it runs for every request, and `format!` costs several times as much.
    let mut out = String::with_capacity(host.len() + 8);
    if host.contains(':') {
        out.push('[');
        out.push_str(host);
        out.push(']');
    } else {
        out.push_str(host);
    }
    out.push(':');
    decimal(port.into(), |d| out.push(char::from(d)));
    out
}

/// Hands the ASCII digits of `n` in decimal, most significant first, to `push`: what
/// `n.to_string()` gives, without the formatting machinery, for the numbers written into every
/// request and response (ports, status codes, versions).
pub fn decimal(n: u64, mut push: impl FnMut(u8)) {
    let mut digits = [0u8; 20];
    let (mut n, mut at) = (n, digits.len());
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    digits[at..].iter().for_each(|&d| push(d));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_digits_and_authorities() {
        for n in [0, 7, 10, 99, 100, 443, 65535, u64::MAX] {
            let mut got = String::new();
            decimal(n, |d| got.push(char::from(d)));
            assert_eq!(got, n.to_string());
        }
        assert_eq!(authority("example.com", 8080), "example.com:8080");
        assert_eq!(authority("::1", 443), "[::1]:443");
    }

    macro_rules! absolute {
        ($($uri:expr => $expect:expr;)*) => {$(
            let got = Target::parse_absolute($uri)
                .map(|t| (t.scheme, t.host.clone(), t.port, t.path.clone()));
            assert_eq!(got, $expect, "{}", $uri);
        )*};
    }

    #[test]
    fn absolute_form() {
        use Scheme::*;
        let ok = |s, h: &str, p, path: &str| Ok((s, h.to_string(), p, path.to_string()));
        let bad = |m| Err(TargetError::Invalid(m));
        absolute! {
            "http://example.com/a?b" => ok(Http, "example.com", 80, "/a?b");
            "HTTP://Example.COM:8080" => ok(Http, "example.com", 8080, "");
            "http://example.com:/x" => ok(Http, "example.com", 80, "/x");
            "http://example.com?q=1" => ok(Http, "example.com", 80, "/?q=1");
            "https://[::1]:8443/" => ok(Https, "::1", 8443, "/");
            "ws://127.0.0.1/chat" => ok(Ws, "127.0.0.1", 80, "/chat");
            "http://[::1/" => bad("unclosed '['");
            "http://[zz]/" => bad("bad IPv6 address");
            "http://user:pw@example.com/" => bad("userinfo in request target");
            "http://example.com:65536/" => bad("bad port");
            "http://example.com:0/" => bad("bad port");
            "http://example.com:+80/" => bad("bad port");
            "http://example.com:99999999999999999999/" => bad("bad port");
            "http://exa mple.com/" => bad("bad host");
            "http:///path" => bad("empty host");
            "http://example.com/#frag" => bad("fragment in request target");
            "example.com/" => bad("not a URI");
            "/index.html" => Err(TargetError::NotProxy);
            "*" => Err(TargetError::NotProxy);
            "ftp://example.com/" => Err(TargetError::Scheme("ftp".into()));
            "1http://x/" => bad("bad scheme");
        }
    }

    #[test]
    fn authority_form() {
        let t = Target::parse_authority("Example.com:443").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("example.com", 443));
        let t = Target::parse_authority("[2001:db8::1]:8443").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("2001:db8::1", 8443));
        assert_eq!(t.host_port(), "[2001:db8::1]:8443");
        for bad in [
            "example.com",
            "example.com:",
            ":443",
            "[::1]",
            "a:b:443",
            "h:70000",
            "h:-1",
        ] {
            assert!(Target::parse_authority(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn host_header_omits_default_port() {
        let t = Target::parse_absolute("http://a.example:80/").unwrap();
        assert_eq!(t.host_header(), "a.example");
        let t = Target::parse_absolute("http://[::1]:8080/").unwrap();
        assert_eq!(t.host_header(), "[::1]:8080");
        assert_eq!(t.to_string(), "http://[::1]:8080/");
    }
}

//! Upstream proxy URLs: `http://`, `https://`, `socks5://`, `socks5h://` with optional
//! percent-encoded `user:password@` and a port (SPEC §4).
//!
//! Pure parsing into an [`Upstream`], one hop of a chain. Credentials are kept decoded for the
//! handshake with that hop only; `Display` and `Debug` never show them, so an upstream can be
//! named in errors, logs and `smolproxy route` output. Nothing here connects anywhere.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use base64::Engine as _;

use crate::target;

/// Longest SOCKS5 user name or password (RFC 1929 §2: one length byte).
const MAX_SOCKS_CREDENTIAL: usize = 255;

/// The protocol spoken to an upstream proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `http://`: HTTP proxy over plain TCP.
    Http,
    /// `https://`: HTTP proxy over TLS to the proxy itself.
    Https,
    /// `socks5://`: SOCKS5, names resolved here.
    Socks5,
    /// `socks5h://`: SOCKS5, names resolved by the proxy.
    Socks5h,
}

impl Kind {
    /// The URL scheme.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Http => "http",
            Kind::Https => "https",
            Kind::Socks5 => "socks5",
            Kind::Socks5h => "socks5h",
        }
    }

    /// The port assumed for a scheme-only environment value (never for flags).
    fn default_port(self) -> u16 {
        match self {
            Kind::Http => 80,
            Kind::Https => 443,
            Kind::Socks5 | Kind::Socks5h => 1080,
        }
    }
}

/// One upstream proxy: a hop of a chain.
#[derive(Clone, PartialEq, Eq)]
pub struct Upstream {
    /// The protocol spoken to it.
    pub kind: Kind,
    /// Lowercased host name or IP literal, IPv6 without brackets.
    pub host: String,
    /// Its port.
    pub port: u16,
    /// Percent-decoded user name and password, sent only to this hop.
    pub credentials: Option<(String, String)>,
    /// The `Proxy-Authorization` line for an HTTP(S) hop with credentials (CRLF-ended), made
    /// once here rather than for every request; empty otherwise.
    authorization: String,
}

impl Upstream {
    /// Parses an `--upstream` URL: scheme, optional percent-encoded `user:password@`, host and
    /// port are all required; nothing may follow but a lone `/`.
    pub fn parse(url: &str) -> Result<Upstream, String> {
        Upstream::parse_with(url, false)
    }

    /// Parses a proxy environment variable: like [`Upstream::parse`], but a missing scheme
    /// means `http://` and a missing port the scheme's usual one, as curl and Go accept.
    pub fn parse_env(value: &str) -> Result<Upstream, String> {
        Upstream::parse_with(value, true)
    }

    fn parse_with(url: &str, lenient: bool) -> Result<Upstream, String> {
        let expected = |why: &str| {
            format!("{why}: expected a URL like http://host:port, socks5h://user:pass@host:port")
        };
        let (scheme, rest) = match url.split_once("://") {
            Some(parts) => parts,
            None if lenient => ("http", url),
            None => return Err(expected("no scheme")),
        };
        let kind = match scheme.to_ascii_lowercase().as_str() {
            "http" => Kind::Http,
            "https" => Kind::Https,
            "socks5" => Kind::Socks5,
            "socks5h" => Kind::Socks5h,
            other => {
                return Err(format!(
                    "unsupported proxy scheme '{other}' (http, https, socks5, socks5h)"
                ))
            }
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#']) {
            return Err(expected("a path is not allowed"));
        }
        let (userinfo, authority) = match rest.rsplit_once('@') {
            Some((u, a)) => (Some(u), a),
            None => (None, rest),
        };
        let default = lenient.then(|| kind.default_port());
        let (host, port) = target::parse_authority(authority, default).map_err(|e| match e {
            target::TargetError::Invalid(why) => expected(why),
            _ => expected("bad host"),
        })?;
        let credentials = match userinfo {
            None => None,
            Some(u) => {
                let (user, pass) = u.split_once(':').unwrap_or((u, ""));
                let user = percent_decode(user)
                    .ok_or_else(|| expected("bad percent-encoding in the user name"))?;
                let pass = percent_decode(pass)
                    .ok_or_else(|| expected("bad percent-encoding in the password"))?;
                let socks = matches!(kind, Kind::Socks5 | Kind::Socks5h);
                if socks
                    && (user.is_empty()
                        || user.len() > MAX_SOCKS_CREDENTIAL
                        || pass.len() > MAX_SOCKS_CREDENTIAL)
                {
                    return Err(format!("SOCKS5 user name must be 1-{MAX_SOCKS_CREDENTIAL} bytes and password at most {MAX_SOCKS_CREDENTIAL}"));
                }
                Some((user, pass))
            }
        };
        let mut upstream = Upstream {
            kind,
            host,
            port,
            credentials,
            authorization: String::new(),
        };
        if let (Some((user, pass)), true) = (&upstream.credentials, upstream.is_http()) {
            let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
            upstream.authorization = format!("Proxy-Authorization: Basic {token}\r\n");
        }
        Ok(upstream)
    }

    /// Whether requests are sent to it as HTTP (http:// or https://), not SOCKS.
    pub fn is_http(&self) -> bool {
        matches!(self.kind, Kind::Http | Kind::Https)
    }

    /// `host:port`, IPv6 in brackets.
    pub fn host_port(&self) -> String {
        crate::target::authority(&self.host, self.port)
    }

    /// The `Proxy-Authorization` line for this hop (CRLF-ended), or nothing without
    /// credentials. Basic (RFC 7617) over the raw bytes of `user:password`.
    pub fn proxy_authorization(&self) -> &str {
        &self.authorization
    }

    /// Whether this upstream is this very proxy: the same port on a listening address (or on
    /// loopback / `localhost` when listening on every address).
    pub fn is_self(&self, listen: &[SocketAddr]) -> bool {
        let ip = self.host.parse::<IpAddr>().ok();
        listen.iter().any(|l| {
            l.port() == self.port
                && match ip {
                    Some(ip) => {
                        ip == l.ip()
                            || (l.ip().is_unspecified()
                                && (ip.is_loopback() || ip.is_unspecified()))
                    }
                    None => {
                        self.host == "localhost"
                            && (l.ip().is_loopback() || l.ip().is_unspecified())
                    }
                }
        })
    }
}

/// Never shows credentials: safe in logs, errors and `route` output.
impl fmt::Display for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.kind.name(), self.host_port())
    }
}

/// Like Display, so that a printed configuration never leaks a password.
impl fmt::Debug for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let creds = if self.credentials.is_some() {
            " (with credentials)"
        } else {
            ""
        };
        write!(f, "{self}{creds}")
    }
}

/// The URL as typed with its password replaced by `***`, for error messages.
pub fn redact(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").map_or(("", url), |(s, r)| (s, r));
    let Some((userinfo, host)) = rest.rsplit_once('@') else {
        return url.to_string();
    };
    let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
    let sep = if scheme.is_empty() { "" } else { "://" };
    format!("{scheme}{sep}{user}:***@{host}")
}

/// RFC 3986 §2.1 percent-decoding into UTF-8; `None` for a broken escape or invalid UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            // Two hex digits exactly (from_str_radix would also take a sign: "%+1").
            let digit = |j: usize| b.get(j).and_then(|&c| (c as char).to_digit(16));
            out.push((digit(i + 1)? * 16 + digit(i + 2)?) as u8);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_urls() {
        let u = Upstream::parse("http://127.0.0.1:8080").unwrap();
        assert_eq!(
            (u.kind, u.host.as_str(), u.port, u.credentials.is_none()),
            (Kind::Http, "127.0.0.1", 8080, true)
        );
        let u = Upstream::parse("SOCKS5H://us%40er:p%3Ass%20w@[::1]:1080/").unwrap();
        assert_eq!(u.kind, Kind::Socks5h);
        assert_eq!(u.credentials, Some(("us@er".into(), "p:ss w".into())));
        assert_eq!(u.to_string(), "socks5h://[::1]:1080");
        assert_eq!(format!("{u:?}"), "socks5h://[::1]:1080 (with credentials)");
        let u = Upstream::parse("https://ann:s3cret@proxy.example:3129").unwrap();
        assert_eq!(
            u.proxy_authorization(),
            "Proxy-Authorization: Basic YW5uOnMzY3JldA==\r\n"
        );
        assert!(!u.to_string().contains("s3cret"));
        for bad in [
            "127.0.0.1:8080",
            "http://127.0.0.1",
            "ftp://h:1",
            "socks4://h:1",
            "http://h:0",
            "http://h:1/path",
            "http://h:1?q",
            "http://%zz@h:1",
            "http://a:%+1@h:1",
            "http://a:%4@h:1",
            "socks5://:pw@h:1",
            "http://[::1:1",
            "http://h h:1",
            "http://:1",
        ] {
            assert!(Upstream::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(redact("http://ann:s3cret@h:1"), "http://ann:***@h:1");
        assert_eq!(redact("socks5://a%40b@h"), "socks5://a%40b:***@h");
        assert_eq!(redact("http://h:1"), "http://h:1");
        // The environment may leave out the scheme and the port.
        assert_eq!(
            Upstream::parse_env("proxy.corp").unwrap().to_string(),
            "http://proxy.corp:80"
        );
        assert_eq!(Upstream::parse_env("socks5h://p").unwrap().port, 1080);
        assert_eq!(Upstream::parse_env("https://p").unwrap().port, 443);
    }

    #[test]
    fn self_detection() {
        let listen: Vec<SocketAddr> = vec![
            "127.0.0.1:3128".parse().unwrap(),
            "[::]:8080".parse().unwrap(),
        ];
        for (url, is_self) in [
            ("http://127.0.0.1:3128", true),
            ("http://localhost:3128", true),
            ("http://127.0.0.2:3128", false),
            ("http://127.0.0.1:3129", false),
            ("http://[::1]:8080", true),
            ("socks5://127.0.0.1:8080", true),
            ("http://10.0.0.1:8080", false),
            ("http://proxy:3128", false),
        ] {
            assert_eq!(
                Upstream::parse(url).unwrap().is_self(&listen),
                is_self,
                "{url}"
            );
        }
    }
}

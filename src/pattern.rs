//! Destination patterns: one matcher for `--bypass`, `NO_PROXY`, `--allow` and `--deny`.
//!
//! Pure parsing and matching (SPEC §4), no I/O and no name resolution. An entry is one of:
//! `*` (everything); `<local>` (names without a dot, and loopback addresses); a domain such as
//! `example.com`, `.example.com` or `*.example.com`, which all mean that domain and every name
//! under it; a name with `*` wildcards inside (`api-*.example.com`, `10.*`), where `*` stands
//! for any run of characters; an IPv4 or IPv6 address (brackets optional) or CIDR block. Any
//! entry may end in `:PORT` to apply to that port only (IPv6 then needs brackets).
//! Matching is case-insensitive and ignores a trailing dot on either side.
//!
//! Names match names and addresses match addresses: `example.com` never matches an IP
//! literal, and `10.0.0.0/8` never matches a name. Whether a name resolves into a network is
//! for the caller to ask with [`PatternList::matches_ip`] once it has the addresses.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};

use crate::cidr::Cidr;

/// Longest entry accepted; a DNS name is at most 253 characters, plus a port.
const MAX_ENTRY: usize = 300;

/// One parsed entry of a pattern list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    /// The entry as written (trimmed, lowercased), shown in messages.
    text: String,
    /// What the host part matches.
    host: HostRule,
    /// The only port the entry applies to, if it names one.
    port: Option<u16>,
}

/// The host part of an entry.
#[derive(Debug, Clone, PartialEq, Eq)]
enum HostRule {
    /// `*`: every destination.
    Any,
    /// `<local>`: names without a dot, and loopback addresses.
    Local,
    /// A name (`*` wildcards allowed), after the same name with `*.` in front: the first glob
    /// matches every name under it (one glob instead of one per label), the second itself.
    Name(String, String),
    /// An address or network.
    Net(Cidr),
}

impl Pattern {
    /// Parses one entry; the error says what is wrong with it.
    pub fn parse(entry: &str) -> Result<Pattern, String> {
        let text = entry.trim().to_ascii_lowercase();
        if text.is_empty() {
            return Err("empty entry".into());
        }
        if text.len() > MAX_ENTRY {
            return Err(format!("entry longer than {MAX_ENTRY} characters"));
        }
        if !text.is_ascii() {
            // We carry no IDNA tables (they would cost more than the rest of the matcher).
            return Err(format!(
                "'{text}': non-ASCII names are not supported, write the xn-- form"
            ));
        }
        let (host, port) = split_port(&text)?;
        let host = match host.as_str() {
            "*" => HostRule::Any,
            "<local>" => HostRule::Local,
            h if h.contains('/') || h.parse::<IpAddr>().is_ok() => HostRule::Net(
                Cidr::parse(h).map_err(|_| format!("'{text}': bad IP address or CIDR block"))?,
            ),
            h => {
                let name = parse_name(h)
                    .ok_or_else(|| format!("'{text}': not a host name, address or pattern"))?;
                HostRule::Name(format!("*.{name}"), name)
            }
        };
        Ok(Pattern { text, host, port })
    }

    /// Whether the entry can match a resolved address (an address or network, `*`, or the
    /// loopback half of `<local>`); name entries (`example.com`, `10.*`) match only what the
    /// client wrote.
    pub fn matches_addresses(&self) -> bool {
        !matches!(self.host, HostRule::Name(..))
    }

    /// Whether the entry matches a resolved address: only address rules (addresses, networks,
    /// the loopback half of `<local>`, and `*`) can.
    pub fn matches_ip(&self, ip: IpAddr, port: u16) -> bool {
        self.port.is_none_or(|p| p == port)
            && match &self.host {
                HostRule::Any => true,
                HostRule::Local => is_loopback(ip),
                HostRule::Net(net) => net.contains(ip),
                HostRule::Name(..) => false,
            }
    }

    /// `host` is normalized; `ip` is `host` parsed as an address, if it is one.
    fn matches_host(&self, host: &str, ip: Option<IpAddr>, port: u16) -> bool {
        if self.port.is_some_and(|p| p != port) {
            return false;
        }
        match (&self.host, ip) {
            (HostRule::Any, _) => true,
            (HostRule::Local, Some(ip)) => is_loopback(ip),
            (HostRule::Local, None) => !host.contains('.'),
            (HostRule::Net(net), Some(ip)) => net.contains(ip),
            (HostRule::Net(_), None) => false,
            // An address is one whole token: `0.1` must not match 10.0.0.1 by "subdomain".
            (HostRule::Name(_, p), Some(_)) => glob(p.as_bytes(), host.as_bytes()),
            (HostRule::Name(under, p), None) => {
                glob(p.as_bytes(), host.as_bytes()) || glob(under.as_bytes(), host.as_bytes())
            }
        }
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// An ordered list of entries; the first one that matches is reported.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PatternList {
    /// The entries in the order given.
    entries: Vec<Pattern>,
}

impl PatternList {
    /// Parses a list separated by commas and/or whitespace (empty entries are skipped, as
    /// curl and Go do); any bad entry fails the whole list. For flags.
    pub fn parse(list: &str) -> Result<PatternList, String> {
        let entries = split(list).map(Pattern::parse).collect::<Result<_, _>>()?;
        Ok(PatternList { entries })
    }

    /// Parses a list, skipping bad entries and describing each in the returned warnings. For
    /// the environment, where one stray entry must not stop the proxy.
    pub fn parse_lenient(list: &str) -> (PatternList, Vec<String>) {
        let mut warnings = Vec::new();
        let entries = split(list)
            .filter_map(|e| Pattern::parse(e).map_err(|why| warnings.push(why)).ok())
            .collect();
        (PatternList { entries }, warnings)
    }

    /// Appends the entries of another list (a repeated flag).
    pub fn extend(&mut self, other: PatternList) {
        self.entries.extend(other.entries);
    }

    /// Whether the list has no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entries in order.
    pub fn iter(&self) -> impl Iterator<Item = &Pattern> {
        self.entries.iter()
    }

    /// The first entry matching a destination given by name or IP literal (IPv6 with or
    /// without brackets).
    pub fn matches(&self, host: &str, port: u16) -> Option<&Pattern> {
        if self.entries.is_empty() {
            return None;
        }
        let host = normalize(host);
        let ip = host.parse().ok();
        self.entries
            .iter()
            .find(|p| p.matches_host(&host, ip, port))
    }

    /// The first address rule matching a resolved address (see [`Pattern::matches_ip`]).
    pub fn matches_ip(&self, ip: IpAddr, port: u16) -> Option<&Pattern> {
        self.entries.iter().find(|p| p.matches_ip(ip, port))
    }
}

impl fmt::Display for PatternList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.entries.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

/// The non-empty entries of a list.
fn split(list: &str) -> impl Iterator<Item = &str> {
    list.split(|c: char| c == ',' || c.is_ascii_whitespace())
        .filter(|e| !e.is_empty())
}

/// Splits `host[:port]`, `[v6][/len][:port]` or a bare IPv6 address (which has no port).
/// Brackets are dropped: `[fd00::]/8` and `[fd00::/8]` both give `fd00::/8`.
fn split_port(text: &str) -> Result<(String, Option<u16>), String> {
    let port = |p: &str| {
        (!p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()))
            .then(|| p.parse::<u16>().ok())
            .flatten()
            .filter(|&n| n != 0)
            .ok_or_else(|| format!("'{text}': bad port (expected 1-65535)"))
    };
    if let Some(rest) = text.strip_prefix('[') {
        let (inside, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("'{text}': unclosed '['"))?;
        if inside
            .split('/')
            .next()
            .unwrap_or("")
            .parse::<Ipv6Addr>()
            .is_err()
        {
            return Err(format!("'{text}': only IPv6 addresses go in brackets"));
        }
        let (len, after) = match after.strip_prefix('/') {
            Some(a) if !inside.contains('/') => a.split_at(a.find(':').unwrap_or(a.len())),
            Some(_) => return Err(format!("'{text}': two prefix lengths")),
            None => ("", after),
        };
        let host = if len.is_empty() {
            inside.to_string()
        } else {
            format!("{inside}/{len}")
        };
        return match after {
            "" => Ok((host, None)),
            a => match a.strip_prefix(':') {
                Some(p) => Ok((host, Some(port(p)?))),
                None => Err(format!("'{text}': junk after ']'")),
            },
        };
    }
    match text.split_once(':') {
        None => Ok((text.to_string(), None)),
        // A bare IPv6 address or network: its colons are not a port separator.
        Some((_, p)) if p.contains(':') => Ok((text.to_string(), None)),
        Some((h, p)) => Ok((h.to_string(), Some(port(p)?))),
    }
}

/// Checks a name entry and returns what it matches, with a leading `.` or `*.` and a
/// trailing dot dropped (all three spellings mean "this domain and every name under it").
fn parse_name(h: &str) -> Option<String> {
    let h = h.strip_suffix('.').unwrap_or(h);
    let h = h
        .strip_prefix("*.")
        .or_else(|| h.strip_prefix('.'))
        .unwrap_or(h);
    let ok = !h.is_empty()
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.*".contains(&b))
        && !h.starts_with('.')
        && !h.ends_with('.')
        && !h.contains("..");
    ok.then(|| h.to_string())
}

/// A destination host as patterns see it: lowercase, without brackets or a trailing dot.
fn normalize(host: &str) -> String {
    let h = host.trim();
    let h = h
        .strip_prefix('[')
        .and_then(|v| v.strip_suffix(']'))
        .unwrap_or(h);
    h.strip_suffix('.').unwrap_or(h).to_ascii_lowercase()
}

/// Loopback, including IPv4 loopback written as an IPv4-mapped IPv6 address.
fn is_loopback(ip: IpAddr) -> bool {
    ip.to_canonical().is_loopback()
}

/// Whether `text` matches `pattern`, where `*` stands for any run of bytes (possibly empty).
/// Backtracks only to the last `*`, so it is O(pattern × text) at worst; both are short.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    // Where the last `*` was and how much text it has swallowed so far.
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((sp, st)) = star {
            // Let the last `*` swallow one more byte and retry from there.
            star = Some((sp, st + 1));
            p = sp + 1;
            t = st + 1;
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&b| b == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One line per case: pattern list, destination host, port => the entry that matched.
    macro_rules! table {
        ($($list:expr, $host:expr, $port:expr => $want:expr;)*) => {{
            let mut n = 0;
            $(
                n += 1;
                let list = PatternList::parse($list).unwrap_or_else(|e| panic!("{}: {e}", $list));
                let got = list.matches($host, $port).map(|p| p.to_string());
                assert_eq!(got.as_deref(), $want, "list {:?} against {}:{}", $list, $host, $port);
            )*
            n
        }};
    }

    const NO: Option<&str> = None;

    #[test]
    fn spec_syntax() {
        let n = table! {
            // `*` alone: everything, names and addresses.
            "*", "example.com", 80 => Some("*");
            "*", "10.1.2.3", 443 => Some("*");
            "*", "::1", 80 => Some("*");
            "*", "anything", 1 => Some("*");
            // `<local>`: names without a dot, and loopback addresses.
            "<local>", "localhost", 80 => Some("<local>");
            "<local>", "intranet", 80 => Some("<local>");
            "<local>", "localhost.", 80 => Some("<local>");
            "<local>", "example.com", 80 => NO;
            "<local>", "127.0.0.1", 80 => Some("<local>");
            "<local>", "127.8.9.10", 80 => Some("<local>");
            "<local>", "::1", 80 => Some("<local>");
            "<local>", "[::1]", 80 => Some("<local>");
            "<local>", "::ffff:127.0.0.1", 80 => Some("<local>");
            "<local>", "10.0.0.1", 80 => NO;
            "<local>", "::2", 80 => NO;
            "<LOCAL>", "devbox", 80 => Some("<local>");
            // A domain: itself and every name under it, in all three spellings.
            "example.com", "example.com", 80 => Some("example.com");
            "example.com", "www.example.com", 80 => Some("example.com");
            "example.com", "a.b.example.com", 80 => Some("example.com");
            "example.com", "notexample.com", 80 => NO;
            "example.com", "example.com.evil.net", 80 => NO;
            ".example.com", "www.example.com", 80 => Some(".example.com");
            "*.example.com", "x.example.com", 80 => Some("*.example.com");
            "*.example.com", "xexample.com", 80 => NO;
            "com", "example.com", 80 => Some("com");
            "localhost", "localhost", 80 => Some("localhost");
            "host_1.test", "host_1.test", 80 => Some("host_1.test");
            // Case-insensitive, trailing dot ignored on either side.
            "EXAMPLE.COM", "www.Example.Com", 80 => Some("example.com");
            "example.com.", "www.example.com", 80 => Some("example.com.");
            "example.com", "WWW.EXAMPLE.COM.", 80 => Some("example.com");
            // Inner wildcards: any run of characters, dots included, the empty run too.
            "api-*.example.com", "api-v1.example.com", 80 => Some("api-*.example.com");
            "api-*.example.com", "api-.example.com", 80 => Some("api-*.example.com");
            "api-*.example.com", "api-a.b.example.com", 80 => Some("api-*.example.com");
            "api-*.example.com", "x.api-v2.example.com", 80 => Some("api-*.example.com");
            "api-*.example.com", "web.example.com", 80 => NO;
            "api-*.example.com", "api-v1.example.org", 80 => NO;
            "10.*", "10.1.2.3", 80 => Some("10.*");
            "10.*", "11.1.2.3", 80 => NO;
            "10.*", "110.1.2.3", 80 => NO;
            "*.corp", "host.corp", 80 => Some("*.corp");
            "*example.com", "myexample.com", 80 => Some("*example.com");
            "a*b*c.test", "axxbyyc.test", 80 => Some("a*b*c.test");
            "a*b*c.test", "acb.test", 80 => NO;
            // Names match names and addresses match addresses; nothing is resolved.
            "localhost", "127.0.0.1", 80 => NO;
            "127.0.0.1", "localhost", 80 => NO;
            "10.0.0.0/8", "ten.example", 80 => NO;
            "0.0.1", "10.0.0.1", 80 => NO;
            // Addresses and CIDR blocks, IPv6 with or without brackets on either side.
            "10.0.0.0/8", "10.255.255.255", 80 => Some("10.0.0.0/8");
            "10.0.0.0/8", "11.0.0.0", 80 => NO;
            "127.0.0.0/8", "::ffff:127.0.0.1", 80 => Some("127.0.0.0/8");
            "192.168.1.1", "192.168.1.10", 80 => NO;
            "fd00::/8", "fd12::1", 80 => Some("fd00::/8");
            "fd00::/8", "[fd12::1]", 80 => Some("fd00::/8");
            "[fd00::/8]", "fd12::1", 80 => Some("[fd00::/8]");
            "[fd00::]/8", "fd12::1", 80 => Some("[fd00::]/8");
            "fd00::/8", "fe80::1", 80 => NO;
            "::1", "::1", 80 => Some("::1");
            "[::1]", "::1", 80 => Some("[::1]");
            "::1", "[::1]", 80 => Some("::1");
            "2001:db8::1", "2001:DB8:0:0::1", 80 => Some("2001:db8::1");
            // `:PORT` limits any kind of entry to that port.
            "192.168.1.1:8080", "192.168.1.1", 8080 => Some("192.168.1.1:8080");
            "192.168.1.1:8080", "192.168.1.1", 80 => NO;
            "example.com:443", "www.example.com", 443 => Some("example.com:443");
            "example.com:443", "www.example.com", 80 => NO;
            "[::1]:8080", "::1", 8080 => Some("[::1]:8080");
            "[::1]:8080", "::1", 80 => NO;
            "[fd00::/8]:22", "fd00::5", 22 => Some("[fd00::/8]:22");
            "*:8080", "anything", 8080 => Some("*:8080");
            "*:8080", "anything", 80 => NO;
            "<local>:3000", "devbox", 3000 => Some("<local>:3000");
            "<local>:3000", "devbox", 80 => NO;
            "10.0.0.0/8:22", "10.1.1.1", 22 => Some("10.0.0.0/8:22");
            // Lists: commas and/or whitespace, empty entries skipped, first match reported.
            "a.com b.com", "b.com", 80 => Some("b.com");
            "a.com,,b.com", "b.com", 80 => Some("b.com");
            "a.com, example.com", "example.com", 80 => Some("example.com");
            "*.example.com,example.com", "example.com", 80 => Some("*.example.com");
            "", "example.com", 80 => NO;
            " , ", "example.com", 80 => NO;
        };
        assert!(n >= 70, "{n}");
    }

    /// Facts from curl's NO_PROXY unit test (tests/unit/unit1614.c), where our semantics agree.
    #[test]
    fn curl_unit1614() {
        table! {
            "localhost,.example.com,.example.de", "www.example.com", 80 => Some(".example.com");
            "localhost,.example.com,.example.de", "www.example.com.", 80 => Some(".example.com");
            "localhost,.example.com,.example.de", "example.com", 80 => Some(".example.com");
            "localhost,.example.com,.example.de", "example.com.", 80 => Some(".example.com");
            "localhost,.example.com.,.example.de", "www.example.com", 80 => Some(".example.com.");
            "localhost,www.example.com.,.example.de", "www.example.com", 80 => Some("www.example.com.");
            "localhost,example.com,.example.de", "example.com", 80 => Some("example.com");
            "localhost,example.com,.example.de", "example.com.", 80 => Some("example.com");
            "127.0.0.1,localhost", "127.0.0.1", 80 => Some("127.0.0.1");
            "127.0.0.1,localhost,", "127.0.0.1", 80 => Some("127.0.0.1");
            "127.0.0.1/8,localhost,", "127.0.0.1", 80 => Some("127.0.0.1/8");
            "127.0.0.1/28,localhost,", "127.0.0.1", 80 => Some("127.0.0.1/28");
            "127.0.0.1/31,localhost,", "127.0.0.1", 80 => Some("127.0.0.1/31");
            "localhost,127.0.0.1", "127.0.0.1", 80 => Some("127.0.0.1");
            // A 128-byte "address" made of repeated 127.0.0.1: a (valid) name, never an IP.
            "localhost,127.0.0.1.127.0.0.1.127.0.0.1.127.0.0.1.127.0.0.1.127.0.0.1.127.0.0.1.127.0.0.1.127.0.0.1.127.0.0.1.127.0.0.1.127.0.0.1.127.0.0.",
                "127.0.0.1", 80 => NO;
            "localhost,127.0.0.1", "localhost", 80 => Some("localhost");
            "127.0.0.1,localhost", "localhost", 80 => Some("localhost");
            "barfoo", "foobar", 80 => NO;
            "foobar", "foobar", 80 => Some("foobar");
            "foobar", "192.168.0.1", 80 => NO;
            "192.168.0.0/16", "192.168.0.1", 80 => Some("192.168.0.0/16");
            "192.168.0.0/24", "192.168.0.1", 80 => Some("192.168.0.0/24");
            "192.168.0.0/32", "192.168.0.1", 80 => NO;
            "192.168.0.0", "192.168.0.1", 80 => NO;
            "192.168.0.0/24", "192.168.1.1", 80 => NO;
            "foo, bar, 192.168.0.0/24", "192.168.1.1", 80 => NO;
            "foo, bar, 192.168.0.0/16", "192.168.1.1", 80 => Some("192.168.0.0/16");
            "foo, bar, 192.168.0.0/16", "[::1]", 80 => NO;
            "foo, bar, ::1/64", "[::1]", 80 => Some("::1/64");
            "foo, bar, ::1/64", "bar", 80 => Some("bar");
            "foo, bar, ::1/64", "BAr", 80 => Some("bar");
            "foo,,,,,              bar, ::1/64", "BAr", 80 => Some("bar");
            "foo, .example.com", "www.example.com", 80 => Some(".example.com");
            "www2.example.com, .example.net", "www.example.com", 80 => NO;
            ".example.com, .example.net", "example.com", 80 => Some(".example.com");
            ".example.com, .example.net", "nonexample.com", 80 => NO;
            // curl's CIDR checks (Curl_cidr4_match / Curl_cidr6_match) as entries.
            "192.160.0.1/32", "192.160.0.1", 80 => Some("192.160.0.1/32");
            "192.160.0.1", "192.160.0.1", 80 => Some("192.160.0.1");
            "192.160.0.1/24", "192.160.0.1", 80 => Some("192.160.0.1/24");
            "192.160.0.1/26", "192.160.0.1", 80 => Some("192.160.0.1/26");
            "192.160.0.1/20", "192.160.0.1", 80 => Some("192.160.0.1/20");
            "192.160.0.1/18", "192.160.0.1", 80 => Some("192.160.0.1/18");
            "192.160.0.1/12", "192.160.0.1", 80 => Some("192.160.0.1/12");
            "192.160.0.1/8", "192.160.0.1", 80 => Some("192.160.0.1/8");
            "10.0.0.1/8", "192.160.0.1", 80 => NO;
            "10.0.0.1/32", "192.160.0.1", 80 => NO;
            "10.0.0.1", "192.160.0.1", 80 => NO;
            "::1", "::1", 80 => Some("::1");
            "::1/128", "::1", 80 => Some("::1/128");
            "0:0::1/128", "::1", 80 => Some("0:0::1/128");
            "fe80::ab47:4396:55c9:8474/64", "fe80::ab47:4396:55c9:8474", 80 => Some("fe80::ab47:4396:55c9:8474/64");
        };
        // curl: 192.160.0.1/33 never matches; for us a prefix beyond 32 is a bad entry.
        assert!(Pattern::parse("192.160.0.1/33").is_err());
        assert!(Pattern::parse("0:0::1/129").is_err());
    }

    /// Where we deliberately differ from curl's unit test, and why.
    #[test]
    fn curl_differences() {
        table! {
            // curl's test: `example.com` does not match www.example.com (tail match needs the
            // leading dot there). SPEC §4 says a domain covers every name under it, as curl's
            // own --noproxy documentation and Go do.
            "localhost,example.com,.example.de", "www.example.com", 80 => Some("example.com");
            // curl reads a missing prefix length as bits=0 and "/0" the same way (exact
            // match). For us /0 is the whole address space, like any CIDR tool.
            "10.0.0.1/0", "192.160.0.1", 80 => Some("10.0.0.1/0");
        };
    }

    /// Go's golang.org/x/net/http/httpproxy UseProxy table (each host at port 80), where we
    /// agree. Go's list, verbatim as data.
    const GO_NO_PROXY: &str = "foobar.com, .barbaz.net, *.wildcard.io, 192.168.1.1, 192.168.1.2:81, \
        192.168.1.3:80, 10.0.0.0/30, 2001:db8::52:0:1, [2001:db8::52:0:2]:443, [2001:db8::52:0:3]:80, \
        2002:db8:a::45/64";

    #[test]
    fn go_httpproxy() {
        let go = |host: &str| {
            PatternList::parse(GO_NO_PROXY)
                .unwrap()
                .matches(host, 80)
                .map(|p| p.to_string())
        };
        let agree = [
            ("[::2]", None), // not a loopback address
            ("192.168.1.1", Some("192.168.1.1")),
            ("192.168.1.2", None), // the port does not match
            ("192.168.1.3", Some("192.168.1.3:80")),
            ("192.168.1.4", None),
            ("10.0.0.2", Some("10.0.0.0/30")),
            ("[2001:db8::52:0:1]", Some("2001:db8::52:0:1")),
            ("[2001:db8::52:0:2]", None),
            ("[2001:db8::52:0:3]", Some("[2001:db8::52:0:3]:80")),
            ("[2002:db8:a::123]", Some("2002:db8:a::45/64")),
            ("[fe80::424b:c8be:1643:a1b6]", None),
            ("www.barbaz.net", Some(".barbaz.net")),
            ("foobar.com", Some("foobar.com")),
            ("www.foobar.com", Some("foobar.com")),
            ("foofoobar.com", None),
            ("baz.com", None),
            ("localhost.net", None),
            ("local.localhost", None),
            ("barbarbaz.net", None),
            ("nested.wildcard.io", Some("*.wildcard.io")),
            ("awildcard.io", None),
        ];
        for (host, want) in agree {
            assert_eq!(go(host).as_deref(), want, "{host}");
        }
        // Go's ProxyForURL cases with a NO_PROXY value.
        table! {
            "example.com", "example.com", 80 => Some("example.com");
            "ample.com", "example.com", 80 => NO;
            "example.com", "foo.example.com", 80 => Some("example.com");
            ".foo.com", "example.com", 80 => NO;
            "xn--fsq092h.com", "www.xn--fsq092h.com", 80 => Some("xn--fsq092h.com");
            "*", "[2001:db8::52:0:2]", 80 => Some("*");
        };
        // Go: an invalid entry (":1") must not match anything nor panic. From the
        // environment we skip it with a warning; from a flag it is an error.
        let (list, warnings) = PatternList::parse_lenient(":1");
        assert!(list.is_empty() && warnings.len() == 1);
    }

    /// Where we deliberately differ from Go, and why.
    #[test]
    fn go_differences() {
        let go = |host: &str| {
            PatternList::parse(GO_NO_PROXY)
                .unwrap()
                .matches(host, 80)
                .map(|p| p.to_string())
        };
        // Go never proxies localhost, 127.0.0.0/8 or ::1 whatever NO_PROXY says. We have no
        // hidden exceptions: the lists say everything (write `<local>` for that), so that
        // `smolproxy route` can always name the entry that decided.
        assert_eq!(go("localhost"), None);
        assert_eq!(go("127.0.0.1"), None);
        assert_eq!(go("127.0.0.2"), None);
        assert_eq!(go("[::1]"), None);
        // Go: `.barbaz.net` and `*.wildcard.io` exclude the domain itself. SPEC §4 makes
        // `.d`, `*.d` and `d` all mean the domain and every name under it (as curl does).
        assert_eq!(go("barbaz.net").as_deref(), Some(".barbaz.net"));
        assert_eq!(go("wildcard.io").as_deref(), Some("*.wildcard.io"));
        table! {
            ".example.com", "example.com", 80 => Some(".example.com");
            "*.example.com", "example.com", 80 => Some("*.example.com");
        };
        // Go matches Unicode names through IDNA; we carry no IDNA tables, so a non-ASCII
        // entry is refused (a warning from the environment) and the xn-- form is asked for.
        assert!(Pattern::parse(".示例.com").unwrap_err().contains("xn--"));
    }

    #[test]
    fn rejects() {
        let bad = [
            ":1",
            ":",
            "10.0.0.0/33",
            "::/129",
            "example.com:0",
            "example.com:65536",
            "example.com:http",
            "example.com:",
            "[::1",
            "[example.com]",
            "[127.0.0.1]",
            "[::1]x",
            "[::1/8]/8",
            "a..b",
            ".",
            "*..x",
            "foo/bar",
            "http://example.com",
            "user@host",
            "exa mple.com",
            "1.2.3.4:80:90",
            "<loc>",
            "[::1]:0",
        ];
        for entry in bad {
            assert!(
                Pattern::parse(entry).is_err(),
                "{entry:?} should be rejected"
            );
        }
        let err = PatternList::parse("ok.com, 10.0.0.0/99").unwrap_err();
        assert!(err.contains("10.0.0.0/99"), "{err}");
        let (list, warnings) = PatternList::parse_lenient("good.com, bad..com, 10.0.0.0/8");
        assert_eq!(list.to_string(), "good.com,10.0.0.0/8");
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("bad..com"));
    }

    #[test]
    fn resolved_addresses() {
        let list = PatternList::parse("example.com, 10.0.0.0/8, <local>, [fd00::/8]:443").unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let hit = |s: &str, port| list.matches_ip(ip(s), port).map(|p| p.to_string());
        assert_eq!(hit("10.1.2.3", 80).as_deref(), Some("10.0.0.0/8"));
        assert_eq!(hit("::ffff:10.1.2.3", 80).as_deref(), Some("10.0.0.0/8"));
        assert_eq!(hit("127.0.0.1", 80).as_deref(), Some("<local>"));
        assert_eq!(hit("fd00::1", 443).as_deref(), Some("[fd00::/8]:443"));
        assert_eq!(hit("fd00::1", 80), None);
        assert_eq!(hit("93.184.216.34", 80), None);
        assert!(PatternList::parse("*")
            .unwrap()
            .matches_ip(ip("8.8.8.8"), 1)
            .is_some());
    }

    #[test]
    fn globs() {
        for (p, t, want) in [
            ("", "", true),
            ("*", "", true),
            ("a", "", false),
            ("**", "abc", true),
            ("a*", "abc", true),
            ("*c", "abc", true),
            ("*b*", "abc", true),
            ("a*c*e", "abcde", true),
            ("a*c*e", "abcdef", false),
            ("*aab", "aaaab", true),
        ] {
            assert_eq!(glob(p.as_bytes(), t.as_bytes()), want, "{p} ~ {t}");
        }
    }
}

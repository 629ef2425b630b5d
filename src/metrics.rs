//! The counters behind `--metrics-listen` (SPEC §12), and their text for Prometheus.
//!
//! Every counter is a relaxed atomic, always there and always counted: a request costs a few
//! atomic adds and nothing else, no lock, no allocation, no formatting. The text exposition
//! format 0.0.4 is written only when `/metrics` is scraped, by hand, from static label sets.
//! Requests, their bytes and their status classes are counted where the access-log line is
//! written (`Proxy::report`), so the counters say what the log says. Values sampled from
//! elsewhere at scrape time (open connections, the capture queue) come in as [`Sampled`].
//! Serving the text over HTTP is `scrape.rs`'s job; this file touches no socket.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, SystemTime};

use crate::error::Error;

/// Why a client connection was turned away before any request was read.
#[derive(Debug, Clone, Copy)]
pub enum Refusal {
    /// Over `--max-connections`.
    MaxConnections,
    /// Not in `--allow-client`.
    AllowClient,
    /// A missing or malformed PROXY protocol header (`--proxy-protocol-from`).
    ProxyProtocol,
}

/// Why the next hop could not be reached: an origin dialled directly (a dial error, the
/// first six kinds) or an upstream proxy (an upstream error, any kind).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The name did not resolve.
    Dns,
    /// The connection was refused.
    Refused,
    /// Connecting, or the walk through the upstream chain, took too long.
    Timeout,
    /// No route to the network or host.
    Unreachable,
    /// The TLS handshake failed.
    Tls,
    /// Anything else.
    Other,
    /// An upstream proxy answered CONNECT with a refusal (not 2xx, a SOCKS5 error code).
    Rejected,
    /// An upstream proxy sent an invalid answer or closed the connection.
    Protocol,
}

impl Fault {
    /// The kind of a failure to reach the next hop, from the words `error::describe` and
    /// `upstream.rs` put in it; `None` for a refusal by the egress policy, which is no fault.
    pub fn of(err: &Error) -> Option<Fault> {
        let m = match err {
            Error::Forbidden(_) => return None,
            Error::GatewayTimeout(_) => return Some(Fault::Timeout),
            Error::BadGateway(m) => m.as_str(),
            _ => return Some(Fault::Other),
        };
        let has = |w: &str| m.contains(w);
        Some(if has("TLS with") {
            Fault::Tls
        } else if has("refused CONNECT") {
            Fault::Rejected
        } else if has("resolve") {
            Fault::Dns
        } else if m.ends_with("connection refused") {
            Fault::Refused
        } else if has("unreachable") || has("no route") {
            Fault::Unreachable
        } else if has("answer") || has("closed") {
            Fault::Protocol
        } else {
            Fault::Other
        })
    }
}

/// What the authorization service decided (SPEC §6).
#[derive(Debug, Clone, Copy)]
pub enum Verdict {
    /// Allowed.
    Allow,
    /// Denied.
    Deny,
    /// No usable answer (`--authz-fail` decided).
    Error,
}

// Where each counter sits in [`Metrics`]'s one array, and after them the values sampled at
// scrape time: [`FAMILIES`] reads them in this order.
/// Client connections accepted, refused ones included.
const ACCEPTED: usize = 0;
/// Connections turned away, by [`Refusal`].
const REFUSED: usize = 1;
/// Requests and tunnels by status class and route kind (see [`LABELS`]).
const REQUESTS: usize = REFUSED + 3;
/// Tunnels being relayed, then tunnels opened.
const TUNNELS: usize = REQUESTS + 6 * 4;
/// Bytes from clients (up) and to clients (down), as logged.
const BYTES: usize = TUNNELS + 2;
/// Failures to reach an origin directly, by [`Fault`] (the first six).
const DIAL: usize = BYTES + 2;
/// Failures to reach or use an upstream proxy, by [`Fault`].
const UPSTREAM: usize = DIAL + 6;
/// Authorization decisions by [`Verdict`], each from the service then from the cache.
const AUTHZ: usize = UPSTREAM + 8;
/// Calls to the authorization service per latency bucket ([`BUCKETS`], not cumulative),
/// then all calls, then their total duration in microseconds.
const AUTHZ_BUCKETS: usize = AUTHZ + 3 * 2;
/// Requests that reused an idle origin connection, then those that did not.
const POOL: usize = AUTHZ_BUCKETS + 12;
/// Counters kept.
const COUNTERS: usize = POOL + 2;
/// Values sampled at scrape time: connections open, capture records written, capture
/// backlog, resident memory, open descriptors, start time.
const SAMPLED: usize = COUNTERS;
/// Values rendered.
const VALUES: usize = SAMPLED + 6;
// Value positions are stored in a byte in [`FAMILIES`].
const _: () = assert!(VALUES <= 256);
/// A value that could not be read (no /proc): its metric is left out.
const ABSENT: u64 = u64::MAX;

/// Upper bounds of the authorization latency histogram, in microseconds.
const BUCKETS: [u64; 10] = [
    5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000, 5_000_000,
];

/// Metric types, by [`Family`]'s type index.
const TYPES: [&str; 3] = ["counter", "gauge", "histogram"];
/// Type indexes.
const COUNTER: u8 = 0;
/// See [`TYPES`].
const GAUGE: u8 = 1;
/// See [`TYPES`].
const HISTOGRAM: u8 = 2;

/// Label sets, by [`Family`]'s label index: for each of up to two labels, its name and its
/// values, space-separated (the second label varies fastest). Status classes are by first
/// digit, `other` for no status (the client went away first) or one outside 100–599; route
/// kinds are as the access log's route field tells them apart, `none` for a request the
/// proxy answered itself or refused before routing it; fault kinds are [`Fault`]'s, dial
/// errors having the first six; `le` are the bounds of [`BUCKETS`] in seconds.
#[rustfmt::skip]
const LABELS: [[&str; 2]; 8] = [
    ["", ""],
    ["reason max_connections allow_client proxy_protocol", ""],
    ["class other 1xx 2xx 3xx 4xx 5xx", "route direct upstream system none"],
    ["direction up down", ""],
    ["kind dns refused timeout unreachable tls other", ""],
    ["kind dns refused timeout unreachable tls other rejected protocol", ""],
    ["decision allow deny error", "source service cache"],
    ["le 0.005 0.01 0.025 0.05 0.1 0.25 0.5 1 2.5 5 +Inf", ""],
];

/// One metric family: `name help`, its type and label set (indexes in [`TYPES`] and
/// [`LABELS`]), and where its first value is. Small on purpose: it is in the binary once per
/// metric.
type Family = (&'static str, u8, u8, u8);

/// Every metric, in the order written.
#[rustfmt::skip]
const FAMILIES: [Family; 18] = [
    ("smolproxy_connections_open Client connections being served", GAUGE, 0, SAMPLED as u8),
    ("smolproxy_connections_accepted_total Client connections accepted, refused ones included",
        COUNTER, 0, ACCEPTED as u8),
    ("smolproxy_connections_refused_total Client connections turned away",
        COUNTER, 1, REFUSED as u8),
    ("smolproxy_requests_total Requests and tunnels ended, by status class and route kind",
        COUNTER, 2, REQUESTS as u8),
    ("smolproxy_tunnels_open Tunnels being relayed", GAUGE, 0, TUNNELS as u8),
    ("smolproxy_tunnels_total Tunnels opened", COUNTER, 0, TUNNELS as u8 + 1),
    ("smolproxy_bytes_total Bytes from (up) and to (down) clients, as logged",
        COUNTER, 3, BYTES as u8),
    ("smolproxy_dial_errors_total Failures to reach an origin directly", COUNTER, 4, DIAL as u8),
    ("smolproxy_upstream_errors_total Failures to reach or use an upstream proxy",
        COUNTER, 5, UPSTREAM as u8),
    ("smolproxy_authz_decisions_total Authorization decisions", COUNTER, 6, AUTHZ as u8),
    ("smolproxy_authz_duration_seconds Duration of calls to the authorization service",
        HISTOGRAM, 7, AUTHZ_BUCKETS as u8),
    ("smolproxy_pool_hits_total Requests that reused an idle origin connection",
        COUNTER, 0, POOL as u8),
    ("smolproxy_pool_misses_total Requests that found no idle origin connection",
        COUNTER, 0, POOL as u8 + 1),
    ("smolproxy_capture_records_total Capture records written", COUNTER, 0, SAMPLED as u8 + 1),
    ("smolproxy_capture_backlog Capture records queued and not yet written",
        GAUGE, 0, SAMPLED as u8 + 2),
    ("process_resident_memory_bytes Resident memory size in bytes", GAUGE, 0, SAMPLED as u8 + 3),
    ("process_open_fds Number of open file descriptors", GAUGE, 0, SAMPLED as u8 + 4),
    ("process_start_time_seconds Start time of the process since unix epoch in seconds",
        GAUGE, 0, SAMPLED as u8 + 5),
];

/// The proxy's counters, laid out as the constants above say.
pub struct Metrics {
    /// Every counter.
    c: [AtomicU64; COUNTERS],
    /// When counting began, in seconds since the Unix epoch.
    start: u64,
}

/// Values read from the rest of the proxy when scraped.
pub struct Sampled {
    /// Client connections being served.
    pub connections: usize,
    /// Capture records written.
    pub capture_records: u64,
    /// Capture records queued and not yet written.
    pub capture_backlog: usize,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    /// Counters at zero, with the start time noted.
    pub fn new() -> Metrics {
        let start = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Metrics {
            c: std::array::from_fn(|_| AtomicU64::new(0)),
            start,
        }
    }

    /// Adds `n` to counter `i`, relaxed: counters are read only for display.
    fn add(&self, i: usize, n: u64) {
        self.c[i].fetch_add(n, Relaxed);
    }

    /// A client connection was accepted.
    pub fn accepted(&self) {
        self.add(ACCEPTED, 1);
    }

    /// A client connection was turned away; returns how many have been for this reason.
    pub fn refused(&self, why: Refusal) -> u64 {
        self.c[REFUSED + why as usize].fetch_add(1, Relaxed) + 1
    }

    /// A request or tunnel ended with `status` (0 if none was sent) over `route` (the access
    /// log's field: empty, `direct`, `upstream:…` or `system:…`), with its bytes.
    pub fn request(&self, status: u16, route: &str, up: u64, down: u64) {
        let class = match status {
            100..=599 => (status / 100) as usize,
            _ => 0,
        };
        let route = match route.as_bytes().first() {
            Some(b'd') => 0,
            Some(b'u') => 1,
            Some(b's') => 2,
            _ => 3,
        };
        self.add(REQUESTS + class * 4 + route, 1);
        self.add(BYTES, up);
        self.add(BYTES + 1, down);
    }

    /// A tunnel starts relaying.
    pub fn tunnel_opened(&self) {
        self.add(TUNNELS, 1);
        self.add(TUNNELS + 1, 1);
    }

    /// A tunnel stopped relaying.
    pub fn tunnel_closed(&self) {
        self.c[TUNNELS].fetch_sub(1, Relaxed);
    }

    /// A failure to reach the next hop: `direct` to an origin, else through an upstream.
    pub fn hop_error(&self, direct: bool, fault: Fault) {
        let kind = fault as usize;
        self.add(
            if direct {
                DIAL + kind.min(5)
            } else {
                UPSTREAM + kind
            },
            1,
        );
    }

    /// An authorization decision; `asked` is how long the call to the service took, `None`
    /// when the answer came from the cache (or from an identical question's call).
    pub fn authz(&self, verdict: Verdict, asked: Option<Duration>) {
        self.add(AUTHZ + verdict as usize * 2 + asked.is_none() as usize, 1);
        let Some(took) = asked else { return };
        let micros = took.as_micros().min(u64::MAX as u128) as u64;
        // A call longer than the last bound is counted only in +Inf (the call count).
        if let Some(i) = BUCKETS.iter().position(|&le| micros <= le) {
            self.add(AUTHZ_BUCKETS + i, 1);
        }
        self.add(AUTHZ_BUCKETS + 10, 1);
        self.add(AUTHZ_BUCKETS + 11, micros);
    }

    /// A request looked in the idle pool: `hit` if it found a connection there.
    pub fn pool(&self, hit: bool) {
        self.add(POOL + !hit as usize, 1);
    }

    /// The text exposition format 0.0.4 of every metric.
    pub fn render(&self, now: &Sampled) -> String {
        let mut v = [0u64; VALUES];
        for (v, c) in v.iter_mut().zip(&self.c) {
            *v = c.load(Relaxed);
        }
        // Buckets are cumulative; +Inf is every call.
        for i in 1..10 {
            v[AUTHZ_BUCKETS + i] += v[AUTHZ_BUCKETS + i - 1];
        }
        let micros = v[AUTHZ_BUCKETS + 11];
        v[SAMPLED..].copy_from_slice(&[
            now.connections as u64,
            now.capture_records,
            now.capture_backlog as u64,
            rss().unwrap_or(ABSENT),
            open_fds().unwrap_or(ABSENT),
            self.start,
        ]);
        let mut s = String::with_capacity(8 * 1024);
        for (text, kind, labels, at) in FAMILIES {
            let (name, help) = text.split_once(' ').unwrap_or((text, ""));
            let (kind, labels, at) = (TYPES[kind as usize], LABELS[labels as usize], at as usize);
            if v[at] == ABSENT {
                continue;
            }
            let _ = write!(s, "# HELP {name} {help}.\n# TYPE {name} {kind}\n");
            let (first, second) = (labels[0].split_once(' '), labels[1].split_once(' '));
            let mut i = at;
            for a in first.map_or("", |f| f.1).split(' ') {
                for b in second.map_or("", |f| f.1).split(' ') {
                    s.push_str(name);
                    if kind == TYPES[HISTOGRAM as usize] {
                        s.push_str("_bucket");
                    }
                    if let Some((label, _)) = first {
                        let _ = write!(s, "{{{label}=\"{a}\"");
                        if let Some((label, _)) = second {
                            let _ = write!(s, ",{label}=\"{b}\"");
                        }
                        s.push('}');
                    }
                    let _ = writeln!(s, " {}", v[i]);
                    i += 1;
                }
            }
            if kind == TYPES[HISTOGRAM as usize] {
                // Seconds with six decimals, without floating-point formatting.
                let (whole, frac) = (micros / 1_000_000, micros % 1_000_000);
                let calls = v[i - 1];
                let _ = write!(s, "{name}_sum {whole}.{frac:06}\n{name}_count {calls}\n");
            }
        }
        s
    }
}

/// Resident memory in bytes: `VmRSS` of /proc/self/status, in kB there. Read as bytes and
/// digits by hand: string searching and number parsing would cost more code than this.
fn rss() -> Option<u64> {
    let status = std::fs::read("/proc/self/status").ok()?;
    let at = status.windows(6).position(|w| w == b"VmRSS:")?;
    let digits = status[at + 6..]
        .iter()
        .copied()
        .skip_while(|b| !b.is_ascii_digit());
    let kb = digits
        .take_while(|b| b.is_ascii_digit())
        .fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
    Some(kb * 1024)
}

/// Open descriptors: the entries of /proc/self/fd, less the one reading it.
fn open_fds() -> Option<u64> {
    let fds = std::fs::read_dir("/proc/self/fd").ok()?;
    Some(fds.count().saturating_sub(1) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_from_the_words_of_errors() {
        let bad = |m: &str| Fault::of(&Error::BadGateway(m.into()));
        let cases = [
            ("cannot connect to a:80: connection refused", Fault::Refused),
            (
                "cannot connect to a:80: name does not resolve: x",
                Fault::Dns,
            ),
            (
                "cannot connect to a:80: network is unreachable",
                Fault::Unreachable,
            ),
            (
                "cannot connect to a:80: no route to host",
                Fault::Unreachable,
            ),
            ("TLS with a:443: invalid peer certificate", Fault::Tls),
            (
                "upstream http://u:1 refused CONNECT to a:443: 403 Forbidden",
                Fault::Rejected,
            ),
            (
                "upstream http://u:1 closed the connection on CONNECT to a:443",
                Fault::Protocol,
            ),
            (
                "cannot connect to upstream http://u:1: connection refused",
                Fault::Refused,
            ),
            ("something else", Fault::Other),
        ];
        for (m, want) in cases {
            assert_eq!(bad(m), Some(want), "{m}");
        }
        assert_eq!(Fault::of(&Error::Forbidden("x".into())), None);
        assert_eq!(
            Fault::of(&Error::GatewayTimeout("x".into())),
            Some(Fault::Timeout)
        );
    }

    #[test]
    fn renders_counts_and_a_cumulative_histogram() {
        let m = Metrics::new();
        m.request(200, "direct", 10, 20);
        m.request(404, "upstream:http://u:1", 1, 2);
        m.request(0, "", 3, 0);
        m.authz(Verdict::Allow, Some(Duration::from_millis(7)));
        m.authz(Verdict::Allow, None);
        m.authz(Verdict::Deny, Some(Duration::from_secs(9)));
        let now = Sampled {
            connections: 2,
            capture_records: 0,
            capture_backlog: 0,
        };
        let text = m.render(&now);
        for line in [
            "smolproxy_requests_total{class=\"2xx\",route=\"direct\"} 1",
            "smolproxy_requests_total{class=\"4xx\",route=\"upstream\"} 1",
            "smolproxy_requests_total{class=\"other\",route=\"none\"} 1",
            "smolproxy_bytes_total{direction=\"up\"} 14",
            "smolproxy_connections_open 2",
            "smolproxy_authz_decisions_total{decision=\"allow\",source=\"cache\"} 1",
            "smolproxy_authz_duration_seconds_bucket{le=\"0.005\"} 0",
            "smolproxy_authz_duration_seconds_bucket{le=\"0.01\"} 1",
            "smolproxy_authz_duration_seconds_bucket{le=\"5\"} 1",
            "smolproxy_authz_duration_seconds_bucket{le=\"+Inf\"} 2",
            "smolproxy_authz_duration_seconds_sum 9.007000",
            "smolproxy_authz_duration_seconds_count 2",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
        }
    }
}

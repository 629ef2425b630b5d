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

/// [`Refusal`]'s label values, in its order.
const REFUSALS: [&str; 3] = ["max_connections", "allow_client", "proxy_protocol"];

/// Why the next hop could not be reached: an origin dialled directly (a dial error) or an
/// upstream proxy (an upstream error).
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
    /// An upstream proxy answered CONNECT with a refusal (not 2xx, a SOCKS5 error code).
    Rejected,
    /// An upstream proxy sent an invalid answer or closed the connection.
    Protocol,
    /// Anything else.
    Other,
}

/// [`Fault`]'s label values, in its order; dial errors use the first six.
const FAULTS: [&str; 8] = [
    "dns",
    "refused",
    "timeout",
    "unreachable",
    "tls",
    "rejected",
    "protocol",
    "other",
];
/// Fault kinds that apply to a direct dial.
const DIAL_FAULTS: usize = 5;

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

/// [`Verdict`]'s label values, in its order.
const VERDICTS: [&str; 3] = ["allow", "deny", "error"];

/// Status classes by first digit; `other` is a request answered with no status at all (the
/// client went away first) or with one outside 100–599.
const CLASSES: [&str; 6] = ["other", "1xx", "2xx", "3xx", "4xx", "5xx"];
/// Route kinds, as the access log's route field tells them apart: `none` for a request the
/// proxy answered itself or refused before routing it.
const ROUTES: [&str; 4] = ["direct", "upstream", "system", "none"];
/// Upper bounds of the authorization latency histogram, in microseconds, and as written.
const BUCKETS: [(u64, &str); 10] = [
    (5_000, "0.005"),
    (10_000, "0.01"),
    (25_000, "0.025"),
    (50_000, "0.05"),
    (100_000, "0.1"),
    (250_000, "0.25"),
    (500_000, "0.5"),
    (1_000_000, "1"),
    (2_500_000, "2.5"),
    (5_000_000, "5"),
];

/// The proxy's counters.
#[derive(Default)]
pub struct Metrics {
    /// Client connections accepted, refused ones included.
    accepted: AtomicU64,
    /// Connections turned away, by [`Refusal`].
    refused: [AtomicU64; 3],
    /// Requests and tunnels by status class ([`CLASSES`]) and route kind ([`ROUTES`]).
    requests: [[AtomicU64; 4]; 6],
    /// Tunnels being relayed.
    tunnels_open: AtomicU64,
    /// Tunnels opened.
    tunnels: AtomicU64,
    /// Bytes from clients (up) and to clients (down), as logged.
    bytes: [AtomicU64; 2],
    /// Failures to reach an origin directly, by [`Fault`].
    dial_errors: [AtomicU64; 8],
    /// Failures to reach or use an upstream proxy, by [`Fault`].
    upstream_errors: [AtomicU64; 8],
    /// Authorization decisions by [`Verdict`], from the service (0) or the cache (1).
    authz: [[AtomicU64; 2]; 3],
    /// Calls to the authorization service per latency bucket (not cumulative; [`BUCKETS`]).
    authz_buckets: [AtomicU64; 10],
    /// Calls to the authorization service.
    authz_calls: AtomicU64,
    /// Their total duration, in microseconds.
    authz_micros: AtomicU64,
    /// Requests that reused an idle origin connection (0) or needed a new one (1).
    pool: [AtomicU64; 2],
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

/// `+= 1`, relaxed: counters are read only for display.
fn bump(c: &AtomicU64) {
    c.fetch_add(1, Relaxed);
}

impl Metrics {
    /// Counters at zero, with the start time noted.
    pub fn new() -> Metrics {
        let start = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Metrics {
            start,
            ..Metrics::default()
        }
    }

    /// A client connection was accepted.
    pub fn accepted(&self) {
        bump(&self.accepted);
    }

    /// A client connection was turned away.
    pub fn refused(&self, why: Refusal) {
        bump(&self.refused[why as usize]);
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
        bump(&self.requests[class][route]);
        self.bytes[0].fetch_add(up, Relaxed);
        self.bytes[1].fetch_add(down, Relaxed);
    }

    /// A tunnel starts relaying.
    pub fn tunnel_opened(&self) {
        bump(&self.tunnels);
        bump(&self.tunnels_open);
    }

    /// A tunnel stopped relaying.
    pub fn tunnel_closed(&self) {
        self.tunnels_open.fetch_sub(1, Relaxed);
    }

    /// A failure to reach the next hop: `direct` to an origin, else through an upstream.
    pub fn hop_error(&self, direct: bool, fault: Fault) {
        let counters = if direct {
            &self.dial_errors
        } else {
            &self.upstream_errors
        };
        bump(&counters[fault as usize]);
    }

    /// An authorization decision; `asked` is how long the call to the service took, `None`
    /// when the answer came from the cache (or from an identical question's call).
    pub fn authz(&self, verdict: Verdict, asked: Option<Duration>) {
        bump(&self.authz[verdict as usize][asked.is_none() as usize]);
        let Some(took) = asked else { return };
        let micros = took.as_micros().min(u64::MAX as u128) as u64;
        bump(&self.authz_calls);
        self.authz_micros.fetch_add(micros, Relaxed);
        if let Some(i) = BUCKETS.iter().position(|&(le, _)| micros <= le) {
            bump(&self.authz_buckets[i]);
        }
    }

    /// A request looked in the idle pool: `hit` if it found a connection there.
    pub fn pool(&self, hit: bool) {
        bump(&self.pool[!hit as usize]);
    }

    /// The text exposition format 0.0.4 of every metric.
    pub fn render(&self, now: &Sampled) -> String {
        let mut t = Text(String::with_capacity(8 * 1024));
        let get = |c: &AtomicU64| c.load(Relaxed);
        let name = "smolproxy_connections_open";
        t.family(name, "gauge", "Client connections being served");
        t.value(name, &[], now.connections as u64);
        let name = "smolproxy_connections_accepted_total";
        t.family(
            name,
            "counter",
            "Client connections accepted, refused ones included",
        );
        t.value(name, &[], get(&self.accepted));
        let name = "smolproxy_connections_refused_total";
        t.family(name, "counter", "Client connections turned away, by reason");
        for (c, reason) in self.refused.iter().zip(REFUSALS) {
            t.value(name, &[("reason", reason)], get(c));
        }
        let name = "smolproxy_requests_total";
        t.family(
            name,
            "counter",
            "Requests and tunnels ended, by status class and route kind",
        );
        for (row, class) in self.requests.iter().zip(CLASSES) {
            for (c, route) in row.iter().zip(ROUTES) {
                t.value(name, &[("class", class), ("route", route)], get(c));
            }
        }
        let name = "smolproxy_tunnels_open";
        t.family(name, "gauge", "Tunnels being relayed");
        t.value(name, &[], get(&self.tunnels_open));
        let name = "smolproxy_tunnels_total";
        t.family(name, "counter", "Tunnels opened");
        t.value(name, &[], get(&self.tunnels));
        let name = "smolproxy_bytes_total";
        t.family(
            name,
            "counter",
            "Bytes from clients (up) and to clients (down), as logged",
        );
        for (c, direction) in self.bytes.iter().zip(["up", "down"]) {
            t.value(name, &[("direction", direction)], get(c));
        }
        let name = "smolproxy_dial_errors_total";
        t.family(
            name,
            "counter",
            "Failures to reach an origin directly, by kind",
        );
        for (c, kind) in self.dial_errors.iter().zip(FAULTS).take(DIAL_FAULTS) {
            t.value(name, &[("kind", kind)], get(c));
        }
        let other = get(&self.dial_errors[Fault::Other as usize]);
        t.value(name, &[("kind", "other")], other);
        let name = "smolproxy_upstream_errors_total";
        t.family(
            name,
            "counter",
            "Failures to reach or use an upstream proxy, by kind",
        );
        for (c, kind) in self.upstream_errors.iter().zip(FAULTS) {
            t.value(name, &[("kind", kind)], get(c));
        }
        let name = "smolproxy_authz_decisions_total";
        t.family(
            name,
            "counter",
            "Authorization decisions, by decision and source",
        );
        for (row, decision) in self.authz.iter().zip(VERDICTS) {
            for (c, source) in row.iter().zip(["service", "cache"]) {
                t.value(name, &[("decision", decision), ("source", source)], get(c));
            }
        }
        self.histogram(&mut t);
        let name = "smolproxy_pool_hits_total";
        t.family(
            name,
            "counter",
            "Requests that reused an idle origin connection",
        );
        t.value(name, &[], get(&self.pool[0]));
        let name = "smolproxy_pool_misses_total";
        t.family(
            name,
            "counter",
            "Requests that found no idle origin connection to reuse",
        );
        t.value(name, &[], get(&self.pool[1]));
        let name = "smolproxy_capture_records_total";
        t.family(name, "counter", "Capture records written");
        t.value(name, &[], now.capture_records);
        let name = "smolproxy_capture_backlog";
        t.family(name, "gauge", "Capture records queued and not yet written");
        t.value(name, &[], now.capture_backlog as u64);
        self.process(&mut t);
        t.0
    }

    /// `smolproxy_authz_duration_seconds`: buckets (cumulative), sum and count.
    fn histogram(&self, t: &mut Text) {
        let name = "smolproxy_authz_duration_seconds";
        t.family(
            name,
            "histogram",
            "Duration of calls to the authorization service",
        );
        let bucket = "smolproxy_authz_duration_seconds_bucket";
        let mut below = 0;
        for (c, (_, le)) in self.authz_buckets.iter().zip(BUCKETS) {
            below += c.load(Relaxed);
            t.value(bucket, &[("le", le)], below);
        }
        let calls = self.authz_calls.load(Relaxed);
        t.value(bucket, &[("le", "+Inf")], calls);
        // Seconds with six decimals, written without floating-point formatting.
        let micros = self.authz_micros.load(Relaxed);
        let s = &mut t.0;
        let _ = writeln!(
            s,
            "{name}_sum {}.{:06}",
            micros / 1_000_000,
            micros % 1_000_000
        );
        t.value("smolproxy_authz_duration_seconds_count", &[], calls);
    }

    /// The standard process metrics, read from /proc (left out where there is none).
    fn process(&self, t: &mut Text) {
        let rss = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
                let kb: u64 = line[6..]
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse()
                    .ok()?;
                Some(kb * 1024)
            });
        if let Some(rss) = rss {
            let name = "process_resident_memory_bytes";
            t.family(name, "gauge", "Resident memory size in bytes");
            t.value(name, &[], rss);
        }
        // The directory's own descriptor is listed too; it is closed again right after.
        if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
            let name = "process_open_fds";
            t.family(name, "gauge", "Number of open file descriptors");
            t.value(name, &[], fds.count().saturating_sub(1) as u64);
        }
        let name = "process_start_time_seconds";
        t.family(
            name,
            "gauge",
            "Start time of the process since unix epoch in seconds",
        );
        t.value(name, &[], self.start);
    }
}

/// The exposition text being written.
struct Text(String);

impl Text {
    /// A metric's HELP and TYPE lines.
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = write!(self.0, "# HELP {name} {help}.\n# TYPE {name} {kind}\n");
    }

    /// One sample: `name{label="value",...} n`. Label values here are static and need no
    /// escaping.
    fn value(&mut self, name: &str, labels: &[(&str, &str)], n: u64) {
        let s = &mut self.0;
        s.push_str(name);
        for (i, (label, value)) in labels.iter().enumerate() {
            s.push(if i == 0 { '{' } else { ',' });
            let _ = write!(s, "{label}=\"{value}\"");
        }
        if !labels.is_empty() {
            s.push('}');
        }
        let _ = writeln!(s, " {n}");
    }
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

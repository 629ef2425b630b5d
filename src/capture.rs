//! Capture: one JSON record per finished exchange or tunnel, appended to a file (SPEC §7).
//!
//! While an exchange runs, [`crate::forward`] and [`crate::connection`] fill a [`Trace`]: when
//! the next hop was ready, the response head, and a [`Tap`] per body that keeps only the first
//! `--capture-body-limit` bytes. When the exchange ends, [`record`] (pure) turns the trace, the
//! request and the access-log entry into one JSON line, with secrets redacted, and
//! [`Capture::write`] hands it to the one writer thread (`capture/writer.rs`), waiting while
//! its queue is full. The file only ever holds whole lines (plus, after a kill, at most one
//! partial last line). The record schema is documented in docs/capture.md.
//!
//! This file does not decide what may pass, and it never sees CONNECT tunnel content: tunnels
//! are recorded as metadata only.

use std::time::{Duration, Instant};

use base64::Engine;

use crate::body::Tap;
use crate::date::rfc3339;
use crate::head::{Head, Request, Response};
use crate::json::Json;
use crate::log::Entry;
use crate::obj;
use crate::target::Scheme;

mod writer;
pub use writer::{Capture, QUEUE};

/// What a secret header value is replaced with.
pub const REDACTED: &str = "REDACTED";

/// What an exchange or tunnel went through, filled in while it runs.
#[derive(Debug)]
pub struct Trace {
    /// Whether a record will be written; when off, nothing is copied.
    pub on: bool,
    /// When the request head was complete.
    pub started: Instant,
    /// When the connection to the next hop was ready (dialled or taken from the pool).
    pub ready: Option<Instant>,
    /// The first bytes of the request body.
    pub request_body: Tap,
    /// What came back from the next hop.
    pub answer: Answer,
    /// For a CONNECT tunnel that was set up: payload bytes (up, down).
    pub tunnel: Option<(u64, u64)>,
    /// The exchange happened inside an intercepted tunnel (SPEC §10).
    pub intercepted: bool,
    /// For a tunnel opened by a SOCKS client, its protocol (`socks5`, `socks4`); HTTP
    /// otherwise.
    pub inbound: Option<&'static str>,
}

/// The response side of a [`Trace`].
#[derive(Debug)]
pub struct Answer {
    /// The final response head from the next hop (kept only when capturing).
    pub head: Option<Response>,
    /// When the final response head arrived.
    pub at: Option<Instant>,
    /// When the response body had been relayed completely.
    pub done: Option<Instant>,
    /// The first bytes of the response body.
    pub body: Tap,
}

impl Trace {
    /// A fresh trace for a request whose head was complete at `started`; `capture` is the
    /// proxy's, if on.
    pub fn new(capture: Option<&Capture>, started: Instant) -> Trace {
        let limit = capture.map_or(0, |c| c.limit);
        Trace {
            on: capture.is_some(),
            started,
            ready: None,
            request_body: Tap::new(limit),
            answer: Answer {
                head: None,
                at: None,
                done: None,
                body: Tap::new(limit),
            },
            tunnel: None,
            intercepted: false,
            inbound: None,
        }
    }

    /// The time now when capturing, for the record's timings; nothing otherwise.
    pub fn stamp(&self) -> Option<Instant> {
        self.on.then(Instant::now)
    }
}

impl Capture {
    /// Records one finished exchange or tunnel; waits while the writer's queue is full.
    pub async fn write(&self, entry: &Entry, req: &Request, trace: &Trace) {
        let rec = record(entry, req, trace, Instant::now(), self.secrets);
        let mut line = rec.text().into_bytes();
        line.push(b'\n');
        self.send(line).await;
    }
}

/// The JSON record of one finished exchange or tunnel; `now` is when it ended.
#[inline(never)] // Out of the connection's state machine: it runs once per exchange.
pub fn record(entry: &Entry, req: &Request, trace: &Trace, now: Instant, secrets: bool) -> Json {
    let answer = &trace.answer;
    let by_proxy = answer.head.is_none();
    let since =
        |from: Instant, to: Instant| Json::millis(micros(to.saturating_duration_since(from)));
    let connect = trace.ready.map(|ready| since(trace.started, ready));
    let total = since(trace.started, now);
    let tunnel = req.target.scheme == Scheme::Connect;
    let mut rec = obj! {
        "type" => if tunnel { "tunnel" } else { "http" },
        "start" => rfc3339(entry.time),
        "client" => entry.client.to_string(),
        "user" => entry.user.as_deref(),
        "route" => crate::log::dash(&entry.route),
        "decision" => if entry.denied { "deny" } else { "allow" },
        "rule" => entry.rule.as_deref(),
    };
    if tunnel {
        let (up, down) = trace.tunnel.unwrap_or((0, 0));
        rec.extend(obj! {
            "host" => req.target.host.as_str(),
            "port" => req.target.port,
            "status" => entry.status,
            "bytes_up" => up,
            "bytes_down" => down,
            "timings" => obj! { "connect_ms" => connect, "total_ms" => total },
        });
        if let Some(inbound) = trace.inbound {
            rec.extend(obj! { "inbound" => inbound });
        }
        return rec;
    }
    let ready = trace.ready.unwrap_or(trace.started);
    let wait = answer.at.map(|at| since(ready, at));
    let receive = answer.at.map(|at| since(at, answer.done.unwrap_or(now)));
    let response = match &answer.head {
        Some(res) => obj! {
            "status" => res.code,
            "reason" => res.reason.as_str(),
            "http_version" => format!("HTTP/1.{}", res.minor),
            "source" => "origin",
            "headers" => headers(&res.head, secrets),
            "body" => body(&answer.body),
        },
        None if entry.status == 0 => Json::Null,
        None => obj! {
            "status" => entry.status,
            "reason" => crate::error::reason(entry.status),
            "http_version" => "HTTP/1.1",
            "source" => "proxy",
            "headers" => Vec::new(),
            "body" => Json::Null,
        },
    };
    rec.extend(obj! {
        "complete" => by_proxy || answer.done.is_some(),
        "timings" => obj! {
            "connect_ms" => connect,
            "wait_ms" => wait,
            "receive_ms" => receive,
            "total_ms" => total,
        },
        "request" => obj! {
            "method" => req.method.as_str(),
            "url" => req.uri.as_str(),
            "http_version" => format!("HTTP/1.{}", req.minor),
            "headers" => headers(&req.head, secrets),
            "body" => body(&trace.request_body),
        },
        "response" => response,
    });
    if trace.intercepted {
        rec.extend(obj! { "intercepted" => true });
    }
    rec
}

/// Whole microseconds.
fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Header fields in order, duplicates kept, secrets replaced by [`REDACTED`].
fn headers(head: &Head, secrets: bool) -> Json {
    let fields = head.fields().map(|(name, value)| {
        let value = if redacted(name, secrets) {
            REDACTED.into()
        } else {
            String::from_utf8_lossy(value).into_owned()
        };
        obj! { "name" => name, "value" => value }
    });
    Json::Arr(fields.collect())
}

/// Whether the value of header `name` is left out of the capture.
pub fn redacted(name: &str, secrets: bool) -> bool {
    let always = name.eq_ignore_ascii_case("proxy-authorization");
    let secret = ["authorization", "cookie", "set-cookie"]
        .iter()
        .any(|s| name.eq_ignore_ascii_case(s));
    always || (secret && !secrets)
}

/// A captured body: null when there was none; UTF-8 as text, anything else base64.
fn body(tap: &Tap) -> Json {
    if tap.total == 0 {
        return Json::Null;
    }
    let (encoding, text) = match std::str::from_utf8(&tap.kept) {
        Ok(s) => ("utf8", s.to_string()),
        // Cut in the middle of a character by the limit: still text, up to the last whole one.
        Err(e) if tap.truncated() && e.error_len().is_none() => (
            "utf8",
            String::from_utf8_lossy(&tap.kept[..e.valid_up_to()]).into_owned(),
        ),
        Err(_) => (
            "base64",
            base64::engine::general_purpose::STANDARD.encode(&tap.kept),
        ),
    };
    let truncated = tap.truncated();
    obj! { "size" => tap.total, "truncated" => truncated, "encoding" => encoding, "text" => text }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::head::{parse_request, parse_response};
    use std::time::SystemTime;

    fn entry(status: u16, rule: Option<&str>) -> Entry {
        Entry {
            time: SystemTime::UNIX_EPOCH,
            client: "127.0.0.1:5000".parse().unwrap(),
            user: Some("ann".into()),
            method: "GET".into(),
            target: "-".into(),
            status,
            up: 0,
            down: 0,
            duration: Duration::ZERO,
            route: "direct".into(),
            rule: rule.map(str::to_string),
            denied: false,
        }
    }

    /// An entry for a request the proxy refused.
    fn refused(status: u16, rule: Option<&str>) -> Entry {
        Entry {
            denied: true,
            ..entry(status, rule)
        }
    }

    fn tap(data: &[u8], limit: usize) -> Tap {
        let mut t = Tap::new(limit);
        t.take(data);
        t
    }

    fn request(raw: &str) -> Request {
        parse_request(raw.as_bytes()).unwrap()
    }

    fn ms_after(t: Instant, n: u64) -> Instant {
        t + Duration::from_millis(n)
    }

    /// The common fields of every record made from [`entry`].
    const COMMON: &str = concat!(
        r#""start":"1970-01-01T00:00:00.000Z","client":"127.0.0.1:5000","#,
        r#""user":"ann","route":"direct""#
    );

    macro_rules! body_cases {
        ($($data:expr, $limit:expr => $json:expr;)*) => {$(
            assert_eq!(body(&tap($data, $limit)).text(), $json, "{:?} {}", $data, $limit);
        )*};
    }

    #[test]
    fn bodies() {
        body_cases! {
            b"", 10 => "null";
            b"hello", 10 => r#"{"size":5,"truncated":false,"encoding":"utf8","text":"hello"}"#;
            b"hello", 3 => r#"{"size":5,"truncated":true,"encoding":"utf8","text":"hel"}"#;
            b"hello", 0 => r#"{"size":5,"truncated":true,"encoding":"utf8","text":""}"#;
            b"\xff\x00\x01", 10 =>
                r#"{"size":3,"truncated":false,"encoding":"base64","text":"/wAB"}"#;
            // "é" is two bytes; a limit of 2 cuts it: the whole characters before it stay text.
            "aé".as_bytes(), 2 => r#"{"size":3,"truncated":true,"encoding":"utf8","text":"a"}"#;
            // A complete body that ends in half a character is not text.
            b"a\xc3", 10 => r#"{"size":2,"truncated":false,"encoding":"base64","text":"YcM="}"#;
        }
    }

    #[test]
    fn redaction() {
        // (name, keep secrets?) => redacted?
        for (name, secrets, out) in [
            ("Proxy-Authorization", false, true),
            ("proxy-authorization", true, true),
            ("Authorization", false, true),
            ("Authorization", true, false),
            ("COOKIE", false, true),
            ("Cookie", true, false),
            ("Set-Cookie", false, true),
            ("Set-Cookie", true, false),
            ("X-Api-Key", false, false),
            ("Content-Type", false, false),
        ] {
            assert_eq!(redacted(name, secrets), out, "{name} {secrets}");
        }
    }

    #[test]
    fn exchange_record() {
        let req = request(
            "POST http://a.example/x?y=1 HTTP/1.1\r\nHost: a.example\r\nCookie: c=1\r\n\
             Proxy-Authorization: Basic eDp5\r\nX-A: 1\r\nX-A: 2\r\nContent-Length: 2\r\n\r\n",
        );
        let res = b"HTTP/1.1 201 Created\r\nSet-Cookie: s=2\r\nContent-Length: 2\r\n\r\n";
        let mut trace = Trace::new(None, Instant::now());
        let t0 = trace.started;
        trace.ready = Some(ms_after(t0, 2));
        trace.request_body = tap(b"{}", 10);
        trace.answer = Answer {
            head: parse_response(res, false).ok(),
            at: Some(ms_after(t0, 5)),
            done: Some(ms_after(t0, 6)),
            body: tap(b"ok", 10),
        };
        let rec = record(&entry(201, None), &req, &trace, ms_after(t0, 7), false);
        let expected = [
            r#"{"type":"http","#,
            COMMON,
            r#","decision":"allow","rule":null,"complete":true,"#,
            r#""timings":{"connect_ms":2.000,"wait_ms":3.000,"receive_ms":1.000,"#,
            r#""total_ms":7.000},"#,
            r#""request":{"method":"POST","url":"http://a.example/x?y=1","#,
            r#""http_version":"HTTP/1.1","headers":[{"name":"Host","value":"a.example"},"#,
            r#"{"name":"Cookie","value":"REDACTED"},"#,
            r#"{"name":"Proxy-Authorization","value":"REDACTED"},{"name":"X-A","value":"1"},"#,
            r#"{"name":"X-A","value":"2"},{"name":"Content-Length","value":"2"}],"#,
            r#""body":{"size":2,"truncated":false,"encoding":"utf8","text":"{}"}},"#,
            r#""response":{"status":201,"reason":"Created","http_version":"HTTP/1.1","#,
            r#""source":"origin","headers":[{"name":"Set-Cookie","value":"REDACTED"},"#,
            r#"{"name":"Content-Length","value":"2"}],"#,
            r#""body":{"size":2,"truncated":false,"encoding":"utf8","text":"ok"}}}"#,
        ];
        assert_eq!(rec.text(), expected.concat());
        // --capture-secrets keeps them, except Proxy-Authorization.
        let kept = record(&entry(201, None), &req, &trace, ms_after(t0, 7), true);
        assert_eq!(kept["request"]["headers"][1]["value"], "c=1");
        assert_eq!(kept["request"]["headers"][2]["value"], "REDACTED");
        assert_eq!(kept["response"]["headers"][0]["value"], "s=2");
    }

    #[test]
    fn answers_from_the_proxy() {
        let req = request("GET http://a.example/ HTTP/1.1\r\nHost: a.example\r\n\r\n");
        let trace = Trace::new(None, Instant::now());
        let at = |e: Entry| record(&e, &req, &trace, trace.started, false);
        // Denied here: no origin response; the status and the rule are recorded.
        let rec = at(refused(403, Some("denied by --deny")));
        assert!(rec["decision"] == "deny" && rec["rule"] == "denied by --deny");
        let res = concat!(
            r#"{"status":403,"reason":"Forbidden","http_version":"HTTP/1.1","source":"proxy","#,
            r#""headers":[],"body":null}"#
        );
        assert_eq!(rec["response"].text(), res);
        assert!(rec["timings"]["connect_ms"].is_null() && rec["timings"]["wait_ms"].is_null());
        // The decision is the flag set where the request was refused, never the status: a
        // 407 with no rule named is a denial, a 403 or 503 the proxy did not refuse is not.
        assert_eq!(at(refused(407, None))["decision"], "deny");
        assert_eq!(at(entry(403, None))["decision"], "allow");
        assert_eq!(at(entry(502, None))["decision"], "allow");
        // The authorization service down: a denial with --authz-fail closed; a reason noted
        // on a request that went on (open) is not.
        let closed = at(refused(503, Some("authorization service unavailable")));
        assert_eq!(closed["decision"], "deny");
        let open = at(entry(502, Some("allowed by --authz-fail open")));
        assert_eq!(open["decision"], "allow");
        assert_eq!(at(entry(503, Some("cannot connect")))["decision"], "allow");
        // Nothing could be sent at all.
        assert!(at(entry(0, None))["response"].is_null());
    }

    #[test]
    fn tunnel_record() {
        let req = request("CONNECT db.example:5432 HTTP/1.1\r\nHost: db.example:5432\r\n\r\n");
        let mut trace = Trace::new(None, Instant::now());
        trace.ready = Some(ms_after(trace.started, 1));
        trace.tunnel = Some((10, 20));
        let end = ms_after(trace.started, 9);
        let rec = record(&entry(200, None), &req, &trace, end, false);
        let expected = [
            r#"{"type":"tunnel","#,
            COMMON,
            r#","decision":"allow","rule":null,"host":"db.example","port":5432,"status":200,"#,
            r#""bytes_up":10,"bytes_down":20,"timings":{"connect_ms":1.000,"total_ms":9.000}}"#,
        ];
        assert_eq!(rec.text(), expected.concat(), "metadata only");
    }
}

//! Capture: one JSON record per finished exchange or tunnel, appended to a file (SPEC §7).
//!
//! While an exchange runs, [`crate::forward`] and [`crate::connection`] fill a [`Trace`]: when
//! the next hop was ready, the response head, and a [`Tap`] per body that keeps only the first
//! `--capture-body-limit` bytes. When the exchange ends, [`record`] (pure) turns the trace, the
//! request and the access-log entry into one JSON line, with secrets redacted, and
//! [`Capture::write`] hands it to the one writer thread over a bounded queue: when the disk is
//! slower than the traffic, connections wait for room instead of records being dropped. The
//! writer writes each batch of whole lines with one `write` and cuts off what a failed write
//! left behind, so the file only ever holds whole lines (plus, after a kill, at most one
//! partial last line). A write error is reported once on stderr and proxying goes on.
//! The record schema is documented in the README ("Capture record").
//!
//! This file does not decide what may pass, and it never sees CONNECT tunnel content: tunnels
//! are recorded as metadata only.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::sync::mpsc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};
use smol::channel::{Receiver, Sender};

use crate::body::Tap;
use crate::date::rfc3339;
use crate::error::describe;
use crate::head::{Head, Request, Response};
use crate::log::Entry;
use crate::target::Scheme;

/// Records waiting for the writer before connections have to wait. Small, because each record
/// may hold two bodies of `--capture-body-limit` bytes: 16 records at the default limit are a
/// few MiB at worst, which a router can spare, and enough to ride out a slow write.
pub const QUEUE: usize = 16;
/// Most bytes of queued records merged into one write.
const BATCH: usize = 256 * 1024;
/// Longest the writer may take to write what is queued when the proxy stops.
const FINISH_TIMEOUT: Duration = Duration::from_secs(5);
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
    /// A fresh trace for a request whose head just arrived; `capture` is the proxy's, if on.
    pub fn new(capture: Option<&Capture>) -> Trace {
        let limit = capture.map_or(0, |c| c.limit);
        Trace {
            on: capture.is_some(),
            started: Instant::now(),
            ready: None,
            request_body: Tap::new(limit),
            answer: Answer { head: None, at: None, done: None, body: Tap::new(limit) },
            tunnel: None,
        }
    }
}

/// The capture file and its writer thread.
pub struct Capture {
    /// Bytes of each body kept.
    pub limit: usize,
    /// Keep Authorization, Cookie and Set-Cookie values.
    pub secrets: bool,
    /// Whole lines to the writer; bounded, so a slow disk slows traffic.
    tx: Sender<Vec<u8>>,
    /// Disconnected when the writer thread has finished.
    done: Mutex<Option<mpsc::Receiver<()>>>,
}

impl Capture {
    /// Opens (creates or appends to) `path` and starts the writer thread.
    pub fn open(path: &str, limit: usize, secrets: bool) -> io::Result<Capture> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let (tx, rx) = smol::channel::bounded(QUEUE);
        let (done_tx, done_rx) = mpsc::channel();
        let path = path.to_string();
        std::thread::Builder::new().name("capture".into()).spawn(move || {
            writer(file, &path, rx);
            drop(done_tx);
        })?;
        Ok(Capture { limit, secrets, tx, done: Mutex::new(Some(done_rx)) })
    }

    /// Records one finished exchange or tunnel; waits while the queue is full.
    pub async fn write(&self, entry: &Entry, req: &Request, trace: &Trace) {
        let mut line = record(entry, req, trace, Instant::now(), self.secrets).to_string().into_bytes();
        line.push(b'\n');
        // Fails only after `finish`, when the process is about to exit anyway.
        let _ = self.tx.send(line).await;
    }

    /// Stops taking records and waits (bounded) until the queued ones are written.
    pub fn finish(&self) {
        self.tx.close();
        let done = self.done.lock().ok().and_then(|mut d| d.take());
        if let Some(done) = done {
            let _ = done.recv_timeout(FINISH_TIMEOUT);
        }
    }
}

/// The writer thread: appends batches of whole lines until the queue is closed and empty.
fn writer(mut file: File, path: &str, rx: Receiver<Vec<u8>>) {
    let mut warned = false;
    while let Ok(mut batch) = rx.recv_blocking() {
        // Lines that queued up meanwhile go out in the same write.
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(more) => batch.extend_from_slice(&more),
                Err(_) => break,
            }
        }
        if let Err(e) = append(&mut file, &batch) {
            if !warned {
                eprintln!(
                    "smolproxy: cannot write capture file {path}: {}; records are dropped while \
                     it fails, proxying goes on",
                    describe(&e)
                );
                warned = true;
            }
        }
    }
}

/// Writes whole lines; on failure cuts the file back so no partial line stays in the middle.
fn append(file: &mut File, data: &[u8]) -> io::Result<()> {
    let before = file.metadata().map(|m| m.len());
    let result = file.write_all(data).and_then(|()| file.flush());
    if result.is_err() {
        if let Ok(len) = before {
            let _ = file.set_len(len);
        }
    }
    result
}

/// The JSON record of one finished exchange or tunnel; `now` is when it ended.
pub fn record(entry: &Entry, req: &Request, trace: &Trace, now: Instant, secrets: bool) -> Value {
    let answer = &trace.answer;
    let by_proxy = answer.head.is_none();
    let denied = entry.rule.is_some() || (by_proxy && matches!(entry.status, 403 | 407));
    let connect = trace.ready.map(|r| ms(r.saturating_duration_since(trace.started)));
    let total = ms(now.saturating_duration_since(trace.started));
    let common = json!({
        "start": rfc3339(entry.time),
        "client": entry.client.to_string(),
        "user": entry.user,
        "route": entry.route,
        "decision": if denied { "deny" } else { "allow" },
        "rule": entry.rule,
    });
    let mut rec = if req.target.scheme == Scheme::Connect {
        let (up, down) = trace.tunnel.unwrap_or((0, 0));
        json!({
            "type": "tunnel",
            "host": req.target.host,
            "port": req.target.port,
            "status": entry.status,
            "bytes_up": up,
            "bytes_down": down,
            "timings": { "connect_ms": connect, "total_ms": total },
        })
    } else {
        let ready = trace.ready.unwrap_or(trace.started);
        let wait = answer.at.map(|at| ms(at.saturating_duration_since(ready)));
        let receive = answer.at.map(|at| ms(answer.done.unwrap_or(now).saturating_duration_since(at)));
        let response = match &answer.head {
            Some(res) => json!({
                "status": res.code,
                "reason": res.reason,
                "http_version": format!("HTTP/1.{}", res.minor),
                "source": "origin",
                "headers": headers(&res.head, secrets),
                "body": body(&answer.body),
            }),
            None if entry.status == 0 => Value::Null,
            None => json!({
                "status": entry.status,
                "reason": reason(entry.status),
                "http_version": "HTTP/1.1",
                "source": "proxy",
                "headers": [],
                "body": null,
            }),
        };
        json!({
            "type": "http",
            "complete": by_proxy || answer.done.is_some(),
            "timings": { "connect_ms": connect, "wait_ms": wait, "receive_ms": receive, "total_ms": total },
            "request": {
                "method": req.method,
                "url": req.uri,
                "http_version": format!("HTTP/1.{}", req.minor),
                "headers": headers(&req.head, secrets),
                "body": body(&trace.request_body),
            },
            "response": response,
        })
    };
    if let (Value::Object(rec), Value::Object(common)) = (&mut rec, common) {
        rec.extend(common);
    }
    rec
}

/// Milliseconds with microsecond precision.
fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1_000_000.0).round() / 1000.0
}

/// Header fields in order, duplicates kept, secrets replaced by [`REDACTED`].
fn headers(head: &Head, secrets: bool) -> Value {
    let fields = head.fields().map(|(name, value)| {
        let value = if redacted(name, secrets) { REDACTED.into() } else { String::from_utf8_lossy(value) };
        json!({ "name": name, "value": value })
    });
    Value::Array(fields.collect())
}

/// Whether the value of header `name` is left out of the capture.
pub fn redacted(name: &str, secrets: bool) -> bool {
    let always = name.eq_ignore_ascii_case("proxy-authorization");
    let secret = ["authorization", "cookie", "set-cookie"].iter().any(|s| name.eq_ignore_ascii_case(s));
    always || (secret && !secrets)
}

/// A captured body: null when there was none; UTF-8 as text, anything else base64.
fn body(tap: &Tap) -> Value {
    if tap.total == 0 {
        return Value::Null;
    }
    let (encoding, text) = match std::str::from_utf8(&tap.kept) {
        Ok(s) => ("utf8", s.to_string()),
        // Cut in the middle of a character by the limit: still text, up to the last whole one.
        Err(e) if tap.truncated() && e.error_len().is_none() => {
            ("utf8", String::from_utf8_lossy(&tap.kept[..e.valid_up_to()]).into_owned())
        }
        Err(_) => ("base64", base64::engine::general_purpose::STANDARD.encode(&tap.kept)),
    };
    json!({ "size": tap.total, "truncated": tap.truncated(), "encoding": encoding, "text": text })
}

/// Reason phrases of the statuses the proxy itself answers with.
fn reason(code: u16) -> &'static str {
    match code {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        414 => "URI Too Long",
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
        }
    }

    fn tap(data: &[u8], limit: usize) -> Tap {
        let mut t = Tap::new(limit);
        t.take(data);
        t
    }

    #[test]
    fn bodies() {
        // (data, limit) => JSON
        for (data, limit, expected) in [
            (&b""[..], 10, json!(null)),
            (b"hello", 10, json!({"size": 5, "truncated": false, "encoding": "utf8", "text": "hello"})),
            (b"hello", 3, json!({"size": 5, "truncated": true, "encoding": "utf8", "text": "hel"})),
            (b"hello", 0, json!({"size": 5, "truncated": true, "encoding": "utf8", "text": ""})),
            (b"\xff\x00\x01", 10, json!({"size": 3, "truncated": false, "encoding": "base64", "text": "/wAB"})),
            // "é" is two bytes; a limit of 2 cuts it: the whole characters before it stay text.
            ("aé".as_bytes(), 2, json!({"size": 3, "truncated": true, "encoding": "utf8", "text": "a"})),
            // A complete body that ends in half a character is not text.
            (b"a\xc3", 10, json!({"size": 2, "truncated": false, "encoding": "base64", "text": "YcM="})),
        ] {
            assert_eq!(body(&tap(data, limit)), expected, "{data:?} {limit}");
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

    fn request(raw: &str) -> Request {
        parse_request(raw.as_bytes()).unwrap()
    }

    #[test]
    fn exchange_record() {
        let req = request(
            "POST http://a.example/x?y=1 HTTP/1.1\r\nHost: a.example\r\nCookie: c=1\r\n\
             Proxy-Authorization: Basic eDp5\r\nX-A: 1\r\nX-A: 2\r\nContent-Length: 2\r\n\r\n",
        );
        let res = parse_response(b"HTTP/1.1 201 Created\r\nSet-Cookie: s=2\r\nContent-Length: 2\r\n\r\n", false);
        let mut trace = Trace::new(None);
        let t0 = trace.started;
        trace.ready = Some(t0 + Duration::from_millis(2));
        trace.request_body = tap(b"{}", 10);
        trace.answer = Answer {
            head: res.ok(),
            at: Some(t0 + Duration::from_millis(5)),
            done: Some(t0 + Duration::from_millis(6)),
            body: tap(b"ok", 10),
        };
        let now = t0 + Duration::from_millis(7);
        let rec = record(&entry(201, None), &req, &trace, now, false);
        assert_eq!(rec["type"], "http");
        assert_eq!(rec["start"], "1970-01-01T00:00:00.000Z");
        assert_eq!(rec["decision"], "allow");
        assert_eq!(rec["complete"], true);
        assert_eq!(rec["timings"], json!({"connect_ms": 2.0, "wait_ms": 3.0, "receive_ms": 1.0, "total_ms": 7.0}));
        let r = &rec["request"];
        assert_eq!((r["method"].as_str(), r["url"].as_str()), (Some("POST"), Some("http://a.example/x?y=1")));
        let headers: Vec<(&str, &str)> = r["headers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| (h["name"].as_str().unwrap(), h["value"].as_str().unwrap()))
            .collect();
        assert_eq!(
            headers,
            [
                ("Host", "a.example"),
                ("Cookie", "REDACTED"),
                ("Proxy-Authorization", "REDACTED"),
                ("X-A", "1"),
                ("X-A", "2"),
                ("Content-Length", "2"),
            ]
        );
        assert_eq!(r["body"]["text"], "{}");
        let s = &rec["response"];
        assert_eq!((s["status"].as_u64(), s["reason"].as_str()), (Some(201), Some("Created")));
        assert_eq!(s["source"], "origin");
        assert_eq!(s["headers"][0], json!({"name": "Set-Cookie", "value": "REDACTED"}));
        let kept = record(&entry(201, None), &req, &trace, now, true);
        assert_eq!(kept["request"]["headers"][1]["value"], "c=1");
        assert_eq!(kept["request"]["headers"][2]["value"], "REDACTED");
        assert_eq!(kept["response"]["headers"][0]["value"], "s=2");
    }

    #[test]
    fn proxy_answers_and_tunnels() {
        // Denied by the proxy itself: no origin response, the status and rule recorded.
        let req = request("GET http://a.example/ HTTP/1.1\r\nHost: a.example\r\n\r\n");
        let trace = Trace::new(None);
        let rec = record(&entry(403, Some("denied by --deny")), &req, &trace, trace.started, false);
        assert_eq!(rec["decision"], "deny");
        assert_eq!(rec["rule"], "denied by --deny");
        assert_eq!(rec["response"]["status"], 403);
        assert_eq!(rec["response"]["source"], "proxy");
        assert_eq!(rec["timings"]["connect_ms"], Value::Null);
        // A 407 is a denial even when no rule was named; a 502 is not.
        assert_eq!(record(&entry(407, None), &req, &trace, trace.started, false)["decision"], "deny");
        assert_eq!(record(&entry(502, None), &req, &trace, trace.started, false)["decision"], "allow");
        // Nothing could be sent at all.
        assert_eq!(record(&entry(0, None), &req, &trace, trace.started, false)["response"], Value::Null);

        let req = request("CONNECT db.example:5432 HTTP/1.1\r\nHost: db.example:5432\r\n\r\n");
        let mut trace = Trace::new(None);
        trace.ready = Some(trace.started + Duration::from_millis(1));
        trace.tunnel = Some((10, 20));
        let rec = record(&entry(200, None), &req, &trace, trace.started + Duration::from_millis(9), false);
        assert_eq!(rec["type"], "tunnel");
        assert_eq!((rec["host"].as_str(), rec["port"].as_u64()), (Some("db.example"), Some(5432)));
        assert_eq!((rec["bytes_up"].as_u64(), rec["bytes_down"].as_u64()), (Some(10), Some(20)));
        assert_eq!(rec["timings"], json!({"connect_ms": 1.0, "total_ms": 9.0}));
        assert!(rec.get("request").is_none(), "tunnels are metadata only");
    }

    #[test]
    fn writer_keeps_lines_whole() {
        let path = std::env::temp_dir().join(format!("smolproxy-capture-unit-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let cap = Capture::open(path.to_str().unwrap(), 16, false).unwrap();
        let req = request("GET http://a.example/ HTTP/1.1\r\nHost: a.example\r\n\r\n");
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..50 {
                        let trace = Trace::new(Some(&cap));
                        futures_lite::future::block_on(cap.write(&entry(200, None), &req, &trace));
                    }
                });
            }
        });
        cap.finish();
        let text = std::fs::read_to_string(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        assert_eq!(text.lines().count(), 200);
        for line in text.lines() {
            assert_eq!(serde_json::from_str::<Value>(line).unwrap()["type"], "http");
        }
    }

    #[test]
    fn a_failing_disk_does_not_block() {
        if !std::path::Path::new("/dev/full").exists() {
            return;
        }
        let cap = Capture::open("/dev/full", 16, false).unwrap();
        let req = request("GET http://a.example/ HTTP/1.1\r\nHost: a.example\r\n\r\n");
        for _ in 0..(QUEUE * 4) {
            futures_lite::future::block_on(cap.write(&entry(200, None), &req, &Trace::new(Some(&cap))));
        }
        cap.finish();
    }
}

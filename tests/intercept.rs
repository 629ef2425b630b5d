//! HTTPS interception end to end (SPEC §10): `smolproxy ca new`, then `--intercept` with real
//! clients (curl, `openssl s_client`, newman) on one side and TLS origins on the other.
//!
//! A TLS origin is stunnel in front of a plain [`Origin`], with a certificate from the test PKI
//! made by the openssl command ([`pki`], [`bad_certs`]); the proxy trusts that PKI through
//! `--ca-file`, the clients trust the interception CA, made once per run by `smolproxy ca new`
//! ([`ca`]). Every name is `localhost` or 127.0.0.1. A test whose tool is missing prints
//! `SKIP: ...` on a developer machine and fails under `CI=true`.
//!
//! What the client sees tells an intercepted request from a tunnelled one: the certificate's
//! issuer is the interception CA (curl `-v`, `s_client`), the origin receives a request that
//! carries the proxy's `Via`, and the capture holds it with its `https://` URL.

#![cfg(feature = "tls-server")]

mod common;

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// The common name of the interception CA: curl and s_client print it as the issuer of every
/// certificate the proxy makes.
const CA_NAME: &str = "smolproxy itest interception CA";
/// How long capture records may take to reach the file after their exchange.
const RECORD_WAIT: Duration = Duration::from_secs(5);
/// The key of RFC 6455 §1.3's example handshake and the accept value it must get.
const WS_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
/// `base64(sha1(WS_KEY + GUID))`, from the same example.
const WS_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

// ---------------------------------------------------------------------------------------------
// Peers
// ---------------------------------------------------------------------------------------------

/// The interception CA, made once per test run with `smolproxy ca new`.
fn ca() -> &'static Identity {
    static CA: OnceLock<Identity> = OnceLock::new();
    CA.get_or_init(|| {
        let dir = temp_dir("intercept-ca");
        let (cert, key) = (dir.join("ca.pem"), dir.join("ca-key.pem"));
        let out = ca_new(&cert, &key, &["--name", CA_NAME, "--days", "2"]);
        assert_eq!(out.code, Some(0), "ca new: {out:?}");
        Identity { cert, key }
    })
}

/// A path as the `&str` a command line wants (test paths are always UTF-8).
fn s(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}

/// Whether the tools every TLS origin needs are there (a visible skip otherwise).
fn tls_tools() -> bool {
    need_tool("openssl") && need_tool("stunnel")
}

/// The test API behind every TLS origin: `/chunked` answers chunked, `/ws` is a WebSocket
/// echo, anything else is [`echo_handler`] (the body back, or `METHOD TARGET`).
fn api(head: &Head, conn: &mut Conn) -> bool {
    if head.target().starts_with("/ws") {
        websocket_echo(head, conn);
        return false;
    }
    if !head.target().starts_with("/chunked") {
        return echo_handler(head, conn);
    }
    if conn.read_body(head).is_err() {
        return false;
    }
    let mut out =
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"
            .to_vec();
    out.extend_from_slice(&chunked(b"part one, part two, part three", &[9, 10], &[]));
    conn.try_write(&out).is_ok()
}

/// RFC 6455 server side, just enough for one test: answers the handshake of [`WS_KEY`] with
/// 101, then sends every short masked frame back unmasked, until a close frame or the end.
fn websocket_echo(head: &Head, conn: &mut Conn) {
    let upgrade = head.tokens("upgrade").contains(&"websocket".to_string());
    if !upgrade || head.get("sec-websocket-key") != Some(WS_KEY) {
        conn.respond(
            "400 Bad Request",
            &[("Connection", "close")],
            b"not a websocket",
        );
        return;
    }
    conn.write(
        format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {WS_ACCEPT}\r\n\r\n"
        )
        .as_bytes(),
    );
    while let Ok(two) = conn.read_exact(2) {
        let (opcode, len) = (two[0] & 0x0f, usize::from(two[1] & 0x7f));
        // Clients always mask (§5.1); only short frames are sent by the test.
        let (Ok(mask), true) = (conn.read_exact(4), len < 126) else {
            return;
        };
        let Ok(payload) = conn.read_exact(len) else {
            return;
        };
        let data: Vec<u8> = payload
            .iter()
            .zip(mask.iter().cycle())
            .map(|(b, m)| b ^ m)
            .collect();
        let mut frame = vec![0x80 | opcode, data.len() as u8];
        frame.extend_from_slice(&data);
        if conn.try_write(&frame).is_err() || opcode == 0x8 {
            return;
        }
    }
}

/// A TLS origin: [`api`] behind stunnel with a certificate for `localhost`.
struct TlsOrigin {
    /// The plain origin, which records what arrives.
    origin: Origin,
    /// stunnel, terminating TLS in front of it.
    tls: Peer,
}

impl TlsOrigin {
    /// Starts one with this certificate; stunnel's files go to `dir`.
    fn start(dir: &Path, cert: &Path, key: &Path) -> TlsOrigin {
        let origin = Origin::start(api);
        let tls = stunnel(dir, cert, key, origin.port());
        TlsOrigin { origin, tls }
    }

    /// One with the good certificate of the test PKI.
    fn good(dir: &Path) -> TlsOrigin {
        TlsOrigin::start(dir, &pki().cert, &pki().key)
    }

    /// `localhost:PORT`, as in a CONNECT.
    fn authority(&self) -> String {
        format!("localhost:{}", self.tls.port)
    }

    /// `https://localhost:PORT{path}`.
    fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.authority())
    }
}

/// The proxy intercepting `localhost` with the test CA, trusting the test PKI toward origins,
/// CONNECT allowed to any port; then `extra`.
fn intercepting(extra: &[&str]) -> Proxy {
    let mut args = vec![
        "--intercept",
        "localhost",
        "--intercept-ca",
        s(&ca().cert),
        "--intercept-key",
        s(&ca().key),
        "--ca-file",
        s(&pki().ca),
        "--connect-ports",
        "any",
    ];
    args.extend(extra);
    Proxy::start(&args)
}

// ---------------------------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------------------------

/// curl through `proxy` with `args` (add `--cacert` to trust a CA), the proxy environment
/// cleared. Returns how it ended.
fn curl_via(proxy: &Proxy, args: &[&str]) -> Finished {
    let url = proxy.url();
    curl(&[&["-x", url.as_str()][..], args].concat())
}

/// curl through `proxy` trusting the interception CA: the response it got from inside the
/// TLS session (`-i` without the proxy's answer to CONNECT).
fn curl_trusting(proxy: &Proxy, args: &[&str]) -> Response {
    let mut all = vec![
        "-i",
        "--suppress-connect-headers",
        "--cacert",
        s(&ca().cert),
    ];
    all.extend(args);
    let out = curl_via(proxy, &all);
    assert_eq!(out.code, Some(0), "curl {args:?}: {out:?}");
    let raw = out.stdout.as_bytes();
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4)
        .unwrap_or_else(|| panic!("no head in curl's output: {out:?}"));
    Response {
        head: Head::parse(&raw[..end]),
        body: raw[end..].to_vec(),
        ..Response::default()
    }
}

/// `openssl s_client` through `proxy` (its `-proxy`, a CONNECT) to `target`, trusting the
/// interception CA: what it printed and how it ended, with nothing written inside.
fn s_client(proxy: &Proxy, target: &str, extra: &[&str]) -> Finished {
    let mut cmd = Command::new("openssl");
    cmd.args([
        "s_client",
        "-proxy",
        &proxy.addr.to_string(),
        "-connect",
        target,
    ])
    .args(extra);
    run_to_exit(cmd, Duration::from_secs(20))
}

/// An interactive `openssl s_client -quiet` through the proxy: what is written goes into the
/// TLS session, what comes out of it is collected. `-quiet` keeps reading after our end of
/// input, until the proxy closes.
struct TlsSession {
    /// The s_client process.
    child: Child,
    /// Its standard input (`None` once closed).
    input: Option<ChildStdin>,
    /// Everything read from the session so far, and a signal on each new piece.
    output: Arc<(Mutex<Vec<u8>>, Condvar)>,
    /// Everything s_client wrote to stderr (verification and errors).
    errors: Arc<Mutex<Vec<u8>>>,
}

impl TlsSession {
    /// Opens a session to `target` through `proxy`, sending SNI `localhost` and verifying the
    /// certificate against the interception CA (a failed check ends the session).
    fn open(proxy: &Proxy, target: &str) -> TlsSession {
        let mut child = Command::new("openssl")
            .args([
                "s_client",
                "-quiet",
                "-verify_return_error",
                "-servername",
                "localhost",
            ])
            .args(["-CAfile", s(&ca().cert), "-proxy", &proxy.addr.to_string()])
            .args(["-connect", target])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("openssl s_client starts");
        let output = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let (mut out, mut err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
        let sink = output.clone();
        thread::spawn(move || {
            let mut buf = [0u8; 16 * 1024];
            while let Ok(n @ 1..) = out.read(&mut buf) {
                sink.0.lock().unwrap().extend_from_slice(&buf[..n]);
                sink.1.notify_all();
            }
        });
        let err_sink = errors.clone();
        thread::spawn(move || {
            let mut all = Vec::new();
            let _ = err.read_to_end(&mut all);
            *err_sink.lock().unwrap() = all;
        });
        TlsSession {
            input: child.stdin.take(),
            child,
            output,
            errors,
        }
    }

    /// Writes `bytes` into the session.
    fn send(&mut self, bytes: &[u8]) {
        let input = self.input.as_mut().expect("input still open");
        input.write_all(bytes).expect("write to s_client");
        input.flush().expect("flush s_client");
    }

    /// Waits up to [`IO_TIMEOUT`] until what came out of the session satisfies `done`, and
    /// returns it (as far as it got, on timeout).
    fn wait_for(&self, done: impl Fn(&[u8]) -> bool) -> Vec<u8> {
        let deadline = Instant::now() + IO_TIMEOUT;
        let (data, signal) = &*self.output;
        let mut data = data.lock().unwrap();
        while !done(&data) {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                break;
            };
            data = signal.wait_timeout(data, left).unwrap().0;
        }
        data.clone()
    }

    /// Closes our side of the input and waits for the session to end (the proxy closing):
    /// everything that came out of it, and s_client's stderr.
    fn finish(mut self) -> (Vec<u8>, String) {
        self.input = None;
        let deadline = Instant::now() + IO_TIMEOUT;
        while self.child.try_wait().expect("try_wait").is_none() {
            assert!(Instant::now() < deadline, "the session did not end");
            thread::sleep(Duration::from_millis(20));
        }
        thread::sleep(Duration::from_millis(50)); // let the readers drain the pipes
        let out = self.output.0.lock().unwrap().clone();
        let err = String::from_utf8_lossy(&self.errors.lock().unwrap()).into_owned();
        (out, err)
    }
}

impl Drop for TlsSession {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The response at the start of `bytes` (panics if there is none).
fn response_in(bytes: &[u8]) -> Response {
    let end = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4)
        .unwrap_or_else(|| panic!("no response head in {}", show(bytes)));
    let head = Head::parse(&bytes[..end]);
    let len: usize = head
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(bytes.len() - end);
    Response {
        head,
        body: bytes[end..(end + len).min(bytes.len())].to_vec(),
        ..Response::default()
    }
}

/// The first PEM certificate in `text`, without line breaks (so two can be compared).
fn first_pem(text: &str) -> String {
    let start = text
        .find("-----BEGIN CERTIFICATE-----")
        .unwrap_or_else(|| panic!("no certificate in {text}"));
    let end = text[start..].find("-----END CERTIFICATE-----").unwrap() + start;
    text[start..end].split_whitespace().collect()
}

// ---------------------------------------------------------------------------------------------
// Capture
// ---------------------------------------------------------------------------------------------

/// Waits until the capture file holds `n` records of exchanges (records with a request), then
/// returns them; panics if there are fewer, or more, after [`RECORD_WAIT`].
fn exchanges(cap: &Path, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + RECORD_WAIT;
    loop {
        let text = std::fs::read_to_string(cap).unwrap_or_default();
        let found: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).expect("a record is JSON"))
            .filter(|r| r.get("request").is_some())
            .collect();
        if found.len() >= n || Instant::now() > deadline {
            assert_eq!(found.len(), n, "exchanges in {}:\n{text}", cap.display());
            return found;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------------------------
// Requests inside the TLS session
// ---------------------------------------------------------------------------------------------

/// curl trusting the interception CA: GET, a chunked response and keep-alive in one curl
/// run, then a JSON POST; each request reaches the origin through the proxy, is logged and is
/// captured with its https URL.
#[test]
fn curl_requests_inside_tls_are_forwarded_logged_and_captured() {
    if !tls_tools() || !need_tool("curl") {
        return;
    }
    let dir = temp_dir("intercept-curl");
    let site = TlsOrigin::good(&dir);
    let cap = dir.join("cap.ndjson");
    let proxy = intercepting(&["--capture", s(&cap)]);

    // Two URLs in one run: one CONNECT, one TLS session carrying both requests.
    let out = curl_via(
        &proxy,
        &[
            "-v",
            "--cacert",
            s(&ca().cert),
            "-w",
            "|%{http_code}\n",
            &site.url("/a?x=1"),
            &site.url("/chunked"),
        ],
    );
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(
        out.stdout, "GET /a?x=1|200\npart one, part two, part three|200\n",
        "{}",
        out.stderr
    );
    assert_eq!(
        out.stderr.matches("> CONNECT ").count(),
        1,
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("Re-using existing connection"),
        "the second request did not reuse the session: {}",
        out.stderr
    );
    // The certificate curl accepted was made by the proxy, for the name it asked for.
    let issuer = out
        .stderr
        .lines()
        .find(|l| l.contains("issuer:"))
        .unwrap_or("");
    assert!(
        issuer.contains(CA_NAME),
        "issuer {issuer:?}: {}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("subjectAltName: host \"localhost\" matched"),
        "{}",
        out.stderr
    );

    let json = r#"{"name":"widget","tags":["a","b"]}"#;
    let post = curl_trusting(
        &proxy,
        &[
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            json,
            &site.url("/items"),
        ],
    );
    assert_eq!((post.status(), post.text().as_str()), (200, json));

    // The origin got the requests as the proxy sends them: with its Via, in origin-form.
    let seen = site.origin.seen();
    let targets: Vec<&str> = seen.iter().map(|s| s.head.target()).collect();
    assert_eq!(targets, ["/a?x=1", "/chunked", "/items"]);
    for s in &seen {
        assert_eq!(s.head.get("host"), Some(site.authority().as_str()));
        assert!(
            s.head.has("via"),
            "not through the proxy: {}",
            s.head.text()
        );
    }
    assert_eq!(seen[2].body, json.as_bytes());

    // One access log line per request, naming it by its https URL.
    for (method, path) in [("GET", "/a?x=1"), ("GET", "/chunked"), ("POST", "/items")] {
        let entry = format!(" {method} {} 200 ", site.url(path));
        proxy.wait_for_log(IO_TIMEOUT, &entry);
        let lines = proxy.stderr_lines();
        let found = lines.iter().filter(|l| l.contains(&entry)).count();
        assert_eq!(found, 1, "{entry:?} in {lines:#?}");
    }

    // The capture: each exchange, with its https URL and bodies, marked intercepted.
    let recs = exchanges(&cap, 3);
    for r in &recs {
        assert_eq!(r["intercepted"], true, "{r}");
        assert_eq!(r["decision"], "allow", "{r}");
    }
    let get = record_of(&recs, "GET", &site.url("/a?x=1"));
    assert_eq!(get["response"]["status"], 200);
    assert_eq!(get["response"]["body"]["text"], "GET /a?x=1");
    let chunked = record_of(&recs, "GET", &site.url("/chunked"));
    assert_eq!(
        chunked["response"]["body"]["text"],
        "part one, part two, part three"
    );
    let post = record_of(&recs, "POST", &site.url("/items"));
    assert_eq!(post["request"]["body"]["text"], json);
    assert_eq!(post["response"]["body"]["text"], json);
}

/// An intercepted capture exports like any other: the HAR passes har-validator, and newman
/// replays the Postman collection through the proxy (HTTPS_PROXY, trusting the interception
/// CA), so every request reaches the origin again and is captured again.
#[cfg(feature = "export")]
#[test]
fn intercepted_capture_exports_and_newman_replays_it_through_the_proxy() {
    let Some(modules) = node_tools() else { return };
    if !tls_tools() || !need_tool("curl") {
        return;
    }
    let dir = temp_dir("intercept-export");
    let site = TlsOrigin::good(&dir);
    let cap = dir.join("cap.ndjson");
    let proxy = intercepting(&["--capture", s(&cap)]);
    assert_eq!(
        curl_trusting(&proxy, &[&site.url("/login?user=ann")]).status(),
        200
    );
    let json = r#"{"name":"widget"}"#;
    let post = curl_trusting(
        &proxy,
        &[
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            json,
            &site.url("/items"),
        ],
    );
    assert_eq!(post.status(), 200);
    exchanges(&cap, 2);

    let (code, har, err) = export(&["--format", "har", s(&cap)]);
    assert_eq!(code, Some(0), "{err}");
    let har_path = dir.join("cap.har");
    std::fs::write(&har_path, &har).unwrap();
    let valid = node(&modules, VALIDATE_HAR, &[&har_path]);
    let har: Value = serde_json::from_str(&har).unwrap();
    let urls: Vec<&str> = har["log"]["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["request"]["url"].as_str())
        .filter(|u| u.starts_with("https://"))
        .collect();
    assert_eq!(
        urls,
        [site.url("/login?user=ann"), site.url("/items")],
        "{valid}"
    );

    let (code, coll, err) = export(&["--format", "postman", s(&cap)]);
    assert_eq!(code, Some(0), "{err}");
    let coll_path = dir.join("cap.postman_collection.json");
    std::fs::write(&coll_path, &coll).unwrap();

    let report = dir.join("newman.json");
    let mut cmd = Command::new(modules.join(".bin/newman"));
    cmd.arg("run")
        .arg(&coll_path)
        .args(["--ssl-extra-ca-certs", s(&ca().cert)])
        .args(["--timeout-request", "10000", "--reporters", "json"])
        .args(["--reporter-json-export", s(&report)]);
    for var in PROXY_ENV {
        cmd.env_remove(var);
    }
    cmd.env("HTTPS_PROXY", proxy.url());
    let done = run_to_exit(cmd, Duration::from_secs(60));
    assert_eq!(
        done.code,
        Some(0),
        "newman failed:\n{}\n{}",
        done.stdout,
        done.stderr
    );
    let report: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    let executions = report["run"]["executions"].as_array().unwrap();
    let codes: Vec<u64> = executions
        .iter()
        .map(|e| e["response"]["code"].as_u64().unwrap_or(0))
        .collect();
    assert_eq!(codes, [200, 200], "{}", report["run"]["failures"]);

    // Replayed through the proxy: the origin saw each request twice, the capture has four.
    let seen = site.origin.seen();
    let targets: Vec<&str> = seen.iter().map(|s| s.head.target()).collect();
    assert_eq!(
        targets,
        ["/login?user=ann", "/items", "/login?user=ann", "/items"]
    );
    assert!(seen.iter().all(|s| s.head.has("via")));
    assert_eq!(seen[3].body, json.as_bytes());
    let recs = exchanges(&cap, 4);
    assert!(recs.iter().all(|r| r["intercepted"] == true), "{recs:#?}");
}

/// WebSocket inside an intercepted session: the upgrade goes through the proxy to the origin,
/// then frames travel both ways.
#[test]
fn websocket_upgrade_inside_an_intercepted_session() {
    if !tls_tools() {
        return;
    }
    let dir = temp_dir("intercept-ws");
    let site = TlsOrigin::good(&dir);
    let proxy = intercepting(&[]);
    let mut session = TlsSession::open(&proxy, &site.authority());
    session.send(
        format!(
            "GET /ws HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {WS_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n",
            site.authority()
        )
        .as_bytes(),
    );
    let head_end = |b: &[u8]| b.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
    let got = session.wait_for(|b| head_end(b).is_some());
    let res = response_in(&got);
    assert_eq!(res.status(), 101, "{}", show(&got));
    assert_eq!(res.header("sec-websocket-accept"), Some(WS_ACCEPT));
    let start = head_end(&got).unwrap();

    // A masked text frame "hello ws" (RFC 6455 §5.3), echoed back unmasked.
    let mask = [0x11, 0x22, 0x33, 0x44];
    let mut frame = vec![0x81, 0x80 | 8];
    frame.extend_from_slice(&mask);
    frame.extend(
        b"hello ws"
            .iter()
            .zip(mask.iter().cycle())
            .map(|(b, m)| b ^ m),
    );
    session.send(&frame);
    let got = session.wait_for(|b| b.len() >= start + 10);
    assert_eq!(&got[start..], b"\x81\x08hello ws", "{}", show(&got));

    let seen = site.origin.last();
    assert_eq!(seen.head.target(), "/ws");
    assert_eq!(seen.head.get("upgrade"), Some("websocket"));
    assert!(seen.head.has("via"));
}

/// The authorization service is asked about each request inside the session with its full
/// https URL and method; a refusal is a 403 inside TLS and the origin never sees it.
#[test]
fn the_authorization_service_judges_each_request_inside_the_session() {
    if !tls_tools() || !need_tool("curl") {
        return;
    }
    let dir = temp_dir("intercept-authz");
    let site = TlsOrigin::good(&dir);
    let service = reference_service(Duration::ZERO);
    let authz = format!("http://{}/validate", service.addr);
    let proxy = intercepting(&["--authz-url", &authz]);

    let denied = curl_trusting(&proxy, &["-X", "DELETE", &site.url("/admin")]);
    denied.assert_error(403);
    assert!(
        denied.text().contains("denied by --authz-url"),
        "{}",
        denied.text()
    );
    let allowed = curl_trusting(&proxy, &[&site.url("/ok?x=1")]);
    assert_eq!(
        (allowed.status(), allowed.text().as_str()),
        (200, "GET /ok?x=1")
    );

    let targets: Vec<String> = site
        .origin
        .seen()
        .iter()
        .map(|s| s.head.start.clone())
        .collect();
    assert_eq!(
        targets,
        ["GET /ok?x=1 HTTP/1.1"],
        "the refused DELETE reached the origin"
    );
    let asked = questions(&service);
    for (method, url) in [("DELETE", site.url("/admin")), ("GET", site.url("/ok?x=1"))] {
        assert_eq!(
            asked
                .iter()
                .filter(|q| q["method"] == method && q["url"] == url.as_str())
                .count(),
            1,
            "{method} {url} not asked once: {asked:#?}"
        );
    }
}

/// A Host that names another server than the one the tunnel was opened for is 421 (and the
/// origin is not asked); the right Host goes through on the same kind of session.
#[test]
fn a_host_that_differs_from_the_tunnel_gets_421() {
    if !tls_tools() {
        return;
    }
    let dir = temp_dir("intercept-421");
    let site = TlsOrigin::good(&dir);
    let proxy = intercepting(&[]);
    let ask = |host: &str| {
        let mut session = TlsSession::open(&proxy, &site.authority());
        session.send(
            format!("GET /where HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
        );
        let (out, err) = session.finish();
        assert!(!out.is_empty(), "no response; s_client: {err}");
        response_in(&out)
    };
    ask("other.example").assert_error(421);
    ask(&format!("other.example:{}", site.tls.port)).assert_error(421);
    assert_eq!(site.origin.requests(), 0);
    let fine = ask(&site.authority());
    assert_eq!((fine.status(), fine.text().as_str()), (200, "GET /where"));
    assert_eq!(site.origin.requests(), 1);
}

// ---------------------------------------------------------------------------------------------
// Certificates: the origin's, ours, the client's refusal
// ---------------------------------------------------------------------------------------------

/// An origin certificate that fails verification is a 502 inside the client's TLS session
/// naming the failure, and the origin receives nothing; a good one goes through.
#[test]
fn origin_certificate_failures_are_502_and_nothing_reaches_the_origin() {
    if !tls_tools() || !need_tool("curl") {
        return;
    }
    let dir = temp_dir("intercept-bad-origin");
    let bad = bad_certs();
    let proxy = intercepting(&[]);
    for (name, id, reason) in [
        ("expired", &bad.expired, "expired"),
        ("wrong name", &bad.wrong_name, "not valid for"),
        ("unknown issuer", &bad.unknown_issuer, "unknown authority"),
    ] {
        let site = TlsOrigin::start(&dir, &id.cert, &id.key);
        let res = curl_trusting(&proxy, &[&site.url("/secret")]);
        res.assert_error(502);
        assert!(
            res.text().to_ascii_lowercase().contains(reason),
            "{name}: {reason:?} not in {:?}",
            res.text()
        );
        assert_eq!(
            site.origin.requests(),
            0,
            "{name}: the origin got the request"
        );
    }
    let site = TlsOrigin::good(&dir);
    assert_eq!(curl_trusting(&proxy, &[&site.url("/fine")]).status(), 200);
}

/// Through an intercepting proxy the client sees a leaf made by the interception CA for the
/// name it asked (a DNS name, or an IP address for an IP); where the destination does not
/// match `--intercept`, it sees the origin's own certificate, byte for byte.
#[test]
fn the_client_sees_our_leaf_when_intercepted_and_the_origin_certificate_otherwise() {
    if !tls_tools() {
        return;
    }
    let dir = temp_dir("intercept-leaf");
    let site = TlsOrigin::good(&dir);
    let origin_pem = first_pem(&std::fs::read_to_string(&pki().cert).unwrap());

    // Not matching: opaque, the origin's certificate, verified with the test PKI.
    let opaque = Proxy::start(&[
        "--intercept",
        "*.example.com",
        "--intercept-ca",
        s(&ca().cert),
        "--intercept-key",
        s(&ca().key),
        "--connect-ports",
        "any",
    ]);
    let out = s_client(
        &opaque,
        &site.authority(),
        &["-servername", "localhost", "-CAfile", s(&pki().ca)],
    );
    assert_eq!(first_pem(&out.stdout), origin_pem, "{out:?}");
    assert!(out.stdout.contains("Verify return code: 0 (ok)"), "{out:?}");

    // Matching, by name: a leaf for localhost from the interception CA, at most 397 days.
    let proxy = intercepting(&["--intercept", "127.0.0.1"]);
    let out = s_client(
        &proxy,
        &site.authority(),
        &["-servername", "localhost", "-CAfile", s(&ca().cert)],
    );
    let leaf = first_pem(&out.stdout);
    assert_ne!(leaf, origin_pem, "{out:?}");
    assert!(out.stdout.contains("Verify return code: 0 (ok)"), "{out:?}");
    let issuer = out
        .stdout
        .lines()
        .find(|l| l.starts_with("issuer="))
        .unwrap_or("");
    assert!(issuer.contains(CA_NAME), "{out:?}");
    let text = leaf_text(&dir, &out.stdout, "by-name");
    assert!(text.contains("DNS:localhost"), "{text}");

    // Matching, by IP without SNI: the leaf names the IP.
    let ip_target = format!("127.0.0.1:{}", site.tls.port);
    let out = s_client(
        &proxy,
        &ip_target,
        &["-noservername", "-CAfile", s(&ca().cert)],
    );
    let text = leaf_text(&dir, &out.stdout, "by-ip");
    assert!(text.contains("IP Address:127.0.0.1"), "{text}");
    assert!(out.stdout.contains("Verify return code: 0 (ok)"), "{out:?}");
}

/// Writes the leaf in s_client's `output` to `dir/NAME.pem`, checks it with openssl (valid
/// from at least 12 hours back, for at most 397 days) and returns `openssl x509 -text`.
fn leaf_text(dir: &Path, output: &str, name: &str) -> String {
    let start = output
        .find("-----BEGIN CERTIFICATE-----")
        .expect("a certificate");
    let end = output.find("-----END CERTIFICATE-----").unwrap() + 25;
    let path = dir.join(format!("{name}.pem"));
    std::fs::write(&path, format!("{}\n", &output[start..end])).unwrap();
    let x509 = |args: &[&str]| {
        Command::new("openssl")
            .arg("x509")
            .args(["-in", s(&path), "-noout"])
            .args(args)
            .output()
            .expect("openssl runs")
    };
    let over_397_days = (398 * 86_400).to_string();
    assert!(
        !x509(&["-checkend", &over_397_days]).status.success(),
        "{name}: valid for more than 397 days"
    );
    let half_a_day_ago = (now_unix() - 12 * 3600).to_string();
    let verify = Command::new("openssl")
        .args([
            "verify",
            "-attime",
            &half_a_day_ago,
            "-CAfile",
            s(&ca().cert),
            s(&path),
        ])
        .output()
        .expect("openssl runs");
    assert!(
        verify.status.success(),
        "{name}: not valid 12 hours ago: {}",
        String::from_utf8_lossy(&verify.stdout)
    );
    String::from_utf8_lossy(&x509(&["-text"]).stdout).into_owned()
}

/// Seconds since the epoch.
fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A client that does not trust the interception CA fails its handshake. Beyond the
/// CONNECT's own access log entry, that costs at most one line, and a line names the host and
/// the failure; the proxy goes on serving.
#[test]
fn a_client_that_rejects_our_certificate_costs_one_log_line() {
    if !tls_tools() || !need_tool("curl") {
        return;
    }
    let dir = temp_dir("intercept-untrusted");
    let site = TlsOrigin::good(&dir);
    let proxy = intercepting(&[]);
    let out = curl_via(&proxy, &[&site.url("/untrusted")]);
    assert_eq!(
        out.code,
        Some(60),
        "curl should refuse the certificate: {out:?}"
    );
    assert!(out.stderr.contains("SSL certificate problem"), "{out:?}");
    let names_the_failure = |l: &str| {
        let l = l.to_ascii_lowercase();
        l.contains("localhost")
            && ["tls", "handshake", "certificate", "alert"]
                .iter()
                .any(|w| l.contains(w))
    };
    proxy
        .wait_for_line(IO_TIMEOUT, names_the_failure)
        .unwrap_or_else(|| panic!("no line naming localhost: {:?}", proxy.stderr_lines()));
    assert_eq!(site.origin.requests(), 0);
    // The CONNECT's entry is written when the tunnel ends; give it that moment.
    proxy.wait_for_line(IO_TIMEOUT, |l| {
        is_access_entry(l) && l.contains(" CONNECT ")
    });
    let after_failure = proxy.stderr_lines();

    assert_eq!(
        curl_trusting(&proxy, &[&site.url("/trusted")]).status(),
        200
    );
    let extra: Vec<&String> = after_failure
        .iter()
        .filter(|l| !l.starts_with("listening on ") && !is_access_entry(l))
        .collect();
    assert!(
        extra.len() <= 1,
        "more than one line for one refusal: {after_failure:#?}"
    );
    let lines = proxy.stderr_lines();
    assert_eq!(
        lines.iter().filter(|l| names_the_failure(l)).count(),
        after_failure
            .iter()
            .filter(|l| names_the_failure(l))
            .count(),
        "the good request was logged as a failure: {lines:#?}"
    );
}

/// Whether a stderr line is an access log entry (text format: it starts with the RFC 3339
/// time, `2026-12-06T04:12:03.615Z ...`).
fn is_access_entry(line: &str) -> bool {
    let b = line.as_bytes();
    b.len() > 24 && b[..4].iter().all(u8::is_ascii_digit) && b[4] == b'-' && b[10] == b'T'
}

/// ALPN: a client that offers only h2 gets the alert no_application_protocol; one that also
/// offers http/1.1 gets http/1.1. The proxy goes on serving.
#[test]
fn alpn_offers_http11_only() {
    if !tls_tools() || !need_tool("curl") {
        return;
    }
    let dir = temp_dir("intercept-alpn");
    let site = TlsOrigin::good(&dir);
    let proxy = intercepting(&[]);
    let trust = ["-servername", "localhost", "-CAfile", s(&ca().cert)];
    let out = s_client(
        &proxy,
        &site.authority(),
        &[&trust[..], &["-alpn", "h2"]].concat(),
    );
    assert_ne!(out.code, Some(0), "{out:?}");
    assert!(
        out.stderr.contains("no application protocol"),
        "expected the alert no_application_protocol: {out:?}"
    );
    let out = s_client(
        &proxy,
        &site.authority(),
        &[&trust[..], &["-alpn", "h2,http/1.1"]].concat(),
    );
    assert!(out.stdout.contains("ALPN protocol: http/1.1"), "{out:?}");
    assert_eq!(curl_trusting(&proxy, &[&site.url("/after")]).status(), 200);
}

/// Bytes that are not a TLS ClientHello in a tunnel to an intercepted destination are relayed
/// as they are, while a TLS client to the same kind of destination is intercepted.
#[test]
fn non_tls_bytes_in_an_intercepted_tunnel_are_relayed() {
    if !tls_tools() {
        return;
    }
    let dir = temp_dir("intercept-plain");
    let echo = Origin::tcp_echo();
    let proxy = intercepting(&["--intercept", "127.0.0.1"]);
    let mut conn = Conn::connect(proxy.addr);
    let target = echo.authority();
    conn.write(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes());
    let head = conn.read_head().unwrap().expect("an answer to CONNECT");
    assert_eq!(head.status(), 200, "{}", head.text());
    conn.write(b"plain text, not TLS\n");
    conn.shutdown_write();
    assert_eq!(conn.read_to_end().unwrap(), b"plain text, not TLS\nBYE");

    // 127.0.0.1 is intercepted: a TLS client there gets a certificate from the proxy's CA.
    let site = TlsOrigin::good(&dir);
    let tls_target = format!("127.0.0.1:{}", site.tls.port);
    let out = s_client(&proxy, &tls_target, &["-CAfile", s(&ca().cert)]);
    assert!(out.stdout.contains("Verify return code: 0 (ok)"), "{out:?}");
}

// ---------------------------------------------------------------------------------------------
// Start-up checks and `ca new`
// ---------------------------------------------------------------------------------------------

/// A bad interception CA or key is a one-line start error with exit 2, never a proxy that
/// starts; the three flags need each other.
#[test]
fn a_bad_interception_ca_is_refused_at_start() {
    if !need_tool("openssl") {
        return;
    }
    let dir = temp_dir("intercept-refused");
    let private_copy = |from: &Path, name: &str, mode: u32| {
        use std::os::unix::fs::PermissionsExt;
        let to = dir.join(name);
        std::fs::copy(from, &to).unwrap();
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(mode)).unwrap();
        to
    };
    let readable = private_copy(&ca().key, "readable-key.pem", 0o644);
    let leaf_key = private_copy(&pki().key, "leaf-key.pem", 0o600);
    let bad = bad_certs();
    let cases: [(&str, &Path, &Path, &str); 4] = [
        (
            "key readable by others",
            &ca().cert,
            &readable,
            s(&readable),
        ),
        ("a leaf, not a CA", &pki().cert, &leaf_key, "not a CA"),
        (
            "expired CA",
            &bad.expired_ca.cert,
            &bad.expired_ca.key,
            "expired",
        ),
        (
            "key of another certificate",
            &ca().cert,
            &leaf_key,
            "not the key of",
        ),
    ];
    for (what, cert, key, needle) in cases {
        let args = [
            "--intercept",
            "localhost",
            "--intercept-ca",
            s(cert),
            "--intercept-key",
            s(key),
        ];
        let out = run_proxy(&args, IO_TIMEOUT);
        assert_eq!(out.code, Some(2), "{what}: {out:?}");
        assert!(
            out.stderr.contains(needle),
            "{what}: {needle:?} not in {out:?}"
        );
        assert_eq!(out.stderr.lines().count(), 1, "{what}: {out:?}");
        assert!(!out.stderr.contains("listening on"), "{what}: {out:?}");
    }
    let (cert, key) = (s(&ca().cert), s(&ca().key));
    for (args, needle) in [
        (&["--intercept", "localhost"][..], "--intercept-ca"),
        (
            &["--intercept", "localhost", "--intercept-ca", cert],
            "--intercept-key",
        ),
        (
            &["--intercept-ca", cert, "--intercept-key", key],
            "--intercept",
        ),
    ] {
        let out = run_proxy(args, IO_TIMEOUT);
        assert_eq!(out.code, Some(2), "{args:?}: {out:?}");
        assert!(
            out.stderr.contains(needle),
            "{args:?}: {needle:?} not in {out:?}"
        );
    }
}

/// `ca new` makes a P-256 CA that may sign leaves only, with its key 0600, and never
/// overwrites anything.
#[test]
fn ca_new_makes_a_constrained_p256_ca_and_never_overwrites() {
    use std::os::unix::fs::PermissionsExt;
    if !need_tool("openssl") {
        return;
    }
    let dir = temp_dir("ca-new");
    let (cert, key) = (dir.join("ca.pem"), dir.join("ca-key.pem"));
    let out = ca_new(&cert, &key, &["--name", "Test Root", "--days", "30"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(
        out.stdout.contains(&format!("--cacert {}", s(&cert))),
        "{out:?}"
    );

    let openssl_out = |args: &[&str]| {
        let o = Command::new("openssl")
            .args(args)
            .output()
            .expect("openssl runs");
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
        )
    };
    let (ok, text) = openssl_out(&["x509", "-in", s(&cert), "-noout", "-text"]);
    assert!(ok, "{text}");
    for needle in [
        "Subject: O = smolproxy, CN = Test Root",
        "X509v3 Basic Constraints: critical\n                CA:TRUE, pathlen:0",
        "X509v3 Key Usage: critical\n                Certificate Sign, CRL Sign",
        "X509v3 Subject Key Identifier",
        "ASN1 OID: prime256v1",
        "Signature Algorithm: ecdsa-with-SHA256",
    ] {
        assert!(text.contains(needle), "{needle:?} not in:\n{text}");
    }
    // Valid from a day back (checked at 12 hours ago) for the days asked.
    let (ok, verified) = openssl_out(&["verify", "-CAfile", s(&cert), s(&cert)]);
    assert!(ok && verified.contains(": OK"), "{verified}");
    let half_a_day_ago = (now_unix() - 12 * 3600).to_string();
    let (ok, _) = openssl_out(&[
        "verify",
        "-attime",
        &half_a_day_ago,
        "-CAfile",
        s(&cert),
        s(&cert),
    ]);
    assert!(ok, "not valid 12 hours ago");
    let days = |n: u64| (n * 86_400).to_string();
    assert!(openssl_out(&["x509", "-in", s(&cert), "-noout", "-checkend", &days(29)]).0);
    assert!(!openssl_out(&["x509", "-in", s(&cert), "-noout", "-checkend", &days(31)]).0);

    // The key: 0600, and the certificate's.
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "key mode {mode:o}");
    let (ok, from_key) = openssl_out(&["pkey", "-in", s(&key), "-pubout"]);
    assert!(ok);
    let (_, from_cert) = openssl_out(&["x509", "-in", s(&cert), "-noout", "-pubkey"]);
    assert_eq!(from_key, from_cert);

    // Never overwritten, not even half: both files stay byte for byte, no key appears.
    let (cert_bytes, key_bytes) = (std::fs::read(&cert).unwrap(), std::fs::read(&key).unwrap());
    let new_key = dir.join("new-key.pem");
    for (c, k) in [
        (&cert, &key),
        (&cert, &new_key),
        (&dir.join("new.pem"), &key),
    ] {
        let out = ca_new(c, k, &[]);
        assert_ne!(out.code, Some(0), "{out:?}");
        assert!(out.stderr.contains("never overwritten"), "{out:?}");
    }
    assert_eq!(std::fs::read(&cert).unwrap(), cert_bytes);
    assert_eq!(std::fs::read(&key).unwrap(), key_bytes);
    assert!(!new_key.exists() && !dir.join("new.pem").exists());

    // Days out of range are refused before anything is made; serials differ between CAs.
    for days in ["0", "7301", "ten"] {
        let out = ca_new(
            &dir.join("x.pem"),
            &dir.join("x-key.pem"),
            &["--days", days],
        );
        assert_eq!(out.code, Some(2), "--days {days}: {out:?}");
        assert!(!dir.join("x-key.pem").exists());
    }
    let serial = |p: &Path| openssl_out(&["x509", "-in", s(p), "-noout", "-serial"]).1;
    assert_ne!(serial(&cert), serial(&ca().cert));
}

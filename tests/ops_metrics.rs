//! `--metrics-listen` (SPEC §12): after known traffic through the proxy, `/metrics` counts
//! exactly that traffic (requests by status class and route, bytes each way as curl and a raw
//! tunnel saw them, tunnels, dial errors, connections, pool lookups, authorization decisions
//! and their latency histogram), `promtool check metrics` accepts the text, `/healthz` says
//! `ok` and turns 503 once shutdown has begun, and nothing else is served there.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// The metrics listener's address, from the proxy's `metrics on ADDR` line.
fn metrics_addr(proxy: &Proxy) -> SocketAddr {
    let line = proxy
        .wait_for_line(IO_TIMEOUT, |l| l.starts_with("metrics on "))
        .expect("a `metrics on ADDR` line");
    line["metrics on ".len()..]
        .trim()
        .parse()
        .expect("an address")
}

/// Sends `raw` to `addr` and reads until the server closes: (status, head, body).
fn ask(addr: SocketAddr, raw: &[u8]) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.write_all(raw).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, head.to_string(), body.to_string())
}

/// `GET /metrics`: the exposition text, after checking the answer's head.
fn scrape(addr: SocketAddr) -> String {
    let (status, head, body) = ask(addr, b"GET /metrics HTTP/1.1\r\nHost: m\r\n\r\n");
    assert_eq!(status, 200, "{head}");
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4; charset=utf-8"),
        "{head}"
    );
    body
}

/// The value of the sample `series` (name and labels exactly as written) in `text`.
fn sample(text: &str, series: &str) -> u64 {
    let found = text
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '));
    let value = found.unwrap_or_else(|| panic!("no {series} in\n{text}"));
    value
        .parse()
        .unwrap_or_else(|_| panic!("{series} = {value:?}"))
}

/// `promtool check metrics` on `text`: exit 0 and no lint complaint.
fn promtool_accepts(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool starts");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool: {said}\non\n{text}");
    assert!(said.trim().is_empty(), "promtool lint: {said}");
}

/// Waits until the access log (on stderr) has `n` lines containing `needle`: a request is
/// counted just before its line is written, and curl may be done before either happens.
fn logged(proxy: &Proxy, needle: &str, n: usize) {
    let deadline = Instant::now() + IO_TIMEOUT;
    let count = || {
        let lines = proxy.stderr_lines();
        lines.iter().filter(|l| l.contains(needle)).count()
    };
    while count() < n {
        assert!(Instant::now() < deadline, "{n} lines with {needle:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// curl through the proxy, once its log line is out; returns (status, bytes curl sent,
/// bytes curl received).
fn through(proxy: &Proxy, url: &str) -> (u16, u64, u64) {
    let line = format!(" GET {url} ");
    let before = proxy
        .stderr_lines()
        .iter()
        .filter(|l| l.contains(&line))
        .count();
    let out = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{size_request} %{size_header} %{size_download}",
        "-x",
        &proxy.url(),
        url,
    ]);
    let n: Vec<u64> = out
        .stdout
        .split_whitespace()
        .map(|w| w.parse().unwrap())
        .collect();
    assert_eq!(n.len(), 4, "{out:?}");
    logged(proxy, &line, before + 1);
    (n[0] as u16, n[1], n[2] + n[3])
}

#[test]
fn metrics_count_what_was_sent() {
    if !need_tool("curl") || !need_tool("promtool") {
        return;
    }
    let sizes = [10usize, 200, 3000];
    let origin = Origin::start(move |head, conn| {
        let i: usize = head.target().trim_start_matches('/').parse().unwrap_or(0);
        conn.respond("200 OK", &[], &pattern(sizes[i], i as u64));
        true
    });
    let echo = Origin::tcp_echo();
    let proxy = Proxy::start(&[
        "--metrics-listen",
        "127.0.0.1:0",
        "--deny",
        "127.0.0.2",
        "--connect-ports",
        "any",
    ]);
    let m = metrics_addr(&proxy);
    let before = scrape(m);
    assert_eq!(sample(&before, "smolproxy_connections_accepted_total"), 0);
    let (mut up, mut down) = (0, 0);

    // Three 200s of known sizes, direct.
    for i in 0..3 {
        let (status, sent, got) = through(&proxy, &origin.url(&format!("/{i}")));
        assert_eq!(status, 200);
        up += sent;
        down += got;
    }
    // A 403 from --deny: answered here, never routed.
    let denied = format!("http://127.0.0.2:{}/", origin.port());
    let (status, sent, got) = through(&proxy, &denied);
    assert_eq!(status, 403);
    (up, down) = (up + sent, down + got);
    // A 502: nothing listens there.
    let refused = format!("http://127.0.0.1:{}/", closed_port());
    let (status, sent, got) = through(&proxy, &refused);
    assert_eq!(status, 502);
    (up, down) = (up + sent, down + got);

    // A CONNECT tunnel carrying 1000 bytes each way (and the echo's closing BYE).
    let mut t = TcpStream::connect(proxy.addr).unwrap();
    t.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let connect = format!(
        "CONNECT {0} HTTP/1.1\r\nHost: {0}\r\n\r\n",
        echo.authority()
    );
    let payload = pattern(1000, 7);
    t.write_all(connect.as_bytes()).unwrap();
    t.write_all(&payload).unwrap();
    t.shutdown(Shutdown::Write).unwrap();
    let mut back = Vec::new();
    t.read_to_end(&mut back).unwrap();
    let ok = b"HTTP/1.1 200 Connection established\r\n\r\n";
    assert!(back.starts_with(ok), "{}", show(&back));
    assert_eq!(&back[ok.len()..], [&payload[..], b"BYE"].concat());
    up += (connect.len() + payload.len()) as u64;
    down += back.len() as u64;
    // Counted when the tunnel's log line is written, as it ends.
    let tunnel_line = format!("CONNECT {} 200", echo.authority());
    proxy
        .wait_for_log(IO_TIMEOUT, &tunnel_line)
        .expect("the tunnel's log line");

    let text = scrape(m);
    promtool_accepts(&text);
    let requests = |class: &str, route: &str| {
        let series = format!("smolproxy_requests_total{{class=\"{class}\",route=\"{route}\"}}");
        sample(&text, &series)
    };
    assert_eq!(requests("2xx", "direct"), 4, "3 GETs and the tunnel");
    assert_eq!(requests("4xx", "none"), 1, "the denied GET");
    assert_eq!(requests("5xx", "direct"), 1, "the refused GET");
    let all: u64 = text
        .lines()
        .filter(|l| l.starts_with("smolproxy_requests_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(all, 6, "{text}");
    assert_eq!(sample(&text, "smolproxy_bytes_total{direction=\"up\"}"), up);
    assert_eq!(
        sample(&text, "smolproxy_bytes_total{direction=\"down\"}"),
        down
    );
    assert_eq!(sample(&text, "smolproxy_tunnels_total"), 1);
    assert_eq!(sample(&text, "smolproxy_tunnels_open"), 0);
    assert_eq!(
        sample(&text, "smolproxy_dial_errors_total{kind=\"refused\"}"),
        1
    );
    assert_eq!(
        sample(&text, "smolproxy_dial_errors_total{kind=\"dns\"}"),
        0
    );
    assert_eq!(
        sample(&text, "smolproxy_upstream_errors_total{kind=\"refused\"}"),
        0
    );
    assert_eq!(sample(&text, "smolproxy_connections_accepted_total"), 6);
    let refused = "smolproxy_connections_refused_total{reason=\"max_connections\"}";
    assert_eq!(sample(&text, refused), 0);
    // The three GETs and the refused one each looked in the pool.
    let looked =
        sample(&text, "smolproxy_pool_hits_total") + sample(&text, "smolproxy_pool_misses_total");
    assert_eq!(looked, 4);
    assert!(sample(&text, "process_resident_memory_bytes") > 1024 * 1024);
    assert!(sample(&text, "process_open_fds") >= 3);

    // Nothing else is served there.
    let (status, _, body) = ask(m, b"GET /healthz HTTP/1.1\r\nHost: m\r\n\r\n");
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    let (status, head, body) = ask(m, b"HEAD /metrics HTTP/1.1\r\nHost: m\r\n\r\n");
    assert_eq!((status, body.as_str()), (200, ""), "{head}");
    assert_eq!(ask(m, b"GET / HTTP/1.1\r\nHost: m\r\n\r\n").0, 404);
    assert_eq!(ask(m, b"GET /metricsx HTTP/1.1\r\nHost: m\r\n\r\n").0, 404);
    let url = format!("http://{m}/metrics");
    let proxied = format!("GET {url} HTTP/1.1\r\nHost: m\r\n\r\n");
    assert_eq!(ask(m, proxied.as_bytes()).0, 404, "no proxying there");
    let post = b"POST /metrics HTTP/1.1\r\nHost: m\r\nContent-Length: 0\r\n\r\n";
    let (status, head, _) = ask(m, post);
    assert_eq!(status, 405);
    assert!(head.contains("Allow: GET, HEAD"), "{head}");
    assert_eq!(ask(m, b"\x16\x03\x01 garbage\r\n\r\n").0, 400);
    // None of this was proxy traffic.
    let after = scrape(m);
    assert_eq!(sample(&after, "smolproxy_connections_accepted_total"), 6);
}

#[test]
fn authorization_decisions_and_their_latency() {
    if !need_tool("curl") {
        return;
    }
    // Allows everything but URLs with /no in them.
    let service = Origin::start(|head, conn| {
        let body = conn.read_body(head).unwrap_or_default();
        let deny = String::from_utf8_lossy(&body).contains("/no");
        let answer: &[u8] = if deny {
            b"{\"allowed\": false}"
        } else {
            b"{\"allowed\": true}"
        };
        conn.respond("200 OK", &[("Content-Type", "application/json")], answer);
        false
    });
    let origin = Origin::echo();
    let url = format!("http://{}/validate", service.addr);
    let proxy = Proxy::start(&[
        "--metrics-listen",
        "127.0.0.1:0",
        "--authz-url",
        &url,
        "--authz-cache",
        "60s",
    ]);
    let m = metrics_addr(&proxy);
    // Asked, then answered from the cache; then a denial.
    assert_eq!(through(&proxy, &origin.url("/yes")).0, 200);
    assert_eq!(through(&proxy, &origin.url("/yes")).0, 200);
    assert_eq!(through(&proxy, &origin.url("/no")).0, 403);
    assert_eq!(service.requests(), 2);
    let text = scrape(m);
    if need_tool("promtool") {
        promtool_accepts(&text);
    }
    let decisions = |decision: &str, source: &str| {
        let series = format!(
            "smolproxy_authz_decisions_total{{decision=\"{decision}\",source=\"{source}\"}}"
        );
        sample(&text, &series)
    };
    assert_eq!(decisions("allow", "service"), 1);
    assert_eq!(decisions("allow", "cache"), 1);
    assert_eq!(decisions("deny", "service"), 1);
    assert_eq!(decisions("error", "service"), 0);
    assert_eq!(sample(&text, "smolproxy_authz_duration_seconds_count"), 2);
    let inf = "smolproxy_authz_duration_seconds_bucket{le=\"+Inf\"}";
    assert_eq!(sample(&text, inf), 2);
    assert_eq!(
        sample(
            &text,
            "smolproxy_requests_total{class=\"4xx\",route=\"none\"}"
        ),
        1
    );
}

#[test]
fn refused_clients_are_counted() {
    // Only 10.0.0.0/8 may use it: a loopback client is turned away with 403.
    let proxy = Proxy::start(&[
        "--metrics-listen",
        "127.0.0.1:0",
        "--allow-client",
        "10.0.0.0/8",
    ]);
    let m = metrics_addr(&proxy);
    let (status, _, _) = ask(
        proxy.addr,
        b"GET http://127.0.0.1:1/ HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    assert_eq!(status, 403);
    proxy
        .wait_for_log(IO_TIMEOUT, " 403 ")
        .expect("the refusal's log line");
    let text = scrape(m);
    let refused = "smolproxy_connections_refused_total{reason=\"allow_client\"}";
    assert_eq!(sample(&text, refused), 1);
    assert_eq!(sample(&text, "smolproxy_connections_accepted_total"), 1);
}

#[test]
fn bad_proxy_protocol_headers_are_counted() {
    // Loopback is the "load balancer": its connections must start with a PROXY header.
    let proxy = Proxy::start(&[
        "--metrics-listen",
        "127.0.0.1:0",
        "--proxy-protocol-from",
        "127.0.0.1/32",
    ]);
    let m = metrics_addr(&proxy);
    // Two bad headers (closed unanswered), then a good one carrying a request.
    for bad in [&b"GET / HTTP/1.1\r\n\r\n"[..], b"PROXY TCP4 1.2.3.4\r\n"] {
        let mut s = TcpStream::connect(proxy.addr).unwrap();
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        s.write_all(bad).unwrap();
        // Closed, or reset (the bad bytes were left unread): never a byte of answer, and
        // never left open (a read timeout fails here).
        let mut out = Vec::new();
        match s.read_to_end(&mut out) {
            Err(e) if e.kind() != std::io::ErrorKind::ConnectionReset => {
                panic!("a bad header was not closed: {e}")
            }
            _ => {}
        }
        assert!(out.is_empty(), "a bad header is closed without an answer");
    }
    let good = b"PROXY TCP4 192.0.2.7 127.0.0.1 4321 3128\r\nGET http://127.0.0.1:1/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let (status, _, _) = ask(proxy.addr, good);
    assert_eq!(status, 502, "the request after a good header is served");
    proxy
        .wait_for_log(IO_TIMEOUT, "192.0.2.7:4321")
        .expect("the request's log line names the carried client");
    let text = scrape(m);
    let refused = "smolproxy_connections_refused_total{reason=\"proxy_protocol\"}";
    assert_eq!(sample(&text, refused), 2);
    assert_eq!(sample(&text, "smolproxy_connections_accepted_total"), 3);
}

#[test]
fn capture_records_are_counted() {
    let origin = Origin::echo();
    let dir = temp_dir("metrics-capture");
    let file = dir.join("capture.ndjson");
    let proxy = Proxy::start(&[
        "--metrics-listen",
        "127.0.0.1:0",
        "--capture",
        file.to_str().unwrap(),
    ]);
    let m = metrics_addr(&proxy);
    for i in 0..3 {
        let (status, _, _) = through(&proxy, &origin.url(&format!("/c{i}")));
        assert_eq!(status, 200);
    }
    // The writer counts a batch just after appending it to the file: once the three records
    // are there, the count follows within moments, and it never goes past three.
    capture_records(&file, 3);
    let records = "smolproxy_capture_records_total";
    let deadline = Instant::now() + RECORD_WAIT;
    let mut text = scrape(m);
    while sample(&text, records) < 3 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        text = scrape(m);
    }
    assert_eq!(sample(&text, records), 3);
    assert_eq!(sample(&text, "smolproxy_capture_backlog"), 0);
}

#[test]
fn healthz_turns_503_when_shutdown_begins() {
    let echo = Origin::tcp_echo();
    let proxy = Proxy::start(&["--metrics-listen", "127.0.0.1:0", "--connect-ports", "any"]);
    let m = metrics_addr(&proxy);
    // An open tunnel keeps the proxy draining after SIGTERM.
    let mut t = TcpStream::connect(proxy.addr).unwrap();
    t.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let connect = format!(
        "CONNECT {0} HTTP/1.1\r\nHost: {0}\r\n\r\n",
        echo.authority()
    );
    t.write_all(connect.as_bytes()).unwrap();
    let mut ok = [0u8; 39];
    t.read_exact(&mut ok).unwrap();
    assert!(ok.starts_with(b"HTTP/1.1 200"));
    // A byte echoed back: the tunnel is relaying.
    t.write_all(b"x").unwrap();
    let mut x = [0u8; 1];
    t.read_exact(&mut x).unwrap();
    let text = scrape(m);
    assert_eq!(sample(&text, "smolproxy_tunnels_open"), 1);
    assert_eq!(sample(&text, "smolproxy_connections_open"), 1);
    let health = || ask(m, b"GET /healthz HTTP/1.1\r\nHost: m\r\n\r\n").0;
    assert_eq!(health(), 200);
    proxy.signal("TERM");
    // The signal arrives when it arrives: wait for the answer to change, within bounds.
    let deadline = Instant::now() + IO_TIMEOUT;
    let mut status = health();
    while status == 200 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        status = health();
    }
    assert_eq!(status, 503);
    drop(t);
}

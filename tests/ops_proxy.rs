//! Running behind a load balancer and several processes on one port (SPEC §12):
//! `--proxy-protocol-from` with PROXY protocol headers written by hand (v1 TCP4, TCP6, UNKNOWN;
//! v2 PROXY over IPv4 and IPv6, LOCAL; truncated, oversized, garbage, late) and with Debian's
//! haproxy in front of two instances (`send-proxy-v2`, round robin, health checks), and
//! `--reuse-port` with two processes sharing a port while one of them drains.
//!
//! What a user would check is asserted: statuses, the access log's client field (JSON lines
//! in a file), capture records, the stderr line a bad header costs, and exit statuses.
//! Loopback only; haproxy missing prints `SKIP: ...` on a developer machine and fails under
//! `CI=true`.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv6Addr, Shutdown, SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// How long a log line or a state change may take to show.
const WAIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// Headers
// ---------------------------------------------------------------------------------------------

/// The v2 signature.
const SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";

/// A v2 header: version and command byte, family and protocol byte, then `block`.
fn v2(command: u8, family: u8, block: &[u8]) -> Vec<u8> {
    let mut h = SIGNATURE.to_vec();
    h.extend_from_slice(&[command, family]);
    h.extend_from_slice(&(block.len() as u16).to_be_bytes());
    h.extend_from_slice(block);
    h
}

/// A v2 PROXY header for TCP over IPv4 from `src`:`port` to 127.0.0.1:3128, with a TLV
/// (PP2_TYPE_AUTHORITY) the proxy must skip.
fn v2_tcp4(src: [u8; 4], port: u16) -> Vec<u8> {
    let mut block = src.to_vec();
    block.extend_from_slice(&[127, 0, 0, 1]);
    block.extend_from_slice(&port.to_be_bytes());
    block.extend_from_slice(&3128u16.to_be_bytes());
    block.extend_from_slice(&[0x02, 0x00, 0x04]);
    block.extend_from_slice(b"a.lb");
    v2(0x21, 0x11, &block)
}

/// A v2 PROXY header for TCP over IPv6 from `src`:`port` to [::1]:3128.
fn v2_tcp6(src: Ipv6Addr, port: u16) -> Vec<u8> {
    let mut block = src.octets().to_vec();
    block.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
    block.extend_from_slice(&port.to_be_bytes());
    block.extend_from_slice(&3128u16.to_be_bytes());
    v2(0x21, 0x21, &block)
}

/// A path as the `&str` a command line wants.
fn s(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}

/// The access-log lines (JSON) once `done` holds for them.
fn log_when(path: &Path, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    records_when(path, WAIT, done)
}

/// The access-log line whose target ends with `path`, once there is one.
fn line_for(log: &Path, path: &str) -> Value {
    let has = |v: &Value| v["target"].as_str().is_some_and(|t| t.ends_with(path));
    let lines = log_when(log, |ls| ls.iter().any(has));
    lines.into_iter().find(has).unwrap()
}

/// Sends `header` and a GET for `url` in one write on a new connection; returns the status
/// and the connection's own address (the client's real one).
fn through(proxy: SocketAddr, header: &[u8], url: &str) -> (u16, String) {
    let mut c = Conn::connect(proxy);
    let own = c.stream.local_addr().unwrap().to_string();
    let mut bytes = header.to_vec();
    bytes.extend(build_request("GET", url, &[("Connection", "close")], b""));
    c.write(&bytes);
    (c.response().status(), own)
}

/// Sends `bytes` on a new connection and returns all it gets back before the proxy closes it
/// (a reset counts as a close: unread bytes make the kernel send one).
fn closed_after(proxy: SocketAddr, bytes: &[u8], half_close: bool) -> Vec<u8> {
    let mut c = TcpStream::connect(proxy).unwrap();
    c.set_read_timeout(Some(WAIT)).unwrap();
    c.write_all(bytes).unwrap();
    if half_close {
        match c.shutdown(Shutdown::Write) {
            // The proxy may have reset the connection already (it closed with bytes unread).
            Err(e) if e.kind() == std::io::ErrorKind::NotConnected => return Vec::new(),
            r => r.unwrap(),
        }
    }
    let mut got = Vec::new();
    match c.read_to_end(&mut got) {
        Err(e) if e.kind() != std::io::ErrorKind::ConnectionReset => {
            panic!("the proxy did not close the connection: {e}")
        }
        _ => got,
    }
}

// ---------------------------------------------------------------------------------------------
// Headers written by hand
// ---------------------------------------------------------------------------------------------

#[test]
fn headers_written_by_hand() {
    let origin = Origin::echo();
    let echo = Origin::tcp_echo();
    let dir = temp_dir("pp-hand");
    let (log, capture) = (dir.join("access.log"), dir.join("capture.ndjson"));
    // Users exist; the documentation networks need no credentials, and only they and
    // 127.0.0.1 (the "balancer", the client of its own LOCAL and UNKNOWN connections) may
    // connect at all.
    let proxy = Proxy::start_with_env(
        &[
            // A list and a repeat, like --allow-client.
            "--proxy-protocol-from",
            "10.9.9.9,127.0.0.1/32",
            "--proxy-protocol-from",
            "::2",
            "--allow-client",
            "192.0.2.0/24,2001:db8::/32,127.0.0.1",
            "--auth-exempt",
            "192.0.2.0/24,2001:db8::/32",
            "--access-log",
            s(&log),
            "--log-format",
            "json",
            "--capture",
            s(&capture),
            "--connect-ports",
            "any",
            "--header-timeout",
            "1s",
        ],
        &[("SMOLPROXY_AUTH", "ann:pw")],
    );
    let url = |name: &str| origin.url(&format!("/pp-{name}"));
    let own = "own address";
    let cases: [(&str, Vec<u8>, u16, &str); 6] = [
        (
            "v1-tcp4",
            b"PROXY TCP4 192.0.2.7 127.0.0.1 4321 3128\r\n".to_vec(),
            200,
            "192.0.2.7:4321",
        ),
        (
            "v1-tcp6",
            b"PROXY TCP6 2001:db8::7 ::1 5555 3128\r\n".to_vec(),
            200,
            "[2001:db8::7]:5555",
        ),
        // The real peer is the client: not exempt from credentials.
        ("v1-unknown", b"PROXY UNKNOWN\r\n".to_vec(), 407, own),
        ("v2-tcp4", v2_tcp4([192, 0, 2, 8], 80), 200, "192.0.2.8:80"),
        (
            "v2-tcp6",
            v2_tcp6("2001:db8::8".parse().unwrap(), 443),
            200,
            "[2001:db8::8]:443",
        ),
        ("v2-local", v2(0x20, 0x00, &[]), 407, own),
    ];
    for (name, header, status, client) in &cases {
        let (got, real) = through(proxy.addr, header, &url(name));
        assert_eq!(got, *status, "{name}");
        let line = line_for(&log, &format!("/pp-{name}"));
        let client = if *client == own {
            real.as_str()
        } else {
            client
        };
        assert_eq!(line["client"], client, "{name}: {line}");
        assert_eq!(line["status"], *status, "{name}: {line}");
    }
    // --allow-client judges the carried address, before any request is read.
    let refused = b"PROXY TCP4 198.51.100.9 127.0.0.1 1000 3128\r\n";
    assert_eq!(through(proxy.addr, refused, &url("refused")).0, 403);
    let by_client = |l: &Value| l["client"] == "198.51.100.9:1000";
    let lines = log_when(&log, |ls| ls.iter().any(by_client));
    let line = lines.into_iter().find(by_client).unwrap();
    assert_eq!(line["status"], 403, "{line}");
    assert!(
        line["rule"]
            .as_str()
            .unwrap_or("")
            .contains("--allow-client"),
        "{line}"
    );

    // A header that arrives in pieces, the request bytes right behind its last piece.
    let mut c = Conn::connect(proxy.addr);
    c.stream.set_nodelay(true).unwrap();
    c.write(b"PROXY TCP4 192.0.2");
    thread::sleep(Duration::from_millis(100));
    c.write(b".9 127.0.0.1 9 3128\r");
    thread::sleep(Duration::from_millis(100));
    let mut rest = b"\n".to_vec();
    rest.extend(build_request("GET", &url("split"), &[], b""));
    c.write(&rest);
    assert_eq!(c.response().status(), 200);
    assert_eq!(line_for(&log, "/pp-split")["client"], "192.0.2.9:9");

    // Capture records and SOCKS clients get the carried address too.
    let records = records_when(&capture, WAIT, |r| {
        r.iter()
            .any(|r| r["request"]["url"] == url("v2-tcp4").as_str())
    });
    assert_eq!(
        record_of(&records, "GET", &url("v2-tcp4"))["client"],
        "192.0.2.8:80"
    );
    let mut socks = TcpStream::connect(proxy.addr).unwrap();
    socks.set_read_timeout(Some(WAIT)).unwrap();
    let mut hello = b"PROXY TCP4 192.0.2.66 127.0.0.1 6666 3128\r\n".to_vec();
    hello.extend_from_slice(&[5, 1, 0]);
    socks.write_all(&hello).unwrap();
    let mut reply = [0u8; 2];
    socks.read_exact(&mut reply).unwrap();
    assert_eq!(
        reply,
        [5, 0],
        "no credentials for an exempt carried address"
    );
    let mut ask = vec![5, 1, 0, 1, 127, 0, 0, 1];
    ask.extend_from_slice(&echo.port().to_be_bytes());
    socks.write_all(&ask).unwrap();
    let mut reply = [0u8; 10];
    socks.read_exact(&mut reply).unwrap();
    assert_eq!(reply[1], 0, "SOCKS5 CONNECT refused: {reply:?}");
    socks.write_all(b"ping").unwrap();
    socks.shutdown(Shutdown::Write).unwrap();
    let mut back = Vec::new();
    socks.read_to_end(&mut back).unwrap();
    assert_eq!(back, b"pingBYE");
    let lines = log_when(&log, |ls| ls.iter().any(|l| l["method"] == "SOCKS5"));
    let line = lines.iter().find(|l| l["method"] == "SOCKS5").unwrap();
    assert_eq!(line["client"], "192.0.2.66:6666", "{line}");

    // Health checks: a LOCAL header then a close, or a bare connect and close. Nothing is
    // logged and nothing counts as an error (checked with the bad headers below).
    let before = log_when(&log, |_| true).len();
    for check in [v2(0x20, 0x00, &[]), Vec::new()] {
        assert_eq!(closed_after(proxy.addr, &check, true), b"");
    }

    // Bad headers: closed without a byte of reply (the balancer is not an HTTP client), each
    // counted, stderr told of the 1st, 2nd and 4th.
    let mut oversized = v2(0x21, 0x11, &[0; 12]);
    oversized[14..16].copy_from_slice(&2000u16.to_be_bytes());
    let mut long = b"PROXY UNKNOWN ".to_vec();
    long.extend_from_slice(&[b'x'; 200]);
    let garbage = build_request("GET", &url("garbage"), &[], b"");
    let bad: [(&str, &[u8], &str); 4] = [
        (
            "truncated",
            &v2_tcp4([192, 0, 2, 1], 1)[..20],
            "closed inside the header",
        ),
        ("oversized", &oversized, "v2 header longer than 1024 bytes"),
        ("garbage", &garbage, "not a PROXY protocol header"),
        ("v1 too long", &long, "v1 header longer than 107 bytes"),
    ];
    for (name, bytes, _) in &bad {
        assert_eq!(closed_after(proxy.addr, bytes, true), b"", "{name}");
    }
    let fourth = proxy
        .wait_for_log(WAIT, "(4 so far)")
        .expect("the 4th bad header is reported");
    assert!(fourth.contains(bad[3].2), "{fourth}");
    let reported: Vec<String> = proxy
        .stderr_lines()
        .into_iter()
        .filter(|l| l.starts_with("PROXY protocol: "))
        .collect();
    assert_eq!(reported.len(), 3, "{reported:?}");
    for (line, (n, (_, _, why))) in reported.iter().zip([(1, bad[0]), (2, bad[1])]) {
        assert!(
            line.contains(why) && line.contains(&format!("({n} so far)")),
            "{line}"
        );
    }
    let lines = log_when(&log, |_| true);
    assert_eq!(
        lines.len(),
        before,
        "health checks or bad headers logged: {lines:?}"
    );
    // And the proxy goes on.
    let header = b"PROXY TCP4 192.0.2.10 127.0.0.1 10 3128\r\n";
    assert_eq!(through(proxy.addr, header, &url("after")).0, 200);
}

#[test]
fn a_header_that_never_comes_is_reported() {
    let proxy = Proxy::start(&[
        "--proxy-protocol-from",
        "127.0.0.1",
        "--header-timeout",
        "500ms",
    ]);
    assert_eq!(closed_after(proxy.addr, b"PROXY TCP4 ", false), b"");
    let line = proxy
        .wait_for_log(WAIT, "PROXY protocol: ")
        .expect("a line for the late header");
    assert!(line.contains("no header within --header-timeout"), "{line}");
    assert!(line.contains("(1 so far)"), "{line}");
}

#[test]
fn a_bad_network_is_refused_at_start() {
    let out = run_proxy(&["--proxy-protocol-from", "10.0.0.0/33"], WAIT);
    assert_eq!(out.code, Some(2), "{out:?}");
    assert_eq!(out.stderr.lines().count(), 1, "{out:?}");
    assert!(
        out.stderr.contains("--proxy-protocol-from") && out.stderr.contains("10.0.0.0/33"),
        "{out:?}"
    );
}

#[test]
fn a_header_from_a_peer_not_listed_is_not_believed() {
    let origin = Origin::echo();
    let dir = temp_dir("pp-untrusted");
    let log = dir.join("access.log");
    let proxy = Proxy::start(&[
        "--proxy-protocol-from",
        "127.0.0.2/32",
        "--access-log",
        s(&log),
        "--log-format",
        "json",
    ]);
    // From 127.0.0.1: the header is the start of a bad request.
    for header in [
        b"PROXY TCP4 192.0.2.7 127.0.0.1 4321 3128\r\n".to_vec(),
        v2_tcp4([192, 0, 2, 7], 4321),
    ] {
        let (status, real) = through(proxy.addr, &header, &origin.url("/pp-untrusted"));
        assert_eq!(status, 400);
        let lines = log_when(&log, |ls| ls.iter().any(|l| l["client"] == real.as_str()));
        let line = lines.iter().find(|l| l["client"] == real.as_str()).unwrap();
        assert_eq!(line["status"], 400, "{line}");
    }
    let all = log_when(&log, |_| true);
    assert!(
        all.iter()
            .all(|l| l["client"].as_str().unwrap().starts_with("127.0.0.1:")),
        "{all:?}"
    );
    // And a plain request from there is served as ever.
    assert_still_serving(proxy.addr, &origin);
}

/// A TLS listener's PROXY header comes before the ClientHello: curl speaks TLS to a relay of
/// the test's own that puts a v2 header in front of curl's bytes.
#[cfg(feature = "tls-server")]
#[test]
fn header_before_tls_on_a_tls_listener() {
    if !(need_tool("curl") && need_tool("openssl")) {
        return;
    }
    let origin = Origin::echo();
    let dir = temp_dir("pp-tls");
    let log = dir.join("access.log");
    let proxy = Proxy::start(&[
        "--listen-tls",
        "127.0.0.1:0",
        "--tls-cert",
        s(&pki().cert),
        "--tls-key",
        s(&pki().key),
        "--proxy-protocol-from",
        "127.0.0.1",
        "--access-log",
        s(&log),
        "--log-format",
        "json",
    ]);
    let relay = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let relay_addr = relay.local_addr().unwrap();
    let tls = proxy.tls_addrs[0];
    thread::spawn(move || {
        let (down, _) = relay.accept().unwrap();
        let mut up = TcpStream::connect(tls).unwrap();
        up.write_all(&v2_tcp4([192, 0, 2, 77], 7777)).unwrap();
        pipe(down.try_clone().unwrap(), up.try_clone().unwrap());
        pipe(up, down);
    });
    let out = curl(&[
        "--proxy",
        &format!("https://{relay_addr}"),
        "--proxy-cacert",
        s(&pki().ca),
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &origin.url("/pp-tls"),
    ]);
    assert_eq!(out.stdout, "200", "{out:?}");
    assert_eq!(line_for(&log, "/pp-tls")["client"], "192.0.2.77:7777");
}

/// Copies `from` to `to` on a thread until EOF, then half-closes `to`.
#[cfg(feature = "tls-server")]
fn pipe(mut from: TcpStream, mut to: TcpStream) {
    thread::spawn(move || {
        let _ = std::io::copy(&mut from, &mut to);
        let _ = to.shutdown(Shutdown::Write);
    });
}

// ---------------------------------------------------------------------------------------------
// haproxy in front of two instances
// ---------------------------------------------------------------------------------------------

/// curl from `source` through the balancer at `lb` to `url`: the status, 0 if none.
fn curl_from(source: &str, lb: SocketAddr, url: &str) -> u16 {
    let out = curl(&[
        "--interface",
        source,
        "--proxy",
        &format!("http://{lb}"),
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        url,
    ]);
    out.stdout.trim().parse().unwrap_or(0)
}

/// Whether an access log has a line from `source` with `status`.
fn logged(lines: &[Value], source: &str, status: u16) -> bool {
    lines.iter().any(|l| {
        l["status"] == status
            && l["client"]
                .as_str()
                .is_some_and(|c| c.starts_with(&format!("{source}:")))
    })
}

#[test]
fn haproxy_in_front_of_two_instances() {
    if !(need_tool("haproxy") && need_tool("curl")) {
        return;
    }
    let origin = Origin::echo();
    let dir = temp_dir("pp-haproxy");
    let logs = [dir.join("a.log"), dir.join("b.log")];
    let start = |log: &Path| {
        Proxy::start(&[
            "--proxy-protocol-from",
            "127.0.0.1/32",
            "--allow-client",
            "127.0.0.2/32",
            "--access-log",
            s(log),
            "--log-format",
            "json",
        ])
    };
    let mut instances = vec![start(&logs[0]), start(&logs[1])];
    let port = closed_port();
    let config = dir.join("haproxy.cfg");
    let server = |name: &str, p: &Proxy| {
        format!(
            "    server {name} {} send-proxy-v2 check check-send-proxy inter 200ms fall 1 rise 1\n",
            p.addr
        )
    };
    let text = format!(
        "global\n    maxconn 64\n\
         defaults\n    mode tcp\n    timeout connect 2s\n    timeout client 20s\n    \
         timeout server 20s\n    retries 3\n    option redispatch 1\n\
         frontend fe\n    bind 127.0.0.1:{port}\n    default_backend be\n\
         backend be\n    balance roundrobin\n{}{}",
        server("a", &instances[0]),
        server("b", &instances[1]),
    );
    std::fs::write(&config, text).unwrap();
    let mut cmd = Command::new("haproxy");
    cmd.args(["-db", "-f", s(&config)]);
    let _haproxy = Peer::start(cmd, port, &dir.join("haproxy.out"));
    let lb: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();

    // Round robin: a few requests from 127.0.0.2 reach both instances, which log 127.0.0.2.
    let mut n = 0;
    while !logs
        .iter()
        .all(|l| logged(&records_when(l, WAIT, |_| true), "127.0.0.2", 200))
    {
        assert!(n < 20, "both instances never answered 127.0.0.2");
        assert_eq!(
            curl_from("127.0.0.2", lb, &origin.url(&format!("/ha-{n}"))),
            200
        );
        n += 1;
    }
    // 127.0.0.3 is outside --allow-client, on either instance.
    for i in 0..2 {
        assert_eq!(
            curl_from("127.0.0.3", lb, &origin.url(&format!("/ha-no-{i}"))),
            403
        );
    }
    let all: Vec<Value> = logs
        .iter()
        .flat_map(|l| records_when(l, WAIT, |_| true))
        .collect();
    assert!(logged(&all, "127.0.0.3", 403), "{all:?}");
    // One instance dies; haproxy's checks (or a redispatch) send everyone to the other.
    drop(instances.remove(0));
    for i in 0..6 {
        assert_eq!(
            curl_from("127.0.0.2", lb, &origin.url(&format!("/ha-after-{i}"))),
            200,
            "request {i} after one instance died"
        );
    }
    let b = records_when(&logs[1], WAIT, |ls| {
        ls.iter()
            .filter(|l| l["target"].as_str().unwrap_or("").contains("/ha-after-"))
            .count()
            == 6
    });
    assert!(logged(&b, "127.0.0.2", 200));
    // haproxy's checks saw it go: they ran all along.
    let out = dir.join("haproxy.out");
    let deadline = Instant::now() + WAIT;
    while !std::fs::read_to_string(&out)
        .unwrap_or_default()
        .contains("be/a is DOWN")
    {
        assert!(Instant::now() < deadline, "haproxy never marked a down");
        thread::sleep(Duration::from_millis(20));
    }
    // A few more check rounds on the survivor.
    thread::sleep(Duration::from_secs(1));
    // The checks (v2 LOCAL from 127.0.0.1, which --allow-client does not admit) left no line
    // and no error. The one line from 127.0.0.1 at most is a real relayed client:
    // Peer::start's probe of the frontend, refused.
    let all: Vec<Value> = logs
        .iter()
        .flat_map(|l| records_when(l, WAIT, |_| true))
        .collect();
    let from_lb = all
        .iter()
        .filter(|l| l["client"].as_str().unwrap().starts_with("127.0.0.1:"))
        .count();
    assert!(from_lb <= 1, "{all:?}");
    let lines = instances[0].stderr_lines();
    assert!(
        lines.iter().all(|l| !l.contains("PROXY protocol")),
        "{lines:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Several processes on one port
// ---------------------------------------------------------------------------------------------

/// Whether process `pid` holds a socket listening on TCP port `port` (from /proc).
fn listening(pid: u32, port: u16) -> bool {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let sockets: Vec<String> = table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let local = u16::from_str_radix(f.get(1)?.rsplit(':').next()?, 16).ok()?;
            match (local == port, f.get(3), f.get(9)) {
                (true, Some(&"0A"), Some(inode)) => Some(format!("socket:[{inode}]")),
                _ => None,
            }
        })
        .collect();
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        std::fs::read_link(fd.path())
            .is_ok_and(|t| sockets.iter().any(|s| t.to_str() == Some(s.as_str())))
    })
}

#[test]
fn reuse_port_shares_a_port_and_one_process_drains() {
    let dir = temp_dir("pp-reuse");
    let logs = [dir.join("a.log"), dir.join("b.log")];
    // The download's second half waits for the test's word, so it is surely in flight when
    // its process is told to stop.
    let release = Arc::new(AtomicBool::new(false));
    let body = pattern(200_000, 14);
    let (release2, body2) = (release.clone(), body.clone());
    let origin = Origin::start(move |head, conn| {
        if head.target() != "/slow" {
            return echo_handler(head, conn);
        }
        let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body2.len());
        conn.write(head.as_bytes());
        conn.write(&body2[..100_000]);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !release2.load(Ordering::SeqCst) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        conn.write(&body2[100_000..]);
        false
    });
    let args = |log: &Path, listen: String| {
        vec![
            "--reuse-port".to_string(),
            "--listen".into(),
            listen,
            "--access-log".into(),
            s(log).into(),
            "--log-format".into(),
            "json".into(),
        ]
    };
    let start = |a: Vec<String>| Proxy::start(&a.iter().map(String::as_str).collect::<Vec<_>>());
    let mut a = start(args(&logs[0], "127.0.0.1:0".into()));
    let addr = a.addr;

    // The download starts on the first process, the only one yet.
    let mut download = Conn::connect(addr);
    download.write(&build_request("GET", &origin.url("/slow"), &[], b""));
    let head = download.read_head().unwrap().expect("a response head");
    assert_eq!(head.status(), 200);

    let b = start(args(&logs[1], addr.to_string()));
    assert_eq!(b.addr, addr);
    assert!(listening(a.pid(), addr.port()) && listening(b.pid(), addr.port()));
    // The kernel spreads connections by their addresses: both processes get some.
    let mut n = 0;
    while !logs.iter().all(|l| {
        records_when(l, WAIT, |_| true)
            .iter()
            .any(|v| v["target"].as_str().unwrap_or("").contains("/spread-"))
    }) {
        assert!(n < 200, "one process never got a connection");
        assert_eq!(
            get(addr, &origin.url(&format!("/spread-{n}"))).status(),
            200
        );
        n += 1;
    }

    // SIGTERM to the first: it closes its listener and drains; the second takes every new
    // connection meanwhile, and the download completes.
    a.signal("TERM");
    let deadline = Instant::now() + WAIT;
    while listening(a.pid(), addr.port()) {
        assert!(
            Instant::now() < deadline,
            "the stopping process still listens"
        );
        thread::sleep(Duration::from_millis(10));
    }
    for i in 0..5 {
        assert_eq!(get(addr, &origin.url(&format!("/after-{i}"))).status(), 200);
    }
    release.store(true, Ordering::SeqCst);
    let got = download.read_body(&head).expect("the rest of the download");
    assert_eq!(got.len(), body.len());
    assert_eq!(fnv64(&got), fnv64(&body));
    let status = a.wait_exit(WAIT).expect("the drained process exits");
    assert!(status.success(), "{status}");
    let after = |v: &Value| v["target"].as_str().unwrap_or("").contains("/after-");
    let b_lines = records_when(&logs[1], WAIT, |ls| {
        ls.iter().filter(|v| after(v)).count() == 5
    });
    assert_eq!(b_lines.iter().filter(|v| after(v)).count(), 5);
    let a_lines = records_when(&logs[0], WAIT, |ls| {
        ls.iter()
            .any(|v| v["target"].as_str().unwrap_or("").ends_with("/slow"))
    });
    assert!(!a_lines.iter().any(after), "{a_lines:?}");
    let slow = a_lines
        .iter()
        .find(|v| v["target"].as_str().unwrap_or("").ends_with("/slow"))
        .unwrap();
    assert_eq!(slow["status"], 200);
    assert!(
        slow["bytes_down"].as_u64().unwrap() >= body.len() as u64,
        "{slow}"
    );
}

#[test]
fn a_taken_port_without_reuse_port_is_an_error() {
    // SO_REUSEPORT shares a port only among sockets that all ask for it.
    let with = Proxy::start(&["--reuse-port"]);
    let without = Proxy::start(&[]);
    let (with, without) = (with.addr.to_string(), without.addr.to_string());
    for (addr, reuse) in [(&with, false), (&without, true)] {
        let mut args = vec!["--listen", addr.as_str()];
        if reuse {
            args.push("--reuse-port");
        }
        let out = run_proxy(&args, WAIT);
        assert_eq!(out.code, Some(1), "{out:?}");
        let lines: Vec<&str> = out.stderr.lines().collect();
        assert_eq!(
            lines,
            [format!(
                "smolproxy: cannot listen on {addr}: address already in use"
            )],
            "{out:?}"
        );
    }
}

//! SOCKS5 and SOCKS4a on the proxy's own port (SPEC §11), end to end: real curl with
//! `--socks5`, `--socks5-hostname` and `--socks4a` against the same users and rules as HTTP
//! clients; UDP ASSOCIATE driven byte by byte by a small client here; tinyproxy and microsocks
//! as upstreams; malformed and cut handshakes over raw sockets; `--socks off`; capture records;
//! headless Chromium with `--proxy-server=socks5://`.
//!
//! Everything runs on loopback; the only name resolved is `localhost` (from /etc/hosts). The
//! SOCKS messages are written out as bytes here (RFC 1928, RFC 1929, SOCKS4a), not taken from
//! the proxy's source, so a test sees exactly what a client sees.

mod common;

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, UdpSocket};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// How long the proxy may take to close a refused, broken or finished handshake, to write a
/// log line or a capture record, or to let go of a relay.
const CLOSE_WAIT: Duration = Duration::from_secs(5);
/// How long a datagram that must arrive may take.
const DATAGRAM_WAIT: Duration = Duration::from_secs(5);
/// How long to listen for a datagram that must not arrive (after a later one that must has
/// already come back, so the proxy has handled the earlier one).
const SILENCE: Duration = Duration::from_millis(300);

// ---------------------------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------------------------

/// ATYP, address and port of `addr` (RFC 1928 §5).
fn addr_bytes(addr: SocketAddr) -> Vec<u8> {
    let mut out = match addr.ip() {
        IpAddr::V4(ip) => [&[1u8][..], &ip.octets()].concat(),
        IpAddr::V6(ip) => [&[4u8][..], &ip.octets()].concat(),
    };
    out.extend_from_slice(&addr.port().to_be_bytes());
    out
}

/// ATYP 3, the name and the port.
fn name_bytes(name: &str, port: u16) -> Vec<u8> {
    let mut out = vec![3, name.len() as u8];
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(&port.to_be_bytes());
    out
}

/// A SOCKS5 request: command (1 CONNECT, 2 BIND, 3 UDP ASSOCIATE) and destination bytes.
fn ask5(command: u8, dest: &[u8]) -> Vec<u8> {
    [&[5, command, 0][..], dest].concat()
}

/// A SOCKS4 CONNECT with user id `u`: to `ip`, or with 4a to `name`.
fn ask4(port: u16, ip: Ipv4Addr, name: Option<&str>) -> Vec<u8> {
    let mut out = vec![4, 1];
    out.extend_from_slice(&port.to_be_bytes());
    match name {
        Some(name) => {
            out.extend_from_slice(&[0, 0, 0, 1]);
            out.extend_from_slice(b"u\0");
            out.extend_from_slice(name.as_bytes());
            out.push(0);
        }
        None => {
            out.extend_from_slice(&ip.octets());
            out.extend_from_slice(b"u\0");
        }
    }
    out
}

/// The username/password message (RFC 1929 §2).
fn userpass(user: &[u8], pass: &[u8]) -> Vec<u8> {
    [&[1, user.len() as u8][..], user, &[pass.len() as u8], pass].concat()
}

/// Offers "no authentication" and requires the proxy to choose it.
fn greet(conn: &mut Conn) {
    conn.write(&[5, 1, 0]);
    assert_eq!(conn.read_exact(2).unwrap(), [5, 0], "method selection");
}

/// Reads a SOCKS5 reply: its code and BND.ADDR/BND.PORT.
fn reply5(conn: &mut Conn) -> (u8, SocketAddr) {
    let head = conn.read_exact(4).unwrap();
    assert_eq!((head[0], head[2]), (5, 0), "reply head {head:?}");
    let ip = match head[3] {
        1 => {
            let b = conn.read_exact(4).unwrap();
            IpAddr::from([b[0], b[1], b[2], b[3]])
        }
        4 => {
            let b: [u8; 16] = conn.read_exact(16).unwrap().try_into().unwrap();
            IpAddr::from(Ipv6Addr::from(b))
        }
        other => panic!("reply with address type {other}"),
    };
    let p = conn.read_exact(2).unwrap();
    (
        head[1],
        SocketAddr::new(ip, u16::from_be_bytes([p[0], p[1]])),
    )
}

/// Everything the proxy sends until it closes; panics if it has not closed by [`CLOSE_WAIT`].
fn until_closed(conn: &mut Conn) -> Vec<u8> {
    conn.set_timeout(CLOSE_WAIT);
    let started = Instant::now();
    conn.read_to_end().unwrap_or_else(|e| {
        panic!(
            "the proxy did not close within {:?} ({e}); got {}",
            started.elapsed(),
            show(conn.buffered())
        )
    })
}

// ---------------------------------------------------------------------------------------------
// What the proxy said
// ---------------------------------------------------------------------------------------------

/// Runs `f`, then waits for one more stderr line containing `needle` than there was before,
/// and returns what `f` returned and that line.
fn logged<T>(proxy: &Proxy, needle: &str, f: impl FnOnce() -> T) -> (T, String) {
    let matching = || -> Vec<String> {
        let lines = proxy.stderr_lines();
        lines.into_iter().filter(|l| l.contains(needle)).collect()
    };
    let before = matching().len();
    let out = f();
    let deadline = Instant::now() + CLOSE_WAIT;
    loop {
        if let Some(line) = matching().get(before) {
            return (out, line.clone());
        }
        assert!(
            Instant::now() < deadline,
            "no new line with {needle:?}; stderr: {:#?}",
            proxy.stderr_lines()
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// An access-log line's fields: time, client, user, method, target, status, up, down,
/// duration, route, then the rule (quoted, may hold spaces).
fn fields(line: &str) -> Vec<&str> {
    line.splitn(11, ' ').collect()
}

/// The capture file's records once there are `n` tunnel records; panics after [`CLOSE_WAIT`].
fn tunnel_records(capture: &std::path::Path, n: usize) -> Vec<Value> {
    let tunnel = |r: &&Value| r["type"] == "tunnel";
    records_when(capture, CLOSE_WAIT, |r| {
        r.iter().filter(tunnel).count() >= n
    })
    .into_iter()
    .filter(|r| r["type"] == "tunnel")
    .collect()
}

// ---------------------------------------------------------------------------------------------
// curl: credentials and rules
// ---------------------------------------------------------------------------------------------

/// The same users as HTTP: SOCKS5 (addresses and names) with username/password, SOCKS4a
/// refused where credentials are needed, and an `--auth-exempt` client needing none of it.
#[test]
fn curl_socks5_socks5h_and_socks4a_with_and_without_credentials() {
    if !need_tool("curl") {
        return;
    }
    let origin = Origin::echo();
    let users = [("SMOLPROXY_AUTH", "ann:s3cret")];
    let strict = Proxy::start_with_env(&["--connect-ports", "any"], &users);
    let exempt = Proxy::start_with_env(
        &["--connect-ports", "any", "--auth-exempt", "127.0.0.1/32"],
        &users,
    );
    // The flag, the host curl names (socks5-hostname and socks4a send the name, and the
    // proxy resolves it), and the method the access log shows.
    let flavours = [
        ("--socks5", "127.0.0.1", "SOCKS5"),
        ("--socks5-hostname", "localhost", "SOCKS5"),
        ("--socks4a", "localhost", "SOCKS4"),
    ];
    let credentials = [
        ("right", Some("ann:s3cret")),
        ("wrong", Some("ann:nope")),
        ("missing", None),
    ];
    for (proxy, is_exempt) in [(&strict, false), (&exempt, true)] {
        let at = proxy.addr.to_string();
        for (flag, host, method) in flavours {
            for (which, user) in credentials {
                let case = format!("{flag}, {which} credentials, exempt: {is_exempt}");
                let path = format!("/{}/{which}", flag.trim_start_matches('-'));
                let url = format!("http://{host}:{}{path}", origin.port());
                let mut args = vec![flag, at.as_str()];
                if let Some(user) = user {
                    args.extend(["--proxy-user", user]);
                }
                args.push(&url);
                let before = origin.requests();
                let (out, line) = logged(proxy, " SOCKS", || curl(&args));
                let f = fields(&line);
                assert_eq!(f[3], method, "{case}: {line}");
                let works = is_exempt || (method == "SOCKS5" && which == "right");
                if works {
                    assert_eq!(out.code, Some(0), "{case}: {out:?}");
                    assert_eq!(out.stdout, format!("GET {path}"), "{case}");
                    assert_eq!(origin.last().head.target(), path, "{case}");
                    let target = format!("{host}:{}", origin.port());
                    assert_eq!((f[4], f[5], f[9]), (&*target, "200", "direct"), "{line}");
                    if !is_exempt {
                        assert_eq!(f[2], "ann", "{case}: the user is logged: {line}");
                    }
                    continue;
                }
                // curl reports a refusal by the SOCKS server as CURLE_PROXY (97).
                assert_eq!(out.code, Some(97), "{case}: {out:?}");
                assert_eq!(origin.requests(), before, "{case}: the origin was reached");
                assert_eq!(f[5], "407", "{case}: {line}");
                let why = match (method, which) {
                    ("SOCKS4", _) => "SOCKS4 carries no password and credentials are needed",
                    (_, "wrong") => "proxy credentials wrong",
                    _ => "no acceptable SOCKS5 method: credentials are needed",
                };
                assert!(line.contains(why), "{case}: {line}");
                if method == "SOCKS4" {
                    // 0x5B, "request rejected or failed".
                    assert!(out.stderr.contains("(91)"), "{case}: {}", out.stderr);
                }
            }
        }
    }
}

/// `--allow-client`, `--deny`, `--block-private` (after DNS, on a name the proxy resolves) and
/// the authorization service judge SOCKS clients as they judge HTTP ones.
#[test]
fn allow_client_deny_block_private_and_authz_apply_to_socks() {
    if !need_tool("curl") {
        return;
    }
    let origin = Origin::echo();
    let other = Origin::echo();

    // A client outside --allow-client gets the 403 an HTTP client gets, before anything is
    // read from it: not a SOCKS reply, so curl gives up.
    let outsider = Proxy::start(&["--connect-ports", "any", "--allow-client", "10.0.0.0/8"]);
    let at = outsider.addr.to_string();
    let (out, line) = logged(&outsider, "--allow-client", || {
        curl(&["--socks5", &at, &origin.url("/")])
    });
    assert_eq!(out.code, Some(97), "{out:?}");
    assert_eq!(fields(&line)[5], "403", "{line}");
    assert!(
        line.contains("client 127.0.0.1 is not in --allow-client"),
        "{line}"
    );
    let raw = send_raw(outsider.addr, &[5, 1, 0]);
    assert!(raw.starts_with(b"HTTP/1.1 403 "), "{}", show(&raw));

    // --deny on the destination, named by address or by a name that resolves to it: reply
    // 0x02, which curl prints; another port is not denied.
    let denying = Proxy::start(&["--connect-ports", "any", "--deny", &origin.authority()]);
    let at = denying.addr.to_string();
    for (flag, host, because) in [
        ("--socks5", "127.0.0.1", "(127.0.0.1)"),
        (
            "--socks5-hostname",
            "localhost",
            "(localhost resolves to 127.0.0.1)",
        ),
    ] {
        let url = format!("http://{host}:{}/", origin.port());
        let (out, line) = logged(&denying, " SOCKS5 ", || curl(&[flag, &at, &url]));
        assert_eq!(out.code, Some(97), "{flag}: {out:?}");
        assert!(out.stderr.contains("(2)"), "{flag}: {}", out.stderr);
        let f = fields(&line);
        assert_eq!(
            (f[4], f[5]),
            (&*format!("{host}:{}", origin.port()), "403"),
            "{line}"
        );
        let rule = format!("denied by --deny {} {because}", origin.authority());
        assert!(line.contains(&rule), "{flag}: {line}");
    }
    let out = curl(&["--socks5", &at, &other.url("/other")]);
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (Some(0), "GET /other"),
        "{out:?}"
    );

    // The authorization service is asked about https://host:port with method CONNECT; its
    // "no" is reply 0x02.
    let service = Origin::start(|head, conn| {
        let _ = conn.read_body(head);
        conn.respond(
            "403 Forbidden",
            &[("Content-Type", "application/json")],
            br#"{"allowed":false}"#,
        );
        false
    });
    let asking = Proxy::start(&[
        "--connect-ports",
        "any",
        "--authz-url",
        &service.url("/validate"),
    ]);
    let url = format!("http://localhost:{}/", origin.port());
    let out = curl(&["--socks5-hostname", &asking.addr.to_string(), &url]);
    assert_eq!(out.code, Some(97), "{out:?}");
    assert!(out.stderr.contains("(2)"), "{}", out.stderr);
    let asked = questions(&service);
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert_eq!(
        (asked[0]["url"].as_str(), asked[0]["method"].as_str()),
        (
            Some(format!("https://localhost:{}", origin.port()).as_str()),
            Some("CONNECT")
        ),
        "{}",
        asked[0]
    );
    assert_eq!(origin.requests(), 0, "the origin was reached");

    // --block-private on a name the proxy resolves to loopback, where DNS goes nowhere.
    let Some(mut cmd) = without_dns(bin()) else {
        return;
    };
    cmd.args(["--listen", "127.0.0.1:0", "--connect-ports", "any"])
        .arg("--block-private");
    let guarded = Proxy::spawn(cmd);
    let url = format!("http://localhost:{}/", origin.port());
    let (out, line) = logged(&guarded, " SOCKS5 ", || {
        curl(&["--socks5-hostname", &guarded.addr.to_string(), &url])
    });
    assert_eq!(out.code, Some(97), "{out:?}");
    assert_eq!(fields(&line)[5], "403", "{line}");
    assert!(
        line.contains("denied by --block-private (localhost resolves to 127.0.0.1"),
        "{line}"
    );
    let mut conn = Conn::connect(guarded.addr);
    greet(&mut conn);
    conn.write(&ask5(1, &name_bytes("localhost", origin.port())));
    assert_eq!(
        reply5(&mut conn).0,
        0x02,
        "connection not allowed by ruleset"
    );
    until_closed(&mut conn);
    assert_eq!(origin.requests(), 0, "the origin was reached");
}

// ---------------------------------------------------------------------------------------------
// UDP ASSOCIATE
// ---------------------------------------------------------------------------------------------

/// A UDP echo server on 127.0.0.x: every datagram goes back to its sender, and its payload is
/// remembered. Its thread lives as long as the test process.
struct UdpEcho {
    /// Where it listens.
    addr: SocketAddr,
    /// Every payload received, in order.
    got: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl UdpEcho {
    /// An echo on `ip`, port 0.
    fn on(ip: &str) -> UdpEcho {
        let socket = UdpSocket::bind((ip, 0)).unwrap();
        let addr = socket.local_addr().unwrap();
        let got = Arc::new(Mutex::new(Vec::new()));
        let record = got.clone();
        thread::spawn(move || {
            let mut buf = vec![0u8; 65_536];
            while let Ok((n, from)) = socket.recv_from(&mut buf) {
                record.lock().unwrap().push(buf[..n].to_vec());
                let _ = socket.send_to(&buf[..n], from);
            }
        });
        UdpEcho { addr, got }
    }

    /// The payloads received so far, as text.
    fn got(&self) -> Vec<String> {
        let got = self.got.lock().unwrap();
        got.iter()
            .map(|d| String::from_utf8_lossy(d).into_owned())
            .collect()
    }
}

/// A client UDP socket on 127.0.0.1.
fn udp_client() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0").unwrap()
}

/// Opens an association (no credentials) whose request names `client` (RFC 1928 §6: the
/// address the client will send from; 0.0.0.0:0 when it does not know); returns the control
/// connection and the relay's address.
fn associate(proxy: SocketAddr, client: SocketAddr) -> (Conn, SocketAddr) {
    let mut control = Conn::connect(proxy);
    greet(&mut control);
    control.write(&ask5(3, &addr_bytes(client)));
    let (code, relay) = reply5(&mut control);
    assert_eq!(code, 0, "UDP ASSOCIATE refused");
    (control, relay)
}

/// A datagram for the relay (RFC 1928 §7): RSV, FRAG, the destination, the payload.
fn wrap(frag: u8, dest: &[u8], payload: &[u8]) -> Vec<u8> {
    [&[0, 0, frag][..], dest, payload].concat()
}

/// The next datagram on `socket` within `wait`, if any.
fn receive(socket: &UdpSocket, wait: Duration) -> Option<Vec<u8>> {
    socket.set_read_timeout(Some(wait)).unwrap();
    let mut buf = vec![0u8; 65_536];
    let (n, _) = socket.recv_from(&mut buf).ok()?;
    Some(buf[..n].to_vec())
}

/// Sends `payload` for `dest` through `relay` and returns the answer unwrapped: who it names
/// as the sender, and the payload.
fn round_trip(
    client: &UdpSocket,
    relay: SocketAddr,
    dest: &[u8],
    payload: &str,
) -> (SocketAddr, String) {
    client
        .send_to(&wrap(0, dest, payload.as_bytes()), relay)
        .unwrap();
    let back = receive(client, DATAGRAM_WAIT)
        .unwrap_or_else(|| panic!("no answer to {payload:?} within {DATAGRAM_WAIT:?}"));
    assert_eq!(
        (back[0], back[1], back[2], back[3]),
        (0, 0, 0, 1),
        "{back:?}"
    );
    let from = SocketAddr::from((
        [back[4], back[5], back[6], back[7]],
        u16::from_be_bytes([back[8], back[9]]),
    ));
    (from, String::from_utf8_lossy(&back[10..]).into_owned())
}

/// The inode of the UDP socket bound to `addr` (an IPv4 address), from /proc/net/udp.
fn udp_inode(addr: SocketAddr) -> Option<String> {
    let IpAddr::V4(ip) = addr.ip() else {
        panic!("IPv4 only: {addr}")
    };
    // The address as the kernel prints it: the four bytes in host (little-endian) order.
    let local = format!(
        "{:08X}:{:04X}",
        u32::from_le_bytes(ip.octets()),
        addr.port()
    );
    let table = std::fs::read_to_string("/proc/net/udp").unwrap();
    table.lines().skip(1).find_map(|line| {
        let cols: Vec<&str> = line.split_whitespace().collect();
        (cols.get(1) == Some(&local.as_str())).then(|| cols[9].to_string())
    })
}

/// Whether process `pid` holds the socket with this inode.
fn holds_socket(pid: u32, inode: &str) -> bool {
    let want = format!("socket:[{inode}]");
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap();
    fds.flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .any(|target| target.to_string_lossy() == want)
}

/// Datagrams both ways, by address and by name; only the client's address may use the relay;
/// fragments are dropped; the relay ends, and its socket closes, with the control connection.
#[test]
fn udp_associate_relays_datagrams_for_the_client_only() {
    let echo = UdpEcho::on("127.0.0.1");
    let proxy = Proxy::start(&[]);
    let client = udp_client();
    let (control, relay) = associate(proxy.addr, "0.0.0.0:0".parse().unwrap());
    // The relay listens on the address the client reached the proxy at.
    assert_eq!(relay.ip(), IpAddr::from([127, 0, 0, 1]), "{relay}");
    assert_ne!(relay.port(), 0);

    // Both ways; the answer's header names the echo server, also when the client named it.
    let by_name = name_bytes("localhost", echo.addr.port());
    for (dest, payload) in [(addr_bytes(echo.addr), "by address"), (by_name, "by name")] {
        assert_eq!(
            round_trip(&client, relay, &dest, payload),
            (echo.addr, payload.to_string())
        );
    }
    // The first datagram fixed the client's port: another port of the same address is not the
    // client, and is not a destination the client sent to either. A fragment is dropped too.
    let intruder = udp_client();
    let to_echo = addr_bytes(echo.addr);
    intruder
        .send_to(&wrap(0, &to_echo, b"intruder"), relay)
        .unwrap();
    client
        .send_to(&wrap(1, &to_echo, b"fragment"), relay)
        .unwrap();
    // Datagrams are handled in order: once this one is answered, those two were handled.
    assert_eq!(
        round_trip(&client, relay, &to_echo, "after").1,
        "after".to_string()
    );
    assert_eq!(
        receive(&intruder, SILENCE),
        None,
        "the intruder got an answer"
    );
    assert_eq!(echo.got(), ["by address", "by name", "after"]);

    // Closing the control connection ends the relay: its socket leaves the process, and a
    // datagram to its old port goes nowhere.
    let inode = udp_inode(relay).expect("the relay's socket in /proc/net/udp");
    assert!(
        holds_socket(proxy.pid(), &inode),
        "the relay is not the proxy's"
    );
    drop(control);
    let deadline = Instant::now() + CLOSE_WAIT;
    while holds_socket(proxy.pid(), &inode) {
        assert!(
            Instant::now() < deadline,
            "the relay's socket is still open {CLOSE_WAIT:?} after the control connection closed"
        );
        thread::sleep(Duration::from_millis(20));
    }
    client
        .send_to(&wrap(0, &to_echo, b"too late"), relay)
        .unwrap();
    assert_eq!(receive(&client, SILENCE), None);
    // One access-log line for the association: the relay's address and the payload bytes.
    let line = proxy
        .wait_for_log(CLOSE_WAIT, " SOCKS5-UDP ")
        .expect("the association's log line");
    let f = fields(&line);
    let bytes = ("by address".len() + "by name".len() + "after".len()).to_string();
    assert_eq!(
        (f[4], f[5], f[6], f[7]),
        (&*relay.to_string(), "200", &*bytes, &*bytes),
        "{line}"
    );
    assert_eq!(echo.got(), ["by address", "by name", "after"]);

    // A request naming the client's port: only that port is the client, even first.
    let named = udp_client();
    let (_control, relay) = associate(proxy.addr, named.local_addr().unwrap());
    intruder
        .send_to(&wrap(0, &to_echo, b"first, from elsewhere"), relay)
        .unwrap();
    assert_eq!(round_trip(&named, relay, &to_echo, "named").1, "named");
    assert_eq!(receive(&intruder, SILENCE), None);
    assert!(
        !echo.got().iter().any(|g| g == "first, from elsewhere"),
        "{:?}",
        echo.got()
    );
}

/// Each destination passes the egress rules, and UDP goes direct only: a destination whose
/// route is an upstream is dropped with a line on stderr.
#[test]
fn udp_destinations_pass_the_policy_and_go_direct_only() {
    let echo = UdpEcho::on("127.0.0.1");
    let denied = UdpEcho::on("127.0.0.1");
    let client = udp_client();
    let proxy = Proxy::start(&["--deny", &denied.addr.to_string()]);
    let (_control, relay) = associate(proxy.addr, "0.0.0.0:0".parse().unwrap());
    client
        .send_to(&wrap(0, &addr_bytes(denied.addr), b"denied"), relay)
        .unwrap();
    assert_eq!(
        round_trip(&client, relay, &addr_bytes(echo.addr), "allowed").1,
        "allowed"
    );
    assert!(denied.got().is_empty(), "{:?}", denied.got());
    let why = format!("denied by --deny {}", denied.addr);
    let line = proxy
        .wait_for_log(CLOSE_WAIT, &why)
        .expect("a line saying why");
    assert!(line.starts_with("socks: UDP from 127.0.0.1:"), "{line}");

    // With an upstream, only what --bypass sends direct is relayed. (Nothing listens on the
    // upstream's port: UDP never goes there.) The echo that is bypassed is on 127.0.0.2.
    let bypassed = UdpEcho::on("127.0.0.2");
    let proxy = Proxy::start(&[
        "--upstream",
        &format!("http://127.0.0.1:{}", closed_port()),
        "--bypass",
        "127.0.0.2",
    ]);
    let (_control, relay) = associate(proxy.addr, "0.0.0.0:0".parse().unwrap());
    client
        .send_to(&wrap(0, &addr_bytes(echo.addr), b"to the upstream"), relay)
        .unwrap();
    let dest = addr_bytes(bypassed.addr);
    assert_eq!(
        round_trip(&client, relay, &dest, "bypassed"),
        (bypassed.addr, "bypassed".to_string())
    );
    assert_eq!(
        echo.got(),
        ["allowed"],
        "a datagram went to the upstream's destination"
    );
    let why = format!(
        "UDP to {}: its route is an upstream proxy, and UDP goes direct only",
        echo.addr
    );
    assert!(proxy.wait_for_log(CLOSE_WAIT, &why).is_some());
}

/// RFC 1928 §6: in a UDP ASSOCIATE request, DST.ADDR and DST.PORT are where the *client* will
/// send from, not a destination; the proxy uses DST.PORT that way, but also judges the
/// client's own address as if it were a destination, so with an upstream configured a
/// client that names itself (as RFC clients do) is refused 0x02 though its destinations would
/// be relayed.
#[test]
fn udp_associate_naming_the_client_is_not_judged_as_a_destination() {
    let bypassed = UdpEcho::on("127.0.0.2");
    let proxy = Proxy::start(&[
        "--upstream",
        &format!("http://127.0.0.1:{}", closed_port()),
        "--bypass",
        "127.0.0.2",
    ]);
    let client = udp_client();
    let (_control, relay) = associate(proxy.addr, client.local_addr().unwrap());
    let dest = addr_bytes(bypassed.addr);
    assert_eq!(round_trip(&client, relay, &dest, "mine").1, "mine");
}

// ---------------------------------------------------------------------------------------------
// Upstreams
// ---------------------------------------------------------------------------------------------

/// Waits until `what` holds for the peer's log, which it writes as it goes.
fn peer_logged(dir: &std::path::Path, name: &str, peer: &Peer, what: impl Fn(&str) -> bool) {
    let deadline = Instant::now() + CLOSE_WAIT;
    while !what(&peer_log(dir, name, peer)) {
        assert!(
            Instant::now() < deadline,
            "{name} did not log it: {}",
            peer_log(dir, name, peer)
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// SOCKS in, then an HTTP upstream (tinyproxy, by CONNECT) or a SOCKS5 upstream with a
/// password (microsocks); `--bypass` sends one destination direct, past the upstream.
#[test]
fn socks_clients_through_tinyproxy_and_microsocks_upstreams() {
    if !need_tool("curl") || !need_tool("tinyproxy") || !need_tool("microsocks") {
        return;
    }
    let dir = temp_dir("socks-upstreams");
    let origin = Origin::echo();
    let direct = Origin::echo();
    let tiny = tinyproxy(&dir, Some(("ann", "s3cret")));
    let socks = microsocks(&dir, "bob", "pw");
    let hops = [
        ("tinyproxy", &tiny, "http", "ann:s3cret"),
        ("microsocks", &socks, "socks5", "bob:pw"),
    ];
    for (name, peer, scheme, user) in hops {
        let upstream = format!("{scheme}://{user}@{}", peer.authority());
        let proxy = Proxy::start(&[
            "--connect-ports",
            "any",
            "--upstream",
            &upstream,
            "--bypass",
            &direct.authority(),
        ]);
        let at = proxy.addr.to_string();
        let path = format!("/through-{name}");
        let (out, line) = logged(&proxy, " SOCKS5 ", || {
            curl(&["--socks5-hostname", &at, &origin.url(&path)])
        });
        assert_eq!(out.code, Some(0), "{name}: {out:?}");
        assert_eq!(out.stdout, format!("GET {path}"), "{name}");
        assert_eq!(origin.last().head.target(), path);
        let route = format!("upstream:{scheme}://{}", peer.authority());
        assert_eq!(fields(&line)[9], route, "{name}: {line}");
        // The upstream opened that tunnel.
        let needle = match name {
            "tinyproxy" => format!("CONNECT {} HTTP/1.1", origin.authority()),
            _ => format!("connected to {}", origin.authority()),
        };
        peer_logged(&dir, name, peer, |log| log.contains(&needle));

        // The bypassed destination goes direct: the upstream never hears of it.
        let (out, line) = logged(&proxy, " SOCKS5 ", || {
            curl(&["--socks5", &at, &direct.url("/direct")])
        });
        assert_eq!(
            (out.code, out.stdout.as_str()),
            (Some(0), "GET /direct"),
            "{name}: {out:?}"
        );
        assert_eq!(fields(&line)[9], "direct", "{name}: {line}");
        let port = direct.port().to_string();
        assert!(
            !peer_log(&dir, name, peer).contains(&port),
            "{name} saw the bypassed destination: {}",
            peer_log(&dir, name, peer)
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Malformed, cut and long messages
// ---------------------------------------------------------------------------------------------

/// Each malformed request gets its RFC 1928 reply code and a close; a first byte that is not
/// 4 or 5 is HTTP; the proxy goes on serving.
#[test]
fn malformed_requests_get_their_reply_code_then_a_close() {
    let origin = Origin::echo();
    let proxy = Proxy::start(&["--connect-ports", "any", "--header-timeout", "1s"]);
    let dest = addr_bytes(origin.addr);
    let cases: [(&str, Vec<u8>, u8); 5] = [
        ("ATYP 9", vec![5, 1, 0, 9, 127, 0, 0, 1, 0, 80], 0x08),
        ("a name of length 0", vec![5, 1, 0, 3, 0, 0, 80], 0x04),
        ("a name with a space", ask5(1, &name_bytes("a b", 80)), 0x04),
        ("BIND", ask5(2, &dest), 0x07),
        ("command 9", ask5(9, &dest), 0x07),
    ];
    for (what, request, code) in cases {
        let mut conn = Conn::connect(proxy.addr);
        greet(&mut conn);
        conn.write(&request);
        let (got, bound) = reply5(&mut conn);
        assert_eq!(got, code, "{what}");
        assert_eq!(bound, "0.0.0.0:0".parse().unwrap(), "{what}");
        assert_eq!(until_closed(&mut conn), b"", "{what}");
    }
    // SOCKS4a with an empty name: rejected (0x5B).
    let mut conn = Conn::connect(proxy.addr);
    conn.write(&ask4(80, Ipv4Addr::UNSPECIFIED, Some("")));
    assert_eq!(until_closed(&mut conn), [0, 0x5b, 0, 0, 0, 0, 0, 0]);
    // Version 6 is not SOCKS: it is read as HTTP, and is not a request line.
    let mut conn = Conn::connect(proxy.addr);
    conn.write(&[6, 1, 0]);
    conn.shutdown_write();
    let raw = until_closed(&mut conn);
    assert!(raw.starts_with(b"HTTP/1.1 400 "), "{}", show(&raw));
    // Zero methods: closed (see also the ignored test below for what comes first).
    let mut conn = Conn::connect(proxy.addr);
    conn.write(&[5, 0]);
    until_closed(&mut conn);
    assert_eq!(origin.requests(), 0);
    assert_still_serving(proxy.addr, &origin);
    let bind = format!(" SOCKS5 {} 501 ", origin.authority());
    let line = proxy
        .wait_for_log(CLOSE_WAIT, &bind)
        .expect("BIND's log line");
    assert!(line.ends_with("\"BIND is not supported\""), "{line}");
}

/// A greeting with no methods offers nothing the proxy can choose: the answer at the method
/// stage is "no acceptable methods" (05 FF) or none, then a close. The proxy sends a
/// 10-byte request reply instead (05 01 00 01 0.0.0.0:0), which a client reads as "method
/// 0x01 (GSSAPI) chosen" followed by garbage.
#[test]
fn zero_methods_get_no_acceptable_method_or_a_close() {
    let proxy = Proxy::start(&[]);
    let mut conn = Conn::connect(proxy.addr);
    conn.write(&[5, 0]);
    let got = until_closed(&mut conn);
    assert!(got.is_empty() || got == [5, 0xff], "{got:?}");
}

/// RFC 1929 §2: the answer to the username/password message is two bytes, VER 1 and a
/// status, and on failure the server closes. A message with another version gets a 10-byte
/// SOCKS5 request reply (05 01 00 01 0.0.0.0:0) instead.
#[test]
fn a_bad_subnegotiation_version_gets_a_failure_status_or_a_close() {
    let proxy = Proxy::start_with_env(&[], &[("SMOLPROXY_AUTH", "ann:pw")]);
    let mut conn = Conn::connect(proxy.addr);
    conn.write(&[5, 1, 2]);
    assert_eq!(conn.read_exact(2).unwrap(), [5, 2]);
    conn.write(&[&[2u8][..], &userpass(b"ann", b"pw")[1..]].concat());
    let got = until_closed(&mut conn);
    assert!(got.is_empty() || (got.len() == 2 && got[1] != 0), "{got:?}");
}

/// A handshake cut after any byte, the client then closing its side, is closed at once with
/// no more than what the bytes before the cut earned; one that just stops is closed by
/// `--header-timeout`. SOCKS5 without and with credentials, and SOCKS4a.
#[test]
fn handshakes_cut_at_every_byte_are_closed_without_a_hang() {
    let origin = Origin::echo();
    let flags = ["--connect-ports", "any", "--header-timeout", "1s"];
    let open = Proxy::start(&flags);
    let guarded = Proxy::start_with_env(&flags, &[("SMOLPROXY_AUTH", "ann:pw")]);
    let request = ask5(1, &addr_bytes(origin.addr));
    let creds = userpass(b"ann", b"pw");
    // The whole handshake, and the answers earned from a length of the handshake on.
    let cases = [
        (
            "SOCKS5",
            &open,
            [&[5, 1, 0][..], &request].concat(),
            vec![(3, vec![5, 0])],
        ),
        (
            "SOCKS5 with credentials",
            &guarded,
            [&[5, 1, 2][..], &creds, &request].concat(),
            vec![(3, vec![5, 2]), (3 + creds.len(), vec![5, 2, 1, 0])],
        ),
        (
            "SOCKS4a",
            &open,
            ask4(origin.port(), Ipv4Addr::UNSPECIFIED, Some("localhost")),
            vec![],
        ),
    ];
    for (what, proxy, whole, earned) in cases {
        for cut in 0..whole.len() {
            let mut conn = Conn::connect(proxy.addr);
            conn.write(&whole[..cut]);
            conn.shutdown_write();
            let want = earned
                .iter()
                .filter(|(from, _)| cut >= *from)
                .map(|(_, answer)| answer.clone())
                .next_back()
                .unwrap_or_default();
            assert_eq!(
                until_closed(&mut conn),
                want,
                "{what} cut after {cut} bytes"
            );
        }
        // The whole handshake opens a tunnel, so the cuts were refused for being cut.
        let mut conn = Conn::connect(proxy.addr);
        conn.write(&whole);
        let answers = earned.last().map(|(_, a)| a.len()).unwrap_or(0);
        conn.read_exact(answers).unwrap();
        let granted = match what {
            "SOCKS4a" => conn.read_exact(8).unwrap()[1] == 0x5a,
            _ => reply5(&mut conn).0 == 0,
        };
        assert!(granted, "{what}: the whole handshake was refused");
        conn.write(b"GET /whole HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        assert_eq!(conn.response().text(), "GET /whole", "{what}");
    }
    // A client that stops without closing: --header-timeout closes it.
    let mut conn = Conn::connect(open.addr);
    conn.write(&[5, 1, 0, 5, 1]);
    let started = Instant::now();
    assert_eq!(until_closed(&mut conn), [5, 0]);
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(900), "closed after {took:?}");
    assert!(
        open.wait_for_log(CLOSE_WAIT, "SOCKS handshake not received in time")
            .is_some(),
        "no log line for the timeout"
    );
    assert_still_serving(open.addr, &origin);
}

/// RFC 1929 allows 255 bytes of user name: a user that long logs in with the right password
/// and is refused (status 1, then a close) with a wrong one, as is an unknown one.
#[test]
fn a_255_byte_user_name() {
    let origin = Origin::echo();
    let long = "u".repeat(255);
    let proxy = Proxy::start_with_env(
        &["--connect-ports", "any"],
        &[("SMOLPROXY_AUTH", &format!("{long}:pw"))],
    );
    let unknown = "v".repeat(255);
    let cases = [
        (long.as_bytes(), &b"pw"[..], true),
        (long.as_bytes(), &b"nope"[..], false),
        (unknown.as_bytes(), &[b'p'; 255][..], false),
    ];
    for (user, pass, right) in cases {
        let mut conn = Conn::connect(proxy.addr);
        conn.write(&[5, 2, 0, 2]);
        assert_eq!(conn.read_exact(2).unwrap(), [5, 2]);
        conn.write(&userpass(user, pass));
        let status = conn.read_exact(2).unwrap();
        if !right {
            assert_eq!(status, [1, 1]);
            assert_eq!(until_closed(&mut conn), b"");
            continue;
        }
        assert_eq!(status, [1, 0]);
        let ((), line) = logged(&proxy, " SOCKS5 ", || {
            conn.write(&ask5(1, &addr_bytes(origin.addr)));
            assert_eq!(reply5(&mut conn).0, 0);
            conn.write(b"GET /long HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            assert_eq!(conn.response().text(), "GET /long");
            conn.shutdown_write();
        });
        assert_eq!(fields(&line)[2], long, "the user is logged: {line}");
    }
}

/// BND.ADDR and BND.PORT are the local address of the proxy's socket to the destination:
/// the destination sees the connection come from there (IPv4, IPv6 with ATYP 4, SOCKS4).
#[test]
fn replies_name_the_address_the_proxy_bound() {
    // A TCP origin that tells each client where it sees the connection come from.
    let teller = |bind: &str| {
        Origin::tcp_on(bind, |conn| {
            let peer = conn.stream.peer_addr().unwrap();
            let _ = conn.stream.write_all(peer.to_string().as_bytes());
        })
    };
    let v4 = teller("127.0.0.1:0");
    let v6 = TcpListener::bind("[::1]:0")
        .is_ok()
        .then(|| teller("[::1]:0"));
    let proxy = Proxy::start(&["--connect-ports", "any"]);
    for origin in std::iter::once(&v4).chain(&v6) {
        let mut conn = Conn::connect(proxy.addr);
        greet(&mut conn);
        conn.write(&ask5(1, &addr_bytes(origin.addr)));
        let (code, bound) = reply5(&mut conn);
        assert_eq!(code, 0, "{}", origin.addr);
        assert_eq!(bound.is_ipv6(), origin.addr.is_ipv6());
        let seen = String::from_utf8(until_closed(&mut conn)).unwrap();
        assert_eq!(seen, bound.to_string(), "what the destination saw");
    }
    let mut conn = Conn::connect(proxy.addr);
    conn.write(&ask4(v4.port(), Ipv4Addr::LOCALHOST, None));
    let reply = conn.read_exact(8).unwrap();
    assert_eq!(&reply[..2], [0, 0x5a]);
    let bound = SocketAddr::from((
        [reply[4], reply[5], reply[6], reply[7]],
        u16::from_be_bytes([reply[2], reply[3]]),
    ));
    assert_eq!(
        String::from_utf8(until_closed(&mut conn)).unwrap(),
        bound.to_string()
    );
}

/// Failures to reach the destination map to RFC 1928 §6 codes as HTTP's map to 502 and 504:
/// refused 0x05, a name that does not resolve 0x04 (where DNS goes nowhere), a connect
/// timeout 0x06; each logged with the status an HTTP client would get.
#[test]
fn failures_to_connect_map_to_reply_codes() {
    let hole = Blackhole::new();
    let Some(mut cmd) = without_dns(bin()) else {
        return;
    };
    cmd.args(["--listen", "127.0.0.1:0", "--connect-ports", "any"])
        .args(["--connect-timeout", "1s"]);
    let proxy = Proxy::spawn(cmd);
    let refused = SocketAddr::from(([127, 0, 0, 1], closed_port()));
    let cases = [
        ("refused", addr_bytes(refused), 0x05, "502"),
        (
            "no such name",
            name_bytes("nowhere.invalid", 80),
            0x04,
            "502",
        ),
        ("timeout", addr_bytes(hole.addr), 0x06, "504"),
    ];
    for (what, dest, code, status) in cases {
        let ((), line) = logged(&proxy, " SOCKS5 ", || {
            let mut conn = Conn::connect(proxy.addr);
            greet(&mut conn);
            conn.write(&ask5(1, &dest));
            assert_eq!(
                reply5(&mut conn),
                (code, "0.0.0.0:0".parse().unwrap()),
                "{what}"
            );
            assert_eq!(until_closed(&mut conn), b"", "{what}");
        });
        assert_eq!(fields(&line)[5], status, "{what}: {line}");
    }
}

// ---------------------------------------------------------------------------------------------
// --socks off, capture, a browser
// ---------------------------------------------------------------------------------------------

/// `--socks off`: SOCKS clients are closed with a log line; HTTP on the same port still works.
#[test]
fn socks_off_closes_socks_clients_and_serves_http() {
    if !need_tool("curl") {
        return;
    }
    let origin = Origin::echo();
    let proxy = Proxy::start(&["--socks", "off", "--connect-ports", "any"]);
    let at = proxy.addr.to_string();
    for flag in ["--socks5", "--socks4a"] {
        let (out, line) = logged(&proxy, "\"SOCKS is off (--socks off)\"", || {
            curl(&[flag, &at, &origin.url("/socks")])
        });
        assert_eq!(out.code, Some(97), "{flag}: {out:?}");
        assert_eq!(fields(&line)[3], "SOCKS", "{line}");
    }
    assert_eq!(send_raw(proxy.addr, &[5, 1, 0]), b"", "not a byte back");
    assert_eq!(origin.requests(), 0);
    let out = curl(&["-x", &proxy.url(), &origin.url("/http")]);
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (Some(0), "GET /http"),
        "{out:?}"
    );
    let out = curl(&["-p", "-x", &proxy.url(), &origin.url("/tunnel")]);
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (Some(0), "GET /tunnel"),
        "{out:?}"
    );
}

/// SOCKS tunnels are capture records of type tunnel saying the inbound protocol, with the
/// destination as the client named it and the bytes each way.
#[test]
fn capture_records_socks_tunnels_with_their_inbound_protocol() {
    let dir = temp_dir("socks-capture");
    let capture = dir.join("capture.ndjson");
    let echo = Origin::tcp_echo();
    let proxy = Proxy::start(&[
        "--connect-ports",
        "any",
        "--capture",
        capture.to_str().unwrap(),
    ]);
    // (inbound, the request, the reply's length, what is sent)
    let tunnels = [
        (
            "socks5",
            [
                &[5, 1, 0][..],
                &ask5(1, &name_bytes("localhost", echo.port())),
            ]
            .concat(),
            2 + 10,
            "ping",
        ),
        (
            "socks4",
            ask4(echo.port(), Ipv4Addr::LOCALHOST, None),
            8,
            "hello",
        ),
    ];
    for (inbound, request, answer, data) in &tunnels {
        let mut conn = Conn::connect(proxy.addr);
        conn.write(request);
        conn.read_exact(*answer).unwrap();
        conn.write(data.as_bytes());
        assert_eq!(
            conn.read_exact(data.len()).unwrap(),
            data.as_bytes(),
            "{inbound}"
        );
        conn.shutdown_write();
        assert_eq!(until_closed(&mut conn), b"BYE", "{inbound}");
    }
    let records = tunnel_records(&capture, 2);
    for ((inbound, _, _, data), (host, method)) in tunnels
        .iter()
        .zip([("localhost", "SOCKS5"), ("127.0.0.1", "SOCKS4")])
    {
        let r = records
            .iter()
            .find(|r| r["inbound"] == *inbound)
            .unwrap_or_else(|| panic!("no {inbound} record: {records:?}"));
        assert_eq!(
            (r["host"].as_str(), r["port"].as_u64()),
            (Some(host), Some(u64::from(echo.port()))),
            "{r}"
        );
        assert_eq!(
            (
                r["status"].as_u64(),
                r["decision"].as_str(),
                r["route"].as_str()
            ),
            (Some(200), Some("allow"), Some("direct")),
            "{r}"
        );
        let len = data.len() as u64;
        assert_eq!(
            (r["bytes_up"].as_u64(), r["bytes_down"].as_u64()),
            (Some(len), Some(len + 3)),
            "{r}"
        );
        let target = format!(" {method} {host}:{} 200 {len} {} ", echo.port(), len + 3);
        assert!(
            proxy.wait_for_log(CLOSE_WAIT, &target).is_some(),
            "no access line {target:?}: {:#?}",
            proxy.stderr_lines()
        );
    }
}

/// A SOCKS CONNECT the rules refuse leaves a capture record, as an HTTP CONNECT does (a
/// tunnel record with `"decision": "deny"` and the rule): "everything HTTP has, SOCKS has".
/// The proxy writes only the access-log line.
#[test]
fn a_refused_socks_connect_is_captured() {
    let dir = temp_dir("socks-capture-deny");
    let capture = dir.join("capture.ndjson");
    let proxy = Proxy::start(&[
        "--connect-ports",
        "any",
        "--deny",
        "127.0.0.1:1",
        "--capture",
        capture.to_str().unwrap(),
    ]);
    let mut conn = Conn::connect(proxy.addr);
    greet(&mut conn);
    conn.write(&ask5(1, &addr_bytes("127.0.0.1:1".parse().unwrap())));
    assert_eq!(reply5(&mut conn).0, 0x02);
    let records = tunnel_records(&capture, 1);
    assert_eq!(
        (
            records[0]["decision"].as_str(),
            records[0]["inbound"].as_str()
        ),
        (Some("deny"), Some("socks5")),
        "{}",
        records[0]
    );
}

/// Headless Chromium with `--proxy-server=socks5://` loads a page and the page's fetch, both
/// through SOCKS5 tunnels of the proxy.
#[test]
fn chromium_loads_a_page_through_socks5() {
    if !need_tool("chromium") || !need_tool("unshare") {
        return;
    }
    let dir = temp_dir("socks-chromium");
    // Chromium's own requests to outside names reach the proxy too (socks5 resolves names
    // there): only loopback is allowed, and DNS goes nowhere.
    let Some(mut cmd) = without_dns(bin()) else {
        return;
    };
    cmd.args(["--listen", "127.0.0.1:0", "--connect-ports", "any"])
        .args(["--allow", "localhost,127.0.0.*"]);
    let proxy = Proxy::spawn(cmd);
    let value = format!("socks-{}", std::process::id());
    let site = fetch_site(&value);
    let server = format!("socks5://{}", proxy.addr);
    let Some(dom) = headless_dom(&dir, &server, &site.url("/")) else {
        return;
    };
    assert!(
        dom.contains(&format!("<p id=\"result\">fetched {value}</p>")),
        "the page did not show the fetched value: {dom}"
    );
    let seen: Vec<String> = site
        .seen()
        .iter()
        .map(|s| format!("{} {}", s.head.method(), s.head.target()))
        .collect();
    for want in ["GET /", "GET /api/data"] {
        assert!(seen.iter().any(|s| s == want), "{want} not in {seen:?}");
    }
    let tunnel = format!(" SOCKS5 {} 200 ", site.authority());
    assert!(
        proxy.wait_for_log(CLOSE_WAIT, &tunnel).is_some(),
        "no SOCKS5 tunnel to the site in the log: {:#?}",
        proxy.stderr_lines()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

//! CONNECT tunnels through the real binary (SPEC §2 `--connect-ports`, `--idle-timeout`; §3):
//! binary data and half-close, bytes sent with the CONNECT head, refused and forbidden ports,
//! idle tunnels closed, IPv6 loopback, and the tunnel's access-log line.

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::*;

const FIVE_S: Duration = Duration::from_secs(5);

/// `CONNECT authority HTTP/1.1` with its Host.
fn connect_head(authority: &str) -> Vec<u8> {
    format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n").into_bytes()
}

/// Opens a tunnel to `authority` through `proxy` and checks the 200.
fn open_tunnel(proxy: &Proxy, authority: &str) -> Conn {
    let mut c = Conn::connect(proxy.addr);
    c.set_timeout(FIVE_S);
    c.write(&connect_head(authority));
    let head = c
        .read_head()
        .expect("no reply to CONNECT")
        .expect("closed instead of replying to CONNECT");
    assert_eq!(head.status(), 200, "CONNECT {authority}: {}", head.text());
    // RFC 9110 §9.3.6: no framing fields in a 2xx answer to CONNECT.
    assert!(
        !head.has("content-length") && !head.has("transfer-encoding"),
        "{}",
        head.text()
    );
    c
}

#[test]
fn tunnel_carries_every_byte_value_and_half_close() {
    let echo = Origin::tcp_echo();
    let proxy = Proxy::start(&["--connect-ports", "any"]);
    let mut c = open_tunnel(&proxy, &echo.authority());
    // 1 MiB holding every byte value, written from another thread while this one reads,
    // so neither side waits on the other's buffers.
    let data: Vec<u8> = (0..4096).flat_map(|_| 0..=255u8).collect();
    let mut writer = c.stream.try_clone().unwrap();
    let sent = data.clone();
    let w = thread::spawn(move || {
        use std::io::Write;
        writer.write_all(&sent).unwrap();
        // Half-close: the echo server sees the end, and still answers after it.
        writer.shutdown(std::net::Shutdown::Write).unwrap();
    });
    let got = c.read_to_end().expect("tunnel read");
    w.join().unwrap();
    assert_eq!(
        got.len(),
        data.len() + 3,
        "wrong amount back through the tunnel"
    );
    assert!(got[..data.len()] == data[..], "tunnel altered the bytes");
    assert_eq!(
        &got[data.len()..],
        b"BYE",
        "data sent after the client's half-close was lost"
    );
}

/// Many short tunnels at once whose target answers and closes at once, so that its bytes and
/// its end of stream reach the proxy together or close behind each other: every one must end.
/// The edge-triggered reactor (vendor/async-io) must report an end of stream that came with
/// the last bytes. (A race that lost one in about 20,000 tunnels was found by a stress run
/// with the proxy's core busy; these 2,400 tunnels do not reproduce that race reliably.)
#[test]
fn tunnels_whose_target_answers_and_closes_at_once_all_end() {
    let target = Origin::tcp(|conn| {
        use std::io::{Read, Write};
        let mut one = [0u8; 1];
        if conn.stream.read_exact(&mut one).is_ok() {
            let _ = conn.stream.write_all(b"answer");
        }
    });
    let proxy = Proxy::start(&["--connect-ports", "any"]);
    let authority = target.authority();
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let (addr, authority) = (proxy.addr, authority.clone());
            thread::spawn(move || {
                for _ in 0..300 {
                    let mut c = Conn::connect(addr);
                    c.set_timeout(FIVE_S);
                    c.write(&connect_head(&authority));
                    let head = c.read_head().expect("CONNECT answered").expect("a head");
                    assert_eq!(head.status(), 200);
                    c.write(b"?");
                    let got = c.read_to_end().expect("the tunnel ends within 5 s");
                    assert_eq!(got, b"answer");
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
}

#[test]
fn a_tunnel_ends_when_its_target_closes() {
    let target = Origin::tcp(|conn| {
        use std::io::Write;
        let _ = conn.stream.write_all(b"server-first");
    });
    let proxy = Proxy::start(&["--connect-ports", "any"]);
    let mut c = open_tunnel(&proxy, &target.authority());
    assert_eq!(c.read_exact(12).unwrap(), b"server-first");
    assert!(
        c.closes_within(Duration::from_secs(3)),
        "the client side stayed open after the target closed"
    );
}

#[test]
fn bytes_sent_with_the_connect_head_are_delivered() {
    let echo = Origin::tcp_echo();
    let proxy = Proxy::start(&["--connect-ports", "any"]);
    let mut c = Conn::connect(proxy.addr);
    c.set_timeout(FIVE_S);
    let mut first = connect_head(&echo.authority());
    first.extend_from_slice(b"early-bytes\x00\xff");
    c.write(&first);
    let head = c.read_head().unwrap().expect("closed");
    assert_eq!(head.status(), 200, "{}", head.text());
    assert_eq!(
        c.read_exact(13).expect("early bytes"),
        b"early-bytes\x00\xff"
    );
    c.write(b"later");
    assert_eq!(c.read_exact(5).expect("later bytes"), b"later");
}

#[test]
fn connect_to_a_closed_port_is_502_quickly() {
    let proxy = Proxy::start(&["--connect-ports", "any"]);
    let port = closed_port();
    let started = Instant::now();
    let res = request(
        proxy.addr,
        "CONNECT",
        &connect_head(&format!("127.0.0.1:{port}")),
    );
    res.assert_error(502);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "refusal took {:?}",
        started.elapsed()
    );
    assert!(
        res.text().contains(&port.to_string()),
        "502 does not say where: {}",
        res.text()
    );
    let echo = Origin::tcp_echo();
    let mut c = open_tunnel(&proxy, &echo.authority());
    c.write(b"still works");
    assert_eq!(c.read_exact(11).unwrap(), b"still works");
}

#[test]
fn connect_ports_decide_which_ports_tunnels_may_reach() {
    let echo = Origin::tcp_echo();
    let target = echo.authority();
    // The default allows 443 only.
    let default = Proxy::start(&[]);
    let res = request(default.addr, "CONNECT", &connect_head(&target));
    res.assert_error(403);
    assert!(
        res.text().contains("connect-ports"),
        "403 does not name the rule: {}",
        res.text()
    );
    let listed = Proxy::start(&["--connect-ports", "443,1-2"]);
    request(listed.addr, "CONNECT", &connect_head(&target)).assert_error(403);
    thread::sleep(Duration::from_millis(100));
    assert_eq!(
        echo.connections(),
        0,
        "a forbidden CONNECT reached the target"
    );

    // The echo port itself, alone or in a range, repeated flags, and `any`.
    let port = echo.port();
    let one = port.to_string();
    let range = format!("443,{}-{}", port - 1, port + 1);
    for args in [
        vec!["--connect-ports", one.as_str()],
        vec!["--connect-ports", range.as_str()],
        vec!["--connect-ports", "443", "--connect-ports", one.as_str()],
        vec!["--connect-ports", "any"],
    ] {
        let proxy = Proxy::start(&args);
        let mut c = open_tunnel(&proxy, &target);
        c.write(b"allowed");
        assert_eq!(c.read_exact(7).unwrap(), b"allowed", "{args:?}");
    }
    // The refused client's connection still serves a normal request.
    let origin = Origin::echo();
    let mut c = Conn::connect(default.addr);
    let res = c.exchange("CONNECT", &connect_head(&target));
    res.assert_error(403);
    let res = c.exchange(
        "GET",
        &build_request("GET", &origin.url("/after-403"), &[], b""),
    );
    assert_eq!(res.status(), 200, "{}", res.head.text());
}

#[test]
fn idle_tunnels_are_closed_after_the_idle_timeout() {
    let echo = Origin::tcp_echo();
    let proxy = Proxy::start(&["--connect-ports", "any", "--idle-timeout", "1s"]);
    let mut idle = open_tunnel(&proxy, &echo.authority());
    let started = Instant::now();
    assert!(
        idle.closes_within(Duration::from_secs(4)),
        "idle tunnel still open after 4 s"
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(800),
        "tunnel closed after {took:?}, before the idle timeout"
    );
}

#[test]
fn busy_tunnels_outlive_the_idle_timeout() {
    let echo = Origin::tcp_echo();
    let proxy = Proxy::start(&["--connect-ports", "any", "--idle-timeout", "1s"]);
    let mut busy = open_tunnel(&proxy, &echo.authority());
    // Traffic every 300 ms for 2.4 s: never idle for a whole second.
    for i in 0..8u8 {
        thread::sleep(Duration::from_millis(300));
        busy.write(&[i]);
        assert_eq!(
            busy.read_exact(1)
                .unwrap_or_else(|e| panic!("tunnel closed while busy: {e}")),
            [i]
        );
    }
}

#[test]
fn tunnel_over_ipv6_loopback() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        need("IPv6 loopback [::1] not available", false);
        return;
    }
    let echo = Origin::tcp_on("[::1]:0", tcp_echo_handler);
    let proxy = Proxy::start(&["--listen", "[::1]:0", "--connect-ports", "any"]);
    assert!(proxy.addr.is_ipv6());
    let mut c = open_tunnel(&proxy, &format!("[::1]:{}", echo.port()));
    c.write(b"over v6");
    assert_eq!(c.read_exact(7).unwrap(), b"over v6");
}

#[test]
fn malformed_connect_targets_are_400() {
    let echo = Origin::tcp_echo();
    let proxy = Proxy::start(&["--connect-ports", "any"]);
    for target in [
        "127.0.0.1".to_string(),
        format!("127.0.0.1:{}/path", echo.port()),
        "127.0.0.1:0".into(),
    ] {
        let res = request(proxy.addr, "CONNECT", &connect_head(&target));
        res.assert_error(400);
    }
    assert_eq!(echo.connections(), 0);
}

#[test]
fn tunnels_are_logged_with_their_bytes() {
    let echo = Origin::tcp_echo();
    let proxy = Proxy::start(&["--connect-ports", "any"]);
    let mut c = open_tunnel(&proxy, &echo.authority());
    c.write(&[7u8; 3000]);
    assert_eq!(c.read_exact(3000).unwrap(), [7u8; 3000]);
    c.shutdown_write();
    assert_eq!(c.read_to_end().unwrap(), b"BYE");
    let target = echo.authority();
    let line = proxy
        .wait_for_line(FIVE_S, |l| l.contains("CONNECT") && l.contains(&target))
        .unwrap_or_else(|| {
            panic!(
                "no access line for the tunnel; stderr: {:?}",
                proxy.stderr_lines()
            )
        });
    let t: Vec<&str> = line.split_whitespace().collect();
    let i = t
        .iter()
        .position(|x| *x == target)
        .unwrap_or_else(|| panic!("target not a field: {line}"));
    assert_eq!((t[i - 1], t[i + 1]), ("CONNECT", "200"), "{line}");
    let up: u64 = t[i + 2].parse().unwrap();
    let down: u64 = t[i + 3].parse().unwrap();
    assert!(up >= 3000, "bytes up {up}: {line}");
    assert!(down >= 3003, "bytes down {down}: {line}");
}

#[test]
fn a_bulk_tunnel_moves_every_byte_in_order() {
    // Enough data, written in large pieces, that the proxy sees full buffers and moves the
    // flow with splice(2): the bytes must still arrive exact and in order, and the half-close
    // must still pass.
    let echo = Origin::tcp_echo();
    let proxy = Proxy::start(&["--connect-ports", "any"]);
    let mut c = open_tunnel(&proxy, &echo.authority());
    // xorshift bytes: no repeating period a reordering could hide in.
    let data = pattern(48 << 20, 1);
    let mut writer = c.stream.try_clone().unwrap();
    let sent = data.clone();
    let w = thread::spawn(move || {
        use std::io::Write;
        for piece in sent.chunks(1 << 20) {
            writer.write_all(piece).unwrap();
        }
        writer.shutdown(std::net::Shutdown::Write).unwrap();
    });
    c.set_timeout(Duration::from_secs(60));
    let got = c.read_to_end().expect("tunnel read");
    w.join().unwrap();
    assert_eq!(
        got.len(),
        data.len() + 3,
        "wrong amount back through the tunnel"
    );
    assert_eq!(
        fnv64(&got[..data.len()]),
        fnv64(&data),
        "tunnel altered or reordered bytes"
    );
    assert_eq!(&got[data.len()..], b"BYE");
}

//! Limits and the process's life through the real binary (SPEC §2, §3): oversized heads, the
//! header timeout and slow clients, many clients at once, `--max-connections`, bad flag
//! values, a listen address in use, and a graceful stop on SIGTERM.

mod common;

use std::net::TcpListener;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

const FIVE_S: Duration = Duration::from_secs(5);

/// Sends `raw` from another thread (the proxy may stop reading and close early) while this
/// one reads the reply.
fn send_big(proxy: &Proxy, raw: Vec<u8>) -> Response {
    let mut c = Conn::connect(proxy.addr);
    let mut writer = c.stream.try_clone().unwrap();
    let w = thread::spawn(move || {
        use std::io::Write;
        let _ = writer.write_all(&raw);
    });
    let res = c
        .read_response()
        .unwrap_or_else(|e| panic!("no reply to an oversized head: {e}"));
    let _ = c.stream.shutdown(std::net::Shutdown::Both);
    w.join().unwrap();
    res
}

#[test]
fn a_one_megabyte_head_is_431_and_the_next_client_is_served() {
    let origin = Origin::echo();
    let proxy = Proxy::start(&[]);
    let mut raw = build_request("GET", &origin.url("/big-head"), &[], b"");
    raw.truncate(raw.len() - 2); // reopen the head
    let line = format!("X-Filler: {}\r\n", "f".repeat(990));
    while raw.len() < 1 << 20 {
        raw.extend_from_slice(line.as_bytes());
    }
    raw.extend_from_slice(b"\r\n");
    send_big(&proxy, raw).assert_error(431);

    // Many small fields are too large too.
    let mut raw = build_request("GET", &origin.url("/many"), &[], b"");
    raw.truncate(raw.len() - 2);
    for i in 0..5000 {
        raw.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
    }
    raw.extend_from_slice(b"\r\n");
    send_big(&proxy, raw).assert_error(431);
    assert_eq!(origin.requests(), 0);
    assert_still_serving(proxy.addr, &origin);
}

#[test]
fn heads_just_under_the_limits_pass_intact() {
    let origin = Origin::echo();
    let proxy = Proxy::start(&[]);
    // A 12 KiB cookie: the whole head stays under 16 KiB.
    let cookie = format!("big={}", "c".repeat(12 << 10));
    let res = request(
        proxy.addr,
        "GET",
        &build_request("GET", &origin.url("/cookie"), &[("Cookie", &cookie)], b""),
    );
    assert_eq!(res.status(), 200, "{}", res.head.text());
    assert_eq!(origin.last().head.get("cookie"), Some(cookie.as_str()));
    // A 6 KiB target.
    let path = format!("/{}", "p".repeat(6 << 10));
    let res = get(proxy.addr, &origin.url(&path));
    assert_eq!(res.status(), 200, "{}", res.head.text());
    assert_eq!(origin.last().head.target(), path);
}

#[test]
fn a_one_megabyte_request_line_is_414() {
    let origin = Origin::echo();
    let proxy = Proxy::start(&[]);
    let url = origin.url(&format!("/{}", "u".repeat(1 << 20)));
    let res = send_big(&proxy, build_request("GET", &url, &[], b""));
    res.assert_error(414);
    assert_eq!(origin.requests(), 0);
    assert_still_serving(proxy.addr, &origin);
}

#[test]
fn half_a_head_gets_408_after_the_header_timeout() {
    let origin = Origin::echo();
    let proxy = Proxy::start(&["--header-timeout", "1s"]);
    let mut c = Conn::connect(proxy.addr);
    c.set_timeout(FIVE_S);
    let started = Instant::now();
    c.write(
        format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\n",
            origin.url("/half"),
            origin.authority()
        )
        .as_bytes(),
    );
    let res = c.response();
    let took = started.elapsed();
    res.assert_error(408);
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_secs(4),
        "408 after {took:?}"
    );
    assert!(c.closes_within(FIVE_S));
    assert_eq!(origin.requests(), 0);
    assert_still_serving(proxy.addr, &origin);
}

#[test]
fn a_slow_client_does_not_hold_up_others_and_times_out_as_a_whole() {
    let origin = Origin::echo();
    let proxy = Proxy::start(&["--header-timeout", "2s"]);
    // One byte every 200 ms: never idle, but the whole head is not there within 2 s.
    let addr = proxy.addr;
    let head = build_request(
        "GET",
        &origin.url("/slowloris"),
        &[("X-Pad", &"p".repeat(200))],
        b"",
    );
    let slow = thread::spawn(move || {
        let mut c = Conn::connect(addr);
        let started = Instant::now();
        for b in head.chunks(1) {
            if c.try_write(b).is_err() {
                break;
            }
            thread::sleep(Duration::from_millis(200));
            if !c.buffered().is_empty() || started.elapsed() > Duration::from_secs(8) {
                break;
            }
            // Look for an early answer without blocking the trickle for long.
            let got = c.read_available(Duration::from_millis(1));
            if !got.is_empty() {
                return (Some(got), started.elapsed());
            }
        }
        (None, started.elapsed())
    });
    // Meanwhile, other clients are served at once.
    thread::sleep(Duration::from_millis(300));
    for i in 0..5 {
        let started = Instant::now();
        let res = get(proxy.addr, &origin.url(&format!("/other/{i}")));
        assert_eq!(res.status(), 200);
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "a normal request took {:?}",
            started.elapsed()
        );
        thread::sleep(Duration::from_millis(100));
    }
    let (answer, took) = slow.join().unwrap();
    let answer =
        answer.unwrap_or_else(|| panic!("a trickling client was never cut off ({took:?})"));
    assert!(
        answer.starts_with(b"HTTP/1.1 408"),
        "trickling client got {:?}",
        show(&answer)
    );
    assert!(took < Duration::from_secs(5), "cut off only after {took:?}");
    assert!(origin
        .seen()
        .iter()
        .all(|s| s.head.target() != "/slowloris"));
}

#[test]
fn three_hundred_concurrent_clients_are_all_served() {
    serve_concurrently(&[]);
}

#[test]
fn three_hundred_concurrent_clients_with_two_threads() {
    serve_concurrently(&["--threads", "2"]);
}

fn serve_concurrently(args: &[&str]) {
    const CLIENTS: usize = 300;
    let origin = Arc::new(Origin::echo());
    let proxy = Proxy::start(args);
    let barrier = Arc::new(Barrier::new(CLIENTS));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let (barrier, origin, addr) = (barrier.clone(), origin.clone(), proxy.addr);
            thread::spawn(move || {
                let mut c = Conn::connect(addr);
                // Everyone connected before anyone sends.
                barrier.wait();
                let res = c.exchange(
                    "GET",
                    &build_request("GET", &origin.url(&format!("/c/{i}")), &[], b""),
                );
                (res.status(), res.text())
            })
        })
        .collect();
    for (i, t) in clients.into_iter().enumerate() {
        let (status, text) = t.join().unwrap_or_else(|_| panic!("client {i} failed"));
        assert_eq!(status, 200, "client {i}");
        assert_eq!(
            text,
            format!("GET /c/{i}"),
            "client {i} got another's response"
        );
    }
}

#[test]
fn beyond_max_connections_new_clients_get_503_and_the_others_keep_working() {
    let origin = Origin::echo();
    let proxy = Proxy::start(&["--max-connections", "2"]);
    let mut first = Conn::connect(proxy.addr);
    let mut second = Conn::connect(proxy.addr);
    for (i, c) in [&mut first, &mut second].into_iter().enumerate() {
        let res = c.exchange(
            "GET",
            &build_request("GET", &origin.url(&format!("/k/{i}")), &[], b""),
        );
        assert_eq!(res.status(), 200);
    }
    let mut third = Conn::connect(proxy.addr);
    third.set_timeout(FIVE_S);
    let res = third.exchange(
        "GET",
        &build_request("GET", &origin.url("/third"), &[], b""),
    );
    res.assert_error(503);
    let retry = res
        .header("retry-after")
        .unwrap_or_else(|| panic!("503 without Retry-After: {}", res.head.text()));
    assert!(retry.parse::<u64>().is_ok(), "Retry-After {retry:?}");
    assert!(origin.seen().iter().all(|s| s.head.target() != "/third"));
    for (i, c) in [&mut first, &mut second].into_iter().enumerate() {
        let res = c.exchange(
            "GET",
            &build_request("GET", &origin.url(&format!("/again/{i}")), &[], b""),
        );
        assert_eq!(res.status(), 200, "connection {i} stopped working");
    }
    // Once one leaves, there is room again.
    drop(first);
    let deadline = Instant::now() + FIVE_S;
    loop {
        let mut c = Conn::connect(proxy.addr);
        let res = c.exchange("GET", &build_request("GET", &origin.url("/room"), &[], b""));
        if res.status() == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no room after a client left: {}",
            res.status()
        );
        thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------------------------------------
// Command line and process
// ---------------------------------------------------------------------------------------------

#[test]
fn bad_flag_values_exit_2_with_one_line_naming_the_flag() {
    let cases: [(&[&str], &str, &str); 11] = [
        (&["--header-timeout", "10x"], "--header-timeout", "10x"),
        (&["--idle-timeout", "-1s"], "--idle-timeout", "-1s"),
        (&["--connect-timeout", "soon"], "--connect-timeout", "soon"),
        (&["--connect-ports", "0"], "--connect-ports", "0"),
        (&["--connect-ports", "10-5"], "--connect-ports", "10-5"),
        (&["--max-connections", "0"], "--max-connections", "0"),
        (&["--threads", "0"], "--threads", "0"),
        (&["--log-format", "xml"], "--log-format", "xml"),
        (&["--via", "a b"], "--via", "a b"),
        (&["--listen", "localhost:x"], "--listen", "localhost:x"),
        (&["--bogus-flag"], "--bogus-flag", ""),
    ];
    for (args, flag, value) in cases {
        let out = run_proxy(args, FIVE_S);
        assert_eq!(out.code, Some(2), "{args:?}: {out:?}");
        let lines: Vec<&str> = out
            .stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect();
        assert_eq!(lines.len(), 1, "{args:?}: not one line: {:?}", out.stderr);
        assert!(
            lines[0].contains(flag),
            "{args:?}: line does not name the flag: {}",
            lines[0]
        );
        assert!(
            lines[0].contains(value),
            "{args:?}: line does not show the value: {}",
            lines[0]
        );
        assert!(
            !out.stderr.contains("listening on"),
            "{args:?}: listened before checking the flags"
        );
    }
}

#[test]
fn a_listen_address_in_use_exits_1_with_a_clear_line() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = run_proxy(&["--listen", &addr], FIVE_S);
    assert_eq!(out.code, Some(1), "{out:?}");
    let lines: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert_eq!(lines.len(), 1, "not one line: {:?}", out.stderr);
    assert!(
        lines[0].contains(&addr),
        "line does not name the address: {}",
        lines[0]
    );
    assert!(
        lines[0].to_lowercase().contains("in use"),
        "line does not say why: {}",
        lines[0]
    );
}

#[test]
fn an_access_log_that_cannot_be_opened_exits_1() {
    let dir = temp_dir("no-log");
    let path = dir.join("missing-dir").join("access.log");
    let path = path.to_str().unwrap();
    let out = run_proxy(&["--access-log", path], FIVE_S);
    assert_eq!(out.code, Some(1), "{out:?}");
    let lines: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert_eq!(lines.len(), 1, "not one line: {:?}", out.stderr);
    assert!(
        lines[0].contains(path),
        "line does not name the file: {}",
        lines[0]
    );
}

#[test]
fn sigterm_lets_a_slow_response_finish_then_exits_0() {
    let origin = Origin::start(|head, conn| {
        use std::io::Write;
        let _ = conn.read_body(head);
        let _ = conn
            .stream
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello");
        thread::sleep(Duration::from_millis(1500));
        let _ = conn.stream.write_all(b"world");
        true
    });
    let mut proxy = Proxy::start(&[]);
    // An idle keep-alive client must not delay the exit.
    let mut idle = Conn::connect(proxy.addr);
    assert_eq!(
        idle.exchange(
            "GET",
            &build_request("GET", &Origin::echo().url("/idle"), &[], b"")
        )
        .status(),
        200
    );

    let mut c = Conn::connect(proxy.addr);
    c.write(&build_request("GET", &origin.url("/slow"), &[], b""));
    let head = c.read_head().unwrap().expect("no response head");
    assert_eq!(head.status(), 200);
    assert_eq!(c.read_exact(5).unwrap(), b"hello");
    proxy.signal("TERM");
    // It stops accepting...
    let deadline = Instant::now() + Duration::from_secs(1);
    while std::net::TcpStream::connect_timeout(&proxy.addr, Duration::from_millis(200)).is_ok() {
        assert!(
            Instant::now() < deadline,
            "still accepting connections after SIGTERM"
        );
        thread::sleep(Duration::from_millis(20));
    }
    // ...while the response in flight completes...
    assert_eq!(
        c.read_exact(5).expect("the response in flight was cut"),
        b"world"
    );
    // ...and then it exits 0.
    let status = proxy
        .wait_exit(FIVE_S)
        .expect("still running 5 s after its last response");
    assert_eq!(status.code(), Some(0), "exit status {status}");
}

#[test]
fn sigint_stops_an_idle_proxy_at_once() {
    let origin = Origin::echo();
    let mut proxy = Proxy::start(&[]);
    let mut idle = Conn::connect(proxy.addr);
    assert_eq!(
        idle.exchange("GET", &build_request("GET", &origin.url("/idle"), &[], b""))
            .status(),
        200
    );
    let started = Instant::now();
    proxy.signal("INT");
    let status = proxy.wait_exit(FIVE_S).expect("still running after SIGINT");
    assert_eq!(status.code(), Some(0), "exit status {status}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "an idle client delayed the exit by {:?}",
        started.elapsed()
    );
    assert!(
        idle.closes_within(Duration::from_secs(1)),
        "idle client connection left open"
    );
}

#[test]
fn every_listen_address_serves() {
    let origin = Origin::echo();
    let mut args = vec!["--listen", "127.0.0.1:0", "--listen", "127.0.0.1:0"];
    let v6 = TcpListener::bind("[::1]:0").is_ok();
    if v6 {
        args.extend(["--listen", "[::1]:0"]);
    }
    let proxy = Proxy::start(&args);
    assert_eq!(
        proxy.addrs.len(),
        if v6 { 3 } else { 2 },
        "{:?}",
        proxy.stderr_lines()
    );
    for addr in &proxy.addrs {
        assert_ne!(addr.port(), 0);
        let res = get(*addr, &origin.url("/multi"));
        assert_eq!(res.status(), 200, "listener {addr}");
    }
}

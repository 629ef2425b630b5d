//! Resource exhaustion: descriptors, the connection cap, and slowloris, against the real binary.
//!
//! A proxy on a router runs out of descriptors or faces a flood of clients that never finish a
//! request. These tests check what a user would: the proxy keeps running, answers 503 or waits
//! instead of dying, serves normal clients again as soon as resources free up, and never lets
//! half-open clients starve the others. The proxy's descriptor limit is set by starting it
//! through `sh -c 'ulimit -n N && exec smolproxy ...'`; its open descriptors are counted in
//! /proc/PID/fd. Every read is bounded, and the whole file runs in well under a minute.

mod common;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use common::{build_request, get, Conn, Origin, Proxy};

/// Starts the proxy with its descriptor limit set to `nofile` (soft and hard).
fn proxy_with_nofile(nofile: &str, args: &[&str]) -> Proxy {
    let script = format!("ulimit -n {nofile} && exec \"$0\" --listen 127.0.0.1:0 \"$@\"");
    let mut cmd = Command::new("sh");
    cmd.args(["-c", &script, common::bin()]).args(args);
    for var in common::PROXY_ENV {
        cmd.env_remove(var);
    }
    Proxy::spawn(cmd)
}

/// Descriptors the proxy has open.
fn open_fds(proxy: &Proxy) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", proxy.pid()))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// The proxy's descriptor count once it has served one request: the executor, the signal
/// pipe and one pooled origin connection exist from then on.
fn warmed_up_fds(proxy: &Proxy, origin: &Origin) -> usize {
    let res = get(proxy.addr, &origin.url("/warm-up"));
    assert_eq!(res.status(), 200, "{}", res.head.text());
    thread::sleep(Duration::from_millis(200));
    open_fds(proxy)
}

/// What the proxy's descriptors point at, for messages.
fn fd_list(proxy: &Proxy) -> String {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{}/fd", proxy.pid())) else {
        return String::new();
    };
    let mut out: Vec<String> = dir
        .filter_map(|e| e.ok())
        .map(|e| {
            format!(
                "{}->{}",
                e.file_name().to_string_lossy(),
                std::fs::read_link(e.path())
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            )
        })
        .collect();
    out.sort();
    out.join(" ")
}

/// The soft limit on open files of this test process, from /proc/self/limits.
fn own_nofile() -> usize {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|n| n.parse().ok())
        .unwrap_or(1024)
}

/// Polls `f` every 50 ms until it returns true or `within` passes.
fn eventually(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Opens a connection that sends nothing, or `None` if connect fails.
fn idle_client(addr: SocketAddr) -> Option<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    Some(s)
}

/// Whether the response in `bytes` (possibly partial) has this status.
fn status_of(bytes: &[u8]) -> Option<u16> {
    let text = String::from_utf8_lossy(bytes);
    text.strip_prefix("HTTP/1.")?.get(2..5)?.parse().ok()
}

#[test]
fn out_of_descriptors_backs_off_and_recovers() {
    let origin = Origin::echo();
    // 64 descriptors: the proxy itself needs about ten, so ~50 idle clients exhaust it.
    let mut proxy = proxy_with_nofile("64", &["--header-timeout", "30s", "--quiet"]);
    let base = warmed_up_fds(&proxy, &origin);
    assert!(
        base > 0 && base < 32,
        "unexpected descriptor count at start: {base}"
    );

    // More idle clients than descriptors: the kernel completes the handshakes and queues the
    // ones the proxy cannot accept (the listen backlog is larger than this).
    let hogs: Vec<TcpStream> = (0..100).filter_map(|_| idle_client(proxy.addr)).collect();
    assert_eq!(
        hogs.len(),
        100,
        "connects failed before the proxy ran out of descriptors"
    );
    assert!(
        eventually(Duration::from_secs(5), || open_fds(&proxy) >= 60),
        "the proxy never ran out: {} fds",
        open_fds(&proxy)
    );
    assert!(
        proxy
            .wait_for_log(Duration::from_secs(5), "accept")
            .is_some(),
        "no warning about failing accepts; stderr: {:?}",
        proxy.stderr_lines()
    );

    // While exhausted, a normal client either waits in the queue or is told 503.
    let mut waiting = Conn::connect(proxy.addr);
    waiting.write(&build_request(
        "GET",
        &origin.url("/during"),
        &[("Connection", "close")],
        b"",
    ));
    let early = waiting.read_available(Duration::from_secs(1));
    if !early.is_empty() {
        assert_eq!(
            status_of(&early),
            Some(503),
            "while out of descriptors: {}",
            common::show(&early)
        );
    }
    assert!(
        alive(&mut proxy),
        "the proxy died when it ran out of descriptors"
    );

    // Free the descriptors: the queued client is served, and so is a new one.
    drop(hogs);
    if early.is_empty() {
        waiting.set_timeout(Duration::from_secs(10));
        let res = waiting
            .read_response()
            .expect("the queued client was never served after recovery");
        assert_eq!(res.status(), 200, "{}", res.head.text());
    }
    assert!(
        eventually(Duration::from_secs(5), || open_fds(&proxy) <= base + 2),
        "descriptors not released: {} open, {base} at start: {}",
        open_fds(&proxy),
        fd_list(&proxy)
    );
    let res = get(proxy.addr, &origin.url("/after"));
    assert_eq!(res.status(), 200, "{}", res.head.text());
    assert!(alive(&mut proxy));
}

#[test]
fn connection_cap_turns_new_clients_away_and_keeps_the_others() {
    let origin = Origin::echo();
    let proxy = Proxy::start(&["--max-connections", "4", "--quiet"]);
    let request = |path: &str| build_request("GET", &origin.url(path), &[], b"");

    // Four keep-alive clients, each served once, all still open.
    let mut clients: Vec<Conn> = (0..4).map(|_| Conn::connect(proxy.addr)).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        let res = c.exchange("GET", &request(&format!("/first-{i}")));
        assert_eq!(res.status(), 200, "{}", res.head.text());
    }

    // The fifth is turned away with 503 and Retry-After, and its connection is closed.
    let mut extra = Conn::connect(proxy.addr);
    extra.set_timeout(Duration::from_secs(5));
    let _ = extra.try_write(&request("/extra"));
    let res = extra
        .read_response()
        .expect("a 503 for the client over the cap");
    res.assert_error(503);
    let retry: u64 = res
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("a numeric Retry-After");
    assert!(retry >= 1, "Retry-After: {retry}");
    assert!(
        extra.closes_within(Duration::from_secs(3)),
        "the turned-away connection stayed open"
    );

    // The four are unaffected.
    for (i, c) in clients.iter_mut().enumerate() {
        let res = c.exchange("GET", &request(&format!("/second-{i}")));
        assert_eq!(
            res.status(),
            200,
            "client {i} was disturbed by the cap: {}",
            res.head.text()
        );
    }

    // One leaves: its place is free again.
    drop(clients.pop());
    let served = eventually(Duration::from_secs(5), || {
        let mut c = Conn::connect(proxy.addr);
        c.set_timeout(Duration::from_secs(3));
        let _ = c.try_write(&build_request(
            "GET",
            &origin.url("/again"),
            &[("Connection", "close")],
            b"",
        ));
        matches!(c.read_response(), Ok(r) if r.status() == 200)
    });
    assert!(served, "a slot freed by a leaving client was never reused");
}

#[test]
fn slowloris_does_not_starve_a_normal_client() {
    const WANTED: usize = 1000;
    // Stay inside this process's own limit: each slow client is one descriptor here.
    let count = WANTED.min(own_nofile().saturating_sub(200));
    if count < WANTED {
        eprintln!(
            "NOTE: ulimit -n is {}: using {count} slow clients instead of {WANTED}",
            own_nofile()
        );
    }
    let origin = Origin::echo();
    // The proxy gets room for all of them (one descriptor each) whatever the caller's limit.
    let proxy = proxy_with_nofile(
        "4096",
        &[
            "--header-timeout",
            "2s",
            "--max-connections",
            "2000",
            "--quiet",
        ],
    );
    let base = warmed_up_fds(&proxy, &origin);
    let partial = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nX-Slow: ",
        origin.url("/slow"),
        origin.authority()
    );

    let started = Instant::now();
    let mut slow: Vec<TcpStream> = Vec::with_capacity(count);
    for i in 0..count {
        let mut s =
            TcpStream::connect_timeout(&proxy.addr, Duration::from_secs(2)).expect("connect");
        s.write_all(partial.as_bytes())
            .expect("write a partial head");
        slow.push(s);
        if i % 100 == 99 {
            // Let the proxy accept this batch before the next one: a burst larger than the
            // listen backlog (128) would have its SYNs dropped and retried a second later,
            // which tests the kernel rather than the proxy.
            eventually(Duration::from_secs(1), || open_fds(&proxy) >= base + i - 20);
        }
    }
    let opened = started.elapsed();
    assert!(
        opened < Duration::from_millis(1500),
        "opening {count} slow clients took {opened:?}"
    );
    assert!(
        eventually(Duration::from_secs(1), || open_fds(&proxy)
            >= base + count * 9 / 10),
        "the slow clients are not held by the proxy: {} fds",
        open_fds(&proxy)
    );

    // A tenth of them keep dripping a byte: the header timeout is for the whole head.
    let drippers: Vec<TcpStream> = slow
        .iter()
        .step_by(10)
        .filter_map(|s| s.try_clone().ok())
        .collect();
    let drip = thread::spawn(move || {
        for _ in 0..8 {
            thread::sleep(Duration::from_millis(400));
            for mut s in &drippers {
                let _ = s.write_all(b"x");
            }
        }
    });

    // A normal client is served at once, while every slow client is still connected.
    let t = Instant::now();
    let res = get(proxy.addr, &origin.url("/normal"));
    assert_eq!(res.status(), 200, "{}", res.head.text());
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "a normal request waited {:?} behind slow clients",
        t.elapsed()
    );
    assert!(
        started.elapsed() < opened + Duration::from_secs(2),
        "the normal request was only served after the slow clients timed out"
    );

    // After the header timeout every slow client got 408 (or at least a close) and was let go.
    thread::sleep(Duration::from_secs(3));
    let (mut timed_out, mut closed, mut open) = (0, 0, 0);
    for mut s in slow {
        s.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let mut buf = Vec::new();
        match s.read_to_end(&mut buf) {
            Ok(_) if status_of(&buf) == Some(408) => timed_out += 1,
            Ok(_) => closed += 1,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                open += 1
            }
            Err(_) if status_of(&buf) == Some(408) => timed_out += 1,
            Err(_) => closed += 1,
        }
    }
    drip.join().unwrap();
    assert_eq!(
        open, 0,
        "{open} slow clients still open after the header timeout ({timed_out} got 408)"
    );
    assert!(
        timed_out >= count * 9 / 10,
        "only {timed_out} of {count} slow clients got 408 ({closed} just closed)"
    );
    assert!(
        eventually(Duration::from_secs(5), || open_fds(&proxy) <= base + 2),
        "descriptors not released: {} open, {base} before the slow clients: {}",
        open_fds(&proxy),
        fd_list(&proxy)
    );
    assert_eq!(get(proxy.addr, &origin.url("/after")).status(), 200);
}

/// Whether the proxy process is still running.
fn alive(proxy: &mut Proxy) -> bool {
    proxy.wait_exit(Duration::ZERO).is_none()
}

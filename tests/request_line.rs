//! Request lines through the real binary (RFC 9112 §2.3, §3; SPEC §3): a newer HTTP/1 minor
//! version is served as HTTP/1.1, another major version is 505, and a line that is not exactly
//! `method SP target SP HTTP/d.d` is 400, never 505, and never reaches the origin.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn newer_minor_version_is_served_as_1_1() {
    let origin = Origin::echo();
    let proxy = Proxy::start(&[]);
    let a = origin.authority();
    // Two requests on one connection: HTTP/1.1 rules, so the connection stays open.
    let mut c = Conn::connect(proxy.addr);
    for (i, version) in ["HTTP/1.2", "HTTP/1.9"].iter().enumerate() {
        let raw = format!("GET http://{a}/v{i} {version}\r\nHost: {a}\r\n\r\n");
        let res = c.exchange("GET", raw.as_bytes());
        assert!(
            res.head.start.starts_with("HTTP/1.1 200 "),
            "{version}: {}",
            res.head.text()
        );
        assert_eq!(res.text(), format!("GET /v{i}"));
        let seen = origin.last().head;
        assert_eq!(seen.start, format!("GET /v{i} HTTP/1.1"), "{}", seen.text());
    }
    assert_eq!(origin.requests(), 2);
}

#[test]
fn http_1_0_still_works() {
    let origin = Origin::echo();
    let proxy = Proxy::start(&[]);
    let raw = format!("GET {} HTTP/1.0\r\n\r\n", origin.url("/old"));
    let mut c = Conn::connect(proxy.addr);
    let res = c.exchange("GET", raw.as_bytes());
    assert!(
        res.head.start.starts_with("HTTP/1.1 200 "),
        "{}",
        res.head.text()
    );
    assert_eq!(res.text(), "GET /old");
    assert_eq!(origin.last().head.start, "GET /old HTTP/1.1");
    // HTTP/1.0 without keep-alive: the proxy closes after the response.
    assert!(c.closes_within(Duration::from_secs(5)));
}

#[test]
fn leading_empty_lines_are_ignored() {
    let origin = Origin::echo();
    let proxy = Proxy::start(&[]);
    let a = origin.authority();
    let raw = format!("\r\n\nGET http://{a}/e HTTP/1.1\r\nHost: {a}\r\n\r\n");
    let res = request(proxy.addr, "GET", raw.as_bytes());
    assert_eq!(res.status(), 200, "{}", res.head.text());
    assert_eq!(origin.last().head.start, "GET /e HTTP/1.1");
}

#[test]
fn malformed_lines_are_400_and_other_major_versions_505() {
    let origin = Origin::echo();
    let proxy = Proxy::start(&[]);
    let a = origin.authority();
    let u = origin.url("/x");
    // (head, status): the status says what is wrong, whatever the version says.
    let cases: [(String, u16); 14] = [
        (format!("GET {u} HTTP/2.0\r\nHost: {a}\r\n\r\n"), 505),
        (format!("GET {u} HTTP/3.0\r\nHost: {a}\r\n\r\n"), 505),
        (format!("GET {u}/a b HTTP/1.1\r\nHost: {a}\r\n\r\n"), 400),
        (format!("GET {u}/a b HTTP/2.0\r\nHost: {a}\r\n\r\n"), 400),
        (format!("GET {u}/a\tb HTTP/1.1\r\nHost: {a}\r\n\r\n"), 400),
        (format!("GET {u}\t HTTP/2.0\r\nHost: {a}\r\n\r\n"), 400),
        (format!("GET {u}\r\nHost: {a}\r\n\r\n"), 400),
        (format!("GET {u} \r\nHost: {a}\r\n\r\n"), 400),
        (format!("GET {u} HTTP/1.1 extra\r\nHost: {a}\r\n\r\n"), 400),
        (format!("GET {u}  HTTP/1.1\r\nHost: {a}\r\n\r\n"), 400),
        (format!("GET {u} http/1.1\r\nHost: {a}\r\n\r\n"), 400),
        (format!("GET {u} HTTP/1.10\r\nHost: {a}\r\n\r\n"), 400),
        (format!("GET {u} HTTP/1\r\nHost: {a}\r\n\r\n"), 400),
        // HTTP/0.9 style: no version at all.
        ("GET /\r\n\r\n".to_string(), 400),
    ];
    for (raw, status) in &cases {
        let mut c = Conn::connect(proxy.addr);
        let _ = c.try_write(raw.as_bytes());
        let res = c
            .read_response()
            .unwrap_or_else(|e| panic!("no reply to {:?}: {e}", show(raw.as_bytes())));
        assert_eq!(
            res.status(),
            *status,
            "{:?}: {}",
            show(raw.as_bytes()),
            res.text()
        );
        res.assert_error(*status);
        if *status == 400 {
            assert!(
                res.text().contains("request line"),
                "{:?}: {}",
                show(raw.as_bytes()),
                res.text()
            );
        }
        assert!(
            c.closes_within(Duration::from_secs(5)),
            "connection left open after {:?}",
            show(raw.as_bytes())
        );
    }
    assert_eq!(
        origin.requests(),
        0,
        "a malformed request line reached the origin: {:?}",
        origin.last().head.text()
    );
    assert_still_serving(proxy.addr, &origin);
}

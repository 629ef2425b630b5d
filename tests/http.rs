//! Plain HTTP forwarding through the real binary (SPEC §3, §8): methods and targets, bodies
//! and framing, keep-alive and pipelining, hop-by-hop fields, Via, Date, strict request
//! framing, invalid origin responses, Upgrade, name resolution failures, and the access log.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;

const FIVE_S: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------------------
// Methods and targets
// ---------------------------------------------------------------------------------------------

#[test]
fn every_method_reaches_the_origin_in_origin_form_with_host_from_target() {
    let origin = Origin::echo();
    let proxy = Proxy::start(&[]);
    let mut c = Conn::connect(proxy.addr);
    let methods: [(&str, &[u8]); 10] = [
        ("GET", b""),
        ("HEAD", b""),
        ("POST", b"post body"),
        ("PUT", b"put body"),
        ("DELETE", b""),
        ("PATCH", b"patch body"),
        ("OPTIONS", b""),
        ("TRACE", b""),
        ("PURGE", b""),
        ("X-CUSTOM_1", b"custom body"),
    ];
    for (method, body) in methods {
        let path = format!("/m/{method}?q=1&r=%20x");
        let url = origin.url(&path);
        // The client's Host is wrong on purpose: the proxy must make Host from the target.
        let mut raw =
            format!("{method} {url} HTTP/1.1\r\nHost: wrong.example\r\nX-Test: {method}\r\n");
        if !body.is_empty() {
            raw.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        raw.push_str("\r\n");
        let mut raw = raw.into_bytes();
        raw.extend_from_slice(body);
        let res = c.exchange(method, &raw);
        assert_eq!(res.status(), 200, "{method}: {}", res.head.text());
        let seen = origin.last();
        assert_eq!(
            seen.head.start,
            format!("{method} {path} HTTP/1.1"),
            "{method}"
        );
        assert_eq!(
            seen.head.all("host"),
            [origin.authority()],
            "{method}: {}",
            seen.head.text()
        );
        assert_eq!(seen.head.get("x-test"), Some(method));
        assert_eq!(seen.body, body, "{method}");
        let expected: Vec<u8> = if body.is_empty() {
            format!("{method} {path}").into_bytes()
        } else {
            body.to_vec()
        };
        if method == "HEAD" {
            assert!(res.body.is_empty());
            assert_eq!(res.header("x-method"), Some("HEAD"));
        } else {
            assert_eq!(res.body, expected, "{method}");
        }
    }
}

#[test]
fn host_comes_from_the_target_for_names_and_http10() {
    let origin = Origin::echo();
    let proxy = Proxy::start(&[]);
    // `localhost` is the one name tests may resolve.
    let url = format!("http://localhost:{}/by-name", origin.port());
    let res = request(
        proxy.addr,
        "GET",
        &build_request("GET", &url, &[("Connection", "close")], b""),
    );
    assert_eq!(res.status(), 200, "{}", res.head.text());
    assert_eq!(
        origin.last().head.all("host"),
        [format!("localhost:{}", origin.port())]
    );
    // An HTTP/1.0 client need not send Host; the origin still gets one.
    let raw = format!("GET {} HTTP/1.0\r\n\r\n", origin.url("/ten"));
    let res = request(proxy.addr, "GET", raw.as_bytes());
    assert_eq!(res.status(), 200, "{}", res.head.text());
    let seen = origin.last();
    assert_eq!(seen.head.target(), "/ten");
    assert_eq!(seen.head.all("host"), [origin.authority()]);
}

#[test]
fn empty_lines_before_a_request_are_ignored() {
    let origin = Origin::echo();
    let proxy = Proxy::start(&[]);
    let mut c = Conn::connect(proxy.addr);
    let mut raw = b"\r\n".to_vec();
    raw.extend(build_request("GET", &origin.url("/first"), &[], b""));
    assert_eq!(c.exchange("GET", &raw).text(), "GET /first");
    // A stray CRLF after a body, as some old clients send, is not a request either.
    let mut raw = b"\r\n".to_vec();
    raw.extend(build_request("GET", &origin.url("/second"), &[], b""));
    assert_eq!(c.exchange("GET", &raw).text(), "GET /second");
}

#[test]
fn empty_path_is_asterisk_for_options_and_slash_otherwise() {
    let origin = Origin::echo();
    let proxy = Proxy::start(&[]);
    let bare = format!("http://{}", origin.authority());
    let mut c = Conn::connect(proxy.addr);
    let res = c.exchange("OPTIONS", &build_request("OPTIONS", &bare, &[], b""));
    assert_eq!(res.status(), 200);
    assert_eq!(origin.last().head.start, "OPTIONS * HTTP/1.1");
    let res = c.exchange("GET", &build_request("GET", &bare, &[], b""));
    assert_eq!(res.status(), 200);
    assert_eq!(origin.last().head.start, "GET / HTTP/1.1");
    let res = c.exchange(
        "GET",
        &build_request("GET", &format!("{bare}?x=1"), &[], b""),
    );
    assert_eq!(res.status(), 200);
    assert_eq!(origin.last().head.start, "GET /?x=1 HTTP/1.1");
}

#[test]
fn max_forwards_is_decremented_and_answered_at_zero() {
    let origin = Origin::echo();
    let proxy = Proxy::start(&[]);
    let mut c = Conn::connect(proxy.addr);
    let url = origin.url("/mf");

    let res = c.exchange(
        "OPTIONS",
        &build_request("OPTIONS", &url, &[("Max-Forwards", "5")], b""),
    );
    assert_eq!(res.status(), 200);
    assert_eq!(origin.last().head.all("max-forwards"), ["4"]);
    let res = c.exchange(
        "TRACE",
        &build_request("TRACE", &url, &[("Max-Forwards", "1")], b""),
    );
    assert_eq!(res.status(), 200);
    assert_eq!(origin.last().head.all("max-forwards"), ["0"]);
    // Other methods leave it alone.
    let res = c.exchange(
        "GET",
        &build_request("GET", &url, &[("Max-Forwards", "0")], b""),
    );
    assert_eq!(res.status(), 200);
    assert_eq!(origin.last().head.all("max-forwards"), ["0"]);
    let before = origin.requests();

    // At 0 the proxy is the final recipient (RFC 9110 §7.6.2).
    let res = c.exchange(
        "OPTIONS",
        &build_request("OPTIONS", &url, &[("Max-Forwards", "0")], b""),
    );
    assert_eq!(res.status(), 200, "{}", res.head.text());
    let res = c.exchange(
        "TRACE",
        &build_request(
            "TRACE",
            &url,
            &[("Max-Forwards", "0"), ("X-Mark", "traced")],
            b"",
        ),
    );
    assert_eq!(res.status(), 200, "{}", res.head.text());
    assert_eq!(res.header("content-type"), Some("message/http"));
    let text = res.text();
    assert!(text.starts_with(&format!("TRACE {url} HTTP/1.1")), "{text}");
    assert!(text.contains("X-Mark: traced"), "{text}");
    assert_eq!(
        origin.requests(),
        before,
        "Max-Forwards: 0 must not reach the origin"
    );

    // A body the answer did not read must not be taken for the next request: the connection
    // closes after the answer.
    let hidden = build_request("GET", &origin.url("/hidden"), &[], b"");
    c.write(&build_request(
        "OPTIONS",
        &url,
        &[("Max-Forwards", "0")],
        &hidden,
    ));
    let res = c.response_to("OPTIONS");
    assert_eq!(res.status(), 200, "{}", res.head.text());
    assert_eq!(
        res.header("connection"),
        Some("close"),
        "{}",
        res.head.text()
    );
    assert!(c.closes_within(FIVE_S), "the connection stayed open");
    assert_eq!(
        origin.requests(),
        before,
        "the body was forwarded as a request"
    );
}

// ---------------------------------------------------------------------------------------------
// Bodies and framing
// ---------------------------------------------------------------------------------------------

#[test]
fn large_content_length_bodies_both_ways() {
    let origin = Origin::echo();
    let proxy = Proxy::start(&[]);
    let body = pattern(4 << 20, 1);
    let res = request(
        proxy.addr,
        "POST",
        &build_request("POST", &origin.url("/big"), &[], &body),
    );
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.header("x-body-hash"),
        Some(format!("{:016x}", fnv64(&body)).as_str()),
        "origin got another body"
    );
    assert_eq!(
        res.header("content-length"),
        Some(body.len().to_string().as_str())
    );
    assert_eq!(res.body.len(), body.len());
    assert_eq!(fnv64(&res.body), fnv64(&body), "client got another body");
}

#[test]
fn large_chunked_request_body_with_trailers() {
    let origin = Origin::echo();
    let proxy = Proxy::start(&[]);
    let body = pattern(3 << 20, 2);
    let sum = format!("{:016x}", fnv64(&body));
    let mut raw = format!(
        "PUT {} HTTP/1.1\r\nHost: {}\r\nTransfer-Encoding: chunked\r\n\r\n",
        origin.url("/chunked-up"),
        origin.authority()
    )
    .into_bytes();
    raw.extend_from_slice(&chunked(
        &body,
        &[1, 7, 4096, 65536, 100_000, 3, 16384],
        &[("X-Req-Sum", &sum)],
    ));
    let res = request(proxy.addr, "PUT", &raw);
    assert_eq!(res.status(), 200, "{}", res.head.text());
    let seen = origin.last();
    assert_eq!(seen.head.tokens("transfer-encoding"), ["chunked"]);
    assert_eq!(seen.body.len(), body.len());
    assert_eq!(fnv64(&seen.body), fnv64(&body));
    assert_eq!(
        seen.trailers,
        [("X-Req-Sum".to_string(), sum)],
        "request trailers lost"
    );
    assert_eq!(fnv64(&res.body), fnv64(&body));
}

/// An origin answering every request with a chunked body of `len` pattern bytes and a
/// trailer `X-Checksum` (its FNV hash).
fn chunked_origin(len: usize) -> Origin {
    Origin::start(move |head, conn| {
        let body = pattern(len, 3);
        let sum = format!("{:016x}", fnv64(&body));
        let mut out = b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\
                        Transfer-Encoding: chunked\r\n\r\n"
            .to_vec();
        out.extend_from_slice(&chunked(
            &body,
            &[5, 70_000, 1, 8192, 1000],
            &[("X-Checksum", &sum)],
        ));
        let _ = conn.read_body(head);
        conn.stream.write_all(&out).is_ok()
    })
}

#[test]
fn large_chunked_response_with_trailers() {
    let origin = chunked_origin(5 << 20);
    let proxy = Proxy::start(&[]);
    let body = pattern(5 << 20, 3);
    let res = request(
        proxy.addr,
        "GET",
        &build_request("GET", &origin.url("/chunked-down"), &[], b""),
    );
    assert_eq!(res.status(), 200);
    assert!(
        res.chunked,
        "the chunked framing should pass through to an HTTP/1.1 client"
    );
    assert_eq!(res.body.len(), body.len());
    assert_eq!(fnv64(&res.body), fnv64(&body));
    assert_eq!(
        res.trailers,
        [("X-Checksum".to_string(), format!("{:016x}", fnv64(&body)))],
        "trailers lost"
    );
}

#[test]
fn http10_client_gets_a_dechunked_response() {
    let origin = chunked_origin(1 << 20);
    let proxy = Proxy::start(&[]);
    let body = pattern(1 << 20, 3);
    let raw = format!("GET {} HTTP/1.0\r\n\r\n", origin.url("/ten"));
    let mut c = Conn::connect(proxy.addr);
    let res = c.exchange("GET", raw.as_bytes());
    assert_eq!(res.status(), 200);
    assert!(
        !res.head
            .tokens("transfer-encoding")
            .contains(&"chunked".to_string()),
        "chunked sent to an HTTP/1.0 client: {}",
        res.head.text()
    );
    assert!(!res.chunked);
    assert_eq!(res.body.len(), body.len(), "body not de-chunked exactly");
    assert_eq!(fnv64(&res.body), fnv64(&body));
}

#[test]
fn head_204_and_304_have_no_body() {
    let origin = Origin::start(|head, conn| {
        let raw: &[u8] = match head.target() {
            "/head" => b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nX-Kind: head\r\n\r\n",
            "/head-chunked" => b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            "/204" => b"HTTP/1.1 204 No Content\r\nX-Kind: 204\r\n\r\n",
            "/304" => b"HTTP/1.1 304 Not Modified\r\nContent-Length: 50\r\nETag: \"v1\"\r\n\r\n",
            _ => return echo_handler(head, conn),
        };
        conn.stream.write_all(raw).is_ok()
    });
    let proxy = Proxy::start(&[]);
    let mut c = Conn::connect(proxy.addr);
    // A proxy waiting for a body here would make these reads time out.
    c.set_timeout(Duration::from_secs(3));
    let res = c.exchange(
        "HEAD",
        &build_request("HEAD", &origin.url("/head"), &[], b""),
    );
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.header("content-length"),
        Some("1000"),
        "HEAD keeps the Content-Length of the GET"
    );
    let res = c.exchange(
        "HEAD",
        &build_request("HEAD", &origin.url("/head-chunked"), &[], b""),
    );
    assert_eq!(res.status(), 200);
    let res = c.exchange("GET", &build_request("GET", &origin.url("/204"), &[], b""));
    assert_eq!(res.status(), 204);
    assert_eq!(res.header("x-kind"), Some("204"));
    let res = c.exchange("GET", &build_request("GET", &origin.url("/304"), &[], b""));
    assert_eq!(res.status(), 304);
    assert_eq!(res.header("etag"), Some("\"v1\""));
    // The same connection still works and is in step.
    let res = c.exchange(
        "GET",
        &build_request("GET", &origin.url("/after"), &[], b""),
    );
    assert_eq!(res.status(), 200);
    assert_eq!(res.text(), "GET /after");
}

#[test]
fn read_until_close_responses_are_relayed_whole() {
    let body = pattern(1 << 20, 4);
    let sent = body.clone();
    let origin = Origin::start(move |head, conn| {
        let (version, framing) = match head.target() {
            "/gzip" => ("1.1", "Transfer-Encoding: gzip\r\n"),
            "/http10" => ("1.0", ""),
            _ => ("1.1", ""),
        };
        let mut out = format!(
            "HTTP/{version} 200 OK\r\nContent-Type: application/octet-stream\r\n{framing}\r\n"
        )
        .into_bytes();
        out.extend_from_slice(&sent);
        let _ = conn.stream.write_all(&out);
        false // close: that is what ends the body
    });
    let proxy = Proxy::start(&[]);
    for path in ["/close", "/gzip", "/http10"] {
        let res = request(
            proxy.addr,
            "GET",
            &build_request("GET", &origin.url(path), &[], b""),
        );
        assert_eq!(res.status(), 200, "{path}");
        assert_eq!(res.body.len(), body.len(), "{path}: body cut or padded");
        assert_eq!(fnv64(&res.body), fnv64(&body), "{path}");
        if path == "/http10" {
            // The received protocol in Via is the origin's (RFC 9110 §7.6.3).
            assert_eq!(
                res.head.tokens("via"),
                ["1.0 smolproxy"],
                "{}",
                res.head.text()
            );
        }
    }
    assert_still_serving(proxy.addr, &Origin::echo());
}

#[test]
fn expect_100_continue() {
    let origin = Origin::start(|head, conn| {
        if head.target() == "/reject" {
            // Answer before the body, as an origin refusing an upload does.
            conn.respond(
                "413 Content Too Large",
                &[("Connection", "close")],
                b"too big",
            );
            return false;
        }
        if head.tokens("expect").contains(&"100-continue".to_string()) {
            let _ = conn.stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n");
        }
        echo_handler(head, conn)
    });
    let proxy = Proxy::start(&[]);
    let body = pattern(1 << 20, 5);
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
        origin.url("/upload"),
        origin.authority(),
        body.len()
    );
    let mut c = Conn::connect(proxy.addr);
    c.write(head.as_bytes());
    c.set_timeout(FIVE_S);
    let interim = c
        .read_head()
        .expect("no 100 Continue")
        .expect("closed instead of 100 Continue");
    assert_eq!(interim.status(), 100, "{}", interim.text());
    c.write(&body);
    let res = c.response_to("POST");
    assert_eq!(res.status(), 200);
    assert_eq!(fnv64(&res.body), fnv64(&body));
    assert_eq!(origin.last().head.get("expect"), Some("100-continue"));

    // The origin refuses before the body: the client gets the final status, no 100.
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
        origin.url("/reject"),
        origin.authority(),
        body.len()
    );
    let mut c = Conn::connect(proxy.addr);
    c.write(head.as_bytes());
    c.set_timeout(FIVE_S);
    let res = c.response_to("POST");
    assert_eq!(res.status(), 413);
    assert!(res.interim.is_empty());
    assert_eq!(res.text(), "too big");
    assert_still_serving(proxy.addr, &Origin::echo());
}

#[test]
fn interim_1xx_responses_go_to_http11_clients_only() {
    let origin = Origin::start(|head, conn| {
        let _ = conn.read_body(head);
        let _ = conn.stream.write_all(
            b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n\
              HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        );
        true
    });
    let proxy = Proxy::start(&[]);
    let res = request(
        proxy.addr,
        "GET",
        &build_request("GET", &origin.url("/hints"), &[], b""),
    );
    assert_eq!(res.status(), 200);
    assert_eq!(res.interim.len(), 1, "103 not forwarded");
    assert_eq!(res.interim[0].status(), 103);
    assert_eq!(
        res.interim[0].get("link"),
        Some("</style.css>; rel=preload")
    );
    assert_eq!(res.text(), "ok");
    let raw = format!("GET {} HTTP/1.0\r\n\r\n", origin.url("/hints"));
    let res = request(proxy.addr, "GET", raw.as_bytes());
    assert_eq!(res.status(), 200);
    assert!(res.interim.is_empty(), "1xx sent to an HTTP/1.0 client");
    assert_eq!(res.text(), "ok");
}

// ---------------------------------------------------------------------------------------------
// Connections
// ---------------------------------------------------------------------------------------------

#[test]
fn only_idempotent_requests_are_retried_after_a_pooled_connection_fails() {
    // The origin answers the first request on each connection and closes the connection on
    // the second one after reading it, without answering: what a pooled connection the origin
    // dropped meanwhile looks like.
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let origin = Origin::tcp(move |conn| {
        for n in 0.. {
            let Ok(Some(head)) = conn.read_head() else {
                return;
            };
            log.lock().unwrap().push(head.start.clone());
            if n == 1 {
                return;
            }
            let _ = conn.try_write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        }
    });
    let proxy = Proxy::start(&[]);
    let mut c = Conn::connect(proxy.addr);
    let mut send = |method: &str, path: &str, fields: &[(&str, &str)]| {
        c.exchange(
            method,
            &build_request(method, &origin.url(path), fields, b""),
        )
        .status()
    };
    assert_eq!(send("GET", "/1", &[]), 200);
    // RFC 9112 §9.3.1.1: a POST is not repeated, even without a body.
    assert_eq!(send("POST", "/2", &[("Content-Length", "0")]), 502);
    assert_eq!(send("GET", "/3", &[]), 200);
    // A GET is: the client never sees the dead pooled connection.
    assert_eq!(send("GET", "/4", &[]), 200);
    let seen = seen.lock().unwrap().clone();
    let count = |line: &str| seen.iter().filter(|l| l.starts_with(line)).count();
    assert_eq!(count("POST /2 "), 1, "{seen:?}");
    assert_eq!(count("GET /4 "), 2, "{seen:?}");
}

#[test]
fn keep_alive_serves_many_requests_and_reuses_the_origin_connection() {
    let origin = Origin::echo();
    let proxy = Proxy::start(&[]);
    let mut c = Conn::connect(proxy.addr);
    for i in 0..6 {
        let res = c.exchange(
            "GET",
            &build_request("GET", &origin.url(&format!("/ka/{i}")), &[], b""),
        );
        assert_eq!(res.status(), 200);
        assert_eq!(res.text(), format!("GET /ka/{i}"));
        assert!(
            !res.head.tokens("connection").contains(&"close".to_string()),
            "{}",
            res.head.text()
        );
    }
    assert_eq!(
        origin.connections(),
        1,
        "the idle origin connection was not reused"
    );

    // HTTP/1.0: closed after the response unless the client asks for keep-alive.
    let mut c = Conn::connect(proxy.addr);
    let res = c.exchange(
        "GET",
        format!("GET {} HTTP/1.0\r\n\r\n", origin.url("/ten")).as_bytes(),
    );
    assert_eq!(res.status(), 200);
    assert!(
        c.closes_within(FIVE_S),
        "HTTP/1.0 connection without keep-alive stayed open"
    );
    let mut c = Conn::connect(proxy.addr);
    for i in 0..2 {
        let raw = format!(
            "GET {} HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
            origin.url(&format!("/ten-ka/{i}"))
        );
        let res = c.exchange("GET", raw.as_bytes());
        assert_eq!(res.status(), 200);
        assert_eq!(res.text(), format!("GET /ten-ka/{i}"));
    }
}

#[test]
fn origin_connections_that_close_do_not_break_the_client_connection() {
    // /close-now: Connection: close, then closed. /close-later: keep-alive promised, but the
    // origin closes 100 ms later, as origins with short keep-alive timeouts do.
    let origin = Origin::start(|head, conn| {
        let _ = conn.read_body(head);
        match head.target() {
            "/close-now" => {
                conn.respond("200 OK", &[("Connection", "close")], b"closing");
                false
            }
            _ => {
                conn.respond("200 OK", &[], head.target().as_bytes());
                thread::sleep(Duration::from_millis(100));
                false
            }
        }
    });
    let proxy = Proxy::start(&[]);
    let mut c = Conn::connect(proxy.addr);
    for _ in 0..3 {
        let res = c.exchange(
            "GET",
            &build_request("GET", &origin.url("/close-now"), &[], b""),
        );
        assert_eq!((res.status(), res.text().as_str()), (200, "closing"));
    }
    for (i, pause) in [0u64, 50, 100, 150, 250, 0, 120].into_iter().enumerate() {
        thread::sleep(Duration::from_millis(pause));
        let path = format!("/close-later/{i}");
        let res = c.exchange("GET", &build_request("GET", &origin.url(&path), &[], b""));
        assert_eq!(
            res.status(),
            200,
            "after a pause of {pause} ms: {}",
            res.text()
        );
        assert_eq!(res.text(), path);
    }
}

#[test]
fn idle_keep_alive_connections_are_closed_after_the_idle_timeout() {
    let origin = Origin::echo();
    let proxy = Proxy::start(&["--idle-timeout", "1s"]);
    let mut c = Conn::connect(proxy.addr);
    let res = c.exchange("GET", &build_request("GET", &origin.url("/once"), &[], b""));
    assert_eq!(res.status(), 200);
    let started = Instant::now();
    assert!(
        c.closes_within(FIVE_S),
        "idle keep-alive connection still open after 5 s"
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(800),
        "closed after {took:?}, before the idle timeout"
    );
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let origin = Origin::start(|head, conn| {
        if head.target().contains("slow") {
            thread::sleep(Duration::from_millis(300));
        }
        echo_handler(head, conn)
    });
    let proxy = Proxy::start(&[]);
    let mut all = Vec::new();
    all.extend(build_request("GET", &origin.url("/p1-slow"), &[], b""));
    all.extend(build_request("HEAD", &origin.url("/p2"), &[], b""));
    all.extend(build_request("POST", &origin.url("/p3"), &[], b"body-3"));
    all.extend(build_request("GET", &origin.url("/p4"), &[], b""));
    let mut c = Conn::connect(proxy.addr);
    c.write(&all);
    let r1 = c.response_to("GET");
    let r2 = c.response_to("HEAD");
    let r3 = c.response_to("POST");
    let r4 = c.response_to("GET");
    assert_eq!(r1.text(), "GET /p1-slow");
    assert_eq!(r2.header("x-target"), Some("/p2"));
    assert!(r2.body.is_empty());
    assert_eq!(r3.text(), "body-3");
    assert_eq!(r4.text(), "GET /p4");
}

#[test]
fn a_refused_request_in_a_pipeline_does_not_disturb_the_others() {
    let origin = Origin::echo();
    let proxy = Proxy::start(&[]);
    let mut all = build_request("GET", &origin.url("/before"), &[], b"");
    all.extend(build_request(
        "GET",
        &origin.url("/looping"),
        &[("Via", "1.1 smolproxy")],
        b"",
    ));
    all.extend(build_request("GET", &origin.url("/after"), &[], b""));
    let mut c = Conn::connect(proxy.addr);
    c.write(&all);
    assert_eq!(c.response().text(), "GET /before");
    c.response().assert_error(508);
    assert_eq!(c.response().text(), "GET /after");
}

#[test]
fn nothing_after_connection_close_is_processed() {
    let origin = Origin::echo();
    let proxy = Proxy::start(&[]);
    let mut all = build_request(
        "GET",
        &origin.url("/first"),
        &[("Connection", "close")],
        b"",
    );
    all.extend(build_request("GET", &origin.url("/second"), &[], b""));
    let mut c = Conn::connect(proxy.addr);
    c.write(&all);
    let res = c.response();
    assert_eq!(res.text(), "GET /first");
    assert!(res.head.tokens("connection").contains(&"close".to_string()));
    assert!(
        c.closes_within(FIVE_S),
        "connection stayed open after Connection: close"
    );
    thread::sleep(Duration::from_millis(200));
    assert!(
        origin.seen().iter().all(|s| s.head.target() != "/second"),
        "request after close was forwarded"
    );
}

// ---------------------------------------------------------------------------------------------
// Header fields
// ---------------------------------------------------------------------------------------------

#[test]
fn hop_by_hop_request_fields_are_removed_and_the_rest_kept_in_order() {
    let origin = Origin::echo();
    let proxy = Proxy::start(&[]);
    let url = origin.url("/hop");
    let raw = format!(
        "GET {url} HTTP/1.1\r\n\
         Host: {}\r\n\
         X-Dup: one\r\n\
         Connection: keep-alive, X-Named-Hop\r\n\
         X-Named-Hop: secret\r\n\
         Keep-Alive: timeout=5\r\n\
         Accept: */*\r\n\
         Proxy-Connection: keep-alive\r\n\
         Proxy-Authorization: Basic dXNlcjpwYXNz\r\n\
         TE: trailers\r\n\
         Trailer: X-Checksum\r\n\
         Upgrade: h2c\r\n\
         X-Dup: two\r\n\
         x-lower-case: Mixed Value\r\n\
         X-Odd: a,  b ,c\r\n\
         Cookie: a=b; c=d\r\n\
         X-Dup: three\r\n\
         \r\n",
        origin.authority()
    );
    let res = request(proxy.addr, "GET", raw.as_bytes());
    assert_eq!(res.status(), 200);
    let seen = origin.last().head;
    let kept = seen.fields_except(&["host", "via"]);
    let expected: Vec<(String, String)> = [
        ("X-Dup", "one"),
        ("Accept", "*/*"),
        ("X-Dup", "two"),
        ("x-lower-case", "Mixed Value"),
        ("X-Odd", "a,  b ,c"),
        ("Cookie", "a=b; c=d"),
        ("X-Dup", "three"),
    ]
    .iter()
    .map(|(n, v)| (n.to_string(), v.to_string()))
    .collect();
    assert_eq!(kept, expected, "origin saw:\n{}", seen.text());
    assert!(
        seen.text().contains("\r\nX-Odd: a,  b ,c\r\n"),
        "value not passed byte for byte:\n{}",
        seen.text()
    );
}

#[test]
fn hop_by_hop_response_fields_are_removed_and_the_rest_kept_in_order() {
    let origin = Origin::start(|head, conn| {
        let _ = conn.read_body(head);
        let _ = conn.stream.write_all(
            b"HTTP/1.1 200 OK\r\n\
              Set-Cookie: a=1\r\n\
              Connection: X-Resp-Hop\r\n\
              X-Resp-Hop: secret\r\n\
              Keep-Alive: timeout=5, max=100\r\n\
              X-Order: first\r\n\
              Proxy-Authenticate: Basic realm=\"origin\"\r\n\
              Proxy-Connection: keep-alive\r\n\
              Trailer: X-T\r\n\
              Upgrade: h2c\r\n\
              TE: trailers\r\n\
              Set-Cookie: b=2\r\n\
              Content-Type: text/plain\r\n\
              Content-Length: 2\r\n\
              \r\n\
              ok",
        );
        true
    });
    let proxy = Proxy::start(&[]);
    let res = request(
        proxy.addr,
        "GET",
        &build_request("GET", &origin.url("/hop"), &[], b""),
    );
    assert_eq!(res.status(), 200);
    assert_eq!(res.text(), "ok");
    let kept = res.head.fields_except(&["via", "date", "connection"]);
    let expected: Vec<(String, String)> = [
        ("Set-Cookie", "a=1"),
        ("X-Order", "first"),
        ("Set-Cookie", "b=2"),
        ("Content-Type", "text/plain"),
        ("Content-Length", "2"),
    ]
    .iter()
    .map(|(n, v)| (n.to_string(), v.to_string()))
    .collect();
    assert_eq!(kept, expected, "client saw:\n{}", res.head.text());
    assert!(!res
        .head
        .tokens("connection")
        .contains(&"x-resp-hop".to_string()));
}

#[test]
fn connection_cannot_remove_the_framing_of_a_request() {
    // Connection naming Transfer-Encoding must not strip it: the chunked body would reach the
    // origin without framing, and a request hidden in it would be read as a second request.
    let origin = Origin::echo();
    let proxy = Proxy::start(&[]);
    let url = origin.url("/framed");
    let hidden = format!(
        "GET /hidden HTTP/1.1\r\nHost: {}\r\n\r\n",
        origin.authority()
    );
    let raw = format!(
        "POST {url} HTTP/1.1\r\nHost: {}\r\nConnection: transfer-encoding\r\n\
         Transfer-Encoding: chunked\r\n\r\n{:x}\r\n{hidden}\r\n0\r\n\r\n",
        origin.authority(),
        hidden.len()
    );
    let res = request(proxy.addr, "POST", raw.as_bytes());
    assert_eq!(res.status(), 200);
    let seen = origin.last();
    assert_eq!(
        seen.head.get("transfer-encoding"),
        Some("chunked"),
        "{}",
        seen.head.text()
    );
    assert_eq!(seen.body, hidden.as_bytes());
    assert_eq!(origin.requests(), 1, "the body was read as a request");

    // An explicit Content-Length: 0 is forwarded as such.
    let res = request(
        proxy.addr,
        "POST",
        &build_request("POST", &url, &[("Content-Length", "0")], b""),
    );
    assert_eq!(res.status(), 200);
    assert_eq!(origin.last().head.get("content-length"), Some("0"));
}

#[test]
fn an_early_response_to_an_upload_says_the_connection_closes() {
    // The origin refuses the upload as soon as it sees the head (an early 413).
    let origin = Origin::tcp(|conn| {
        let _ = conn.read_head();
        let _ = conn.try_write(b"HTTP/1.1 413 Content Too Large\r\nContent-Length: 4\r\n\r\nnope");
        thread::sleep(Duration::from_secs(2));
    });
    let proxy = Proxy::start(&[]);
    let mut c = Conn::connect(proxy.addr);
    let total = 8 << 20;
    c.write(
        format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Length: {total}\r\n\r\n",
            origin.url("/upload"),
            origin.authority()
        )
        .as_bytes(),
    );
    let mut writer = c.stream.try_clone().unwrap();
    let uploader = thread::spawn(move || {
        // Goes on until the proxy stops reading; its error is expected.
        let _ = writer.write_all(&vec![b'u'; total]);
    });
    let res = c.response_to("POST");
    assert_eq!(res.status(), 413, "{}", res.head.text());
    assert_eq!(res.text(), "nope");
    assert_eq!(
        res.header("connection"),
        Some("close"),
        "{}",
        res.head.text()
    );
    assert!(c.closes_within(FIVE_S), "the connection stayed open");
    uploader.join().unwrap();
}

#[test]
fn connection_cannot_remove_the_framing_of_a_response() {
    let origin = Origin::start(|head, conn| {
        let _ = conn.read_body(head);
        let _ = conn.stream.write_all(
            b"HTTP/1.1 200 OK\r\nConnection: content-length\r\nContent-Length: 2\r\n\r\nok",
        );
        true
    });
    let proxy = Proxy::start(&[]);
    let mut c = Conn::connect(proxy.addr);
    for _ in 0..2 {
        c.write(&build_request("GET", &origin.url("/framed"), &[], b""));
        let res = c.response();
        assert_eq!(
            res.header("content-length"),
            Some("2"),
            "{}",
            res.head.text()
        );
        assert_eq!(res.text(), "ok");
    }
}

#[test]
fn response_whitespace_before_colon_and_obs_fold_are_cleaned() {
    let origin = Origin::start(|head, conn| {
        let _ = conn.read_body(head);
        let _ = conn.stream.write_all(
            b"HTTP/1.1 200 OK\r\nX-Space : yes\r\nX-Fold: a\r\n  b\r\nContent-Length: 2\r\n\r\nok",
        );
        true
    });
    let proxy = Proxy::start(&[]);
    let res = request(
        proxy.addr,
        "GET",
        &build_request("GET", &origin.url("/ws"), &[], b""),
    );
    assert_eq!(res.status(), 200, "{}", res.head.text());
    assert_eq!(res.text(), "ok");
    let raw = res.head.text();
    assert!(
        raw.contains("\r\nX-Space: yes\r\n"),
        "whitespace before colon not removed:\n{raw}"
    );
    let fold = res.head.get("x-fold").unwrap_or("");
    assert!(
        fold.starts_with('a') && fold.ends_with('b'),
        "obs-fold not joined into one line:\n{raw}"
    );
    assert!(!raw.contains("\r\n "), "obs-fold passed on:\n{raw}");
}

#[test]
fn via_is_added_both_ways() {
    let origin = Origin::start(|head, conn| {
        let _ = conn.read_body(head);
        let via: &[(&str, &str)] = if head.target() == "/cached" {
            &[("Via", "1.1 cache")]
        } else {
            &[]
        };
        conn.respond("200 OK", via, b"ok");
        true
    });
    let proxy = Proxy::start(&[]);
    let res = request(
        proxy.addr,
        "GET",
        &build_request("GET", &origin.url("/plain"), &[], b""),
    );
    assert_eq!(res.status(), 200);
    assert_eq!(origin.last().head.tokens("via"), ["1.1 smolproxy"]);
    assert_eq!(res.head.tokens("via"), ["1.1 smolproxy"]);

    let res = request(
        proxy.addr,
        "GET",
        &build_request("GET", &origin.url("/cached"), &[("Via", "1.0 other")], b""),
    );
    assert_eq!(res.status(), 200);
    assert_eq!(
        origin.last().head.tokens("via"),
        ["1.0 other", "1.1 smolproxy"]
    );
    assert_eq!(res.head.tokens("via"), ["1.1 cache", "1.1 smolproxy"]);

    // The received protocol is the client's (RFC 9110 §7.6.3).
    let res = request(
        proxy.addr,
        "GET",
        format!("GET {} HTTP/1.0\r\n\r\n", origin.url("/ten")).as_bytes(),
    );
    assert_eq!(res.status(), 200);
    assert_eq!(origin.last().head.tokens("via"), ["1.0 smolproxy"]);
}

#[test]
fn a_request_that_already_passed_through_us_is_a_loop_508() {
    let origin = Origin::echo();
    let proxy = Proxy::start(&[]);
    for via in ["1.1 smolproxy", "1.0 other, 1.1 SmolProxy (x)"] {
        let res = request(
            proxy.addr,
            "GET",
            &build_request("GET", &origin.url("/loop"), &[("Via", via)], b""),
        );
        res.assert_error(508);
    }
    assert_eq!(origin.requests(), 0, "a looping request reached the origin");
    assert_still_serving(proxy.addr, &origin);
}

#[test]
fn via_name_and_no_via() {
    let origin = Origin::echo();
    let named = Proxy::start(&["--via", "edge-1"]);
    let res = request(
        named.addr,
        "GET",
        &build_request("GET", &origin.url("/n"), &[("Via", "1.1 smolproxy")], b""),
    );
    assert_eq!(
        res.status(),
        200,
        "another proxy's name is not a loop: {}",
        res.head.text()
    );
    assert_eq!(
        origin.last().head.tokens("via"),
        ["1.1 smolproxy", "1.1 edge-1"]
    );
    assert_eq!(res.head.tokens("via"), ["1.1 edge-1"]);
    let res = request(
        named.addr,
        "GET",
        &build_request("GET", &origin.url("/n"), &[("Via", "1.1 edge-1")], b""),
    );
    res.assert_error(508);

    let none = Proxy::start(&["--no-via"]);
    let res = request(
        none.addr,
        "GET",
        &build_request("GET", &origin.url("/none"), &[], b""),
    );
    assert_eq!(res.status(), 200);
    assert!(
        !origin.last().head.has("via"),
        "{}",
        origin.last().head.text()
    );
    assert!(!res.head.has("via"), "{}", res.head.text());
}

/// Seconds since the epoch of an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`).
fn parse_imf_fixdate(s: &str) -> Option<u64> {
    let p: Vec<&str> = s.split(' ').collect();
    if s.len() != 29 || p.len() != 6 || !p[0].ends_with(',') || p[5] != "GMT" {
        return None;
    }
    if !["Mon,", "Tue,", "Wed,", "Thu,", "Fri,", "Sat,", "Sun,"].contains(&p[0]) {
        return None;
    }
    let day: i64 = p[1].parse().ok()?;
    let months = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = months.iter().position(|m| *m == p[2])? as i64 + 1;
    let year: i64 = p[3].parse().ok()?;
    let hms: Vec<i64> = p[4]
        .split(':')
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    // Days from civil (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400 + hms[0] * 3600 + hms[1] * 60 + hms[2]).ok()
}

#[test]
fn date_is_added_when_the_origin_sends_none() {
    let origin = Origin::start(|head, conn| {
        let _ = conn.read_body(head);
        let date: &[(&str, &str)] = if head.target() == "/dated" {
            &[("Date", "Tue, 15 Nov 1994 08:12:31 GMT")]
        } else {
            &[]
        };
        conn.respond("200 OK", date, b"ok");
        true
    });
    let proxy = Proxy::start(&[]);
    let res = request(
        proxy.addr,
        "GET",
        &build_request("GET", &origin.url("/undated"), &[], b""),
    );
    let dates = res.head.all("date");
    assert_eq!(dates.len(), 1, "{}", res.head.text());
    let when =
        parse_imf_fixdate(dates[0]).unwrap_or_else(|| panic!("not an IMF-fixdate: {:?}", dates[0]));
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(when.abs_diff(now) < 300, "Date {} is not now", dates[0]);
    let res = request(
        proxy.addr,
        "GET",
        &build_request("GET", &origin.url("/dated"), &[], b""),
    );
    assert_eq!(res.head.all("date"), ["Tue, 15 Nov 1994 08:12:31 GMT"]);
}

// ---------------------------------------------------------------------------------------------
// Strict request framing
// ---------------------------------------------------------------------------------------------

/// Sends a malformed request on a fresh connection and checks the proxy's error reply.
fn expect_rejected(proxy: &Proxy, raw: &[u8], status: u16, must_close: bool) -> Response {
    let mut c = Conn::connect(proxy.addr);
    let _ = c.try_write(raw);
    let res = c
        .read_response()
        .unwrap_or_else(|e| panic!("no reply to {:?}: {e}", show(raw)));
    assert_eq!(
        res.status(),
        status,
        "request {:?} got:\n{}",
        show(raw),
        res.head.text()
    );
    res.assert_error(status);
    if must_close {
        assert!(
            c.closes_within(FIVE_S),
            "connection left open after a framing error: {:?}",
            show(raw)
        );
    }
    res
}

#[test]
fn strict_request_framing_and_syntax() {
    let origin = Origin::echo();
    let proxy = Proxy::start(&[]);
    let a = origin.authority();
    let u = origin.url("/x");
    // Framing and field syntax: (fields after Host, body, status). The framing of the
    // connection is lost, so it must be closed after the reply.
    let framing: [(&str, &str, u16); 17] = [
        (
            "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
            "0\r\n\r\n",
            400,
        ),
        (
            "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
            "0\r\n\r\n",
            400,
        ),
        ("Content-Length: 5\r\nContent-Length: 6\r\n", "hello!", 400),
        ("Content-Length: 5, 6\r\n", "hello!", 400),
        ("Content-Length: abc\r\n", "hello", 400),
        ("Content-Length: -1\r\n", "hello", 400),
        ("Content-Length: 99999999999999999999999\r\n", "hello", 400),
        ("Transfer-Encoding: gzip\r\n", "hello", 501),
        ("Transfer-Encoding: chunked, identity\r\n", "0\r\n\r\n", 400),
        (
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
            "0\r\n\r\n",
            400,
        ),
        ("X-A: a\r\n folded\r\n", "", 400),
        ("X-A: a\rb\r\n", "", 400),
        ("X-A: a\0b\r\n", "", 400),
        ("X A: b\r\n", "", 400),
        ("X@A: b\r\n", "", 400),
        ("X-A : b\r\n", "", 400),
        ("X-A\t: b\r\n", "", 400),
    ];
    for (fields, body, status) in framing {
        let raw = format!("POST {u} HTTP/1.1\r\nHost: {a}\r\n{fields}\r\n{body}");
        expect_rejected(&proxy, raw.as_bytes(), status, true);
    }
    let raw = format!("POST {u} HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
    expect_rejected(&proxy, raw.as_bytes(), 400, true);

    // Request lines, targets and Host: (whole head, status).
    let heads: [(String, u16); 9] = [
        (format!("GET {u} HTTP/1.1\r\n\r\n"), 400),
        (
            format!("GET {u} HTTP/1.1\r\nHost: {a}\r\nHost: {a}\r\n\r\n"),
            400,
        ),
        (format!("G(T {u} HTTP/1.1\r\nHost: {a}\r\n\r\n"), 400),
        (format!("GET {u} HTTP/2.0\r\nHost: {a}\r\n\r\n"), 505),
        (
            format!("GET http://user:pw@{a}/x HTTP/1.1\r\nHost: {a}\r\n\r\n"),
            400,
        ),
        (
            format!("GET http://127.0.0.1:99999/x HTTP/1.1\r\nHost: {a}\r\n\r\n"),
            400,
        ),
        (
            format!("GET ftp://{a}/x HTTP/1.1\r\nHost: {a}\r\n\r\n"),
            501,
        ),
        (format!("GET {u}#frag HTTP/1.1\r\nHost: {a}\r\n\r\n"), 400),
        (format!("OPTIONS * HTTP/1.1\r\nHost: {a}\r\n\r\n"), 400),
    ];
    for (raw, status) in &heads {
        expect_rejected(&proxy, raw.as_bytes(), *status, false);
    }
    // An origin-form request gets 400 saying to use the proxy as a proxy.
    let res = expect_rejected(
        &proxy,
        format!("GET /x HTTP/1.1\r\nHost: {a}\r\n\r\n").as_bytes(),
        400,
        false,
    );
    assert!(
        res.text().to_lowercase().contains("proxy"),
        "400 does not explain: {}",
        res.text()
    );
    assert_eq!(
        origin.requests(),
        0,
        "a malformed request reached the origin: {:?}",
        origin.last().head.text()
    );
    assert_still_serving(proxy.addr, &origin);
}

#[test]
fn malformed_chunked_request_bodies_are_400_or_closed() {
    let origin = Origin::echo();
    let proxy = Proxy::start(&[]);
    let a = origin.authority();
    let u = origin.url("/chunks");
    for body in [
        "zz\r\nhello\r\n0\r\n\r\n",
        "-5\r\nhello\r\n0\r\n\r\n",
        "0x5\r\nhello\r\n0\r\n\r\n",
        "ffffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
        "10000000000000000\r\nhello\r\n0\r\n\r\n",
        "5\r\nhelloXX0\r\n\r\n",
        "5 5\r\nhello\r\n0\r\n\r\n",
    ] {
        let raw =
            format!("POST {u} HTTP/1.1\r\nHost: {a}\r\nTransfer-Encoding: chunked\r\n\r\n{body}");
        let mut c = Conn::connect(proxy.addr);
        c.set_timeout(FIVE_S);
        let _ = c.try_write(raw.as_bytes());
        match c.read_response() {
            Ok(res) => {
                res.assert_error(400);
                assert!(
                    c.closes_within(FIVE_S),
                    "connection left open after a bad chunk {body:?}"
                );
            }
            // Closing without a response is allowed; timing out is not.
            Err(e) => assert!(
                matches!(
                    e.kind(),
                    std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
                ),
                "bad chunk {body:?}: neither 400 nor a close: {e}"
            ),
        }
        // Whatever the origin saw, it never saw a complete request body.
        if let Some(seen) = origin.seen().iter().find(|s| !s.body.is_empty()) {
            panic!(
                "origin got a body {:?} from a malformed chunked request",
                show(&seen.body)
            );
        }
    }
    assert_still_serving(proxy.addr, &origin);
}

// ---------------------------------------------------------------------------------------------
// Invalid origin responses
// ---------------------------------------------------------------------------------------------

#[test]
fn invalid_origin_responses_become_502() {
    let origin = Origin::start(|head, conn| {
        let _ = conn.read_body(head);
        let raw: Vec<u8> = match head.target() {
            "/garbage" => b"HELLO WORLD\r\n\r\n".to_vec(),
            "/nothing" => return false, // closes without a byte
            "/two-lengths" => {
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!".to_vec()
            }
            "/bad-length" => b"HTTP/1.1 200 OK\r\nContent-Length: 5x\r\n\r\nhello".to_vec(),
            "/bad-status" => b"HTTP/1.1 2000 OK\r\nContent-Length: 2\r\n\r\nok".to_vec(),
            "/nul" => b"HTTP/1.1 200 OK\r\nX-A: a\0b\r\nContent-Length: 2\r\n\r\nok".to_vec(),
            "/huge-head" => {
                let mut v = b"HTTP/1.1 200 OK\r\n".to_vec();
                for i in 0..2000 {
                    v.extend_from_slice(format!("X-Filler-{i}: {}\r\n", "y".repeat(40)).as_bytes());
                }
                v.extend_from_slice(b"Content-Length: 2\r\n\r\nok");
                v
            }
            _ => return echo_handler(head, conn),
        };
        let _ = conn.stream.write_all(&raw);
        false
    });
    let proxy = Proxy::start(&[]);
    for path in [
        "/garbage",
        "/nothing",
        "/two-lengths",
        "/bad-length",
        "/bad-status",
        "/nul",
        "/huge-head",
    ] {
        let res = request(
            proxy.addr,
            "GET",
            &build_request("GET", &origin.url(path), &[], b""),
        );
        assert_eq!(res.status(), 502, "{path}: {}", res.head.text());
        res.assert_error(502);
        assert_still_serving(proxy.addr, &origin);
    }
}

#[test]
fn a_truncated_origin_response_is_shown_by_closing_the_client_connection() {
    let origin = Origin::start(|head, conn| {
        let _ = conn.read_body(head);
        let raw: &[u8] = match head.target() {
            "/short" => b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten..",
            "/bad-chunk" => {
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n"
            }
            "/cut-chunk" => b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
            _ => return echo_handler(head, conn),
        };
        let _ = conn.stream.write_all(raw);
        false
    });
    let proxy = Proxy::start(&[]);
    for path in ["/short", "/bad-chunk", "/cut-chunk"] {
        let mut c = Conn::connect(proxy.addr);
        c.set_timeout(FIVE_S);
        c.write(&build_request("GET", &origin.url(path), &[], b""));
        match c.read_response() {
            Ok(res) => panic!("{path}: a truncated response looked complete: {res:?}"),
            Err(e) => assert!(
                matches!(
                    e.kind(),
                    std::io::ErrorKind::UnexpectedEof
                        | std::io::ErrorKind::InvalidData
                        | std::io::ErrorKind::ConnectionReset
                ),
                "{path}: the client was left waiting instead of being closed: {e}"
            ),
        }
        assert_still_serving(proxy.addr, &origin);
    }
}

/// The proxy's peak resident memory (VmHWM) in KiB, from /proc.
fn peak_memory_kib(proxy: &Proxy) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", proxy.pid())).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .expect("VmHWM in /proc status");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn bodies_are_streamed_not_held_in_memory() {
    const SIZE: usize = 64 << 20;
    // The origin makes and swallows bodies as they flow, holding only a small buffer.
    let origin = Origin::start(|head, conn| {
        if head.method() == "POST" {
            let n: usize = head.get("content-length").unwrap().parse().unwrap();
            let mut left = n;
            while left > 0 {
                let got = conn.read_available(Duration::from_secs(5)).len();
                assert!(got > 0, "upload stalled");
                left = left.saturating_sub(got);
            }
            conn.respond("200 OK", &[], b"swallowed");
            return true;
        }
        let _ = conn
            .stream
            .write_all(format!("HTTP/1.1 200 OK\r\nContent-Length: {SIZE}\r\n\r\n").as_bytes());
        let block = vec![b'd'; 256 << 10];
        for _ in 0..SIZE / block.len() {
            if conn.stream.write_all(&block).is_err() {
                return false;
            }
        }
        true
    });
    let proxy = Proxy::start(&[]);
    let before = peak_memory_kib(&proxy);

    let mut c = Conn::connect(proxy.addr);
    c.write(&build_request("GET", &origin.url("/download"), &[], b""));
    // A slow reader first: the proxy must wait for it, not buffer for it.
    thread::sleep(Duration::from_millis(300));
    let res = c.response();
    assert_eq!(res.body.len(), SIZE);

    let head = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Length: {SIZE}\r\n\r\n",
        origin.url("/up"),
        origin.authority()
    );
    c.write(head.as_bytes());
    let block = vec![b'u'; 256 << 10];
    for _ in 0..SIZE / block.len() {
        c.write(&block);
    }
    assert_eq!(c.response().text(), "swallowed");

    let grew = peak_memory_kib(&proxy).saturating_sub(before);
    assert!(
        grew < 16 << 10,
        "proxy memory grew by {grew} KiB while moving 2 x {} MiB",
        SIZE >> 20
    );
}

#[test]
fn bytes_after_the_end_of_a_response_are_not_passed_on() {
    // Each answer is followed, in the same write, by a forged second response.
    let origin = Origin::start(|head, conn| {
        let _ = conn.read_body(head);
        let first: &[u8] = match head.target() {
            "/extra" => b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
            "/extra-204" => b"HTTP/1.1 204 No Content\r\n\r\n",
            "/extra-chunked" => {
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
            }
            "/extra-late" => {
                // The forged response comes later, while the connection sits idle.
                let _ = conn
                    .stream
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello");
                thread::sleep(Duration::from_millis(100));
                return conn
                    .stream
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nSMUGGLED")
                    .is_ok();
            }
            _ => return echo_handler(head, conn),
        };
        let mut out = first.to_vec();
        out.extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nSMUGGLED");
        conn.stream.write_all(&out).is_ok()
    });
    let proxy = Proxy::start(&[]);
    for path in ["/extra", "/extra-204", "/extra-chunked", "/extra-late"] {
        let mut c = Conn::connect(proxy.addr);
        let res = c.exchange("GET", &build_request("GET", &origin.url(path), &[], b""));
        assert!(
            res.status() == 200 || res.status() == 204,
            "{path}: {}",
            res.head.text()
        );
        assert!(!res.text().contains("SMUGGLED"), "{path}: {}", res.text());
        let extra = c.read_available(Duration::from_millis(300));
        assert!(
            extra.is_empty(),
            "{path}: bytes after the response reached the client: {:?}",
            show(&extra)
        );
        let res = c.exchange("GET", &build_request("GET", &origin.url("/next"), &[], b""));
        assert_eq!(
            res.text(),
            "GET /next",
            "{path}: the next response was forged"
        );
    }
}

#[test]
fn an_unreachable_origin_is_504_after_the_connect_timeout() {
    let hole = Blackhole::new();
    let proxy = Proxy::start(&["--connect-timeout", "500ms", "--connect-ports", "any"]);
    let started = Instant::now();
    let res = get(proxy.addr, &format!("http://{}/", hole.addr));
    res.assert_error(504);
    let raw = format!("CONNECT {0} HTTP/1.1\r\nHost: {0}\r\n\r\n", hole.addr);
    request(proxy.addr, "CONNECT", raw.as_bytes()).assert_error(504);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "two timeouts took {took:?}"
    );
    assert_still_serving(proxy.addr, &Origin::echo());
}

#[test]
fn a_silent_origin_is_504_after_the_idle_timeout() {
    let origin = Origin::start(|head, conn| {
        let _ = conn.read_body(head);
        thread::sleep(Duration::from_secs(3));
        false
    });
    let proxy = Proxy::start(&["--idle-timeout", "1s"]);
    let started = Instant::now();
    let res = get(proxy.addr, &origin.url("/silent"));
    res.assert_error(504);
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "504 after {:?}",
        started.elapsed()
    );
    assert_still_serving(proxy.addr, &Origin::echo());
}

#[test]
fn ipv6_literal_targets() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        need("IPv6 loopback [::1] not available", false);
        return;
    }
    let origin = Origin::start_on("[::1]:0", echo_handler);
    let proxy = Proxy::start(&[]);
    let url = format!("http://[::1]:{}/v6", origin.port());
    let res = get(proxy.addr, &url);
    assert_eq!(res.status(), 200, "{}", res.head.text());
    let seen = origin.last().head;
    assert_eq!(seen.start, "GET /v6 HTTP/1.1");
    assert_eq!(seen.all("host"), [format!("[::1]:{}", origin.port())]);
}

#[test]
fn garbage_never_stops_the_proxy() {
    let origin = Origin::echo();
    let proxy = Proxy::start(&["--header-timeout", "1s"]);
    let valid = build_request("POST", &origin.url("/g"), &[("X-A", "b")], b"hello");
    let mut inputs: Vec<Vec<u8>> = (0..60u64)
        .map(|i| pattern(1 + (i as usize * 97) % 3000, 100 + i))
        .collect();
    // Every prefix length class of a valid request, then closed: truncated heads and bodies.
    inputs.extend((1..valid.len()).step_by(7).map(|n| valid[..n].to_vec()));
    // Valid requests with one byte flipped.
    inputs.extend((0..valid.len()).step_by(5).map(|i| {
        let mut v = valid.clone();
        v[i] ^= 0x80;
        v
    }));
    let clients: Vec<_> = inputs
        .into_iter()
        .map(|input| {
            let addr = proxy.addr;
            thread::spawn(move || {
                let mut c = Conn::connect(addr);
                let _ = c.try_write(&input);
                c.shutdown_write();
                let _ = c.read_available(Duration::from_secs(3));
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    assert_still_serving(proxy.addr, &origin);
    let lines = proxy.stderr_lines();
    assert!(
        lines.iter().all(|l| !l.contains("panicked")),
        "the proxy panicked: {lines:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Upgrade
// ---------------------------------------------------------------------------------------------

/// Answers an Upgrade request with 101, sends a greeting right after it, then echoes bytes.
fn websocket_handler(head: &Head, conn: &mut Conn) -> bool {
    let upgrade = head.get("upgrade") == Some("websocket")
        && head.tokens("connection").contains(&"upgrade".into());
    if !upgrade {
        conn.respond(
            "400 Bad Request",
            &[("Connection", "close")],
            b"not an upgrade request",
        );
        return false;
    }
    let _ = conn.stream.write_all(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\nhello-from-origin",
    );
    tcp_echo_handler(conn);
    false
}

#[test]
fn websocket_upgrade_switches_to_a_tunnel() {
    let origin = Origin::start(websocket_handler);
    let proxy = Proxy::start(&[]);
    for scheme in ["http", "ws"] {
        let url = format!("{scheme}://{}/chat", origin.authority());
        let raw = build_request(
            "GET",
            &url,
            &[
                ("Connection", "Upgrade"),
                ("Upgrade", "websocket"),
                ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
                ("Sec-WebSocket-Version", "13"),
            ],
            b"",
        );
        let mut c = Conn::connect(proxy.addr);
        c.set_timeout(FIVE_S);
        let res = c.exchange("GET", &raw);
        assert_eq!(res.status(), 101, "{scheme}: {}", res.head.text());
        assert_eq!(res.header("upgrade"), Some("websocket"));
        assert!(
            res.head
                .tokens("connection")
                .contains(&"upgrade".to_string()),
            "{}",
            res.head.text()
        );
        let seen = origin.last().head;
        assert_eq!(seen.start, "GET /chat HTTP/1.1");
        assert_eq!(seen.get("upgrade"), Some("websocket"), "{}", seen.text());
        assert_eq!(
            seen.get("sec-websocket-key"),
            Some("dGhlIHNhbXBsZSBub25jZQ==")
        );
        assert_eq!(c.read_exact(17).expect("greeting"), b"hello-from-origin");
        let all: Vec<u8> = (0..=255u8).collect();
        c.write(b"\x81\x05hello");
        assert_eq!(c.read_exact(7).expect("echo"), b"\x81\x05hello");
        c.write(&all);
        assert_eq!(c.read_exact(256).expect("binary echo"), all);
        c.shutdown_write();
        assert_eq!(
            c.read_to_end().expect("close"),
            b"BYE",
            "half-close not relayed"
        );
    }
}

/// Bytes the client pipelines right after its upgrade request and bytes the origin sends right
/// after its 101 head, each in the same write as the head, arrive first and in order; the
/// access log line is the request's, with every byte counted.
#[test]
fn bytes_right_behind_either_upgrade_head_arrive_first() {
    let origin = Origin::start(websocket_handler);
    let proxy = Proxy::start(&[]);
    let url = origin.url("/pipelined");
    let raw = build_request(
        "GET",
        &url,
        &[("Connection", "Upgrade"), ("Upgrade", "websocket")],
        b"",
    );
    let mut c = Conn::connect(proxy.addr);
    c.set_timeout(FIVE_S);
    c.write(&[&raw[..], b"early-from-client"].concat());
    let head = c.read_head().expect("101").expect("101");
    assert_eq!(head.status(), 101, "{}", head.text());
    // The origin's greeting (behind its 101), then its echo of the client's early bytes.
    assert_eq!(
        c.read_exact(34).expect("greeting and echo"),
        b"hello-from-originearly-from-client"
    );
    c.write(b"later");
    assert_eq!(c.read_exact(5).expect("echo"), b"later");
    c.shutdown_write();
    assert_eq!(c.read_to_end().expect("close"), b"BYE");
    let line = proxy.wait_for_log(FIVE_S, &url).expect("an access line");
    let t: Vec<&str> = line.split_whitespace().collect();
    let i = t.iter().position(|x| *x == url).expect("target field");
    let up = (raw.len() + "early-from-client".len() + "later".len()).to_string();
    // Down: the 101 head as forwarded, the greeting and echo, the second echo, BYE.
    let down = (head.raw.len() + 34 + 5 + 3).to_string();
    assert_eq!(
        (t[i - 1], t[i + 1], t[i + 2], t[i + 3]),
        ("GET", "101", up.as_str(), down.as_str()),
        "{line}"
    );
}

#[test]
fn a_declined_upgrade_is_an_ordinary_response() {
    let origin = Origin::start(|head, conn| {
        let _ = conn.read_body(head);
        conn.respond("200 OK", &[], b"no upgrade for you");
        true
    });
    let proxy = Proxy::start(&[]);
    let mut c = Conn::connect(proxy.addr);
    c.set_timeout(FIVE_S);
    let raw = build_request(
        "GET",
        &origin.url("/chat"),
        &[("Connection", "Upgrade"), ("Upgrade", "websocket")],
        b"",
    );
    let res = c.exchange("GET", &raw);
    assert_eq!(
        (res.status(), res.text().as_str()),
        (200, "no upgrade for you")
    );
    let res = c.exchange("GET", &build_request("GET", &origin.url("/next"), &[], b""));
    assert_eq!(
        res.text(),
        "no upgrade for you",
        "the connection did not stay HTTP"
    );
}

// ---------------------------------------------------------------------------------------------
// Names that do not resolve
// ---------------------------------------------------------------------------------------------

#[test]
fn unknown_host_is_502_without_asking_the_real_resolver() {
    // The proxy runs where resolv.conf points at 127.0.0.1 (nothing answers there), so no
    // query ever leaves this machine.
    let Some(mut cmd) = without_dns(bin()) else {
        return;
    };
    cmd.args(["--listen", "127.0.0.1:0", "--connect-ports", "any"]);
    let proxy = Proxy::spawn(cmd);
    let started = Instant::now();
    let res = get(proxy.addr, "http://no-such-host.invalid/");
    res.assert_error(502);
    let raw =
        b"CONNECT no-such-host.invalid:443 HTTP/1.1\r\nHost: no-such-host.invalid:443\r\n\r\n";
    let res = request(proxy.addr, "CONNECT", raw);
    res.assert_error(502);
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "name failures took {:?}",
        started.elapsed()
    );
    assert_still_serving(proxy.addr, &Origin::echo());
}

// ---------------------------------------------------------------------------------------------
// Access log
// ---------------------------------------------------------------------------------------------

#[test]
fn access_log_text_lines() {
    let origin = Origin::echo();
    let proxy = Proxy::start(&[]);
    let url = origin.url("/logged-text");
    let body = vec![b'u'; 1000];
    let mut c = Conn::connect(proxy.addr);
    let client = c.stream.local_addr().unwrap().to_string();
    let res = c.exchange("POST", &build_request("POST", &url, &[], &body));
    assert_eq!(res.status(), 200);
    let line = proxy
        .wait_for_log(FIVE_S, &url)
        .expect("no access log line for the request");
    // SPEC §8 order: time, client, user, method, target, status, bytes up, bytes down,
    // duration, route, rule.
    let t: Vec<&str> = line.split_whitespace().collect();
    let i = t
        .iter()
        .position(|x| *x == url)
        .unwrap_or_else(|| panic!("target not a field: {line}"));
    assert!(
        t.contains(&client.as_str()),
        "client address missing: {line}"
    );
    assert_eq!(t[i - 1], "POST", "{line}");
    assert_eq!(t[i + 1], "200", "{line}");
    let up: u64 = t[i + 2]
        .parse()
        .unwrap_or_else(|_| panic!("bytes up not a number: {line}"));
    let down: u64 = t[i + 3]
        .parse()
        .unwrap_or_else(|_| panic!("bytes down not a number: {line}"));
    assert!(up >= 1000, "bytes up {up} < body: {line}");
    assert!(down >= 1000, "bytes down {down} < body: {line}");
    assert!(t[i + 4..].contains(&"direct"), "route missing: {line}");

    // Refused requests are logged too.
    let bad = format!(
        "GET /origin-form-{} HTTP/1.1\r\nHost: x\r\n\r\n",
        origin.port()
    );
    let res = request(proxy.addr, "GET", bad.as_bytes());
    assert_eq!(res.status(), 400);
    let target = format!("/origin-form-{}", origin.port());
    let line = proxy.wait_for_log(FIVE_S, &target).unwrap_or_else(|| {
        panic!(
            "no access line names the refused request {target}; stderr: {:?}",
            proxy.stderr_lines()
        )
    });
    let t: Vec<&str> = line.split_whitespace().collect();
    let i = t
        .iter()
        .position(|x| *x == target)
        .unwrap_or_else(|| panic!("target not a field: {line}"));
    assert_eq!((t[i - 1], t[i + 1]), ("GET", "400"), "{line}");
}

#[test]
fn access_log_json_lines() {
    let origin = Origin::echo();
    let proxy = Proxy::start(&["--log-format", "json"]);
    let url = origin.url("/logged-json?a=\"q\"");
    let res = request(
        proxy.addr,
        "POST",
        &build_request("POST", &url, &[], &[b'j'; 500]),
    );
    assert_eq!(res.status(), 200);
    let line = proxy
        .wait_for_log(FIVE_S, "logged-json")
        .expect("no access log line");
    let fields: serde_json::Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    assert!(fields.is_object(), "{line}");
    assert_eq!(fields["method"], "POST", "{line}");
    assert_eq!(fields["target"], url.as_str(), "{line}");
    assert_eq!(fields["status"], 200, "{line}");
    assert_eq!(fields["route"], "direct", "{line}");
    assert!(
        fields["time"].is_string() && fields["client"].is_string(),
        "{line}"
    );
    assert!(
        fields["user"].is_null() && fields["rule"].is_null(),
        "{line}"
    );
    let number = |key: &str| {
        fields[key]
            .as_u64()
            .unwrap_or_else(|| panic!("no numeric {key}: {line}"))
    };
    assert!(number("bytes_up") >= 500, "{line}");
    assert!(number("bytes_down") >= 500, "{line}");
}

#[test]
fn credentials_in_a_refused_target_stay_out_of_the_log() {
    let proxy = Proxy::start(&[]);
    for raw in [
        "GET http://ann:s3cret@example.test/userinfo-get HTTP/1.1\r\nHost: example.test\r\n\r\n",
        "CONNECT ann:s3cret@example.test:443 HTTP/1.1\r\nHost: example.test:443\r\n\r\n",
    ] {
        let mut c = Conn::connect(proxy.addr);
        c.write(raw.as_bytes());
        assert_eq!(c.response().status(), 400, "{raw}");
    }
    let get = proxy
        .wait_for_log(FIVE_S, "/userinfo-get")
        .expect("no log line for the GET");
    assert!(get.contains("http://example.test/userinfo-get"), "{get}");
    let connect = proxy
        .wait_for_log(FIVE_S, "CONNECT")
        .expect("no log line for the CONNECT");
    assert!(connect.contains(" example.test:443 "), "{connect}");
    let all = proxy.stderr_lines().join("\n");
    assert!(!all.contains("s3cret") && !all.contains("ann"), "{all}");
}

#[test]
fn quiet_prints_no_access_lines() {
    let origin = Origin::echo();
    let proxy = Proxy::start(&["--quiet"]);
    let url = origin.url("/quiet");
    assert_eq!(get(proxy.addr, &url).status(), 200);
    assert_eq!(
        request(
            proxy.addr,
            "GET",
            b"GET /quiet-bad HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        .status(),
        400
    );
    thread::sleep(Duration::from_millis(300));
    let lines = proxy.stderr_lines();
    assert!(
        lines.iter().all(|l| !l.contains("/quiet")),
        "--quiet still logged: {lines:?}"
    );
}

#[test]
fn access_log_file() {
    let origin = Origin::echo();
    let dir = temp_dir("access-log");
    let path = dir.join("access.log");
    let proxy = Proxy::start(&["--access-log", path.to_str().unwrap()]);
    let url = origin.url("/to-file");
    assert_eq!(get(proxy.addr, &url).status(), 200);
    let deadline = Instant::now() + FIVE_S;
    let line = loop {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        if let Some(l) = text.lines().find(|l| l.contains(&url)) {
            break l.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no line in {path:?}; it holds {text:?}"
        );
        thread::sleep(Duration::from_millis(20));
    };
    assert!(line.split_whitespace().any(|x| x == "200"), "{line}");
    assert!(
        proxy.stderr_lines().iter().all(|l| !l.contains(&url)),
        "logged to stderr as well"
    );
}

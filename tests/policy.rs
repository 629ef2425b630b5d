//! The egress policy end to end (SPEC §2, §4, §6): `--allow`, `--deny`, `--block-private`
//! against the addresses actually dialled, and the external authorization service.
//!
//! Everything runs on loopback; the only name resolved is `localhost`. Destinations are
//! origins on 127.0.0.1 and 127.0.0.2 (one proxy can then be asked about a listed and an
//! unlisted address). The authorization services are test origins implementing the rules of
//! Postman's reference runner authorization service (block DELETE, PUT and PATCH, and paths
//! containing `/admin`), counting the questions they get; the HTTPS one is stunnel in front
//! of it with a test CA made by the openssl command. Without stunnel or openssl that test
//! prints `SKIP: ...` (and fails under CI=true).

mod common;

use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// `ann:secret`, Basic-encoded.
const ANN: &str = "Basic YW5uOnNlY3JldA==";

/// `CONNECT authority` through `proxy`: the open tunnel, or the refusal.
#[allow(clippy::result_large_err)] // the refusal is what callers inspect
fn tunnel(proxy: SocketAddr, authority: &str, extra: &str) -> Result<Conn, Response> {
    let mut c = Conn::connect(proxy);
    c.write(format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n{extra}\r\n").as_bytes());
    let head = c
        .read_head()
        .expect("an answer to CONNECT")
        .expect("an answer to CONNECT");
    if head.status() == 200 {
        return Ok(c);
    }
    let body = c.read_body(&head).expect("the body of a refusal");
    Err(Response {
        head,
        body,
        ..Response::default()
    })
}

/// A refusal by the policy: a 403 made by the proxy whose body names `rule`.
fn assert_denied(res: &Response, rule: &str) {
    res.assert_error(403);
    assert!(
        res.text().contains(rule),
        "{rule:?} not in {:?}",
        res.text()
    );
}

// ---------------------------------------------------------------------------------------------
// Local rules
// ---------------------------------------------------------------------------------------------

#[test]
fn block_private_judges_the_addresses_dialled() {
    let origin = Origin::echo();
    let port = origin.port();
    let proxy = Proxy::start(&["--block-private", "--connect-ports", "any"]);
    // A name that resolves to loopback is denied after DNS, before any connection.
    let res = get(proxy.addr, &format!("http://localhost:{port}/"));
    assert_denied(&res, "denied by --block-private (localhost resolves to ");
    assert!(res.text().contains(": loopback)"), "{}", res.text());
    // The same for CONNECT, for the literal, and for spellings of it that resolve there.
    let refused = tunnel(proxy.addr, &format!("localhost:{port}"), "")
        .err()
        .expect("a refusal");
    assert_denied(
        &refused,
        "denied by --block-private (localhost resolves to ",
    );
    for url in [
        format!("http://127.0.0.1:{port}/"),
        format!("http://[::ffff:127.0.0.1]:{port}/"),
        // inet_aton forms: the resolver turns these into 127.0.0.1 without any DNS query.
        format!("http://2130706433:{port}/"),
        format!("http://127.1:{port}/"),
    ] {
        assert_denied(&get(proxy.addr, &url), "denied by --block-private (");
    }
    assert_eq!(origin.requests(), 0, "a denied request reached the origin");
    // The access log names the rule.
    let line = proxy
        .wait_for_log(
            IO_TIMEOUT,
            "denied by --block-private (localhost resolves to",
        )
        .expect("a log line with the rule");
    assert!(line.contains(" 403 "), "{line}");
}

#[test]
fn deny_networks_apply_after_dns() {
    let origin = Origin::echo();
    let port = origin.port();
    // `localhost` may also resolve to ::1: deny both, so that every address is refused.
    let proxy = Proxy::start(&[
        "--deny",
        "127.0.0.0/8",
        "--deny",
        "::1",
        "--connect-ports",
        "any",
    ]);
    let res = get(proxy.addr, &format!("http://localhost:{port}/"));
    assert_denied(&res, "(localhost resolves to ");
    assert!(
        res.text()
            .contains("denied by --deny 127.0.0.0/8 (localhost resolves to 127.0.0.1)")
            || res
                .text()
                .contains("denied by --deny ::1 (localhost resolves to ::1)"),
        "{}",
        res.text()
    );
    let refused = tunnel(proxy.addr, &format!("localhost:{port}"), "")
        .err()
        .expect("a refusal");
    assert_denied(&refused, "denied by --deny ");
    assert_eq!(origin.requests(), 0);
    // With only the IPv4 network denied, the origin on 127.0.0.1 is still never reached
    // (where localhost also means ::1, that attempt finds nothing listening: 502).
    let proxy = Proxy::start(&["--deny", "127.0.0.0/8"]);
    let res = get(proxy.addr, &format!("http://localhost:{port}/"));
    assert!(matches!(res.status(), 403 | 502), "{}", res.head.text());
    assert_eq!(origin.requests(), 0);
}

#[test]
fn allowlist_admits_only_listed_destinations() {
    let listed = Origin::echo();
    let other = Origin::start_on("127.0.0.2:0", echo_handler);
    let tcp = Origin::tcp_echo();
    let allow = format!("localhost,127.0.0.1:{}", tcp.port());
    let proxy = Proxy::start(&["--allow", &allow, "--connect-ports", "any"]);
    // Listed by name: http and CONNECT.
    let res = get(
        proxy.addr,
        &format!("http://localhost:{}/ok", listed.port()),
    );
    assert_eq!(res.status(), 200, "{}", res.text());
    let mut c = tunnel(proxy.addr, &format!("localhost:{}", tcp.port()), "")
        .unwrap_or_else(|r| panic!("CONNECT refused: {}", r.text()));
    c.write(b"ping");
    assert_eq!(c.read_exact(4).unwrap(), b"ping");
    // Listed by address and port.
    let mut c = tunnel(proxy.addr, &format!("127.0.0.1:{}", tcp.port()), "")
        .unwrap_or_else(|r| panic!("CONNECT refused: {}", r.text()));
    c.write(b"pong");
    assert_eq!(c.read_exact(4).unwrap(), b"pong");
    // Not listed: refused before anything is dialled.
    let res = get(proxy.addr, &format!("http://127.0.0.2:{}/", other.port()));
    assert_denied(
        &res,
        &format!("denied: 127.0.0.2:{} is not in --allow", other.port()),
    );
    let refused = tunnel(proxy.addr, &format!("127.0.0.2:{}", other.port()), "")
        .err()
        .expect("403");
    assert_denied(&refused, "is not in --allow");
    let res = get(proxy.addr, &format!("http://127.0.0.1:{}/", listed.port()));
    assert_denied(&res, "is not in --allow");
    assert_eq!(other.requests(), 0);
    assert_eq!(listed.requests(), 1);
    // Deny wins over allow, also when it only matches what the name resolves to.
    let proxy = Proxy::start(&["--allow", "localhost,127.0.0.1", "--deny", "127.0.0.1,::1"]);
    let res = get(proxy.addr, &format!("http://localhost:{}/", listed.port()));
    assert_denied(&res, "denied by --deny ");
    assert_eq!(listed.requests(), 1);
    // An --allow network admits a name by the address it resolves to.
    // (Where localhost is also ::1, that address is refused and 127.0.0.1 dialled.)
    let proxy = Proxy::start(&["--allow", "127.0.0.0/8"]);
    let res = get(
        proxy.addr,
        &format!("http://localhost:{}/net", listed.port()),
    );
    assert_eq!(res.status(), 200, "{}", res.text());
    assert_denied(
        &get(proxy.addr, "http://[::1]:9/"),
        "denied: ::1:9 is not in --allow",
    );
}

#[test]
fn bad_entries_and_route() {
    for (args, needle) in [
        (vec!["--allow", "example.com,not/a/pattern"], "--allow"),
        (vec!["--deny", "10.0.0.0/33"], "--deny"),
        (vec!["--authz-url", "ftp://127.0.0.1/"], "--authz-url"),
        (vec!["--authz-fail", "maybe"], "--authz-fail"),
        (vec!["--authz-timeout", "0"], "--authz-timeout"),
        (vec!["--authz-cache", "soon"], "--authz-cache"),
    ] {
        let out = run_proxy(&args, IO_TIMEOUT);
        assert_eq!(out.code, Some(2), "{args:?}: {out:?}");
        assert!(out.stderr.contains(needle), "{args:?}: {out:?}");
        assert_eq!(out.stderr.trim().lines().count(), 1, "{out:?}");
    }
    // `route` explains without resolving or asking anything.
    let service = reference_service(Duration::ZERO);
    let url = format!("http://{}/validate", service.addr);
    let run = |args: &[&str]| run_to_exit(proxy_command(args, &[]), IO_TIMEOUT);
    let out = run(&[
        "--block-private",
        "--authz-url",
        &url,
        "route",
        "http://localhost:8080/",
    ]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("policy: allowed"), "{out:?}");
    assert!(out.stdout.contains("after dns: --block-private"), "{out:?}");
    assert!(
        out.stdout.contains(&format!(
            "authz: the service would be asked (not by route): POST {url}"
        )),
        "{out:?}"
    );
    let out = run(&[
        "--deny",
        "127.0.0.0/8",
        "route",
        "--method",
        "CONNECT",
        "127.0.0.1:443",
    ]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stdout
            .contains("policy: denied by --deny 127.0.0.0/8 (127.0.0.1)"),
        "{out:?}"
    );
    let out = run(&["--allow", "example.com", "route", "http://example.org/"]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stdout
            .contains("policy: denied: example.org:80 is not in --allow"),
        "{out:?}"
    );
    assert_eq!(service.requests(), 0, "route asked the service");
}

// ---------------------------------------------------------------------------------------------
// The authorization service
// ---------------------------------------------------------------------------------------------

/// A service that always answers `status` with `body`.
fn fixed_service(status: &'static str, body: &'static [u8]) -> Origin {
    Origin::start(move |head, conn| {
        let _ = conn.read_body(head);
        conn.respond(status, &[("Content-Type", "application/json")], body);
        false
    })
}

#[test]
fn authz_allows_and_blocks_by_the_reference_rules() {
    let service = reference_service(Duration::ZERO);
    let origin = Origin::echo();
    let tcp = Origin::tcp_echo();
    let url = format!("http://{}/validate", service.addr);
    let proxy = Proxy::start(&[
        "--authz-url",
        &url,
        "--authz-cache",
        "0",
        "--auth",
        "ann:secret",
        "--connect-ports",
        "any",
    ]);
    let send = |method: &str, path: &str, body: &[u8]| {
        let target = origin.url(path);
        let headers = [
            ("Proxy-Authorization", ANN),
            ("X-Trace", "t1"),
            ("x-trace", "t2"),
            ("Connection", "close"),
        ];
        request(
            proxy.addr,
            method,
            &build_request(method, &target, &headers, body),
        )
    };
    // Allowed: the request goes on; its small body was held back and shown to the service.
    let res = send("POST", "/items?id=7&q=a%20b", b"payload");
    assert_eq!((res.status(), res.text().as_str()), (200, "payload"));
    // The question, field by field.
    let asked = questions(&service);
    assert_eq!(asked.len(), 1);
    let q = &asked[0];
    let seen = &service.seen()[0];
    assert_eq!(seen.head.method(), "POST");
    assert_eq!(seen.head.target(), "/validate");
    assert!(seen
        .head
        .get("content-type")
        .unwrap_or("")
        .starts_with("application/json"));
    assert_eq!(
        q["url"],
        format!("http://{}/items?id=7&q=a%20b", origin.authority())
    );
    assert_eq!(q["method"], "POST");
    assert_eq!(q["queryParams"], "id=7&q=a%20b");
    assert_eq!(q["body"], "payload");
    assert_eq!(q["client"], "127.0.0.1");
    assert_eq!(q["user"], "ann");
    let headers: Value = serde_json::from_str(q["headers"].as_str().expect("headers is a string"))
        .expect("headers holds a JSON object");
    assert_eq!(headers["Host"], origin.authority());
    assert_eq!(headers["X-Trace"], "t1, t2");
    assert_eq!(headers["Content-Length"], "7");
    let names: Vec<String> = headers
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.to_ascii_lowercase())
        .collect();
    assert!(
        !names.contains(&"proxy-authorization".to_string()),
        "{names:?}"
    );
    assert_eq!(q.as_object().unwrap().len(), 7, "{q}");
    // Blocked: a 403 naming the service; the origin never sees it.
    let before = origin.requests();
    for (method, path) in [
        ("DELETE", "/items/7"),
        ("PUT", "/items/7"),
        ("PATCH", "/x"),
        ("GET", "/admin/users"),
    ] {
        assert_denied(
            &send(method, path, b""),
            "denied by --authz-url (the service answered 403)",
        );
    }
    assert_eq!(origin.requests(), before);
    proxy
        .wait_for_log(IO_TIMEOUT, "denied by --authz-url")
        .expect("the rule in the log");
    // CONNECT is asked about as https://host:port, with an empty body.
    let mut c = tunnel(
        proxy.addr,
        &tcp.authority(),
        &format!("Proxy-Authorization: {ANN}\r\n"),
    )
    .unwrap_or_else(|r| panic!("CONNECT refused: {}", r.text()));
    c.write(b"hi");
    assert_eq!(c.read_exact(2).unwrap(), b"hi");
    let q = questions(&service).pop().unwrap();
    assert_eq!(q["url"], format!("https://{}", tcp.authority()));
    assert!(q["method"] == "CONNECT" && q["body"] == "" && q["queryParams"] == "");
    // Bodies that are not held back reach the origin whole and show as "": one over 64 KiB,
    // one that is not UTF-8, and one whose client waits for 100 Continue.
    let big = vec![b'x'; 64 * 1024 + 1];
    let res = send("POST", "/big", &big);
    assert_eq!((res.status(), res.body.len()), (200, big.len()));
    assert_eq!(questions(&service).pop().unwrap()["body"], "");
    let res = send("POST", "/binary", b"\xff\xfe");
    assert_eq!((res.status(), res.body.as_slice()), (200, &b"\xff\xfe"[..]));
    assert_eq!(questions(&service).pop().unwrap()["body"], "");
    // Expect: 100-continue: the service is asked before a byte of the body is sent (holding
    // the body back would wait for what the client withholds).
    let asked = questions(&service).len();
    let mut c = Conn::connect(proxy.addr);
    c.write(
        format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nProxy-Authorization: {ANN}\r\n\
             Expect: 100-continue\r\nContent-Length: 4\r\nConnection: close\r\n\r\n",
            origin.url("/continue"),
            origin.authority()
        )
        .as_bytes(),
    );
    let deadline = std::time::Instant::now() + IO_TIMEOUT;
    while questions(&service).len() == asked {
        assert!(
            std::time::Instant::now() < deadline,
            "not asked before the body"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let q = questions(&service).pop().unwrap();
    assert!(q["url"].as_str().unwrap().ends_with("/continue") && q["body"] == "");
    c.write(b"body");
    let res = c.read_response().expect("a response");
    assert_eq!((res.status(), res.body.as_slice()), (200, &b"body"[..]));
}

#[test]
fn authz_down_or_confused_follows_authz_fail() {
    let origin = Origin::echo();
    let down = format!("http://127.0.0.1:{}/validate", closed_port());
    // Closed (the default): 503 at once, with the reason.
    let proxy = Proxy::start(&["--authz-url", &down]);
    let started = Instant::now();
    let res = get(proxy.addr, &origin.url("/"));
    res.assert_error(503);
    assert!(
        res.text()
            .contains("authorization service unavailable: cannot connect to"),
        "{}",
        res.text()
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    proxy
        .wait_for_log(IO_TIMEOUT, "(--authz-fail closed)")
        .expect("the reason in the log");
    assert_eq!(origin.requests(), 0);
    // Open: allowed, and the log says why.
    let proxy = Proxy::start(&["--authz-url", &down, "--authz-fail", "open"]);
    let res = get(proxy.addr, &origin.url("/open"));
    assert_eq!(res.status(), 200);
    let line = proxy
        .wait_for_log(IO_TIMEOUT, "allowed by --authz-fail open")
        .expect("logged");
    assert!(line.contains(" 200 "), "{line}");
    // Answers that are not decisions are failures too (and never cached).
    for (status, body, why) in [
        (
            "500 Internal Server Error",
            &br#"{"allowed":true}"#[..],
            "the service answered 500",
        ),
        ("200 OK", &b"yes"[..], "not JSON"),
        ("200 OK", &br#"{"ok":true}"#[..], "without a boolean"),
    ] {
        let service = fixed_service(status, body);
        let url = format!("http://{}/", service.addr);
        let proxy = Proxy::start(&["--authz-url", &url]);
        for _ in 0..2 {
            let res = get(proxy.addr, &origin.url("/"));
            res.assert_error(503);
            assert!(res.text().contains(why), "{why:?} not in {:?}", res.text());
        }
        assert_eq!(service.requests(), 2, "a failure was cached");
    }
    // A plain {"allowed": false} on a 200 denies.
    let service = fixed_service("200 OK", br#"{"allowed": false}"#);
    let proxy = Proxy::start(&["--authz-url", &format!("http://{}/", service.addr)]);
    assert_denied(&get(proxy.addr, &origin.url("/")), "denied by --authz-url");
}

#[test]
fn slow_authz_is_cut_off_at_the_timeout() {
    let service = reference_service(Duration::from_secs(3));
    let origin = Origin::echo();
    let url = format!("http://{}/validate", service.addr);
    let proxy = Proxy::start(&["--authz-url", &url, "--authz-timeout", "300ms"]);
    let mut c = Conn::connect(proxy.addr);
    let started = Instant::now();
    let res = c.exchange("GET", &build_request("GET", &origin.url("/slow"), &[], b""));
    let took = started.elapsed();
    res.assert_error(503);
    assert!(
        res.text().contains("no answer within 300ms"),
        "{}",
        res.text()
    );
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_millis(1500),
        "{took:?}"
    );
    // The connection stays usable, and nothing hangs.
    let res = c.exchange(
        "GET",
        &build_request("GET", &origin.url("/again"), &[], b""),
    );
    res.assert_error(503);
    assert_eq!(origin.requests(), 0);
}

#[test]
fn decisions_are_cached_and_shared() {
    let origin = Origin::echo();
    // Cached (the default 10s): the same question is asked once; another URL is asked.
    let service = reference_service(Duration::ZERO);
    let url = format!("http://{}/validate", service.addr);
    let proxy = Proxy::start(&["--authz-url", &url]);
    for _ in 0..3 {
        assert_eq!(get(proxy.addr, &origin.url("/same")).status(), 200);
        assert_denied(
            &get(proxy.addr, &origin.url("/admin")),
            "denied by --authz-url",
        );
    }
    assert_eq!(
        service.requests(),
        2,
        "denials and allowances are both cached"
    );
    assert_eq!(get(proxy.addr, &origin.url("/other")).status(), 200);
    assert_eq!(service.requests(), 3);
    // --authz-cache 0: every request is asked.
    let service = reference_service(Duration::ZERO);
    let url = format!("http://{}/validate", service.addr);
    let proxy = Proxy::start(&["--authz-url", &url, "--authz-cache", "0"]);
    for _ in 0..3 {
        assert_eq!(get(proxy.addr, &origin.url("/same")).status(), 200);
    }
    assert_eq!(service.requests(), 3);
    // Concurrent identical requests share one question.
    let service = reference_service(Duration::from_millis(500));
    let url = format!("http://{}/validate", service.addr);
    let proxy = Proxy::start(&["--authz-url", &url]);
    let target = origin.url("/together");
    let clients: Vec<_> = (0..6)
        .map(|_| {
            let (addr, target) = (proxy.addr, target.clone());
            thread::spawn(move || get(addr, &target).status())
        })
        .collect();
    for c in clients {
        assert_eq!(c.join().unwrap(), 200);
    }
    assert_eq!(
        service.requests(),
        1,
        "identical questions in flight were asked more than once"
    );
}

// ---------------------------------------------------------------------------------------------
// HTTPS service (stunnel + a test CA)
// ---------------------------------------------------------------------------------------------

#[cfg(feature = "tls")]
mod https {
    use super::*;

    #[test]
    fn authz_over_https_with_a_test_ca() {
        if !need_tool("openssl") || !need_tool("stunnel") {
            return;
        }
        let dir = temp_dir("authz-https");
        let Pki { ca, cert, key, .. } = pki();
        let service = reference_service(Duration::ZERO);
        let tls = stunnel(&dir, cert, key, service.port());
        let port = tls.port;
        let origin = Origin::echo();
        let url = format!("https://127.0.0.1:{port}/validate");
        let ca = ca.to_str().unwrap();
        let proxy = Proxy::start(&["--authz-url", &url, "--ca-file", ca]);
        assert_eq!(get(proxy.addr, &origin.url("/fine")).status(), 200);
        assert_denied(
            &get(proxy.addr, &origin.url("/admin")),
            "denied by --authz-url",
        );
        assert_eq!(service.requests(), 2);
        assert_eq!(questions(&service)[0]["url"], origin.url("/fine"));
        // Without the CA the service cannot be trusted: closed, with the reason.
        let proxy = Proxy::start(&["--authz-url", &url]);
        let res = get(proxy.addr, &origin.url("/fine"));
        res.assert_error(503);
        assert!(res.text().contains("TLS with 127.0.0.1:"), "{}", res.text());
        assert_eq!(service.requests(), 2);
    }
}

/// Without TLS an https:// service is refused at start.
#[cfg(not(feature = "tls"))]
#[test]
fn authz_https_needs_tls() {
    let out = run_proxy(&["--authz-url", "https://127.0.0.1:1/validate"], IO_TIMEOUT);
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(out.stderr.contains("no TLS"), "{out:?}");
}

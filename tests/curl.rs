//! The main flows through real curl (SPEC §3): `-x` for plain HTTP, `-p` for CONNECT tunnels,
//! `--proxy1.0` tunnels, HTTP/1.0 clients, HEAD, uploads with `--data-binary @file` (with
//! Content-Length and chunked), connection reuse, and errors as curl reports them.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;

/// Runs curl and requires success; returns its stdout.
fn curl_ok(args: &[&str]) -> String {
    let out = curl(args);
    assert_eq!(out.code, Some(0), "curl {args:?} failed: {out:?}");
    out.stdout
}

fn file_hash(path: &Path) -> u64 {
    fnv64(&std::fs::read(path).unwrap())
}

#[test]
fn curl_get_through_the_proxy() {
    if !need_tool("curl") {
        return;
    }
    let origin = Origin::echo();
    let proxy = Proxy::start(&[]);
    let url = origin.url("/curl/get?x=1");
    let out = curl_ok(&["-x", &proxy.url(), "-D", "-", &url]);
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.ends_with("GET /curl/get?x=1"), "{out}");
    assert!(
        out.to_lowercase().contains("\r\nvia: 1.1 smolproxy\r\n"),
        "{out}"
    );
    let seen = origin.last().head;
    assert_eq!(seen.start, "GET /curl/get?x=1 HTTP/1.1");
    assert_eq!(seen.get("host"), Some(origin.authority().as_str()));
    assert!(!seen.has("proxy-connection"), "{}", seen.text());
    assert!(
        proxy.wait_for_log(Duration::from_secs(5), &url).is_some(),
        "no access line"
    );
}

#[test]
fn curl_reuses_its_proxy_connection() {
    if !need_tool("curl") {
        return;
    }
    let origin = Origin::echo();
    let proxy = Proxy::start(&[]);
    let (a, b, c) = (origin.url("/one"), origin.url("/two"), origin.url("/three"));
    let out = curl_ok(&["-x", &proxy.url(), "-w", " [%{num_connects}]\n", &a, &b, &c]);
    assert_eq!(
        out, "GET /one [1]\nGET /two [0]\nGET /three [0]\n",
        "curl could not reuse the connection"
    );
}

#[test]
fn curl_head_and_http10() {
    if !need_tool("curl") {
        return;
    }
    let body = pattern(300_000, 9);
    let sent = body.clone();
    let origin = Origin::start(move |head, conn| {
        use std::io::Write;
        let _ = conn.read_body(head);
        let mut out = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        if head.method() != "HEAD" {
            out.extend_from_slice(&chunked(&sent, &[1000, 77, 30_000], &[]));
        }
        conn.stream.write_all(&out).is_ok()
    });
    let proxy = Proxy::start(&[]);
    let url = origin.url("/chunky");
    let out = curl_ok(&["-x", &proxy.url(), "-I", &url]);
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");

    let dir = temp_dir("curl-http10");
    let file = dir.join("body");
    let headers = curl_ok(&[
        "-x",
        &proxy.url(),
        "--http1.0",
        "-D",
        "-",
        "-o",
        file.to_str().unwrap(),
        &url,
    ]);
    assert!(
        !headers.to_lowercase().contains("chunked"),
        "chunked sent to HTTP/1.0 curl:\n{headers}"
    );
    assert_eq!(file_hash(&file), fnv64(&body));
}

#[test]
fn curl_uploads_a_file_with_content_length_and_chunked() {
    if !need_tool("curl") {
        return;
    }
    let origin = Origin::echo();
    let proxy = Proxy::start(&[]);
    let dir = temp_dir("curl-upload");
    let upload = dir.join("upload.bin");
    let body = pattern(3 << 20, 7);
    std::fs::write(&upload, &body).unwrap();
    let data = format!("@{}", upload.to_str().unwrap());
    let echoed = dir.join("echoed.bin");
    let echoed_s = echoed.to_str().unwrap();
    let url = origin.url("/upload");

    curl_ok(&[
        "-x",
        &proxy.url(),
        "--data-binary",
        &data,
        "-o",
        echoed_s,
        &url,
    ]);
    let seen = origin.last();
    assert_eq!(
        seen.head.get("content-length"),
        Some(body.len().to_string().as_str())
    );
    assert_eq!(fnv64(&seen.body), fnv64(&body), "origin got another body");
    assert_eq!(
        file_hash(&echoed),
        fnv64(&body),
        "curl got another body back"
    );

    curl_ok(&[
        "-x",
        &proxy.url(),
        "-H",
        "Transfer-Encoding: chunked",
        "--data-binary",
        &data,
        "-o",
        echoed_s,
        &url,
    ]);
    let seen = origin.last();
    assert_eq!(seen.head.tokens("transfer-encoding"), ["chunked"]);
    assert_eq!(
        fnv64(&seen.body),
        fnv64(&body),
        "origin got another chunked body"
    );
    assert_eq!(file_hash(&echoed), fnv64(&body));

    // Explicit Expect: 100-continue on a PUT.
    curl_ok(&[
        "-x",
        &proxy.url(),
        "-T",
        upload.to_str().unwrap(),
        "-H",
        "Expect: 100-continue",
        "-o",
        echoed_s,
        &url,
    ]);
    let seen = origin.last();
    assert_eq!(seen.head.method(), "PUT");
    assert_eq!(fnv64(&seen.body), fnv64(&body));
}

#[test]
fn curl_tunnels_with_connect() {
    if !need_tool("curl") {
        return;
    }
    let origin = Origin::echo();
    let port = origin.port().to_string();
    let proxy = Proxy::start(&["--connect-ports", &port]);
    let url = origin.url("/tunnelled");
    let out = curl_ok(&["-p", "-x", &proxy.url(), &url]);
    assert_eq!(out, "GET /tunnelled");
    // Through the tunnel the proxy adds nothing: the origin sees curl's own request.
    let seen = origin.last().head;
    assert!(
        !seen.has("via"),
        "the tunnel was not a tunnel: {}",
        seen.text()
    );
    let line = proxy.wait_for_log(
        Duration::from_secs(5),
        &format!("CONNECT {}", origin.authority()),
    );
    assert!(
        line.is_some(),
        "no CONNECT access line: {:?}",
        proxy.stderr_lines()
    );

    // The same with an HTTP/1.0 CONNECT.
    let out = curl_ok(&[
        "-p",
        "--proxy1.0",
        &proxy.addr.to_string(),
        &origin.url("/tunnelled-10"),
    ]);
    assert_eq!(out, "GET /tunnelled-10");

    // A large upload through the tunnel.
    let dir = temp_dir("curl-tunnel");
    let upload = dir.join("up.bin");
    let body = pattern(2 << 20, 8);
    std::fs::write(&upload, &body).unwrap();
    let echoed = dir.join("echoed.bin");
    let data = format!("@{}", upload.to_str().unwrap());
    curl_ok(&[
        "-p",
        "-x",
        &proxy.url(),
        "--data-binary",
        &data,
        "-o",
        echoed.to_str().unwrap(),
        &url,
    ]);
    assert_eq!(file_hash(&echoed), fnv64(&body));
}

#[test]
fn curl_sees_proxy_errors() {
    if !need_tool("curl") {
        return;
    }
    let echo = Origin::echo();
    let proxy = Proxy::start(&["--connect-ports", "any"]);
    let closed = format!("http://127.0.0.1:{}/", closed_port());
    // Plain HTTP: curl gets the proxy's 502 as the response.
    let out = curl(&[
        "-x",
        &proxy.url(),
        "-w",
        "%{http_code}",
        "-o",
        "/dev/null",
        &closed,
    ]);
    assert_eq!(out.stdout, "502", "{out:?}");
    // Tunnel: curl reports the CONNECT status.
    let out = curl(&[
        "-p",
        "-x",
        &proxy.url(),
        "-w",
        "%{http_connect}",
        "-o",
        "/dev/null",
        &closed,
    ]);
    assert_ne!(out.code, Some(0));
    assert_eq!(out.stdout, "502", "{out:?}");
    // Forbidden port.
    let strict = Proxy::start(&[]);
    let out = curl(&[
        "-p",
        "-x",
        &strict.url(),
        "-w",
        "%{http_connect}",
        "-o",
        "/dev/null",
        &echo.url("/"),
    ]);
    assert_eq!(out.stdout, "403", "{out:?}");
    assert_eq!(
        curl_ok(&["-x", &strict.url(), &echo.url("/fine")]),
        "GET /fine"
    );
}

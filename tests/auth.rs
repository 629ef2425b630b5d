//! Basic proxy authentication and client access control, as a user sees them (SPEC §2, §5):
//! real curl with `--proxy-user` over plain HTTP and CONNECT, raw sockets for the keep-alive
//! retry after a 407, `--allow-client` and `--auth-exempt` from IPv4 and IPv6 loopback
//! sources, `--auth-file` parsing and start-up errors, the open-proxy warning, and a newman
//! collection run through the proxy with `HTTP_PROXY=http://user:pass@...`.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use base64::Engine as _;
use common::*;

/// The password every test uses; it must never show up in any log.
const PASSWORD: &str = "s3cr:et-Pa55";
/// How long a log line may take to appear.
const WAIT: Duration = Duration::from_secs(5);

/// `Basic base64(user:pass)`.
fn basic(user_pass: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(user_pass)
    )
}

/// An origin that answers 200 with the request body, or `METHOD TARGET` when there is none,
/// and tells in headers what it saw of the proxy: `X-Seen-Via` and
/// `X-Seen-Proxy-Authorization: yes|no`.
fn origin() -> Origin {
    Origin::start(|head, conn| {
        let Ok(body) = conn.read_body(head) else {
            return false;
        };
        let reply = if body.is_empty() {
            format!("{} {}", head.method(), head.target()).into_bytes()
        } else {
            body
        };
        let via = head.get("via").unwrap_or("").to_string();
        let saw = if head.has("proxy-authorization") {
            "yes"
        } else {
            "no"
        };
        let headers = [
            ("X-Seen-Via", via.as_str()),
            ("X-Seen-Proxy-Authorization", saw),
        ];
        conn.try_respond("200 OK", &headers, &reply).is_ok()
    })
}

/// Asserts that no request reached `origin` carrying Proxy-Authorization.
fn assert_no_credentials_forwarded(origin: &Origin) {
    for seen in origin.seen() {
        assert!(
            !seen.head.has("proxy-authorization"),
            "forwarded: {}",
            seen.head.text()
        );
    }
}

/// Asserts that neither the password nor its base64 form appears in `text`.
fn assert_no_password(what: &str, text: &str) {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("ann:{PASSWORD}"));
    assert!(
        !text.contains(PASSWORD),
        "{what} shows the password:\n{text}"
    );
    assert!(
        !text.contains(&encoded),
        "{what} shows the encoded credentials:\n{text}"
    );
}

/// Runs curl (without any proxy variables or `.curlrc`) and returns how it ended.
fn curl_status(args: &[&str]) -> Finished {
    let head = ["-o", "/dev/null", "-w", "%{http_code} %{http_connect}"];
    curl(&[&head[..], args].concat())
}

/// curl's `http_code` and `http_connect` for a request through `proxy`, with `extra` args.
fn curl_codes(proxy: &Proxy, url: &str, extra: &[&str]) -> (u16, u16) {
    let proxy_url = proxy.url();
    let mut args = vec!["-x", &proxy_url, url];
    args.extend_from_slice(extra);
    let out = curl_status(&args);
    let mut codes = out
        .stdout
        .split_whitespace()
        .map(|c| c.parse::<u16>().unwrap_or(0));
    let pair = (codes.next().unwrap_or(0), codes.next().unwrap_or(0));
    assert!(pair != (0, 0), "curl {args:?} gave no status: {out:?}");
    pair
}

/// Writes `text` to a fresh file for one test and returns its path.
fn write_file(test: &str, name: &str, text: &str) -> PathBuf {
    let path = temp_dir(test).join(name);
    std::fs::write(&path, text).expect("write test file");
    path
}

/// Waits until `n` access-log lines mentioning `needle` were written to stderr.
fn wait_log_lines(proxy: &Proxy, needle: &str, n: usize) -> Vec<String> {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let lines: Vec<String> = proxy
            .stderr_lines()
            .into_iter()
            .filter(|l| l.contains(needle))
            .collect();
        if lines.len() >= n || std::time::Instant::now() > deadline {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn curl_http_with_right_wrong_and_missing_credentials() {
    if !need_tool("curl") {
        return;
    }
    let origin = origin();
    let user = format!("ann:{PASSWORD}");
    let proxy = Proxy::start_with_env(&["--auth", &user, "--auth", "bob:other"], &[]);
    let url = origin.url("/page");

    assert_eq!(curl_codes(&proxy, &url, &["--proxy-user", &user]).0, 200);
    assert_eq!(
        curl_codes(&proxy, &url, &["--proxy-user", "bob:other"]).0,
        200
    );
    assert_eq!(
        curl_codes(&proxy, &url, &["--proxy-user", "ann:wrong"]).0,
        407
    );
    assert_eq!(
        curl_codes(&proxy, &url, &["--proxy-user", "bob:s3cr:et-Pa55"]).0,
        407
    );
    assert_eq!(curl_codes(&proxy, &url, &[]).0, 407);
    assert_eq!(
        origin.requests(),
        2,
        "only the two authenticated requests reach the origin"
    );
    assert_no_credentials_forwarded(&origin);

    // The access log (text, on stderr) names the user of each request, never a password.
    let lines = wait_log_lines(&proxy, "/page", 5);
    assert_eq!(lines.len(), 5, "{lines:?}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains(" ann GET ") && l.contains(" 200 ")),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains(" bob GET ") && l.contains(" 200 ")),
        "{lines:?}"
    );
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.contains(" - GET ") && l.contains(" 407 "))
            .count(),
        3
    );
    let stderr = proxy.stderr_lines().join("\n");
    assert_no_password("stderr", &stderr);
    let warnings = stderr
        .matches("--auth puts passwords on the command line")
        .count();
    assert_eq!(warnings, 1, "the argv warning comes once: {stderr}");
}

#[test]
fn curl_connect_with_right_wrong_and_missing_credentials() {
    if !need_tool("curl") {
        return;
    }
    let origin = origin();
    let dir = temp_dir("auth-connect");
    let log = dir.join("access.log");
    let log_arg = log.to_str().unwrap();
    let env = [("SMOLPROXY_AUTH", &*format!("ann:{PASSWORD},bob:other"))];
    let args = [
        "--connect-ports",
        "any",
        "--access-log",
        log_arg,
        "--log-format",
        "json",
    ];
    let proxy = Proxy::start_with_env(&args, &env);
    let url = origin.url("/tunnelled");
    let user = format!("ann:{PASSWORD}");

    // curl -p: CONNECT to the origin's port, then the GET inside the tunnel.
    assert_eq!(
        curl_codes(&proxy, &url, &["-p", "--proxy-user", &user]),
        (200, 200)
    );
    assert_eq!(
        curl_codes(&proxy, &url, &["-p", "--proxy-user", "ann:wrong"]).1,
        407
    );
    assert_eq!(curl_codes(&proxy, &url, &["-p"]).1, 407);
    assert_eq!(
        origin.requests(),
        1,
        "only the authenticated tunnel reaches the origin"
    );
    assert_eq!(origin.last().head.target(), "/tunnelled");
    assert_no_credentials_forwarded(&origin);

    // One JSON line per CONNECT, with the user of the accepted one; no password anywhere.
    let deadline = std::time::Instant::now() + WAIT;
    let mut text = String::new();
    while text.lines().count() < 3 && std::time::Instant::now() < deadline {
        text = std::fs::read_to_string(&log).unwrap_or_default();
        std::thread::sleep(Duration::from_millis(20));
    }
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert_eq!(lines.len(), 3, "{text}");
    let users: Vec<_> = lines
        .iter()
        .map(|l| (l["status"].clone(), l["user"].clone()))
        .collect();
    let null = serde_json::Value::Null;
    assert_eq!(users[0], (200.into(), "ann".into()), "{text}");
    assert_eq!(users[1], (407.into(), null.clone()), "{text}");
    assert_eq!(users[2], (407.into(), null), "{text}");
    assert!(lines.iter().all(|l| l["method"] == "CONNECT"), "{text}");
    assert_no_password("access log file", &text);
    assert_no_password("stderr", &proxy.stderr_lines().join("\n"));
    assert!(
        !proxy
            .stderr_lines()
            .iter()
            .any(|l| l.contains("command line")),
        "no argv warning when the users come from SMOLPROXY_AUTH"
    );
}

#[test]
fn a_407_keeps_the_connection_for_the_retry() {
    let origin = origin();
    let echo = Origin::tcp_echo();
    let user = format!("ann:{PASSWORD}");
    let proxy = Proxy::start_with_env(&["--auth", &user, "--connect-ports", "any"], &[]);
    let url = origin.url("/retry");
    let creds = basic(&user);

    // Plain HTTP: 407 with the challenge, the connection kept, then 200 on the same one.
    let mut conn = Conn::connect(proxy.addr);
    let res = conn.exchange("GET", &build_request("GET", &url, &[], b""));
    res.assert_error(407);
    assert_eq!(
        res.header("proxy-authenticate"),
        Some("Basic realm=\"smolproxy\"")
    );
    assert_eq!(res.header("connection"), Some("keep-alive"));
    let authorized = [("Proxy-Authorization", creds.as_str())];
    let res = conn.exchange("GET", &build_request("GET", &url, &authorized, b""));
    assert_eq!(res.status(), 200, "{}", res.head.text());
    assert_eq!(res.text(), "GET /retry");
    assert_eq!(res.header("x-seen-proxy-authorization"), Some("no"));
    assert!(res
        .header("x-seen-via")
        .is_some_and(|v| v.contains("smolproxy")));
    // Credentials are per request: the next one without them is refused again.
    conn.exchange("GET", &build_request("GET", &url, &[], b""))
        .assert_error(407);
    assert_eq!(origin.requests(), 1);
    assert_no_credentials_forwarded(&origin);

    // CONNECT: 407 first, then the tunnel on the same connection.
    let mut conn = Conn::connect(proxy.addr);
    let target = echo.authority();
    let connect =
        |extra: &str| format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n{extra}\r\n");
    let res = conn.exchange("CONNECT", connect("").as_bytes());
    res.assert_error(407);
    assert_eq!(
        res.header("proxy-authenticate"),
        Some("Basic realm=\"smolproxy\"")
    );
    let ok = connect(&format!("Proxy-Authorization: {creds}\r\n"));
    conn.write(ok.as_bytes());
    let head = conn.read_head().unwrap().expect("a reply to CONNECT");
    assert_eq!(head.status(), 200, "{}", head.text());
    conn.write(b"ping through the tunnel");
    assert_eq!(conn.read_exact(23).unwrap(), b"ping through the tunnel");
}

#[test]
fn challenges_and_malformed_credentials() {
    let origin = origin();
    let user = format!("ann:{PASSWORD}");
    let proxy = Proxy::start_with_env(&["--auth", &user, "--realm", "Home \"Lab\""], &[]);
    let url = origin.url("/x");
    let ask = |fields: &[(&str, &str)]| {
        Conn::connect(proxy.addr).exchange("GET", &build_request("GET", &url, fields, b""))
    };
    let encoded = base64::engine::general_purpose::STANDARD.encode(&user);
    let lower = format!("basic {encoded}");
    let upper = format!("BASIC   {encoded}");
    for ok in [lower.as_str(), upper.as_str()] {
        let res = ask(&[("Proxy-Authorization", ok)]);
        assert_eq!(res.status(), 200, "{ok}: {}", res.head.text());
    }
    let creds = basic(&user);
    let bearer = format!("Bearer {encoded}");
    let no_colon = basic("annpassword");
    let wrong = basic("ann:s3cr:et-Pa56");
    let bad: [&[(&str, &str)]; 7] = [
        &[],
        &[("Proxy-Authorization", &wrong)],
        &[("Proxy-Authorization", "Basic !!not-base64!!")],
        &[("Proxy-Authorization", &bearer)],
        &[("Proxy-Authorization", &no_colon)],
        &[("Proxy-Authorization", "Basic")],
        // Two credentials in one request are refused even when one is right.
        &[
            ("Proxy-Authorization", "Basic Ym9iOmJvYg=="),
            ("Proxy-Authorization", &creds),
        ],
    ];
    for fields in bad {
        let res = ask(fields);
        res.assert_error(407);
        let challenge = res.header("proxy-authenticate");
        assert_eq!(
            challenge,
            Some(r#"Basic realm="Home \"Lab\"""#),
            "{fields:?}"
        );
    }
    // Authorization is for the origin, not the proxy: it does not stand in for credentials.
    ask(&[("Authorization", &creds)]).assert_error(407);
    assert_eq!(origin.requests(), 2);
    assert_no_credentials_forwarded(&origin);
    assert_no_password("stderr", &proxy.stderr_lines().join("\n"));
}

#[test]
fn allow_client_and_auth_exempt_from_ipv4_sources() {
    if !need_tool("curl") {
        return;
    }
    let origin = origin();
    let user = format!("ann:{PASSWORD}");
    let args = [
        "--listen",
        "127.0.0.1:0",
        "--auth",
        &user,
        "--allow-client",
        "127.0.0.1,127.0.0.3",
        "--auth-exempt",
        "127.0.0.3/32",
    ];
    let proxy = Proxy::start_with_env(&args, &[]);
    let url = origin.url("/acl");
    let from = |src: &'static str, extra: &[&str]| {
        let mut all = vec!["--interface", src];
        all.extend_from_slice(extra);
        curl_codes(&proxy, &url, &all).0
    };
    assert_eq!(
        from("127.0.0.1", &[]),
        407,
        "allowed, not exempt: needs credentials"
    );
    assert_eq!(from("127.0.0.1", &["--proxy-user", &user]), 200);
    assert_eq!(from("127.0.0.3", &[]), 200, "exempt: no credentials needed");
    assert_eq!(from("127.0.0.2", &[]), 403, "not in --allow-client");
    assert_eq!(
        from("127.0.0.2", &["--proxy-user", &user]),
        403,
        "credentials do not help"
    );
    assert_eq!(origin.requests(), 2);

    // The 403 names the rule; the exempt request is logged without a user.
    let refused = proxy.wait_for_log(WAIT, " 403 ").expect("a 403 log line");
    assert!(
        refused.contains("127.0.0.2 is not in --allow-client"),
        "{refused}"
    );
    let exempt = proxy.wait_for_line(WAIT, |l| {
        l.starts_with(|c: char| c.is_ascii_digit())
            && l.contains("127.0.0.3:")
            && l.contains(" 200 ")
    });
    assert!(
        exempt.is_some_and(|l| l.contains(" - GET ")),
        "{:?}",
        proxy.stderr_lines()
    );
    let body = curl_body(&proxy, &url, &["--interface", "127.0.0.2"]);
    assert_eq!(
        body,
        "403 Forbidden: client 127.0.0.2 is not in --allow-client\n"
    );
}

/// The body curl received for `url` through `proxy`.
fn curl_body(proxy: &Proxy, url: &str, extra: &[&str]) -> String {
    let mut cmd = Command::new("curl");
    cmd.args(["-q", "-sS", "--max-time", "20", "-x", &proxy.url(), url])
        .args(extra);
    for var in PROXY_ENV {
        cmd.env_remove(var);
    }
    run_to_exit(cmd, Duration::from_secs(30)).stdout
}

#[test]
fn a_client_outside_allow_client_is_refused_before_sending_anything() {
    let origin = origin();
    let proxy = Proxy::start_with_env(&["--allow-client", "10.0.0.0/8,fd00::/8"], &[]);
    // The client sends nothing: the complete 403 arrives anyway, then the proxy closes.
    let mut conn = Conn::connect(proxy.addr);
    let res = conn.response();
    res.assert_error(403);
    assert!(
        res.text()
            .contains("client 127.0.0.1 is not in --allow-client"),
        "{}",
        res.text()
    );
    assert_eq!(res.header("connection"), Some("close"));
    assert!(
        conn.closes_within(Duration::from_secs(3)),
        "the connection must be closed"
    );

    // A client that did send a request gets the same complete 403, not a reset.
    let raw = send_raw(
        proxy.addr,
        &build_request("GET", &origin.url("/"), &[], b""),
    );
    assert!(
        show(&raw).starts_with("HTTP/1.1 403 Forbidden\r\n"),
        "{}",
        show(&raw)
    );
    assert!(
        show(&raw).ends_with("client 127.0.0.1 is not in --allow-client\n"),
        "{}",
        show(&raw)
    );
    assert_eq!(origin.requests(), 0);
}

#[test]
fn allow_client_and_auth_exempt_with_ipv6() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        need("IPv6 loopback ([::1]) unavailable", false);
        return;
    }
    let origin = origin();
    let user = format!("ann:{PASSWORD}");
    let two = ["--listen", "[::1]:0", "--listen", "127.0.0.1:0"];
    let get = |addr, fields: &[(&str, &str)]| {
        let req = build_request("GET", &origin.url("/v6"), fields, b"");
        Conn::connect(addr).exchange("GET", &req)
    };

    // Exempt ::1: the IPv6 client needs nothing, the IPv4 one needs credentials.
    let mut args = two.to_vec();
    args.extend(["--auth", &user, "--auth-exempt", "::1"]);
    let proxy = Proxy::start_with_env(&args, &[]);
    let (v6, v4) = (proxy.addrs[0], proxy.addrs[1]);
    assert!(v6.is_ipv6() && v4.is_ipv4(), "{:?}", proxy.addrs);
    assert_eq!(get(v6, &[]).status(), 200);
    get(v4, &[]).assert_error(407);
    assert_eq!(
        get(v4, &[("Proxy-Authorization", &basic(&user))]).status(),
        200
    );
    drop(proxy);

    // Allow only [::1]: the IPv4 client is refused, before it sends anything.
    let mut args = two.to_vec();
    args.extend(["--allow-client", "::1/128"]);
    let proxy = Proxy::start_with_env(&args, &[]);
    let (v6, v4) = (proxy.addrs[0], proxy.addrs[1]);
    assert_eq!(get(v6, &[]).status(), 200);
    let res = Conn::connect(v4).response();
    res.assert_error(403);
    assert!(
        res.text().contains("127.0.0.1 is not in --allow-client"),
        "{}",
        res.text()
    );

    // And the other way round: allow 127.0.0.0/8 only, the [::1] client is refused.
    let mut args = two.to_vec();
    args.extend(["--allow-client", "127.0.0.0/8"]);
    let proxy = Proxy::start_with_env(&args, &[]);
    let res = Conn::connect(proxy.addrs[0]).response();
    res.assert_error(403);
    assert!(
        res.text().contains("client ::1 is not in --allow-client"),
        "{}",
        res.text()
    );
    assert_eq!(get(proxy.addrs[1], &[]).status(), 200);
}

#[test]
fn auth_file_with_comments_blank_lines_and_colons() {
    if !need_tool("curl") {
        return;
    }
    let origin = origin();
    let text = format!(
        "# smolproxy users\n\n   \nann:{PASSWORD}\r\n  # bob:old-password\nbob:with space\n"
    );
    let file = write_file("auth-file", "users", &text);
    let proxy = Proxy::start_with_env(&["--auth-file", file.to_str().unwrap()], &[]);
    let url = origin.url("/file");
    assert_eq!(
        curl_codes(&proxy, &url, &["--proxy-user", &format!("ann:{PASSWORD}")]).0,
        200
    );
    assert_eq!(
        curl_codes(&proxy, &url, &["--proxy-user", "bob:with space"]).0,
        200
    );
    assert_eq!(
        curl_codes(&proxy, &url, &["--proxy-user", "bob:old-password"]).0,
        407
    );
    assert_eq!(
        curl_codes(&proxy, &url, &["--proxy-user", "# bob:old-password"]).0,
        407
    );
    assert_eq!(origin.requests(), 2);
    let stderr = proxy.stderr_lines().join("\n");
    assert_no_password("stderr", &stderr);
    assert!(
        !stderr.contains("command line"),
        "no argv warning for --auth-file: {stderr}"
    );
}

#[test]
fn bad_credentials_configuration_stops_the_start() {
    let malformed = write_file("auth-bad", "users", "# users\nann:good\nhunter2-no-colon\n");
    let path = malformed.to_str().unwrap();
    let quick = Duration::from_secs(10);
    // (args, environment, exit status, text the one line must hold)
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], i32, &'a str);
    let cases: [Case; 7] = [
        (
            &["--auth-file", path],
            &[],
            2,
            &format!("--auth-file {path} line 3: expected user:password"),
        ),
        (
            &["--auth-file", "/nonexistent/users"],
            &[],
            1,
            "cannot read --auth-file /nonexistent/users",
        ),
        (&["--auth-file", "/"], &[], 1, "cannot read --auth-file /"),
        (
            &["--auth", "hunter2-no-colon"],
            &[],
            2,
            "--auth: expected user:password",
        ),
        (
            &["--auth", "ann:"],
            &[],
            2,
            "--auth: the password of user 'ann' is empty",
        ),
        (&["--realm", ""], &[], 2, "--realm"),
        (
            &[],
            &[("SMOLPROXY_AUTH", "ann:a,hunter2-no-colon")],
            2,
            "SMOLPROXY_AUTH entry 2",
        ),
    ];
    for (args, env, status, text) in cases {
        let out = run_to_exit(proxy_command(args, env), quick);
        let ctx = format!("{args:?} {env:?}: {out:?}");
        assert_eq!(out.code, Some(status), "{ctx}");
        let lines: Vec<&str> = out.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "one line: {ctx}");
        assert!(lines[0].contains(text), "{ctx}");
        assert!(
            !out.stderr.contains("hunter2"),
            "a secret was printed: {ctx}"
        );
        assert!(!out.stderr.contains("listening on"), "{ctx}");
    }
    let bad_cidr = run_to_exit(
        proxy_command(&["--allow-client", "10.0.0.0/33"], &[]),
        quick,
    );
    assert_eq!(bad_cidr.code, Some(2), "{bad_cidr:?}");
    assert!(bad_cidr.stderr.contains("--allow-client"), "{bad_cidr:?}");
    let bad_cidr = run_to_exit(proxy_command(&["--auth-exempt", "lan"], &[]), quick);
    assert_eq!(bad_cidr.code, Some(2), "{bad_cidr:?}");
    assert!(bad_cidr.stderr.contains("--auth-exempt"), "{bad_cidr:?}");
}

#[test]
fn open_proxy_warning_only_without_auth_or_allow_client() {
    let users = write_file("auth-warn", "users", "ann:pw\n");
    let users = users.to_str().unwrap();
    // (extra args, whether the open-proxy warning is expected)
    let cases: [(&[&str], bool); 4] = [
        (&[], true),
        (&["--auth-file", users], false),
        (&["--allow-client", "127.0.0.1"], false),
        (&["--auth-exempt", "127.0.0.1"], true),
    ];
    for (extra, open) in cases {
        let mut args = vec!["--listen", "0.0.0.0:0"];
        args.extend_from_slice(extra);
        let proxy = Proxy::start_with_env(&args, &[]);
        // The warnings are printed with the listening line, before serving.
        let warned = proxy
            .wait_for_log(Duration::from_millis(500), "open proxy")
            .is_some();
        assert_eq!(warned, open, "{extra:?}: {:?}", proxy.stderr_lines());
        let useless_exempt = proxy
            .stderr_lines()
            .iter()
            .any(|l| l.contains("--auth-exempt has no effect"));
        assert_eq!(
            useless_exempt,
            extra.contains(&"--auth-exempt"),
            "{extra:?}"
        );
    }
    // Loopback only: never an open proxy.
    let proxy = Proxy::start(&[]);
    assert!(proxy
        .wait_for_log(Duration::from_millis(300), "open proxy")
        .is_none());
}

/// newman from `node_modules/.bin` (scripts/test.sh installs it there), else from PATH.
fn newman() -> Option<PathBuf> {
    let local = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("node_modules/.bin/newman");
    if local.is_file() {
        return Some(local);
    }
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|dir| dir.join("newman"))
        .find(|p| p.is_file())
}

/// Runs the committed collection through `proxy` as `user:pass` in HTTP_PROXY.
fn run_newman(newman: &PathBuf, proxy: &Proxy, origin: &Origin, user_pass: &str) -> Finished {
    let collection = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/auth.postman_collection.json");
    let mut cmd = Command::new(newman);
    cmd.arg("run").arg(collection);
    cmd.args(["--env-var", &format!("base=http://{}", origin.authority())]);
    cmd.args([
        "--reporters",
        "cli",
        "--color",
        "off",
        "--disable-unicode",
        "--timeout-request",
        "20000",
    ]);
    for var in PROXY_ENV {
        cmd.env_remove(var);
    }
    // Percent-encoding keeps the colon inside the password out of the URL syntax.
    let (user, pass) = user_pass.split_once(':').unwrap();
    let encoded: String = pass
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect();
    cmd.env(
        "HTTP_PROXY",
        format!("http://{user}:{encoded}@{}", proxy.addr),
    );
    run_to_exit(cmd, Duration::from_secs(120))
}

#[test]
fn newman_collection_through_the_proxy() {
    let newman = newman();
    if !need(
        "newman not installed (npm install newman, or scripts/test.sh)",
        newman.is_some(),
    ) {
        return;
    }
    let newman = newman.unwrap();
    let origin = origin();
    let user = format!("ann:{PASSWORD}");
    let env = [("SMOLPROXY_AUTH", user.as_str())];
    let proxy = Proxy::start_with_env(&[], &env);

    let good = run_newman(&newman, &proxy, &origin, &user);
    assert_eq!(
        good.code,
        Some(0),
        "newman with the right password failed:\n{}",
        good.stdout
    );
    assert!(
        good.stdout.contains("GET through the proxy"),
        "{}",
        good.stdout
    );
    assert_eq!(origin.requests(), 3, "{}", good.stdout);
    assert_no_credentials_forwarded(&origin);
    let post = origin
        .seen()
        .into_iter()
        .find(|s| s.head.method() == "POST")
        .expect("the POST");
    assert_eq!(post.body, br#"{"name": "ann", "items": [1, 2, 3]}"#);
    let logged = wait_log_lines(&proxy, " ann ", 3);
    assert_eq!(
        logged.len(),
        3,
        "every request logged under ann: {:?}",
        proxy.stderr_lines()
    );

    let bad = run_newman(&newman, &proxy, &origin, "ann:wrong-password");
    assert_ne!(
        bad.code,
        Some(0),
        "newman with a wrong password passed:\n{}",
        bad.stdout
    );
    assert!(bad.stdout.contains("407"), "{}", bad.stdout);
    assert_eq!(
        origin.requests(),
        3,
        "nothing reaches the origin with a wrong password"
    );
    assert_no_password("stderr", &proxy.stderr_lines().join("\n"));
}

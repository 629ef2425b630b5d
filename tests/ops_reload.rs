//! SIGHUP (SPEC §12): the running proxy reads its files again, and serving goes on.
//!
//! Each test starts the real binary, changes a file the flags name, sends `kill -HUP` and waits
//! for the proxy's `reloaded:` line on stderr before looking: a new user is admitted and a
//! removed one refused on new connections while a tunnel opened before keeps relaying; a file
//! that no longer parses (or cannot be read) keeps the previous users with one line saying
//! why; an access log moved away (as logrotate does) is opened again at its path; a replaced
//! `--ca-file` verifies an origin it did not before; a replaced `--tls-cert` is what new
//! handshakes of the TLS listener present, and a key that became readable by others is
//! refused. Clients are curl and raw sockets; origins are on loopback. A test whose tool is
//! missing prints `SKIP: ...` on a developer machine and fails under `CI=true`.

mod common;

use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::*;

/// How long a reload, a log line or a file may take to show up.
const WAIT: Duration = Duration::from_secs(10);

/// A path as the `&str` a command line wants (test paths are always UTF-8).
fn s(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}

/// Sends SIGHUP to `proxy` and returns the `reloaded: ...` line that ends that reload, with
/// every `reload: ...` line (a file kept at its previous value) it wrote before it.
fn hup(proxy: &Proxy) -> (String, Vec<String>) {
    let count = |lines: &[String]| lines.iter().filter(|l| l.starts_with("reloaded: ")).count();
    let before = proxy.stderr_lines();
    proxy.signal("HUP");
    let deadline = Instant::now() + WAIT;
    loop {
        let lines = proxy.stderr_lines();
        if count(&lines) > count(&before) {
            let new = &lines[before.len()..];
            let done = new.iter().find(|l| l.starts_with("reloaded: ")).unwrap();
            let kept = new.iter().filter(|l| l.starts_with("reload: ")).cloned();
            return (done.clone(), kept.collect());
        }
        assert!(Instant::now() < deadline, "no reloaded line: {lines:?}");
        thread::sleep(Duration::from_millis(20));
    }
}

/// The status curl got for `url` through the plain listener of `proxy` as `user` (`-` for
/// none), as a number (0 when there was no HTTP answer).
fn status_as(proxy: &Proxy, user: &str, url: &str) -> u16 {
    let mut args = vec![
        "-x",
        &proxy.url()[..],
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
    ]
    .into_iter()
    .map(String::from)
    .collect::<Vec<_>>();
    if user != "-" {
        args.extend(["--proxy-user".into(), user.into()]);
    }
    args.push(url.into());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = curl(&args);
    out.stdout.trim().parse().unwrap_or(0)
}

/// Waits until the file at `path` holds `needle`; returns its text.
fn file_with(path: &Path, needle: &str) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(needle) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{} never held {needle:?}: {text:?}",
            path.display()
        );
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn new_users_are_admitted_and_removed_ones_refused_while_a_tunnel_goes_on() {
    if !need_tool("curl") {
        return;
    }
    let dir = temp_dir("reload-users");
    let file = dir.join("users");
    std::fs::write(&file, "# before\nann:pw-ann\n").unwrap();
    let origin = Origin::echo();
    let echo = Origin::tcp_echo();
    // A user from the environment, which SIGHUP must leave in place.
    let proxy = Proxy::start_with_env(
        &["--auth-file", s(&file), "--connect-ports", "any"],
        &[("SMOLPROXY_AUTH", "eve:pw-eve")],
    );
    let url = origin.url("/users");
    assert_eq!(status_as(&proxy, "ann:pw-ann", &url), 200);
    assert_eq!(status_as(&proxy, "bob:pw-bob", &url), 407);

    // ann opens a tunnel before the reload.
    let mut tunnel = Conn::connect(proxy.addr);
    tunnel.set_timeout(WAIT);
    let credentials = base64::engine::general_purpose::STANDARD.encode("ann:pw-ann");
    let authority = echo.authority();
    tunnel.write(
        format!(
            "CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\
             Proxy-Authorization: Basic {credentials}\r\n\r\n"
        )
        .as_bytes(),
    );
    let head = tunnel.read_head().unwrap().expect("an answer to CONNECT");
    assert_eq!(head.status(), 200, "{}", head.text());
    tunnel.write(b"before the reload;");
    assert_eq!(tunnel.read_exact(18).unwrap(), b"before the reload;");

    // ann leaves the file, bob joins it.
    std::fs::write(&file, "bob:pw-bob\n").unwrap();
    let (done, kept) = hup(&proxy);
    assert_eq!(done, "reloaded: auth-file (1 users)");
    assert!(kept.is_empty(), "{kept:?}");

    tunnel.write(b"after the reload");
    assert_eq!(tunnel.read_exact(16).unwrap(), b"after the reload");
    assert_eq!(status_as(&proxy, "bob:pw-bob", &url), 200);
    assert_eq!(status_as(&proxy, "ann:pw-ann", &url), 407);
    assert_eq!(status_as(&proxy, "eve:pw-eve", &url), 200);
    assert_eq!(status_as(&proxy, "-", &url), 407);
    // The tunnel still relays after those requests, and ends whole.
    tunnel.write(b"still there");
    assert_eq!(tunnel.read_exact(11).unwrap(), b"still there");
    tunnel.shutdown_write();
    assert_eq!(tunnel.read_to_end().unwrap(), b"BYE");
}

#[test]
fn a_kept_alive_connection_takes_the_new_users_at_its_next_request() {
    let dir = temp_dir("reload-keep-alive");
    let file = dir.join("users");
    std::fs::write(&file, "ann:pw-ann\n").unwrap();
    let origin = Origin::echo();
    let proxy = Proxy::start(&["--auth-file", s(&file)]);
    let credentials = base64::engine::general_purpose::STANDARD.encode("ann:pw-ann");
    let ask = build_request(
        "GET",
        &origin.url("/kept"),
        &[("Proxy-Authorization", &format!("Basic {credentials}"))],
        b"",
    );
    let mut conn = Conn::connect(proxy.addr);
    conn.set_timeout(WAIT);
    assert_eq!(conn.exchange("GET", &ask).status(), 200);
    std::fs::write(&file, "bob:pw-bob\n").unwrap();
    hup(&proxy);
    // The same connection, kept alive: ann is no longer a user.
    assert_eq!(conn.exchange("GET", &ask).status(), 407);
}

#[test]
fn a_broken_or_missing_auth_file_keeps_the_previous_users() {
    if !need_tool("curl") {
        return;
    }
    let dir = temp_dir("reload-broken");
    let file = dir.join("users");
    std::fs::write(&file, "ann:pw-ann\n").unwrap();
    let origin = Origin::echo();
    let proxy = Proxy::start(&["--auth-file", s(&file), "--access-log", s(&dir.join("log"))]);
    let url = origin.url("/broken");

    std::fs::write(&file, "bob:pw-bob\nthis line has no colon\n").unwrap();
    let (done, kept) = hup(&proxy);
    let name = file.display();
    assert_eq!(
        kept,
        [format!(
            "reload: --auth-file {name} line 2: expected user:password, found no ':'; keeping \
             the previous users"
        )]
    );
    // The access log was still opened again: only the users were kept.
    assert_eq!(done, "reloaded: access-log");
    assert_eq!(status_as(&proxy, "ann:pw-ann", &url), 200);
    assert_eq!(status_as(&proxy, "bob:pw-bob", &url), 407);

    std::fs::remove_file(&file).unwrap();
    let (_, kept) = hup(&proxy);
    assert_eq!(
        kept,
        [format!(
            "reload: cannot read --auth-file {name}: no such file or directory; keeping the \
             previous users"
        )]
    );
    assert_eq!(status_as(&proxy, "ann:pw-ann", &url), 200);
    // No password ever reaches stderr.
    let lines = proxy.stderr_lines();
    assert!(!lines.iter().any(|l| l.contains("pw-")), "{lines:?}");
}

#[test]
fn an_access_log_moved_away_is_opened_again_at_its_path() {
    let dir = temp_dir("reload-log");
    let (log, moved) = (dir.join("access.log"), dir.join("access.log.1"));
    let origin = Origin::echo();
    let proxy = Proxy::start(&["--access-log", s(&log)]);
    assert_eq!(get(proxy.addr, &origin.url("/first")).status(), 200);
    file_with(&log, "/first");
    // What logrotate does: move the file away, then HUP. Lines until the HUP still go to
    // the moved file, which the proxy holds open.
    std::fs::rename(&log, &moved).unwrap();
    assert_eq!(get(proxy.addr, &origin.url("/second")).status(), 200);
    file_with(&moved, "/second");
    assert!(!log.exists());
    let (done, _) = hup(&proxy);
    assert_eq!(done, "reloaded: access-log");
    assert_eq!(get(proxy.addr, &origin.url("/third")).status(), 200);
    let new = file_with(&log, "/third");
    assert!(!new.contains("/first") && !new.contains("/second"), "{new}");
    let old = std::fs::read_to_string(&moved).unwrap();
    assert!(old.contains("/first") && !old.contains("/third"), "{old}");

    // A path where no file can be made: the file in use stays, and one line says why.
    let again = dir.join("access.log.2");
    std::fs::rename(&log, &again).unwrap();
    std::fs::create_dir(&log).unwrap();
    let (done, kept) = hup(&proxy);
    assert_eq!(
        kept,
        [format!(
            "reload: cannot open access log {}: is a directory; keeping the previous file",
            log.display()
        )]
    );
    assert_eq!(done, "reloaded: nothing");
    assert_eq!(get(proxy.addr, &origin.url("/fourth")).status(), 200);
    file_with(&again, "/fourth");
}

#[cfg(feature = "tls")]
#[test]
fn a_replaced_ca_file_verifies_origins_after_the_reload() {
    if !need_tool("openssl") || !need_tool("stunnel") {
        return;
    }
    let dir = temp_dir("reload-ca-file");
    let origin = Origin::echo();
    // An origin whose certificate the test PKI's CA signed.
    let tls = stunnel(&dir, &pki().cert, &pki().key, origin.port());
    // At first --ca-file holds another CA, and there is no system store.
    let other_ca = bad_certs()
        .unknown_issuer
        .cert
        .with_file_name("other-ca.pem");
    let ca_file = dir.join("ca.pem");
    std::fs::copy(&other_ca, &ca_file).unwrap();
    let proxy = Proxy::start_with_env(
        &["--ca-file", s(&ca_file)],
        &[("SSL_CERT_FILE", "/nonexistent/ca.pem")],
    );
    let url = format!("https://{}/verified", tls.authority());
    let refused = get(proxy.addr, &url);
    assert_eq!(refused.status(), 502, "{}", refused.text());

    std::fs::copy(&pki().ca, &ca_file).unwrap();
    let (done, _) = hup(&proxy);
    assert_eq!(done, "reloaded: ca-file");
    assert_eq!(get(proxy.addr, &url).status(), 200);

    // A file without certificates keeps the ones read before.
    std::fs::write(&ca_file, "not a certificate\n").unwrap();
    let (done, kept) = hup(&proxy);
    let name = ca_file.display();
    assert_eq!(
        kept,
        [format!(
            "reload: --ca-file {name}: no PEM certificate in it; keeping the previous certificates"
        )]
    );
    assert_eq!(done, "reloaded: nothing");
    assert_eq!(get(proxy.addr, &url).status(), 200);
}

#[cfg(feature = "tls-server")]
#[test]
fn new_handshakes_of_the_tls_listener_present_a_replaced_certificate() {
    use std::os::unix::fs::PermissionsExt;
    if !need_tool("curl") || !need_tool("openssl") {
        return;
    }
    let dir = temp_dir("reload-tls-cert");
    let (cert, key) = (dir.join("tls.pem"), dir.join("tls.key"));
    let install = |from: &Identity| {
        std::fs::copy(&from.cert, &cert).unwrap();
        std::fs::copy(&from.key, &key).unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    };
    let first = Identity {
        cert: pki().cert.clone(),
        key: pki().key.clone(),
    };
    install(&first);
    let origin = Origin::echo();
    let proxy = Proxy::start(&[
        "--listen-tls",
        "127.0.0.1:0",
        "--tls-cert",
        s(&cert),
        "--tls-key",
        s(&key),
    ]);
    let via = format!("https://{}", proxy.tls_addrs[0]);
    let url = origin.url("/through-tls");
    // The replacement is signed by another CA: curl trusting only that one tells the
    // certificates apart.
    let next = &bad_certs().unknown_issuer;
    let next_ca = next.cert.with_file_name("other-ca.pem");
    let fetch = |ca: &Path| {
        let args = ["--proxy", &via, "--proxy-cacert", s(ca), "-o", "/dev/null"];
        let out = curl(&[&args[..], &["-w", "%{http_code}", &url]].concat());
        (out.code, out.stdout)
    };
    assert_eq!(fetch(&pki().ca), (Some(0), "200".into()));
    assert_ne!(fetch(&next_ca).0, Some(0));

    install(next);
    let (done, _) = hup(&proxy);
    assert_eq!(done, "reloaded: tls-cert");
    assert_eq!(fetch(&next_ca), (Some(0), "200".into()));
    assert_ne!(fetch(&pki().ca).0, Some(0));

    // A key that became readable by others is refused; the certificate in use stays.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (done, kept) = hup(&proxy);
    let name = key.display();
    assert_eq!(
        kept,
        [format!(
            "reload: --tls-key {name} is readable by others (mode 0644); chmod 600 it; keeping \
             the previous certificate"
        )]
    );
    assert_eq!(done, "reloaded: nothing");
    assert_eq!(fetch(&next_ca), (Some(0), "200".into()));
}

#[cfg(feature = "tls-server")]
#[test]
fn a_replaced_interception_ca_signs_the_leaves_of_new_sessions() {
    use std::os::unix::fs::PermissionsExt;
    if !need_tool("curl") || !need_tool("openssl") || !need_tool("stunnel") {
        return;
    }
    let dir = temp_dir("reload-intercept");
    let make = |name: &str| {
        let ca = Identity {
            cert: dir.join(format!("{name}.pem")),
            key: dir.join(format!("{name}-key.pem")),
        };
        let made = ca_new(&ca.cert, &ca.key, &["--days", "2"]);
        assert_eq!(made.code, Some(0), "ca new: {made:?}");
        ca
    };
    let (first, next) = (make("first"), make("next"));
    let (cert, key) = (dir.join("ca.pem"), dir.join("ca-key.pem"));
    let install = |from: &Identity| {
        std::fs::copy(&from.cert, &cert).unwrap();
        std::fs::copy(&from.key, &key).unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    };
    install(&first);
    let origin = Origin::echo();
    let tls = stunnel(&dir, &pki().cert, &pki().key, origin.port());
    let proxy = Proxy::start(&[
        "--intercept",
        "localhost",
        "--intercept-ca",
        s(&cert),
        "--intercept-key",
        s(&key),
        "--ca-file",
        s(&pki().ca),
        "--connect-ports",
        "any",
    ]);
    let url = format!("https://localhost:{}/intercepted", tls.port);
    // curl trusting only `ca`: whether the leaf it was shown is that CA's.
    let trusts = |ca: &Identity| {
        let args = [
            "-x",
            &proxy.url(),
            "--cacert",
            s(&ca.cert),
            "-o",
            "/dev/null",
        ];
        curl(&[&args[..], &["-w", "%{http_code}", &url]].concat()).stdout == "200"
    };
    assert!(trusts(&first));
    assert!(!trusts(&next));

    install(&next);
    let (done, kept) = hup(&proxy);
    assert!(kept.is_empty(), "{kept:?}");
    assert_eq!(done, "reloaded: ca-file, intercept-ca");
    // The leaf for localhost cached under the first CA is gone with it.
    assert!(trusts(&next));
    assert!(!trusts(&first));
}

//! The TLS listener end to end (SPEC §11): `--listen-tls` with `--tls-cert` and `--tls-key`, the
//! same HTTP proxy inside TLS, driven by real curl (`--proxy https://127.0.0.1:PORT
//! --proxy-cacert CA`).
//!
//! The listener's certificate comes from the test PKI made by the openssl command ([`pki`]: a
//! CA and a certificate for `localhost` and 127.0.0.1); a TLS origin is stunnel in front of a
//! plain [`Origin`] with that same certificate. What a user would check is what is asserted:
//! curl's exit code and status, what the origin received, the access log, the capture file,
//! and, for the point of the feature, the bytes on the wire between curl and the proxy, seen
//! by a relay of the test's own. A test whose tool is missing prints `SKIP: ...` on a developer
//! machine and fails under `CI=true`.

#![cfg(feature = "tls-server")]

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::Duration;

use common::*;
use serde_json::Value;

/// The user every test's proxy knows, as curl's `--proxy-user` wants it.
const USER: &str = "ann:pw";
/// How long a capture record may take to reach the file after its exchange.
const RECORD_WAIT: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------------------
// Peers and clients
// ---------------------------------------------------------------------------------------------

/// Whether curl, and openssl for the test PKI, are there (a visible skip otherwise).
fn tools() -> bool {
    need_tool("curl") && need_tool("openssl")
}

/// A path as the `&str` a command line wants (test paths are always UTF-8).
fn s(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}

/// The proxy with a TLS listener on 127.0.0.1:0 using the test PKI's certificate, next to
/// the plain `--listen` one, CONNECT allowed to any port; then `extra`.
fn tls_proxy(extra: &[&str]) -> Proxy {
    let mut args = vec![
        "--listen-tls",
        "127.0.0.1:0",
        "--tls-cert",
        s(&pki().cert),
        "--tls-key",
        s(&pki().key),
        "--connect-ports",
        "any",
    ];
    args.extend(extra);
    let proxy = Proxy::start(&args);
    assert_eq!(proxy.tls_addrs.len(), 1, "{:?}", proxy.stderr_lines());
    proxy
}

/// `https://127.0.0.1:PORT` of the proxy's TLS listener, as curl's `--proxy` wants it (the
/// certificate has 127.0.0.1 among its names).
fn https_url(proxy: &Proxy) -> String {
    format!("https://{}", proxy.tls_addrs[0])
}

/// curl through the https:// proxy `proxy_url`, verifying the proxy's certificate against
/// `proxy_ca`, with `args`.
fn curl_via(proxy_url: &str, proxy_ca: &Path, args: &[&str]) -> Finished {
    let proxy = ["--proxy", proxy_url, "--proxy-cacert", s(proxy_ca)];
    curl(&[&proxy[..], args].concat())
}

/// The interception CA, made once per test run with `smolproxy ca new`.
fn interception_ca() -> &'static Identity {
    static CA: OnceLock<Identity> = OnceLock::new();
    CA.get_or_init(|| {
        let dir = temp_dir("listen-tls-ca");
        let (cert, key) = (dir.join("ca.pem"), dir.join("ca-key.pem"));
        let made = ca_new(&cert, &key, &["--days", "2"]);
        assert_eq!(made.code, Some(0), "ca new: {made:?}");
        Identity { cert, key }
    })
}

/// A TCP relay on 127.0.0.1:0 in front of another address, standing where a network would
/// be: it copies bytes both ways and records them, each direction of each connection apart
/// (so a needle split over two reads is still found whole). Bytes are recorded before they are
/// passed on, so once a client has its answer, everything it took is recorded.
struct Relay {
    /// Where clients connect.
    addr: SocketAddr,
    /// The bytes of each direction of each connection so far.
    streams: Arc<Mutex<Vec<Vec<u8>>>>,
    /// Set on drop to stop the accept loop.
    stop: Arc<AtomicBool>,
}

impl Relay {
    /// Starts one in front of `to`.
    fn start(to: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let streams = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (recorded, stopped) = (streams.clone(), stop.clone());
        thread::spawn(move || {
            for client in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    break;
                }
                let (Ok(client), Ok(server)) = (client, TcpStream::connect(to)) else {
                    continue;
                };
                for (from, into) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    let index = {
                        let mut streams = recorded.lock().unwrap();
                        streams.push(Vec::new());
                        streams.len() - 1
                    };
                    let recorded = recorded.clone();
                    thread::spawn(move || copy(from, into, &recorded, index));
                }
            }
        });
        Relay {
            addr,
            streams,
            stop,
        }
    }

    /// Every direction of every connection recorded so far.
    fn recorded(&self) -> Vec<Vec<u8>> {
        self.streams.lock().unwrap().clone()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
    }
}

/// Copies `from` into `into` until the end (or an error), appending each piece to
/// `streams[index]` before passing it on; then passes the end on as a half-close.
fn copy(mut from: TcpStream, mut into: TcpStream, streams: &Mutex<Vec<Vec<u8>>>, index: usize) {
    let _ = from.set_read_timeout(Some(IO_TIMEOUT));
    let mut buf = [0u8; 16 * 1024];
    while let Ok(n @ 1..) = from.read(&mut buf) {
        streams.lock().unwrap()[index].extend_from_slice(&buf[..n]);
        if into.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = into.shutdown(Shutdown::Write);
}

/// Whether `needle` occurs in `bytes`.
fn has(bytes: &[u8], needle: &str) -> bool {
    bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// The capture file's records, once one satisfies `pred`; panics with the file after
/// [`RECORD_WAIT`].
fn records_once(cap: &Path, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
    records_when(cap, RECORD_WAIT, |records| records.iter().any(&pred))
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

/// curl with `--proxy https://` and credentials: a plain http GET, and an https URL through a
/// CONNECT tunnel (the origin's certificate checked by curl with `--cacert`). The proxy's
/// certificate is verified, the origin gets both requests without the credentials, and the
/// access log names user ann for each.
#[test]
fn curl_forwards_and_tunnels_through_the_tls_listener() {
    if !tools() || !need_tool("stunnel") {
        return;
    }
    let dir = temp_dir("listen-tls-curl");
    let origin = Origin::echo();
    let tls = stunnel(&dir, &pki().cert, &pki().key, origin.port());
    let proxy = tls_proxy(&["--auth", USER]);
    let via = https_url(&proxy);
    let report = "|%{http_code}|%{proxy_ssl_verify_result}";

    let plain = origin.url("/plain?x=1");
    let out = curl_via(
        &via,
        &pki().ca,
        &["--proxy-user", USER, "-w", report, &plain],
    );
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(out.stdout, "GET /plain?x=1|200|0", "{out:?}");

    let secure = format!("https://{}/secure", tls.authority());
    let out = curl_via(
        &via,
        &pki().ca,
        &[
            "--proxy-user",
            USER,
            "--cacert",
            s(&pki().ca),
            "-w",
            report,
            &secure,
        ],
    );
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(out.stdout, "GET /secure|200|0", "{out:?}");

    let seen = origin.seen();
    let got: Vec<(&str, Option<&str>)> = seen
        .iter()
        .map(|s| (s.head.start.as_str(), s.head.get("host")))
        .collect();
    assert_eq!(
        got,
        [
            ("GET /plain?x=1 HTTP/1.1", Some(origin.authority().as_str())),
            ("GET /secure HTTP/1.1", Some(tls.authority().as_str())),
        ]
    );
    assert!(
        !seen[0].head.has("proxy-authorization"),
        "the credentials went on to the origin: {}",
        seen[0].head.text()
    );

    for entry in [
        format!(" ann GET {plain} 200 "),
        format!(" ann CONNECT {} 200 ", tls.authority()),
    ] {
        proxy
            .wait_for_log(IO_TIMEOUT, &entry)
            .unwrap_or_else(|| panic!("no {entry:?} in {:#?}", proxy.stderr_lines()));
    }
}

/// curl trusting another CA refuses the listener's certificate (exit 60). The proxy logs one
/// line naming curl's address and the failure, nothing reaches the origin, and the next client
/// is served.
#[test]
fn a_client_that_rejects_the_certificate_costs_one_log_line() {
    if !tools() {
        return;
    }
    let origin = Origin::echo();
    let proxy = tls_proxy(&[]);
    let via = https_url(&proxy);

    let out = curl_via(
        &via,
        &interception_ca().cert,
        &["-w", "%{local_port}", &origin.url("/refused")],
    );
    assert_eq!(
        out.code,
        Some(60),
        "curl should refuse the certificate: {out:?}"
    );
    assert!(out.stderr.contains("SSL certificate problem"), "{out:?}");
    let peer = format!("127.0.0.1:{}", out.stdout.trim());
    let line = proxy
        .wait_for_log(IO_TIMEOUT, "TLS listener: handshake with")
        .unwrap_or_else(|| panic!("no handshake failure logged: {:?}", proxy.stderr_lines()));
    assert!(
        line.starts_with(&format!("TLS listener: handshake with {peer} failed: ")),
        "{line:?} does not name {peer}"
    );
    let extra: Vec<String> = proxy
        .stderr_lines()
        .into_iter()
        .filter(|l| !l.starts_with("listening on "))
        .collect();
    assert_eq!(extra, [line], "more than the one line for one refusal");
    assert_eq!(origin.requests(), 0);

    let out = curl_via(
        &via,
        &pki().ca,
        &["-w", "|%{http_code}", &origin.url("/after")],
    );
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(out.stdout, "GET /after|200");
}

/// The point of the listener: Basic credentials do not cross the network in clear. A relay
/// between curl and the TLS listener sees TLS records only, with no `Basic`, no base64 of the
/// credentials and no password in them; the same relay in front of the plain `--listen` port,
/// the control, does see `Proxy-Authorization: Basic ...`, so the relay would have caught them.
#[test]
fn credentials_do_not_cross_the_wire_in_clear() {
    if !tools() || !need_tool("stunnel") {
        return;
    }
    // Longer than the other tests' `pw`: a two-byte needle turns up by chance in a few
    // kilobytes of ciphertext about one run in twenty.
    const PASSWORD: &str = "pw-that-stays-inside-tls";
    // base64("ann:" + PASSWORD); it starts with base64("ann:pw") = YW5uOnB3. The control
    // below finds it in the plain bytes, which checks this constant too.
    const ENCODED: &str = "YW5uOnB3LXRoYXQtc3RheXMtaW5zaWRlLXRscw==";
    let user = format!("ann:{PASSWORD}");
    let dir = temp_dir("listen-tls-wire");
    let origin = Origin::echo();
    let tls = stunnel(&dir, &pki().cert, &pki().key, origin.port());
    let proxy = tls_proxy(&["--auth", &user]);
    let secure = format!("https://{}/tunnelled", tls.authority());
    let plain = origin.url("/forwarded");
    let tls_port = proxy.tls_addrs[0];
    let plain_port = *proxy.addrs.iter().find(|a| **a != tls_port).unwrap();

    // Through the TLS listener: a forwarded request and a CONNECT, each with credentials.
    let relay = Relay::start(tls_port);
    let via = format!("https://{}", relay.addr);
    let args = [
        "--proxy-user",
        &user,
        "--cacert",
        s(&pki().ca),
        "-w",
        "|%{http_code}\n",
    ];
    let out = curl_via(&via, &pki().ca, &[&args[..], &[&plain, &secure]].concat());
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(out.stdout, "GET /forwarded|200\nGET /tunnelled|200\n");
    let streams = relay.recorded();
    let sent: usize = streams.iter().map(Vec::len).sum();
    assert!(sent > 1000, "the relay saw only {sent} bytes: {streams:?}");
    for bytes in &streams {
        // Every stream is TLS from its first byte: a handshake record (22) of TLS 1.x.
        assert_eq!(bytes[..2], [22, 3], "not TLS: {}", show(bytes));
        for needle in [
            "Basic",
            "YW5uOnB3",
            ENCODED,
            PASSWORD,
            "Proxy-Authorization",
        ] {
            assert!(
                !has(bytes, needle),
                "{needle:?} on the wire: {}",
                show(bytes)
            );
        }
    }

    // The control: the same through the plain port, where the relay sees the credentials.
    let relay = Relay::start(plain_port);
    let via = format!("http://{}", relay.addr);
    let out = curl(&["--proxy", &via, "--proxy-user", &user, &plain]);
    assert_eq!(out.code, Some(0), "{out:?}");
    let clear = relay.recorded().concat();
    let header = format!("Proxy-Authorization: Basic {ENCODED}");
    assert!(has(&clear, &header), "no {header:?} in {}", show(&clear));
}

/// Refusals come inside TLS, over a verified session: no or wrong credentials get 407 with a
/// Basic challenge, for a forwarded request and for a CONNECT; a client outside
/// `--allow-client` gets 403. Nothing reaches the origin.
#[test]
fn refusals_407_and_403_come_inside_tls() {
    if !tools() {
        return;
    }
    let origin = Origin::echo();
    let proxy = tls_proxy(&["--auth", USER]);
    let via = https_url(&proxy);
    let (url, tunnel) = (
        origin.url("/auth"),
        format!("https://{}/", origin.authority()),
    );
    let report = "%{http_code}|%{http_connect}|%{proxy_ssl_verify_result}";

    for creds in [&[][..], &["--proxy-user", "ann:wrong"][..]] {
        let out = curl_via(
            &via,
            &pki().ca,
            &[creds, &["-D", "-", "-w", report, &url]].concat(),
        );
        assert_eq!(out.code, Some(0), "{out:?}");
        assert!(
            out.stdout.starts_with("HTTP/1.1 407 "),
            "{creds:?}: {out:?}"
        );
        assert!(out.stdout.ends_with("\n407|000|0"), "{creds:?}: {out:?}");
        assert!(
            out.stdout
                .to_ascii_lowercase()
                .contains("\r\nproxy-authenticate: basic realm="),
            "{out:?}"
        );
        let out = curl_via(&via, &pki().ca, &[creds, &["-w", report, &tunnel]].concat());
        assert_eq!(out.code, Some(56), "CONNECT {creds:?}: {out:?}");
        assert!(out.stdout.ends_with("|407|0"), "CONNECT {creds:?}: {out:?}");
    }

    let proxy = tls_proxy(&["--allow-client", "10.0.0.0/8"]);
    let via = https_url(&proxy);
    let out = curl_via(&via, &pki().ca, &["-w", report, &url]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.ends_with("403|000|0"), "{out:?}");
    assert!(out.stdout.contains("not in --allow-client"), "{out:?}");
    let out = curl_via(&via, &pki().ca, &["-w", report, &tunnel]);
    assert_eq!(out.code, Some(56), "{out:?}");
    assert!(out.stdout.ends_with("|403|0"), "{out:?}");
    assert_eq!(origin.requests(), 0);
}

/// The proxy refuses to start (exit 2, before listening) with a key group or others can read
/// (the message names the file and says what to do), with one of the three flags missing, and
/// with a key that is not the certificate's.
#[test]
fn bad_tls_listener_flags_are_refused_at_start() {
    if !need_tool("openssl") {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let dir = temp_dir("listen-tls-start");
    let (cert, key) = (s(&pki().cert), s(&pki().key));
    let readable = |mode: u32| {
        let path = dir.join(format!("key-{mode:o}.pem"));
        std::fs::copy(key, &path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path.to_str().unwrap().to_string()
    };
    let (world, group) = (readable(0o644), readable(0o640));
    let other_key = s(&bad_certs().wrong_name.key);
    let listen = ["--listen-tls", "127.0.0.1:0"];
    let cases: [(&str, Vec<&str>, String); 6] = [
        (
            "a key others can read",
            [&listen[..], &["--tls-cert", cert, "--tls-key", &world]].concat(),
            format!("--tls-key {world} is readable by others (mode 0644); chmod 600 it"),
        ),
        (
            "a key the group can read",
            [&listen[..], &["--tls-cert", cert, "--tls-key", &group]].concat(),
            format!("--tls-key {group} is readable by others (mode 0640); chmod 600 it"),
        ),
        (
            "--listen-tls without --tls-cert",
            [&listen[..], &["--tls-key", key]].concat(),
            "--listen-tls needs --tls-cert".into(),
        ),
        (
            "--listen-tls without --tls-key",
            [&listen[..], &["--tls-cert", cert]].concat(),
            "--listen-tls needs --tls-key".into(),
        ),
        (
            "--tls-cert and --tls-key without --listen-tls",
            vec!["--tls-cert", cert, "--tls-key", key],
            "need --listen-tls".into(),
        ),
        (
            "a key that is not the certificate's",
            [&listen[..], &["--tls-cert", cert, "--tls-key", other_key]].concat(),
            format!("--tls-key {other_key}"),
        ),
    ];
    for (what, args, message) in cases {
        let out = run_proxy(&args, IO_TIMEOUT);
        assert_eq!(out.code, Some(2), "{what}: {out:?}");
        assert!(
            out.stderr.contains(&message),
            "{what}: no {message:?} in {out:?}"
        );
        assert!(!out.stderr.contains("listening on"), "{what}: {out:?}");
    }
}

/// Interception through the TLS listener: TLS to the proxy, CONNECT inside it, and the
/// proxy's own TLS session with curl inside that tunnel. curl trusts only the interception CA
/// for the origin, so its 200 shows the proxy made the certificate; the capture has the
/// request by its https URL, marked intercepted.
#[test]
fn interception_works_through_the_tls_listener() {
    if !tools() || !need_tool("stunnel") {
        return;
    }
    let dir = temp_dir("listen-tls-intercept");
    let origin = Origin::echo();
    let tls = stunnel(&dir, &pki().cert, &pki().key, origin.port());
    let cap = dir.join("cap.ndjson");
    let ca = interception_ca();
    let proxy = tls_proxy(&[
        "--auth",
        USER,
        "--intercept",
        "127.0.0.1",
        "--intercept-ca",
        s(&ca.cert),
        "--intercept-key",
        s(&ca.key),
        "--ca-file",
        s(&pki().ca),
        "--capture",
        s(&cap),
    ]);
    let url = format!("https://{}/inside?q=1", tls.authority());
    let out = curl_via(
        &https_url(&proxy),
        &pki().ca,
        &[
            "--proxy-user",
            USER,
            "--cacert",
            s(&ca.cert),
            "-w",
            "|%{http_code}",
            &url,
        ],
    );
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(out.stdout, "GET /inside?q=1|200");
    let seen = origin.last().head;
    assert_eq!(seen.start, "GET /inside?q=1 HTTP/1.1");
    assert!(
        seen.has("via"),
        "not forwarded by the proxy: {}",
        seen.text()
    );

    let records = records_once(&cap, |r| r["request"]["url"] == url.as_str());
    let r = records
        .iter()
        .find(|r| r["request"]["url"] == url.as_str())
        .unwrap();
    assert_eq!(r["intercepted"], true, "{r}");
    assert_eq!(r["response"]["status"], 200, "{r}");
    assert_eq!(r["response"]["body"]["text"], "GET /inside?q=1", "{r}");
    proxy
        .wait_for_log(IO_TIMEOUT, &format!(" ann GET {url} 200 "))
        .unwrap_or_else(|| panic!("no access entry: {:#?}", proxy.stderr_lines()));
}

/// ALPN (RFC 7301): a client offering h2 and http/1.1, as Chromium does to an https:// proxy,
/// gets http/1.1; one offering h2 only gets no session, and the proxy logs the failed handshake
/// and goes on serving.
#[test]
fn alpn_chooses_http11() {
    if !tools() {
        return;
    }
    let origin = Origin::echo();
    let proxy = tls_proxy(&[]);
    let s_client = |alpn: &str| {
        let mut cmd = Command::new("openssl");
        cmd.args(["s_client", "-connect", &proxy.tls_addrs[0].to_string()])
            .args(["-servername", "localhost", "-verify_return_error"])
            .args(["-CAfile", s(&pki().ca), "-alpn", alpn]);
        run_to_exit(cmd, IO_TIMEOUT)
    };
    let out = s_client("h2,http/1.1");
    assert!(out.stdout.contains("ALPN protocol: http/1.1"), "{out:?}");
    assert!(out.stdout.contains("Verify return code: 0 (ok)"), "{out:?}");
    let failures = |p: &Proxy| {
        p.stderr_lines()
            .into_iter()
            .filter(|l| l.starts_with("TLS listener:"))
            .count()
    };
    assert_eq!(failures(&proxy), 0, "{:?}", proxy.stderr_lines());

    let out = s_client("h2");
    assert!(!out.stdout.contains("ALPN protocol:"), "{out:?}");
    proxy
        .wait_for_log(IO_TIMEOUT, "TLS listener: handshake with 127.0.0.1:")
        .unwrap_or_else(|| panic!("no failure logged: {:?}", proxy.stderr_lines()));
    let out = curl_via(
        &https_url(&proxy),
        &pki().ca,
        &["-w", "|%{http_code}", &origin.url("/after")],
    );
    assert_eq!(out.stdout, "GET /after|200", "{out:?}");
}

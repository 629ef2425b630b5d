//! A real browser through the proxy: Debian's headless Chromium loads pages over plain HTTP and
//! over HTTPS (CONNECT), runs their scripts, and the test reads what the page saw, what the
//! origin received and what the capture file holds.
//!
//! How Chromium is driven: one launch per page, `chromium --headless ... --dump-dom URL`, which
//! prints the DOM once the page has loaded and exits. A page's `fetch()` finishes after the load
//! event, so `--dump-dom` alone prints the DOM before the script wrote into it;
//! `--virtual-time-budget` makes Chromium wait until the page has been idle (nothing loading,
//! no timer due) for that much virtual time, which runs fast-forwarded, so the wait costs
//! nothing. Each page's script writes `fetched VALUE` (or `failed: WHY`) into `#result`.
//!
//! Trust: Chromium on Linux takes extra trust anchors from the NSS database under
//! `$HOME/.pki/nssdb`; each browser gets a HOME of its own whose database trusts one test CA
//! (made with `certutil`), so certificates are verified for real, with no flag that ignores
//! errors.
//!
//! Containment: Chromium makes requests of its own to outside hosts even with background
//! networking off. The proxy allows loopback destinations only (`--allow`), so those are
//! refused and the test asserts nothing about them; and the proxy and Chromium run where DNS
//! goes nowhere ([`common::without_dns`]), so not even a lookup leaves the machine.

mod common;

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::Value;

/// How long the proxy may take to write a record once the browser has gone (a tunnel's
/// record is written when the tunnel closes, which is when Chromium exits).
const CAPTURE_WAIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// The site and the browser
// ---------------------------------------------------------------------------------------------

/// Headless Chromium using one proxy and trusting one CA. Every page is a fresh launch with a
/// fresh profile, so nothing is cached between pages.
struct Browser {
    /// The HOME whose NSS database trusts the CA.
    home: PathBuf,
    /// Where the profiles go.
    dir: PathBuf,
    /// `http://127.0.0.1:PORT` of the proxy.
    proxy: String,
    /// Launches so far (names each profile).
    launches: Cell<usize>,
}

impl Browser {
    /// A browser whose NSS database (under a new HOME in `dir`) trusts `ca`.
    fn new(dir: &Path, ca: &Path, proxy: &Proxy) -> Browser {
        let home = dir.join("home");
        let nssdb = home.join(".pki/nssdb");
        std::fs::create_dir_all(&nssdb).unwrap();
        let db = format!("sql:{}", nssdb.display());
        let certutil = |args: &[&str]| {
            let mut cmd = Command::new("certutil");
            cmd.args(["-d", &db]).args(args).env("HOME", &home);
            let done = run_to_exit(cmd, IO_TIMEOUT);
            assert_eq!(done.code, Some(0), "certutil {args:?}: {done:?}");
        };
        certutil(&["-N", "--empty-password"]);
        certutil(&["-A", "-t", "C,,", "-n", "test", "-i", ca.to_str().unwrap()]);
        Browser {
            home,
            dir: dir.to_path_buf(),
            proxy: proxy.url(),
            launches: Cell::new(0),
        }
    }

    /// Loads `url`, lets its scripts run, and returns the DOM Chromium printed.
    fn dom(&self, url: &str) -> String {
        let n = self.launches.get();
        self.launches.set(n + 1);
        let profile = self.dir.join(format!("profile-{n}"));
        dump_dom(&self.home, &profile, &self.proxy, url)
            .expect("the proxy already runs without DNS")
    }
}

/// The proxy for a browser test, in a namespace without DNS: loopback destinations only, any
/// CONNECT port (the TLS origin is on a random one), a capture file, and `extra` flags.
/// `None` after a visible skip when a tool or mount namespaces are missing.
fn browser_proxy(capture: &Path, extra: &[&str]) -> Option<Proxy> {
    if !need_tool("chromium") || !need_tool("certutil") || !need_tool("stunnel") {
        return None;
    }
    if !need_tool("unshare") || !need_tool("openssl") {
        return None;
    }
    let mut cmd = without_dns(bin())?;
    cmd.args(["--listen", "127.0.0.1:0", "--connect-ports", "any"])
        // A name pattern: an outside name is refused (403) before any lookup. (An address
        // entry, 127.0.0.1, would have the proxy resolve every name to compare its addresses.)
        .args(["--allow", "localhost,127.0.0.*"])
        .arg("--capture")
        .arg(capture)
        .args(extra);
    Some(Proxy::spawn(cmd))
}

// ---------------------------------------------------------------------------------------------
// Reading what happened
// ---------------------------------------------------------------------------------------------

/// The capture file's records, once `pred` holds for one of them; panics with what is there
/// after [`CAPTURE_WAIT`].
fn records_once(capture: &Path, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
    records_when(capture, CAPTURE_WAIT, |records| records.iter().any(&pred))
}

/// The `http` record of `GET url`, if there is one.
fn exchange<'a>(records: &'a [Value], url: &str) -> Option<&'a Value> {
    records.iter().find(|r| {
        r["type"] == "http" && r["request"]["method"] == "GET" && r["request"]["url"] == url
    })
}

/// Asserts the DOM shows that the page's script fetched `value`.
fn assert_fetched(dom: &str, value: &str) {
    assert!(
        dom.contains(&format!("<p id=\"result\">fetched {value}</p>")),
        "the page did not show the fetched value {value}: {dom}"
    );
}

/// Asserts `origin` received `GET /` and `GET /api/data` with this Host.
fn assert_origin_saw_page(origin: &Origin, host: &str) {
    let seen: Vec<String> = origin
        .seen()
        .iter()
        .filter(|s| s.head.get("Host") == Some(host))
        .map(|s| format!("{} {}", s.head.method(), s.head.target()))
        .collect();
    for want in ["GET /", "GET /api/data"] {
        assert!(
            seen.iter().any(|s| s == want),
            "the origin did not receive {want} for {host}; it got {seen:?}"
        );
    }
}

/// Asserts the capture recorded `GET url` answered 200 by the origin with `body`.
fn assert_exchange(records: &[Value], url: &str, body: &str) {
    let r = exchange(records, url).unwrap_or_else(|| panic!("no capture record for GET {url}"));
    assert_eq!(r["decision"], "allow", "{r}");
    assert_eq!(r["response"]["status"], 200, "{r}");
    assert_eq!(r["response"]["source"], "origin", "{r}");
    assert_eq!(r["response"]["body"]["text"], body, "{r}");
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

/// An https page through an opaque CONNECT tunnel and a plain page through forwarding.
#[test]
fn chromium_loads_pages_through_the_proxy() {
    let dir = temp_dir("browser");
    let capture = dir.join("capture.ndjson");
    let Some(proxy) = browser_proxy(&capture, &[]) else {
        return;
    };
    let value = format!("blue-{}", std::process::id());
    let origin = fetch_site(&value);
    let tls = stunnel(&dir, &pki().cert, &pki().key, origin.port());
    let browser = Browser::new(&dir, &pki().ca, &proxy);
    let json = format!("{{\"value\":\"{value}\"}}");

    // HTTPS: CONNECT to stunnel, the origin's certificate checked against the NSS database.
    let https = format!("https://{}", tls.authority());
    assert_fetched(&browser.dom(&format!("{https}/")), &value);
    assert_origin_saw_page(&origin, &tls.authority());
    let records = records_once(&capture, |r| {
        r["type"] == "tunnel" && r["host"] == "127.0.0.1" && r["port"] == tls.port
    });
    let tunnel = records
        .iter()
        .find(|r| r["type"] == "tunnel" && r["port"] == tls.port)
        .unwrap();
    assert_eq!(tunnel["decision"], "allow", "{tunnel}");
    assert_eq!(tunnel["status"], 200, "{tunnel}");
    assert!(tunnel["bytes_down"].as_u64().unwrap_or(0) > 0, "{tunnel}");
    // Without interception the tunnel is opaque: nothing inside it is recorded.
    assert!(
        !records.iter().any(|r| r["request"]["url"]
            .as_str()
            .is_some_and(|u| u.starts_with(&https))),
        "a request inside the tunnel was recorded: {records:?}"
    );

    // Plain HTTP: both requests forwarded, and recorded with their bodies.
    let http = origin.url("");
    assert_fetched(&browser.dom(&format!("{http}/")), &value);
    assert_origin_saw_page(&origin, &origin.authority());
    let api = format!("{http}/api/data");
    let records = records_once(&capture, |r| r["request"]["url"] == api);
    assert_exchange(&records, &format!("{http}/"), FETCH_PAGE);
    assert_exchange(&records, &api, &json);
    // The profiles take a few megabytes.
    let _ = std::fs::remove_dir_all(&dir);
}

/// The https page with the tunnel intercepted (SPEC §10): Chromium accepts the proxy's leaf
/// certificate, the proxy verifies the origin, and the capture sees inside.
#[test]
fn chromium_through_interception() {
    let dir = temp_dir("browser-intercept");
    // The interception CA, made by the proxy itself; the browser trusts it and nothing else.
    let (ca, key) = (dir.join("intercept-ca.pem"), dir.join("intercept-ca.key"));
    let mut cmd = Command::new(bin());
    cmd.args(["ca", "new", "--cert"])
        .arg(&ca)
        .arg("--key")
        .arg(&key);
    let made = run_to_exit(cmd, IO_TIMEOUT);
    assert_eq!(made.code, Some(0), "ca new: {made:?}");
    let capture = dir.join("capture.ndjson");
    let pki = pki();
    let flags = [
        "--intercept",
        "127.0.0.1",
        "--intercept-ca",
        ca.to_str().unwrap(),
        "--intercept-key",
        key.to_str().unwrap(),
        // The proxy verifies the origin (stunnel) against the test CA.
        "--ca-file",
        pki.ca.to_str().unwrap(),
    ];
    let Some(proxy) = browser_proxy(&capture, &flags) else {
        return;
    };
    let value = format!("green-{}", std::process::id());
    let origin = fetch_site(&value);
    let tls = stunnel(&dir, &pki.cert, &pki.key, origin.port());
    let browser = Browser::new(&dir, &ca, &proxy);

    let https = format!("https://{}", tls.authority());
    assert_fetched(&browser.dom(&format!("{https}/")), &value);
    assert_origin_saw_page(&origin, &tls.authority());
    let api = format!("{https}/api/data");
    let records = records_once(&capture, |r| r["request"]["url"] == api);
    for (url, body) in [
        (format!("{https}/"), FETCH_PAGE.to_string()),
        (api, format!("{{\"value\":\"{value}\"}}")),
    ] {
        assert_exchange(&records, &url, &body);
        assert_eq!(exchange(&records, &url).unwrap()["intercepted"], true);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The plain page through the TLS listener (SPEC §11): Chromium speaks TLS to the proxy
/// (`--proxy-server=https://`), verifying the listener's certificate against the NSS database,
/// and sends its requests inside; the capture and the access log show them.
#[cfg(feature = "tls-server")]
#[test]
fn chromium_through_the_tls_listener() {
    let dir = temp_dir("browser-listen-tls");
    let capture = dir.join("capture.ndjson");
    let pki = pki();
    let flags = [
        "--listen-tls",
        "127.0.0.1:0",
        "--tls-cert",
        pki.cert.to_str().unwrap(),
        "--tls-key",
        pki.key.to_str().unwrap(),
    ];
    let Some(proxy) = browser_proxy(&capture, &flags) else {
        return;
    };
    let value = format!("violet-{}", std::process::id());
    let origin = fetch_site(&value);
    let mut browser = Browser::new(&dir, &pki.ca, &proxy);
    // Only the TLS listener: a browser speaking plain HTTP to it would get nothing.
    browser.proxy = format!("https://{}", proxy.tls_addrs[0]);

    let http = origin.url("");
    assert_fetched(&browser.dom(&format!("{http}/")), &value);
    assert_origin_saw_page(&origin, &origin.authority());
    let api = format!("{http}/api/data");
    let records = records_once(&capture, |r| r["request"]["url"] == api);
    assert_exchange(&records, &format!("{http}/"), FETCH_PAGE);
    assert_exchange(&records, &api, &format!("{{\"value\":\"{value}\"}}"));
    for url in [format!("{http}/"), api] {
        let entry = format!(" GET {url} 200 ");
        proxy
            .wait_for_log(IO_TIMEOUT, &entry)
            .unwrap_or_else(|| panic!("no {entry:?} in {:#?}", proxy.stderr_lines()));
    }
    // A handshake the browser walks away from (a spare connection it opened, dropped as it
    // exits) is its choice; a refused certificate would be an alert, which is not.
    let failures: Vec<String> = proxy
        .stderr_lines()
        .into_iter()
        .filter(|l| l.starts_with("TLS listener:") && !l.ends_with("connection closed early"))
        .collect();
    assert!(failures.is_empty(), "failed handshakes: {failures:#?}");
    let _ = std::fs::remove_dir_all(&dir);
}

//! `--capture` and `smolproxy export`, end to end (SPEC §7): the real binary, a local origin,
//! real clients; the exported HAR checked by `har-validator`, the collection loaded by the
//! `postman-collection` SDK and replayed by `newman` against the same origin.
//!
//! The npm tools come from `node_modules` in the repository (`npm install`); without them (or
//! without node) those tests print `SKIP:` on a developer machine and fail under `CI=true`.
//! The tests of `export` need the `export` feature (default); `--tests`, `--base-url-var` and
//! merged captures are in `export_tests.rs`.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::{
    build_request, capture_records, chunked, need, pattern, record_of, run_to_exit, send, temp_dir,
    Conn, Head, Origin, Proxy, RECORD_WAIT,
};
#[cfg(feature = "export")]
use common::{export, newman, node, node_tools, LOAD_COLLECTION, VALIDATE_HAR};
use serde_json::Value;

/// Body limit used by most tests: small, so "over the limit" is cheap to produce.
const LIMIT: usize = 1024;

/// The test API: `/chunked` answers chunked, `/big` answers 5000 bytes of text, `/login` sets
/// a cookie; anything else echoes the request body (201 when there is one) or says hello.
fn api(head: &Head, conn: &mut Conn) -> bool {
    let Ok(body) = conn.read_body(head) else {
        return false;
    };
    let close = head.tokens("connection").iter().any(|t| t == "close");
    let mut headers = vec![];
    if close {
        headers.push(("Connection", "close"));
    }
    let path = head.target().to_string();
    let written = if path.starts_with("/chunked") {
        let mut out =
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n"
                .to_vec();
        if close {
            out.extend_from_slice(b"Connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&chunked(
            b"part one, part two, part three",
            &[9, 10],
            &[("X-Sum", "ok")],
        ));
        conn.try_write(&out)
    } else if path.starts_with("/big") {
        headers.push(("Content-Type", "text/plain"));
        conn.try_respond("200 OK", &headers, &[b'x'; 5000])
    } else if body.is_empty() {
        headers.push(("Content-Type", "text/plain"));
        if path.starts_with("/login") {
            headers.push(("Set-Cookie", "sid=s3cret; Path=/; HttpOnly"));
        }
        conn.try_respond(
            "200 OK",
            &headers,
            format!("hello {} {path}", head.method()).as_bytes(),
        )
    } else {
        let ct = head
            .get("content-type")
            .unwrap_or("application/octet-stream")
            .to_string();
        headers.push(("Content-Type", &ct));
        conn.try_respond("201 Created", &headers, &body)
    };
    written.is_ok() && !close
}

/// The value of header `name` in a record's header list.
fn header<'a>(headers: &'a Value, name: &str) -> Option<&'a str> {
    let found = headers.as_array()?.iter().find(|h| {
        h["name"]
            .as_str()
            .is_some_and(|n| n.eq_ignore_ascii_case(name))
    });
    found?["value"].as_str()
}

/// CONNECT through `proxy`: returns the status line and, when established, what the target
/// sent back after we wrote `payload` and half-closed.
fn tunnel(proxy: SocketAddr, target: &str, payload: &[u8]) -> (String, Vec<u8>) {
    let mut conn = Conn::connect(proxy);
    conn.write(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes());
    let head = conn.read_head().unwrap().expect("a CONNECT response");
    if head.status() != 200 {
        return (head.start, Vec::new());
    }
    conn.write(payload);
    conn.shutdown_write();
    (head.start, conn.read_to_end().unwrap_or_default())
}

#[test]
fn records_every_kind_of_exchange_with_secrets_redacted() {
    let origin = Origin::start(api);
    let echo = Origin::tcp_echo();
    let dir = temp_dir("capture-kinds");
    let cap = dir.join("cap.ndjson");
    let limit = LIMIT.to_string();
    let ports = echo.port().to_string();
    let proxy = Proxy::start(&[
        "--capture",
        cap.to_str().unwrap(),
        "--capture-body-limit",
        &limit,
        "--connect-ports",
        &ports,
    ]);
    let p = proxy.addr;
    let secrets = [
        ("Cookie", "a=1; b=2"),
        ("Authorization", "Bearer tok"),
        ("Proxy-Authorization", "Basic eDp5"),
    ];
    assert_eq!(
        send(p, "GET", &origin.url("/login?x=1"), &secrets, b""),
        200
    );
    let json = br#"{"name":"widget","tags":["a","b"]}"#;
    assert_eq!(
        send(
            p,
            "POST",
            &origin.url("/items"),
            &[("Content-Type", "application/json")],
            json
        ),
        201
    );
    let binary = pattern(600, 7);
    assert_eq!(
        send(
            p,
            "PUT",
            &origin.url("/blob"),
            &[("Content-Type", "application/octet-stream")],
            &binary
        ),
        201
    );
    assert_eq!(send(p, "GET", &origin.url("/big"), &[], b""), 200);
    assert_eq!(send(p, "GET", &origin.url("/chunked"), &[], b""), 200);
    let (line, _) = tunnel(p, "127.0.0.1:1", b"");
    assert!(line.contains(" 403 "), "{line}");
    let (line, echoed) = tunnel(p, &echo.authority(), b"ping");
    assert!(line.contains(" 200 "), "{line}");
    assert_eq!(echoed, b"pingBYE");

    let recs = capture_records(&cap, 7);
    for r in &recs {
        assert!(r["start"].as_str().is_some_and(|s| s.ends_with('Z')), "{r}");
        assert!(r["client"].as_str().unwrap().starts_with("127.0.0.1:"));
        assert!(r["timings"]["total_ms"].as_f64().is_some());
    }

    let get = record_of(&recs, "GET", &origin.url("/login?x=1"));
    assert_eq!(
        (
            get["type"].as_str(),
            get["decision"].as_str(),
            get["route"].as_str()
        ),
        (Some("http"), Some("allow"), Some("direct"))
    );
    assert_eq!(get["complete"], true);
    for name in ["Cookie", "Authorization", "Proxy-Authorization"] {
        assert_eq!(
            header(&get["request"]["headers"], name),
            Some("REDACTED"),
            "{name}"
        );
    }
    assert_eq!(
        header(&get["response"]["headers"], "Set-Cookie"),
        Some("REDACTED")
    );
    assert_eq!(
        header(&get["request"]["headers"], "Host"),
        Some(origin.authority().as_str())
    );
    assert_eq!(get["request"]["body"], Value::Null);
    assert_eq!(
        (
            get["response"]["status"].as_u64(),
            get["response"]["reason"].as_str()
        ),
        (Some(200), Some("OK"))
    );
    assert_eq!(get["response"]["body"]["text"], "hello GET /login?x=1");
    for t in ["connect_ms", "wait_ms", "receive_ms"] {
        assert!(
            get["timings"][t].as_f64().is_some_and(|v| v >= 0.0),
            "{t}: {}",
            get["timings"]
        );
    }

    let post = record_of(&recs, "POST", &origin.url("/items"));
    let body = &post["request"]["body"];
    assert_eq!(
        (body["encoding"].as_str(), body["truncated"].as_bool()),
        (Some("utf8"), Some(false))
    );
    assert_eq!(body["text"].as_str().unwrap().as_bytes(), json);
    assert_eq!(body["size"], json.len());
    assert_eq!(post["response"]["status"], 201);
    assert_eq!(
        post["response"]["body"]["text"]
            .as_str()
            .unwrap()
            .as_bytes(),
        json
    );

    use base64::Engine;
    let put = record_of(&recs, "PUT", &origin.url("/blob"));
    for side in ["request", "response"] {
        let body = &put[side]["body"];
        assert_eq!(body["encoding"], "base64", "{side}");
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(body["text"].as_str().unwrap())
            .unwrap();
        assert_eq!(bytes, binary, "{side}");
    }

    let big = &record_of(&recs, "GET", &origin.url("/big"))["response"]["body"];
    assert_eq!(
        (big["size"].as_u64(), big["truncated"].as_bool()),
        (Some(5000), Some(true))
    );
    assert_eq!(big["text"].as_str().unwrap(), "x".repeat(LIMIT));

    let ch = record_of(&recs, "GET", &origin.url("/chunked"));
    assert_eq!(
        header(&ch["response"]["headers"], "Transfer-Encoding"),
        Some("chunked")
    );
    assert_eq!(
        ch["response"]["body"]["text"], "part one, part two, part three",
        "chunk data, not framing"
    );
    assert_eq!(ch["response"]["body"]["size"], 30);

    let tunnels: Vec<&Value> = recs.iter().filter(|r| r["type"] == "tunnel").collect();
    let denied = tunnels
        .iter()
        .find(|r| r["port"] == 1)
        .expect("the denied CONNECT");
    assert_eq!(
        (denied["status"].as_u64(), denied["decision"].as_str()),
        (Some(403), Some("deny"))
    );
    assert!(
        denied["rule"].as_str().unwrap().contains("--connect-ports"),
        "{denied}"
    );
    let open = tunnels
        .iter()
        .find(|r| r["port"] == echo.port())
        .expect("the tunnel");
    assert_eq!(
        (open["host"].as_str(), open["status"].as_u64()),
        (Some("127.0.0.1"), Some(200))
    );
    assert_eq!(
        (open["bytes_up"].as_u64(), open["bytes_down"].as_u64()),
        (Some(4), Some(7))
    );
    assert_eq!(open["route"], "direct");
    assert!(
        open.get("request").is_none() && open.get("response").is_none(),
        "metadata only: {open}"
    );
}

#[test]
fn capture_secrets_keeps_credentials_but_never_proxy_authorization() {
    let origin = Origin::start(api);
    let dir = temp_dir("capture-secrets");
    let cap = dir.join("cap.ndjson");
    let proxy = Proxy::start(&["--capture", cap.to_str().unwrap(), "--capture-secrets"]);
    let secrets = [
        ("Cookie", "a=1; b=2"),
        ("Authorization", "Bearer tok"),
        ("Proxy-Authorization", "Basic eDp5"),
    ];
    assert_eq!(
        send(proxy.addr, "GET", &origin.url("/login"), &secrets, b""),
        200
    );
    let recs = capture_records(&cap, 1);
    let headers = &recs[0]["request"]["headers"];
    assert_eq!(header(headers, "Cookie"), Some("a=1; b=2"));
    assert_eq!(header(headers, "Authorization"), Some("Bearer tok"));
    assert_eq!(header(headers, "Proxy-Authorization"), Some("REDACTED"));
    assert_eq!(
        header(&recs[0]["response"]["headers"], "Set-Cookie"),
        Some("sid=s3cret; Path=/; HttpOnly")
    );
}

#[test]
fn headers_only_with_a_zero_limit() {
    let origin = Origin::start(api);
    let dir = temp_dir("capture-zero");
    let cap = dir.join("cap.ndjson");
    let proxy = Proxy::start(&[
        "--capture",
        cap.to_str().unwrap(),
        "--capture-body-limit",
        "0",
    ]);
    assert_eq!(
        send(
            proxy.addr,
            "POST",
            &origin.url("/x"),
            &[("Content-Type", "text/plain")],
            b"hello"
        ),
        201
    );
    let recs = capture_records(&cap, 1);
    let body = &recs[0]["request"]["body"];
    assert_eq!(
        (
            body["size"].as_u64(),
            body["truncated"].as_bool(),
            body["text"].as_str()
        ),
        (Some(5), Some(true), Some(""))
    );
}

#[cfg(feature = "export")]
#[test]
fn capture_export_and_replay_with_newman() {
    let Some(modules) = node_tools() else { return };
    let origin = Origin::start(api);
    let other = Origin::start(api);
    let echo = Origin::tcp_echo();
    let dir = temp_dir("capture-replay");
    let cap = dir.join("api.ndjson");
    let ports = echo.port().to_string();
    let proxy = Proxy::start(&[
        "--capture",
        cap.to_str().unwrap(),
        "--connect-ports",
        &ports,
    ]);
    let p = proxy.addr;
    assert_eq!(
        send(
            p,
            "GET",
            &origin.url("/login?user=ann&x=a%20b"),
            &[("Cookie", "c=1")],
            b""
        ),
        200
    );
    let json = br#"{"name":"widget"}"#;
    assert_eq!(
        send(
            p,
            "POST",
            &origin.url("/items"),
            &[("Content-Type", "application/json")],
            json
        ),
        201
    );
    let form = b"name=a+b&x=%26";
    let ct = ("Content-Type", "application/x-www-form-urlencoded");
    assert_eq!(send(p, "POST", &origin.url("/form"), &[ct], form), 201);
    assert_eq!(
        send(
            p,
            "PUT",
            &other.url("/blob"),
            &[("Content-Type", "application/octet-stream")],
            &pattern(300, 3)
        ),
        201
    );
    assert_eq!(send(p, "GET", &other.url("/chunked"), &[], b""), 200);
    assert_eq!(send(p, "GET", &other.url("/big"), &[], b""), 200);
    assert!(tunnel(p, &echo.authority(), b"hi").0.contains(" 200 "));
    assert!(tunnel(p, "127.0.0.1:1", b"").0.contains(" 403 "));
    let recs = capture_records(&cap, 8);

    let (code, har, err) = export(&["--format", "har", cap.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{err}");
    let har_path = dir.join("api.har");
    fs::write(&har_path, &har).unwrap();
    assert_eq!(node(&modules, VALIDATE_HAR, &[&har_path]).trim(), "valid 8");
    let har: Value = serde_json::from_str(&har).unwrap();
    let tunnels: Vec<&Value> = har["log"]["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e.get("_tunnel").is_some())
        .collect();
    assert_eq!(
        tunnels.len(),
        2,
        "tunnels are HAR entries with _tunnel fields"
    );

    let (code, coll, err) = export(&[
        "--format",
        "postman",
        "--name",
        "My API",
        cap.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("2 CONNECT tunnel(s) left out"), "{err}");
    let coll_path = dir.join("api.postman_collection.json");
    fs::write(&coll_path, &coll).unwrap();
    assert_eq!(
        node(&modules, LOAD_COLLECTION, &[&coll_path]).trim(),
        "loaded 2 folders 6 items"
    );
    let coll: Value = serde_json::from_str(&coll).unwrap();
    assert_eq!(coll["info"]["name"], "My API");
    let folders: Vec<&str> = coll["item"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        folders,
        [origin.authority(), other.authority()],
        "one folder per host"
    );

    // Replay: newman sends every request straight to the origin again.
    let run = newman(&modules, &dir, &coll_path, &[], &[]);
    let done = run.done;
    assert_eq!(
        done.code,
        Some(0),
        "newman failed:\n{}\n{}",
        done.stdout,
        done.stderr
    );
    let run = &run.report["run"];
    assert_eq!(
        run["failures"].as_array().map(Vec::len),
        Some(0),
        "{}",
        run["failures"]
    );
    let executions = run["executions"].as_array().unwrap();
    assert_eq!(executions.len(), 6);
    for e in executions {
        let name = e["item"]["name"].as_str().unwrap();
        let (method, rest) = name.split_once(' ').unwrap();
        let captured = recs
            .iter()
            .find(|r| {
                r["request"]["method"] == method
                    && r["request"]["url"].as_str().unwrap().ends_with(rest)
            })
            .unwrap_or_else(|| panic!("no record for {name}"));
        assert_eq!(
            e["response"]["code"], captured["response"]["status"],
            "replayed {name}"
        );
    }
    let replayed_form = origin
        .seen()
        .into_iter()
        .filter(|s| s.head.target() == "/form")
        .map(|s| s.body)
        .collect::<Vec<_>>();
    assert_eq!(replayed_form.len(), 2, "captured once, replayed once");
    assert_eq!(
        String::from_utf8_lossy(&replayed_form[1]).replace("%20", "+"),
        "name=a+b&x=%26"
    );
}

#[test]
fn kill_minus_nine_leaves_only_whole_lines() {
    let origin = Origin::start(api);
    let dir = temp_dir("capture-kill");
    let cap = dir.join("cap.ndjson");
    let proxy = Proxy::start(&[
        "--capture",
        cap.to_str().unwrap(),
        "--capture-body-limit",
        "65536",
    ]);
    let addr = proxy.addr;
    let url = origin.url("/upload");
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..8)
        .map(|i| {
            let (stop, done, url) = (stop.clone(), done.clone(), url.clone());
            thread::spawn(move || {
                let body = pattern(20_000 + i * 1000, i as u64);
                let req = build_request("POST", &url, &[("Connection", "close")], &body);
                while !stop.load(Ordering::Relaxed) {
                    // Errors are expected once the proxy is gone.
                    let Ok(mut s) = TcpStream::connect(addr) else {
                        break;
                    };
                    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                    if s.write_all(&req).is_err() {
                        break;
                    }
                    let mut sink = Vec::new();
                    let _ = s.read_to_end(&mut sink);
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while done.load(Ordering::Relaxed) < 40 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(5));
    }
    proxy.signal("KILL");
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    let text = fs::read(&cap).unwrap();
    let complete: Vec<&[u8]> = text
        .split_inclusive(|&b| b == b'\n')
        .filter(|l| l.ends_with(b"\n"))
        .collect();
    assert!(
        complete.len() >= 20,
        "only {} records before the kill",
        complete.len()
    );
    for (i, line) in complete.iter().enumerate() {
        let r: Value =
            serde_json::from_slice(line).unwrap_or_else(|e| panic!("line {}: {e}", i + 1));
        assert_eq!(r["type"], "http");
    }
    let cut = !text.is_empty() && !text.ends_with(b"\n");
    eprintln!(
        "killed with {} whole records; last line cut: {cut}",
        complete.len()
    );
    // `export` reads such a file: every whole record, a warning for the cut one.
    #[cfg(feature = "export")]
    {
        let (code, har, err) = export(&["--format", "har", cap.to_str().unwrap()]);
        assert_eq!(code, Some(0), "{err}");
        let har: Value = serde_json::from_str(&har).unwrap();
        assert_eq!(
            har["log"]["entries"].as_array().unwrap().len(),
            complete.len()
        );
        if cut {
            assert!(err.contains("last line is incomplete"), "{err}");
        }
    }
}

#[test]
fn a_slow_disk_slows_traffic_instead_of_losing_records() {
    // A FIFO stands in for a slow disk: the proxy's writes block until this test reads.
    let dir = temp_dir("capture-fifo");
    let fifo = dir.join("cap.fifo");
    let made = Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .is_ok_and(|s| s.success());
    if !need("mkfifo not available", made) {
        return;
    }
    let (started_tx, started) = std::sync::mpsc::channel();
    let reader = {
        let fifo = fifo.clone();
        thread::spawn(move || {
            let mut f = fs::File::open(&fifo).unwrap();
            let mut all = Vec::new();
            let mut buf = [0u8; 16 * 1024];
            thread::sleep(Duration::from_millis(500));
            let _ = started_tx.send(Instant::now());
            loop {
                match f.read(&mut buf) {
                    Ok(0) | Err(_) => return all,
                    Ok(n) => all.extend_from_slice(&buf[..n]),
                }
                thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let origin = Origin::start(api);
    let mut proxy = Proxy::start(&[
        "--capture",
        fifo.to_str().unwrap(),
        "--capture-body-limit",
        "4096",
    ]);
    let addr = proxy.addr;
    let url = origin.url("/echo");
    let workers: Vec<_> = (0..4)
        .map(|i| {
            let url = url.clone();
            thread::spawn(move || {
                // Keep-alive: a connection pauses before its next request while the capture
                // queue is full, so it is the client that waits.
                let mut c = Conn::connect(addr);
                for j in 0..30 {
                    let body = pattern(4096, i * 100 + j);
                    let res = c.exchange("POST", &build_request("POST", &url, &[], &body));
                    assert_eq!(res.status(), 201);
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    // About 1.3 MB of records cannot wait in a 16-record queue and a pipe: the clients must
    // have been held back until the disk (this reader) began to take them. (Clients that
    // open a connection per request are not: each connection holds its record instead, up to
    // --max-connections of them.)
    let workers_done = Instant::now();
    let reading_began = started.recv().unwrap();
    assert!(
        workers_done > reading_began,
        "the clients finished before anything was read: records were queued without bound"
    );
    proxy.signal("TERM");
    assert!(proxy
        .wait_exit(Duration::from_secs(10))
        .is_some_and(|s| s.success()));
    let all = reader.join().unwrap();
    let lines: Vec<&[u8]> = all
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(lines.len(), 120, "every record arrived");
    for line in lines {
        let r: Value = serde_json::from_slice(line).unwrap();
        assert_eq!(r["request"]["body"]["size"], 4096);
    }
}

#[test]
fn a_full_disk_is_reported_once_and_traffic_goes_on() {
    if !need("/dev/full not present", Path::new("/dev/full").exists()) {
        return;
    }
    let origin = Origin::start(api);
    let proxy = Proxy::start(&["--capture", "/dev/full"]);
    for i in 0..20 {
        assert_eq!(
            send(proxy.addr, "GET", &origin.url(&format!("/n{i}")), &[], b""),
            200
        );
    }
    let line = proxy.wait_for_log(RECORD_WAIT, "cannot write capture file /dev/full");
    assert!(
        line.is_some_and(|l| l.contains("no space left on device")),
        "{:?}",
        proxy.stderr_lines()
    );
    thread::sleep(Duration::from_millis(200));
    let reports = proxy
        .stderr_lines()
        .iter()
        .filter(|l| l.contains("capture"))
        .count();
    assert_eq!(reports, 1, "{:?}", proxy.stderr_lines());
    assert_eq!(
        send(proxy.addr, "GET", &origin.url("/after"), &[], b""),
        200
    );
}

#[test]
fn a_capture_file_that_cannot_be_opened_stops_the_start() {
    let done = common::run_proxy(
        &["--capture", "/nonexistent-dir/cap.ndjson"],
        Duration::from_secs(10),
    );
    assert_eq!(done.code, Some(1), "{}", done.stderr);
    assert_eq!(
        done.stderr.trim(),
        "smolproxy: cannot open capture file /nonexistent-dir/cap.ndjson: no such file or directory"
    );

    // A read-only location: a read-only bind mount in a private mount namespace.
    let dir = temp_dir("capture-ro");
    let works = Command::new("unshare")
        .args(["-m", "true"])
        .status()
        .is_ok_and(|s| s.success());
    if !need("unshare -m (mount namespaces) not available", works) {
        return;
    }
    let d = dir.to_str().unwrap();
    let script = format!(
        "mount --bind {d} {d} && mount -o remount,bind,ro {d} && \
         exec {} --listen 127.0.0.1:0 --capture {d}/cap.ndjson",
        common::bin()
    );
    let mut cmd = Command::new("unshare");
    cmd.args(["-m", "sh", "-c", &script]);
    let done = run_to_exit(cmd, Duration::from_secs(10));
    assert_eq!(done.code, Some(1), "{}", done.stderr);
    assert_eq!(
        done.stderr.trim(),
        format!("smolproxy: cannot open capture file {d}/cap.ndjson: read-only file system")
    );
}

#[cfg(feature = "export")]
#[test]
fn export_skips_a_cut_last_line_and_names_a_broken_one() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/capture");
    let path = |name: &str| fixtures.join(name).to_str().unwrap().to_string();

    let (code, out, err) = export(&["--format", "har", &path("truncated.ndjson")]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.contains("truncated.ndjson: the last line is incomplete"),
        "{err}"
    );
    let har: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(har["log"]["entries"].as_array().unwrap().len(), 3);

    let (code, out, err) = export(&["--format", "postman", &path("broken.ndjson")]);
    assert_eq!(code, Some(1));
    assert!(out.is_empty());
    assert!(
        err.starts_with(&format!(
            "smolproxy: export: {}:3: not JSON",
            path("broken.ndjson")
        )),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");

    let (code, _, err) = export(&["--format", "har", "/nonexistent/cap.ndjson"]);
    assert_eq!(
        (code, err.trim()),
        (
            Some(1),
            "smolproxy: export: cannot read /nonexistent/cap.ndjson: no such file or directory"
        )
    );

    // Several files: records of all of them, ordered by start time.
    let (code, out, err) = export(&[
        "--format",
        "har",
        "--name",
        "two",
        &path("sample.ndjson"),
        &path("truncated.ndjson"),
    ]);
    assert_eq!(code, Some(0), "{err}");
    let har: Value = serde_json::from_str(&out).unwrap();
    let starts: Vec<&str> = har["log"]["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["startedDateTime"].as_str().unwrap())
        .collect();
    assert_eq!(starts.len(), 13);
    assert!(starts.windows(2).all(|w| w[0] <= w[1]), "{starts:?}");
    assert_eq!(har["log"]["comment"], "two");

    let (code, _, err) = export(&["--format", "xml", &path("sample.ndjson")]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("expected har, postman or postman-environment"),
        "{err}"
    );
}

#[test]
fn bad_capture_flags_exit_2() {
    let done = common::run_proxy(&["--capture-body-limit", "lots"], Duration::from_secs(10));
    assert_eq!(done.code, Some(2));
    assert!(
        done.stderr.contains("--capture-body-limit") && done.stderr.contains("lots"),
        "{}",
        done.stderr
    );
}

//! Captured traffic as a regression suite (SPEC §7, issue 17): `smolproxy export --format
//! postman --tests --base-url-var` on a capture of a small JSON API, run by `newman` against
//! that API as it was (every check passes, as many as the captured shapes imply), as it is
//! after a change (exactly the changed things fail), and against a second server through an
//! environment file; and repeated captures merged into one item.
//!
//! The real binary, an origin on loopback, the npm tools from `node_modules` (see
//! `capture.rs`: without them these tests print `SKIP:`, and fail under `CI=true`).

#![cfg(feature = "export")]

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use common::{
    capture_records, export, newman, node, node_tools, send, temp_dir, Conn, Head, Origin, Proxy,
    LOAD_COLLECTION,
};
use serde_json::{json, Value};

const JSON: &str = "application/json";

/// The test API, as released (`changed` false) or after a change: `/health` answers 500,
/// `/items/1` calls its `owner` `user`, `/items` gives a price as a string. Ids and times
/// differ on every request, as in a real API; `/version` counts the requests it served.
fn json_api(changed: Arc<AtomicBool>) -> impl Fn(&Head, &mut Conn) -> bool + Send + Sync + 'static {
    let served = AtomicUsize::new(0);
    move |head: &Head, conn: &mut Conn| {
        let Ok(body) = conn.read_body(head) else {
            return false;
        };
        let n = served.fetch_add(1, Ordering::SeqCst);
        let changed = changed.load(Ordering::SeqCst);
        let path = head.target().split('?').next().unwrap_or("").to_string();
        let (status, content_type, text) = match (head.method(), path.as_str()) {
            ("GET", "/items") => {
                let price: Value = if changed { "9.50".into() } else { 9.5.into() };
                let text = json!({
                    "items": [
                        {"id": 1, "name": "widget", "price": price, "tags": ["new", "sale"]},
                        {"id": 2, "name": "gadget", "price": 12, "tags": []},
                    ],
                    "total": 2,
                    "next": null,
                });
                ("200 OK", JSON, text.to_string())
            }
            ("GET", "/items/1") => {
                let owner = if changed { "user" } else { "owner" };
                let mut text = json!({"id": 1, "name": "widget"});
                text[owner] = json!({"name": "ann", "address": {"city": "Paris", "zip": "75001"}});
                ("200 OK", JSON, text.to_string())
            }
            ("GET", "/items/99") => (
                "404 Not Found",
                JSON,
                r#"{"error":"no such item"}"#.to_string(),
            ),
            ("GET", "/health") if changed => (
                "500 Internal Server Error",
                "text/plain",
                "database down".to_string(),
            ),
            ("GET", "/health") => ("200 OK", "text/plain; charset=utf-8", "ok".to_string()),
            ("POST", "/items") => {
                let sent: Value = serde_json::from_slice(&body).unwrap_or_default();
                let created = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
                let text = json!({
                    "id": 100 + n,
                    "name": sent["name"],
                    "created": format!("{}.{:09}", created.as_secs(), created.subsec_nanos()),
                });
                ("201 Created", JSON, text.to_string())
            }
            ("GET", "/version") => (
                "200 OK",
                JSON,
                format!(r#"{{"version":"1.2.3","served":{n}}}"#),
            ),
            _ => ("404 Not Found", "text/plain", "no route".to_string()),
        };
        let close = head.tokens("connection").iter().any(|t| t == "close");
        let mut headers = vec![("Content-Type", content_type)];
        if close {
            headers.push(("Connection", "close"));
        }
        conn.try_respond(status, &headers, text.as_bytes()).is_ok() && !close
    }
}

/// A capture of the test API: its origin, the switch that changes it, and the capture.
struct Captured {
    /// The API.
    origin: Origin,
    /// Set to change the API (see [`json_api`]).
    changed: Arc<AtomicBool>,
    /// The test's directory.
    dir: PathBuf,
    /// The capture file.
    cap: PathBuf,
    /// Its records.
    records: Vec<Value>,
}

/// Starts the API and a capturing proxy, and sends each endpoint one request through it: a
/// list, a nested object, a 404, a text body and a POST.
fn capture_api(test: &str) -> Captured {
    let changed = Arc::new(AtomicBool::new(false));
    let origin = Origin::start(json_api(changed.clone()));
    let dir = temp_dir(test);
    let cap = dir.join("api.ndjson");
    let proxy = Proxy::start(&["--capture", cap.to_str().unwrap()]);
    for (path, status) in [
        ("/items", 200),
        ("/items/1", 200),
        ("/items/99", 404),
        ("/health", 200),
    ] {
        assert_eq!(send(proxy.addr, "GET", &origin.url(path), &[], b""), status);
    }
    let post = send(
        proxy.addr,
        "POST",
        &origin.url("/items"),
        &[("Content-Type", JSON)],
        br#"{"name":"widget"}"#,
    );
    assert_eq!(post, 201);
    let records = capture_records(&cap, 5);
    Captured {
        origin,
        changed,
        dir,
        cap,
        records,
    }
}

/// Runs `smolproxy export ARGS CAPTURE`, checks it succeeded and writes its output to
/// `dir/file`.
fn export_to(dir: &Path, file: &str, args: &[&str], cap: &Path) -> PathBuf {
    let mut all = args.to_vec();
    all.push(cap.to_str().unwrap());
    let (code, out, err) = export(&all);
    assert_eq!(code, Some(0), "export {all:?}: {err}");
    let path = dir.join(file);
    fs::write(&path, out).unwrap();
    path
}

/// The checks one captured response implies: its status, its media type when it had a
/// Content-Type, and for a JSON body its shape.
fn implied_checks(record: &Value) -> usize {
    let res = &record["response"];
    let content_type = res["headers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| {
            h["name"]
                .as_str()
                .unwrap()
                .eq_ignore_ascii_case("content-type")
        })
        .map(|h| h["value"].as_str().unwrap());
    let mut n = 1 + usize::from(content_type.is_some());
    if content_type.is_some_and(|t| t.starts_with(JSON)) {
        let body: Value = serde_json::from_str(res["body"]["text"].as_str().unwrap()).unwrap();
        n += shape_checks(&body);
    }
    n
}

/// The checks of a JSON value's shape: its type, then each key of an object and the first
/// element of an array, recursively; a key that is null only its presence (it may be a string
/// next time).
fn shape_checks(v: &Value) -> usize {
    1 + match v {
        Value::Object(o) => o
            .values()
            .map(|v| if v.is_null() { 1 } else { shape_checks(v) })
            .sum(),
        Value::Array(a) => a.first().map_or(0, shape_checks),
        _ => 0,
    }
}

/// The name of every executed item with the names of its checks, from newman's report.
fn checks_run(report: &Value) -> Vec<(String, Vec<String>)> {
    report["run"]["executions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let names = e["assertions"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|a| a["assertion"].as_str().unwrap().to_string())
                        .collect()
                })
                .unwrap_or_default();
            (e["item"]["name"].as_str().unwrap().to_string(), names)
        })
        .collect()
}

/// A node script loading a collection with the `postman-collection` SDK and printing, per
/// item, its name and the line count of each of its test scripts, then its variables.
const TEST_EVENTS: &str = r#"
const { Collection } = require('postman-collection');
const json = JSON.parse(require('fs').readFileSync(process.argv[process.argv.length - 1]));
const c = new Collection(json);
c.forEachItem(i => {
  const tests = i.events.listeners('test').map(e => e.script.exec.length);
  console.log(i.name + ': ' + tests.join(','));
});
c.variables.each(v => console.log('{{' + v.key + '}} = ' + v.value));
"#;

#[test]
fn exported_tests_pass_against_the_captured_api_as_many_as_its_shapes_imply() {
    let Some(modules) = node_tools() else { return };
    let api = capture_api("export-tests-pass");
    let collection = export_to(
        &api.dir,
        "api.json",
        &["--format", "postman", "--tests", "--base-url-var"],
        &api.cap,
    );
    // The SDK loads it: every item has its request, example and one test script; the origin
    // is the collection's variable.
    assert_eq!(
        node(&modules, LOAD_COLLECTION, &[&collection]).trim(),
        "loaded 1 folders 5 items"
    );
    let events = node(&modules, TEST_EVENTS, &[&collection]);
    let lines: Vec<&str> = events.lines().collect();
    assert_eq!(lines.len(), 6, "{events}");
    for line in &lines[..5] {
        let (_, counts) = line.split_once(": ").unwrap();
        assert!(
            !counts.is_empty() && !counts.contains(','),
            "one test script per item: {events}"
        );
    }
    assert_eq!(
        lines[5],
        format!("{{{{baseUrl}}}} = http://{}", api.origin.authority())
    );

    let run = newman(&modules, &api.dir, &collection, &[], &[]);
    let done = &run.done;
    assert_eq!(
        done.code,
        Some(0),
        "newman failed:\n{}\n{}",
        done.stdout,
        done.stderr
    );
    let stats = &run.report["run"]["stats"]["assertions"];
    let implied: usize = api.records.iter().map(implied_checks).sum();
    assert_eq!(stats["failed"], 0, "{}", run.report["run"]["failures"]);
    assert_eq!(stats["total"], implied, "{stats}");
    // Item by item, and the names read as the issue asks.
    let checks = checks_run(&run.report);
    assert_eq!(checks.len(), 5);
    for (item, names) in &checks {
        let (method, path) = item.split_once(' ').unwrap();
        let record = api
            .records
            .iter()
            .find(|r| {
                r["request"]["method"] == method && r["request"]["url"] == api.origin.url(path)
            })
            .unwrap_or_else(|| panic!("no capture of {item}"));
        assert_eq!(names.len(), implied_checks(record), "{item}: {names:#?}");
    }
    let items = &checks.iter().find(|(i, _)| i == "GET /items").unwrap().1;
    for name in [
        "status is 200",
        "Content-Type is application/json",
        "body.items[0].id is a number",
        "body.items[0].tags[0] is a string",
        "body.next is present",
    ] {
        assert!(items.iter().any(|n| n == name), "{name} in {items:#?}");
    }
    let health = &checks.iter().find(|(i, _)| i == "GET /health").unwrap().1;
    assert_eq!(health, &["status is 200", "Content-Type is text/plain"]);
    // Never a value: ids, times and counts differ on the next run.
    assert!(checks
        .iter()
        .all(|(_, n)| n.iter().all(|n| !n.contains("equals"))));
}

#[test]
fn a_changed_api_fails_exactly_the_checks_of_what_changed() {
    let Some(modules) = node_tools() else { return };
    let api = capture_api("export-tests-change");
    let collection = export_to(
        &api.dir,
        "api.json",
        &["--format", "postman", "--tests", "--base-url-var"],
        &api.cap,
    );
    let before = newman(&modules, &api.dir, &collection, &[], &[]);
    assert_eq!(before.done.code, Some(0), "{}", before.done.stdout);

    // The release: /health answers 500, `owner` is now `user`, a price is a string.
    api.changed.store(true, Ordering::SeqCst);
    let after = newman(&modules, &api.dir, &collection, &[], &[]);
    assert_ne!(after.done.code, Some(0), "{}", after.done.stdout);
    assert!(after.done.code.is_some(), "newman did not finish");
    let failures = after.report["run"]["failures"].as_array().unwrap();
    let failed: BTreeSet<(String, String)> = failures
        .iter()
        .map(|f| {
            assert_eq!(f["error"]["name"], "AssertionError", "{f}");
            let item = f["source"]["name"].as_str().unwrap().to_string();
            (item, f["error"]["test"].as_str().unwrap().to_string())
        })
        .collect();
    let expected: BTreeSet<(String, String)> = [
        ("GET /health", "status is 200"),
        ("GET /items/1", "body.owner is an object"),
        ("GET /items", "body.items[0].price is a number"),
    ]
    .iter()
    .map(|(i, t)| (i.to_string(), t.to_string()))
    .collect();
    assert_eq!(failed, expected);
    assert_eq!(failures.len(), 3, "{failures:#?}");
    assert_eq!(after.report["run"]["stats"]["assertions"]["failed"], 3);
    // The same names in what a person reads: newman's own report on stdout.
    let cli = newman(
        &modules,
        &api.dir,
        &collection,
        &["--reporters", "cli"],
        &[],
    );
    for (_, test) in &expected {
        assert!(
            cli.done.stdout.contains(test.as_str()),
            "{}",
            cli.done.stdout
        );
    }
}

#[test]
fn an_environment_file_sends_the_same_collection_to_another_server() {
    let Some(modules) = node_tools() else { return };
    let api = capture_api("export-tests-env");
    let collection = export_to(
        &api.dir,
        "api.json",
        &["--format", "postman", "--tests", "--base-url-var"],
        &api.cap,
    );
    let env = export_to(
        &api.dir,
        "captured.env.json",
        &["--format", "postman-environment", "--name", "captured"],
        &api.cap,
    );
    let mut env: Value = serde_json::from_slice(&fs::read(env).unwrap()).unwrap();
    assert_eq!(env["name"], "captured");
    let values = env["values"].as_array_mut().unwrap();
    assert_eq!(values.len(), 1, "{values:?}");
    assert_eq!(values[0]["key"], "baseUrl");
    assert_eq!(
        values[0]["value"],
        format!("http://{}", api.origin.authority())
    );

    // Staging: the same API on another port.
    let staging = Origin::start(json_api(Arc::new(AtomicBool::new(false))));
    assert_ne!(staging.port(), api.origin.port());
    values[0]["value"] = format!("http://{}", staging.authority()).into();
    let staging_env = api.dir.join("staging.env.json");
    fs::write(&staging_env, env.to_string()).unwrap();
    let captured_requests = api.origin.requests();
    let run = newman(
        &modules,
        &api.dir,
        &collection,
        &["-e", staging_env.to_str().unwrap()],
        &[],
    );
    assert_eq!(
        run.done.code,
        Some(0),
        "{}\n{}",
        run.done.stdout,
        run.done.stderr
    );
    let targets: Vec<String> = staging
        .seen()
        .iter()
        .map(|s| format!("{} {}", s.head.method(), s.head.target()))
        .collect();
    assert_eq!(
        targets,
        [
            "GET /items",
            "GET /items/1",
            "GET /items/99",
            "GET /health",
            "POST /items"
        ]
    );
    assert_eq!(
        api.origin.requests(),
        captured_requests,
        "nothing went to the captured server"
    );
    let urls: Vec<&str> = run.report["run"]["executions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["request"]["url"]["port"].as_str().unwrap_or(""))
        .collect();
    assert!(
        urls.iter().all(|p| *p == staging.port().to_string()),
        "{urls:?}"
    );
}

#[test]
fn ten_captures_of_one_request_are_one_item() {
    let Some(modules) = node_tools() else { return };
    let origin = Origin::start(json_api(Arc::new(AtomicBool::new(false))));
    let dir = temp_dir("export-tests-dedupe");
    let cap = dir.join("api.ndjson");
    let proxy = Proxy::start(&["--capture", cap.to_str().unwrap()]);
    // A cache buster in the query, as browsers' scripts add: a volatile value.
    let start = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis();
    for i in 0..10 {
        let url = origin.url(&format!("/version?_={}", start + i));
        assert_eq!(send(proxy.addr, "GET", &url, &[], b""), 200);
    }
    assert_eq!(
        send(proxy.addr, "GET", &origin.url("/items/1"), &[], b""),
        200
    );
    capture_records(&cap, 11);

    let collection = export_to(
        &dir,
        "api.json",
        &["--format", "postman", "--tests", "values"],
        &cap,
    );
    let c: Value = serde_json::from_slice(&fs::read(&collection).unwrap()).unwrap();
    let items = c["item"][0]["item"].as_array().unwrap();
    let names: Vec<&str> = items.iter().map(|i| i["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [&format!("GET /version?_={start}")[..], "GET /items/1"]
    );
    let description = items[0]["description"].as_str().unwrap();
    assert!(description.contains("Captured 10 times"), "{description}");
    // `--tests values`: the version was the same ten times, the request counter never.
    let script = items[0]["event"][0]["script"]["exec"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        script.contains(r#"pm.expect(body.version).to.equal("1.2.3")"#),
        "{script}"
    );
    assert!(script.contains("body.served is a number"), "{script}");
    assert!(!script.contains("body.served equals"), "{script}");
    // Captured once: no values, and the script says why.
    let once = items[1]["event"][0]["script"]["exec"].to_string();
    assert!(once.contains("Values are not checked"), "{once}");
    assert!(!once.contains("equals"), "{once}");
    let run = newman(&modules, &dir, &collection, &[], &[]);
    assert_eq!(run.done.code, Some(0), "{}", run.done.stdout);
    let checks = checks_run(&run.report);
    assert!(checks[0]
        .1
        .iter()
        .any(|n| n == r#"body.version equals "1.2.3""#));

    // --dedupe off keeps every capture.
    let all = export_to(
        &dir,
        "all.json",
        &["--format", "postman", "--dedupe", "off"],
        &cap,
    );
    let c: Value = serde_json::from_slice(&fs::read(all).unwrap()).unwrap();
    assert_eq!(c["item"][0]["item"].as_array().unwrap().len(), 11);
}

#[test]
fn export_flags_are_checked() {
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/capture/sample.ndjson");
    let sample = sample.to_str().unwrap();
    // (arguments, exit status, what stderr says)
    for (args, code, says) in [
        (
            &["--format", "har", "--tests", sample][..],
            2,
            "--tests and --base-url-var are for --format postman",
        ),
        (
            &["--format", "postman", "--dedupe", "maybe", sample],
            2,
            "expected on or off, got 'maybe'",
        ),
        (
            &["--format", "postman", "--tests"],
            2,
            "name at least one capture file",
        ),
        // Without --tests, `values` is a file name like any other.
        (&["--format", "postman", "values"], 1, "cannot read values"),
    ] {
        let (got, out, err) = export(args);
        assert_eq!(got, Some(code), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(out.is_empty());
    }
    // The three outputs of one capture; HAR is unchanged by any of this.
    let (code, env, err) = export(&["--format", "postman-environment", sample]);
    assert_eq!(code, Some(0), "{err}");
    let env: Value = serde_json::from_str(&env).unwrap();
    assert_eq!(env["values"][0]["value"], "http://api.example.test:8080");
    assert_eq!(env["_postman_variable_scope"], "environment");
}

//! `smolproxy export`: capture files (NDJSON) to a HAR 1.2 log or a Postman Collection v2.1.
//!
//! Pure conversion: [`parse`] reads the lines of one capture file into records, [`har`] and
//! [`postman`] turn records into the output document. Only [`run`] touches files, stdout and
//! stderr. A final line that does not parse is what a killed proxy leaves behind: it is
//! skipped with a warning. Any other line that is not a valid record is an error naming it.
//!
//! HAR keeps everything (tunnels become entries with `_tunnel` fields, our extra fields start
//! with `_` as HAR 1.2 asks). A Postman collection is for replaying: CONNECT tunnels cannot be
//! replayed and are left out (with a note on stderr); the connection-level headers that
//! Postman sets itself (Host, Content-Length, Connection, ...) are left out of the requests;
//! redacted headers are kept but disabled, so a replay does not send `REDACTED`.

use std::io::Write;
use std::process::ExitCode;

use serde_json::{json, Value};

use crate::capture::REDACTED;
use crate::config::{ExportArgs, ExportFormat};

/// The Postman Collection format this writes.
pub const POSTMAN_SCHEMA: &str = "https://schema.getpostman.com/json/collection/v2.1.0/collection.json";

/// Request headers left out of a Postman request: hop-by-hop, or set by the sender itself.
const NOT_REPLAYED: [&str; 10] = [
    "host",
    "content-length",
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// The records of one capture file, in file order.
#[derive(Debug)]
pub struct Parsed {
    /// One JSON object per complete line.
    pub records: Vec<Value>,
    /// The last line was cut short (by a killed process) and was skipped.
    pub truncated: bool,
}

/// Reads capture lines. Errors carry the 1-based line number and what is wrong.
pub fn parse(data: &[u8]) -> Result<Parsed, (usize, String)> {
    let lines: Vec<&[u8]> = data.split(|&b| b == b'\n').collect();
    // The last non-blank line: the only one a killed writer can have cut short.
    let last = lines.iter().rposition(|l| !l.trim_ascii().is_empty());
    let mut records = Vec::new();
    let mut truncated = false;
    for (i, line) in lines.iter().enumerate() {
        if line.trim_ascii().is_empty() {
            continue;
        }
        let checked = serde_json::from_slice::<Value>(line)
            .map_err(|e| format!("not JSON: {e}"))
            .and_then(|v| check(&v).map(|()| v));
        match checked {
            Ok(v) => records.push(v),
            Err(_) if Some(i) == last && serde_json::from_slice::<Value>(line).is_err() => truncated = true,
            Err(why) => return Err((i + 1, why)),
        }
    }
    Ok(Parsed { records, truncated })
}

/// Whether a JSON value is a record this version can export.
fn check(v: &Value) -> Result<(), String> {
    let need_str = |v: &Value, key: &str| match v.pointer(key) {
        Some(Value::String(_)) => Ok(()),
        _ => Err(format!("not a capture record: no {}", key.trim_start_matches('/').replace('/', "."))),
    };
    need_str(v, "/start")?;
    match v.get("type").and_then(Value::as_str) {
        Some("http") => {
            need_str(v, "/request/method")?;
            need_str(v, "/request/url")?;
            split_url(v["request"]["url"].as_str().unwrap_or("")).map(|_| ()).ok_or("bad request.url".into())
        }
        Some("tunnel") => {
            need_str(v, "/host")?;
            v["port"].as_u64().map(|_| ()).ok_or_else(|| "not a capture record: no port".into())
        }
        _ => Err("not a capture record: type is neither http nor tunnel".into()),
    }
}

/// The whole command: read every file, convert, print. Exit 0, or 1 with one line saying why.
pub fn run(args: &ExportArgs) -> ExitCode {
    if args.captures.is_empty() {
        eprintln!("smolproxy: export: name at least one capture file");
        return ExitCode::from(2);
    }
    let mut records = Vec::new();
    for path in &args.captures {
        let data = match std::fs::read(path) {
            Ok(d) => d,
            Err(e) => {
                eprintln!("smolproxy: export: cannot read {path}: {}", crate::error::describe(&e));
                return ExitCode::from(1);
            }
        };
        match parse(&data) {
            Ok(parsed) => {
                if parsed.truncated {
                    eprintln!("warning: {path}: the last line is incomplete (the proxy was stopped while writing it); skipped");
                }
                records.extend(parsed.records);
            }
            Err((line, why)) => {
                eprintln!("smolproxy: export: {path}:{line}: {why}");
                return ExitCode::from(1);
            }
        }
    }
    // Several files, and records written when exchanges end: order by start, as HAR expects.
    records.sort_by(|a, b| a["start"].as_str().cmp(&b["start"].as_str()));
    let doc = match args.format {
        ExportFormat::Har => har(&records, &args.name),
        ExportFormat::Postman => {
            let tunnels = records.iter().filter(|r| r["type"] == "tunnel").count();
            if tunnels > 0 {
                eprintln!("note: {tunnels} CONNECT tunnel(s) left out: a collection cannot replay them");
            }
            postman(&records, &args.name)
        }
    };
    let mut out = std::io::stdout().lock();
    let written = serde_json::to_writer_pretty(&mut out, &doc)
        .map_err(std::io::Error::from)
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush());
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("smolproxy: export: cannot write to stdout: {}", crate::error::describe(&e));
            ExitCode::from(1)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// HAR 1.2 (http://www.softwareishard.com/blog/har-12-spec/)
// ---------------------------------------------------------------------------------------------

/// A HAR 1.2 log of the records; `name` becomes the log's comment.
pub fn har(records: &[Value], name: &str) -> Value {
    json!({
        "log": {
            "version": "1.2",
            "creator": { "name": "smolproxy", "version": env!("CARGO_PKG_VERSION") },
            "entries": records.iter().map(har_entry).collect::<Vec<_>>(),
            "comment": name,
        }
    })
}

fn har_entry(r: &Value) -> Value {
    let t = &r["timings"];
    let connect = t["connect_ms"].as_f64();
    let mut entry = if r["type"] == "tunnel" {
        let total = t["total_ms"].as_f64().unwrap_or(0.0);
        let receive = (total - connect.unwrap_or(0.0)).max(0.0);
        let status = r["status"].as_u64().unwrap_or(0);
        let url = format!("https://{}", authority(r["host"].as_str().unwrap_or(""), r["port"].as_u64().unwrap_or(0)));
        json!({
            "startedDateTime": r["start"],
            "time": connect.unwrap_or(0.0) + receive,
            "request": {
                "method": "CONNECT", "url": url, "httpVersion": "HTTP/1.1", "cookies": [],
                "headers": [], "queryString": [], "headersSize": -1, "bodySize": 0,
            },
            "response": {
                "status": status,
                "statusText": if status == 200 { "Connection established" } else { "" },
                "httpVersion": "HTTP/1.1", "cookies": [], "headers": [],
                "content": { "size": 0, "mimeType": "x-unknown" },
                "redirectURL": "", "headersSize": -1, "bodySize": 0,
            },
            "cache": {},
            "timings": { "connect": connect.unwrap_or(-1.0), "send": 0, "wait": 0, "receive": receive },
            "_tunnel": {
                "host": r["host"], "port": r["port"], "bytesUp": r["bytes_up"],
                "bytesDown": r["bytes_down"], "durationMs": total, "route": r["route"],
            },
        })
    } else {
        let wait = t["wait_ms"].as_f64().unwrap_or(0.0);
        let receive = t["receive_ms"].as_f64().unwrap_or(0.0);
        json!({
            "startedDateTime": r["start"],
            "time": connect.unwrap_or(0.0) + wait + receive,
            "request": har_request(&r["request"]),
            "response": har_response(&r["response"]),
            "cache": {},
            "timings": { "connect": connect.unwrap_or(-1.0), "send": 0, "wait": wait, "receive": receive },
        })
    };
    let extra = ["client", "user", "route", "decision", "rule"];
    for key in extra {
        entry[format!("_{key}")] = r[key].clone();
    }
    entry
}

fn har_request(req: &Value) -> Value {
    let url = req["url"].as_str().unwrap_or("");
    let headers = fields(&req["headers"]);
    let query = split_url(url).and_then(|u| u.query).unwrap_or("");
    let query: Vec<Value> = pairs(query, false).map(|(name, value)| json!({ "name": name, "value": value })).collect();
    let cookies: Vec<Value> = headers
        .iter()
        .filter(|(n, v)| n.eq_ignore_ascii_case("cookie") && v != REDACTED)
        .flat_map(|(_, v)| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .map(|(name, value)| json!({ "name": name, "value": value }))
        .collect();
    let body = &req["body"];
    let mut out = json!({
        "method": req["method"],
        "url": url,
        "httpVersion": req["http_version"].as_str().unwrap_or("HTTP/1.1"),
        "cookies": cookies,
        "headers": har_headers(&headers),
        "queryString": query,
        "headersSize": -1,
        "bodySize": body["size"].as_u64().unwrap_or(0),
    });
    if !body.is_null() {
        let mime = header(&headers, "content-type").unwrap_or("application/octet-stream");
        let text = body["text"].as_str().unwrap_or("");
        let mut post = json!({ "mimeType": mime, "text": text });
        if is_form(mime) && body["encoding"] == "utf8" {
            let params: Vec<Value> = pairs(text, true).map(|(n, v)| json!({ "name": n, "value": v })).collect();
            post["params"] = params.into();
        }
        if body["encoding"] == "base64" {
            post["_encoding"] = "base64".into();
        }
        post["_truncated"] = body["truncated"].clone();
        out["postData"] = post;
    }
    out
}

fn har_response(res: &Value) -> Value {
    if res.is_null() {
        // Nothing could be sent back (the client went away first): HAR's "no response".
        return json!({
            "status": 0, "statusText": "", "httpVersion": "", "cookies": [], "headers": [],
            "content": { "size": 0, "mimeType": "x-unknown" }, "redirectURL": "",
            "headersSize": -1, "bodySize": -1,
        });
    }
    let headers = fields(&res["headers"]);
    let cookies: Vec<Value> = headers
        .iter()
        .filter(|(n, v)| n.eq_ignore_ascii_case("set-cookie") && v != REDACTED)
        .filter_map(|(_, v)| set_cookie(v))
        .collect();
    let body = &res["body"];
    let mut content = json!({
        "size": body["size"].as_u64().unwrap_or(0),
        "mimeType": header(&headers, "content-type").unwrap_or("x-unknown"),
    });
    if !body.is_null() {
        content["text"] = body["text"].clone();
        if body["encoding"] == "base64" {
            content["encoding"] = "base64".into();
        }
        content["_truncated"] = body["truncated"].clone();
    }
    json!({
        "status": res["status"],
        "statusText": res["reason"],
        "httpVersion": res["http_version"],
        "cookies": cookies,
        "headers": har_headers(&headers),
        "content": content,
        "redirectURL": header(&headers, "location").unwrap_or(""),
        "headersSize": -1,
        "bodySize": if res["source"] == "proxy" { json!(-1) } else { json!(body["size"].as_u64().unwrap_or(0)) },
        "_source": res["source"],
    })
}

fn har_headers(headers: &[(String, String)]) -> Vec<Value> {
    headers.iter().map(|(n, v)| json!({ "name": n, "value": v })).collect()
}

/// A HAR cookie from a Set-Cookie value (RFC 6265 §4.1): `name=value; Attr=...`.
fn set_cookie(value: &str) -> Option<Value> {
    let mut parts = value.split(';');
    let (name, val) = parts.next()?.trim().split_once('=')?;
    let mut cookie = json!({ "name": name, "value": val });
    for attr in parts {
        let (key, v) = attr.trim().split_once('=').unwrap_or((attr.trim(), ""));
        match key.to_ascii_lowercase().as_str() {
            "path" => cookie["path"] = v.into(),
            "domain" => cookie["domain"] = v.into(),
            "expires" => cookie["_expires"] = v.into(),
            "httponly" => cookie["httpOnly"] = true.into(),
            "secure" => cookie["secure"] = true.into(),
            _ => {}
        }
    }
    Some(cookie)
}

// ---------------------------------------------------------------------------------------------
// Postman Collection v2.1
// ---------------------------------------------------------------------------------------------

/// A Postman Collection v2.1: one folder per host (in order of first appearance), one item per
/// exchange with the captured response as its saved example. Tunnels are left out.
pub fn postman(records: &[Value], name: &str) -> Value {
    let mut folders: Vec<(String, Vec<Value>)> = Vec::new();
    for r in records.iter().filter(|r| r["type"] == "http") {
        let url = r["request"]["url"].as_str().unwrap_or("");
        let Some(parts) = split_url(url) else { continue };
        let host = parts.authority.to_string();
        let item = postman_item(r, &parts);
        match folders.iter_mut().find(|(h, _)| *h == host) {
            Some((_, items)) => items.push(item),
            None => folders.push((host, vec![item])),
        }
    }
    let folders: Vec<Value> = folders.into_iter().map(|(host, item)| json!({ "name": host, "item": item })).collect();
    json!({
        "info": {
            "name": name,
            "description": "Captured by smolproxy; replay with newman or open in Postman.",
            "schema": POSTMAN_SCHEMA,
        },
        "item": folders,
    })
}

fn postman_item(r: &Value, url: &Url<'_>) -> Value {
    let req = &r["request"];
    let method = req["method"].as_str().unwrap_or("GET");
    let request = postman_request(req, url);
    let mut item = json!({
        "name": format!("{method} {}", url.path_and_query),
        "request": request,
        "response": [],
    });
    let res = &r["response"];
    if !res.is_null() {
        let headers = fields(&res["headers"]);
        let body = &res["body"];
        let example = json!({
            "name": format!("{} {}", res["status"], res["reason"].as_str().unwrap_or("")).trim_end(),
            "originalRequest": item["request"].clone(),
            "status": res["reason"],
            "code": res["status"],
            "_postman_previewlanguage": language(header(&headers, "content-type")),
            "header": headers.iter().map(|(k, v)| json!({ "key": k, "value": v })).collect::<Vec<_>>(),
            "cookie": [],
            "body": body["text"].as_str().unwrap_or(""),
        });
        item["response"] = json!([example]);
    }
    let mut notes = Vec::new();
    for (side, body) in [("request", &req["body"]), ("response", &res["body"])] {
        if body["encoding"] == "base64" {
            notes.push(format!("The {side} body was binary; it is shown base64-encoded."));
        }
        if body["truncated"] == true {
            notes.push(format!("The {side} body was cut to the capture limit ({} bytes in all).", body["size"]));
        }
    }
    if !notes.is_empty() {
        item["description"] = notes.join(" ").into();
    }
    item
}

fn postman_request(req: &Value, url: &Url<'_>) -> Value {
    let headers = fields(&req["headers"]);
    let list: Vec<Value> = headers
        .iter()
        .filter(|(n, _)| !NOT_REPLAYED.iter().any(|h| n.eq_ignore_ascii_case(h)))
        .map(|(k, v)| {
            let mut h = json!({ "key": k, "value": v });
            if v == REDACTED {
                h["disabled"] = true.into();
            }
            h
        })
        .collect();
    let mut out = json!({ "method": req["method"], "header": list, "url": postman_url(url) });
    let body = &req["body"];
    if !body.is_null() {
        let text = body["text"].as_str().unwrap_or("");
        let mime = header(&headers, "content-type");
        let form = mime.is_some_and(is_form) && body["encoding"] == "utf8" && body["truncated"] == false;
        out["body"] = if form {
            let list: Vec<Value> = pairs(text, true).map(|(k, v)| json!({ "key": k, "value": v })).collect();
            json!({ "mode": "urlencoded", "urlencoded": list })
        } else {
            json!({ "mode": "raw", "raw": text, "options": { "raw": { "language": language(mime) } } })
        };
    }
    out
}

/// A Postman URL object; `raw` is the URL as captured.
fn postman_url(url: &Url<'_>) -> Value {
    let host_part = url.authority.rsplit_once(':').filter(|(h, p)| !p.contains(']') && !h.is_empty());
    let (host, port) = match host_part {
        Some((h, p)) => (h, Some(p)),
        None => (url.authority, None),
    };
    let host: Vec<&str> = if host.starts_with('[') { vec![host] } else { host.split('.').collect() };
    let path_only = url.path_and_query.split('?').next().unwrap_or("");
    let path: Vec<&str> = path_only.strip_prefix('/').unwrap_or(path_only).split('/').collect();
    let mut out = json!({ "raw": url.raw, "protocol": url.scheme, "host": host, "path": path });
    if path_only.is_empty() {
        out["path"] = json!([]);
    }
    if let Some(port) = port {
        out["port"] = port.into();
    }
    if let Some(q) = url.query {
        let query: Vec<Value> = q
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| match p.split_once('=') {
                Some((k, v)) => json!({ "key": k, "value": v }),
                None => json!({ "key": p, "value": null }),
            })
            .collect();
        out["query"] = query.into();
    }
    out
}

/// Postman's name for the syntax of a body, from its media type.
fn language(mime: Option<&str>) -> &'static str {
    let m = mime.unwrap_or("").to_ascii_lowercase();
    if m.contains("json") {
        "json"
    } else if m.contains("xml") {
        "xml"
    } else if m.contains("html") {
        "html"
    } else if m.contains("javascript") {
        "javascript"
    } else {
        "text"
    }
}

// ---------------------------------------------------------------------------------------------
// Small pure helpers over record fields and URLs
// ---------------------------------------------------------------------------------------------

/// The parts of an absolute `scheme://authority/path?query` URL, borrowed from it.
#[derive(Debug, PartialEq, Eq)]
struct Url<'a> {
    /// The whole URL.
    raw: &'a str,
    /// `http`, `https`, `ws`, lowercased as found.
    scheme: &'a str,
    /// `host[:port]`, IPv6 in brackets.
    authority: &'a str,
    /// From the first `/` (or `?`) on; empty when the URL has no path.
    path_and_query: &'a str,
    /// After the first `?`, if any.
    query: Option<&'a str>,
}

fn split_url(raw: &str) -> Option<Url<'_>> {
    let (scheme, rest) = raw.split_once("://")?;
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path_and_query) = rest.split_at(end);
    if scheme.is_empty() || authority.is_empty() {
        return None;
    }
    let query = path_and_query.split_once('?').map(|(_, q)| q);
    Some(Url { raw, scheme, authority, path_and_query, query })
}

/// `host:port` with IPv6 literals in brackets.
fn authority(host: &str, port: u64) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// A record's header list as (name, value) pairs.
fn fields(v: &Value) -> Vec<(String, String)> {
    let list = v.as_array().map(Vec::as_slice).unwrap_or(&[]);
    list.iter()
        .map(|h| (str_of(&h["name"]), str_of(&h["value"])))
        .collect()
}

fn str_of(v: &Value) -> String {
    v.as_str().unwrap_or("").to_string()
}

/// The first value of header `name`.
fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

fn is_form(mime: &str) -> bool {
    mime.trim().to_ascii_lowercase().starts_with("application/x-www-form-urlencoded")
}

/// `a=1&b=x%20y` as decoded pairs; `form` also turns `+` into a space.
fn pairs(s: &str, form: bool) -> impl Iterator<Item = (String, String)> + '_ {
    s.split('&').filter(|p| !p.is_empty()).map(move |p| {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        (decode(k, form), decode(v, form))
    })
}

/// Percent-decoding (RFC 3986 §2.1); invalid escapes stay as they are.
fn decode(s: &str, form: bool) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match b[i] {
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' if form => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = include_str!("../tests/fixtures/capture/sample.ndjson");

    #[test]
    fn parse_lines() {
        let ok = r#"{"type":"tunnel","start":"x","host":"h","port":1}"#;
        // (input, Ok(records, truncated) or Err(line))
        let cases: [(String, Result<(usize, bool), usize>); 8] = [
            (String::new(), Ok((0, false))),
            (format!("{ok}\n{ok}\n"), Ok((2, false))),
            (format!("{ok}\n\n{ok}\n"), Ok((2, false))),
            // A complete last record without its newline is whole.
            (format!("{ok}\n{ok}"), Ok((2, false))),
            // A killed writer's leftover: skipped.
            (format!("{ok}\n{{\"type\":\"tun"), Ok((1, true))),
            (format!("{ok}\n{{\"type\":\"tun\n\n"), Ok((1, true))),
            // Broken in the middle: an error naming the line.
            (format!("{ok}\n{{\"type\n{ok}\n"), Err(2)),
            // Valid JSON that is not a record is an error even on the last line.
            (format!("{ok}\n{{\"type\":\"other\",\"start\":\"x\"}}\n"), Err(2)),
        ];
        for (input, expected) in cases {
            let got = parse(input.as_bytes()).map(|p| (p.records.len(), p.truncated)).map_err(|(l, _)| l);
            assert_eq!(got, expected, "{input:?}");
        }
    }

    #[test]
    fn urls() {
        let u = split_url("http://a.example:8080/x/y?q=1&r").unwrap();
        assert_eq!((u.scheme, u.authority, u.path_and_query, u.query), ("http", "a.example:8080", "/x/y?q=1&r", Some("q=1&r")));
        let u = split_url("http://[::1]:80?x").unwrap();
        assert_eq!((u.authority, u.path_and_query, u.query), ("[::1]:80", "?x", Some("x")));
        assert_eq!(split_url("http://a").map(|u| u.path_and_query), Some(""));
        assert!(split_url("a.example:443").is_none());
        assert!(split_url("http:///x").is_none());
        let p = postman_url(&split_url("http://a.example:8080/x/y/?q=1&r").unwrap());
        assert_eq!(p["host"], json!(["a", "example"]));
        assert_eq!(p["port"], "8080");
        assert_eq!(p["path"], json!(["x", "y", ""]));
        assert_eq!(p["query"], json!([{"key": "q", "value": "1"}, {"key": "r", "value": null}]));
        let p = postman_url(&split_url("http://[::1]/").unwrap());
        assert_eq!((p["host"].clone(), p.get("port")), (json!(["[::1]"]), None));
    }

    #[test]
    fn decoding() {
        for (input, form, out) in [
            ("a%20b", false, "a b"),
            ("a+b", false, "a+b"),
            ("a+b", true, "a b"),
            ("100%", true, "100%"),
            ("%zz%4", false, "%zz%4"),
            ("%C3%A9", false, "é"),
        ] {
            assert_eq!(decode(input, form), out, "{input}");
        }
    }

    #[test]
    fn har_of_sample() {
        let records = parse(SAMPLE.as_bytes()).unwrap().records;
        let h = har(&records, "demo");
        let entries = h["log"]["entries"].as_array().unwrap();
        assert_eq!(entries.len(), records.len());
        assert_eq!(h["log"]["version"], "1.2");
        for e in entries {
            for key in ["startedDateTime", "time", "request", "response", "cache", "timings"] {
                assert!(e.get(key).is_some(), "{key} missing in {e}");
            }
            let t = &e["timings"];
            let sum: f64 = ["connect", "send", "wait", "receive"].iter().map(|k| t[k].as_f64().unwrap().max(0.0)).sum();
            assert!((sum - e["time"].as_f64().unwrap()).abs() < 1e-6, "{e}");
        }
        let post = entries.iter().find(|e| e["request"]["method"] == "POST").unwrap();
        assert_eq!(post["request"]["postData"]["mimeType"], "application/json");
        let tunnel = entries.iter().find(|e| e["request"]["method"] == "CONNECT" && e["response"]["status"] == 200);
        let tunnel = tunnel.unwrap();
        assert_eq!(tunnel["_tunnel"]["bytesUp"], 4);
        assert!(tunnel["request"]["url"].as_str().unwrap().starts_with("https://"));
    }

    #[test]
    fn postman_of_sample() {
        let records = parse(SAMPLE.as_bytes()).unwrap().records;
        let c = postman(&records, "demo");
        assert_eq!(c["info"]["schema"], POSTMAN_SCHEMA);
        assert_eq!(c["info"]["name"], "demo");
        let folders = c["item"].as_array().unwrap();
        let https = records.iter().filter(|r| r["type"] == "http").count();
        let items: Vec<&Value> = folders.iter().flat_map(|f| f["item"].as_array().unwrap()).collect();
        assert_eq!(items.len(), https, "one item per exchange, tunnels left out");
        for item in &items {
            let headers = item["request"]["header"].as_array().unwrap();
            assert!(headers.iter().all(|h| h["key"] != "Host" && h["key"] != "Proxy-Authorization"));
            for h in headers.iter().filter(|h| h["value"] == REDACTED) {
                assert_eq!(h["disabled"], true);
            }
        }
        let form = items.iter().find(|i| i["request"]["body"]["mode"] == "urlencoded").unwrap();
        assert_eq!(form["request"]["body"]["urlencoded"][0], json!({"key": "name", "value": "a b"}));
        let json_post = items.iter().find(|i| i["request"]["body"]["options"]["raw"]["language"] == "json").unwrap();
        assert_eq!(json_post["response"][0]["code"], 201);
    }
}

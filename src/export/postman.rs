//! Postman Collection v2.1 from capture records, for replaying with newman or Postman.
//!
//! One folder per host (in order of first appearance), one item per exchange, named
//! `METHOD /path?query`, with the captured response as its saved example. A collection is for
//! replaying, so: CONNECT tunnels are left out (they cannot be replayed); the headers that the
//! sender sets itself or that belong to one connection (Host, Content-Length, Connection,
//! Proxy-*, ...) are left out; redacted values are kept but disabled, so a replay does not send
//! `REDACTED`. A form body (`application/x-www-form-urlencoded`) becomes mode `urlencoded`,
//! anything else mode `raw` (a binary body as its base64 text, said so in the description).
//!
//! [`Options`] add what makes a replay a regression suite: captures of one request merged into
//! one item (`dedupe.rs`), a test script per item from its captured responses
//! (`assertions.rs`), and each origin as a variable (`origins.rs`).

use std::collections::HashMap;

use super::assertions::{expect, script, TestLevel};
use super::origins::{origins, Origin};
use super::{dedupe, fields, form_pairs, header, split_url, str_of, Url};
use crate::capture::REDACTED;
use crate::json::Json;
use crate::obj;

/// What `export --format postman` adds to a plain replay; the default is `--dedupe on` alone.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Options {
    /// A test script for each request (`--tests`, `--tests values`).
    pub tests: Option<TestLevel>,
    /// Each origin as a collection variable (`--base-url-var`).
    pub base_url_var: bool,
    /// One item per capture, not per request (`--dedupe off`).
    pub keep_duplicates: bool,
}

/// The Postman Collection format this writes.
pub const POSTMAN_SCHEMA: &str =
    "https://schema.getpostman.com/json/collection/v2.1.0/collection.json";

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

/// A Postman Collection v2.1: one folder per host (in order of first appearance), one item per
/// request (or per exchange with `keep_duplicates`) with a captured response as its saved
/// example. Tunnels are left out.
pub fn postman(records: &[Json], name: &str, options: &Options) -> Json {
    let http: Vec<&Json> = records
        .iter()
        .filter(|r| {
            r["type"] == "http" && r["request"]["url"].as_str().and_then(split_url).is_some()
        })
        .collect();
    let (groups, group_of) = group(&http);
    let shown: Vec<(&Json, usize)> = match options.keep_duplicates {
        true => http.iter().copied().zip(group_of).collect(),
        false => (0..groups.len())
            .map(|g| (example(&groups[g]), g))
            .collect(),
    };
    let vars = match options.base_url_var {
        true => origins(records),
        false => Vec::new(),
    };
    let mut folders: Vec<(String, Vec<Json>)> = Vec::new();
    for (r, g) in shown {
        let Some(url) = r["request"]["url"].as_str().and_then(split_url) else {
            continue;
        };
        let host = url.authority.to_string();
        let item = suite_item(r, &url, &groups[g], options, &vars);
        match folders.iter_mut().find(|(h, _)| *h == host) {
            Some((_, items)) => items.push(item),
            None => folders.push((host, vec![item])),
        }
    }
    let folders = folders
        .into_iter()
        .map(|(host, item)| obj! { "name" => host, "item" => item });
    let mut collection = obj! {
        "info" => obj! {
            "name" => name,
            "description" => "Captured by smolproxy; replay with newman or open in Postman.",
            "schema" => POSTMAN_SCHEMA,
        },
        "item" => folders.collect::<Vec<_>>(),
    };
    if !vars.is_empty() {
        let list = vars
            .iter()
            .map(|Origin { url, var }| obj! { "key" => var, "value" => url, "type" => "string" });
        collection.set("variable", list.collect::<Vec<_>>());
    }
    collection
}

/// The captures of each request ([`dedupe::key`]), in order of first appearance, and the
/// group of each capture.
fn group<'a>(http: &[&'a Json]) -> (Vec<Vec<&'a Json>>, Vec<usize>) {
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut groups: Vec<Vec<&Json>> = Vec::new();
    let mut group_of = Vec::with_capacity(http.len());
    for r in http {
        let g = *index.entry(dedupe::key(r)).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[g].push(*r);
        group_of.push(g);
    }
    (groups, group_of)
}

/// The item of capture `r`, one of the captures `group` of its request, with what the options
/// add: its origin as a variable, a note on the merged captures, its test script.
fn suite_item(
    r: &Json,
    url: &Url<'_>,
    group: &[&Json],
    options: &Options,
    vars: &[Origin],
) -> Json {
    let origin = format!("{}://{}", url.scheme, url.authority);
    let var = vars
        .iter()
        .find(|o| o.url == origin)
        .map(|o| o.var.as_str());
    let mut item = item(r, url, var);
    if !options.keep_duplicates && group.len() > 1 {
        let which = match std::ptr::eq(r, group[0]) {
            true => "the first capture",
            false => "the first capture the origin answered",
        };
        let n = group.len();
        note(
            &mut item,
            &format!(
            "Captured {n} times as one request (same method, URL without volatile query values, \
             body shape); shown: {which}."
        ),
        );
    }
    if let Some(e) = options.tests.and_then(|level| expect(r, group, level)) {
        let exec: Vec<Json> = script(&e).into_iter().map(Json::from).collect();
        let script = obj! { "type" => "text/javascript", "exec" => exec };
        item.set(
            "event",
            vec![obj! { "listen" => "test", "script" => script }],
        );
    }
    item
}

/// The capture that stands for a request: the first one the origin answered (not a 407 the
/// proxy sent before the client gave its credentials), else the first.
fn example<'a>(group: &[&'a Json]) -> &'a Json {
    let origin = group.iter().find(|r| r["response"]["source"] == "origin");
    origin.or(group.first()).copied().unwrap_or(&Json::Null)
}

/// Appends a sentence to an item's description.
fn note(item: &mut Json, text: &str) {
    let description = match item["description"].as_str() {
        Some(d) => format!("{d} {text}"),
        None => text.to_string(),
    };
    item.set("description", description);
}

/// One exchange: its request, and its response as the saved example. `var` stands for the
/// origin in the URL.
fn item(r: &Json, url: &Url<'_>, var: Option<&str>) -> Json {
    let req = &r["request"];
    let method = req["method"].as_str().unwrap_or("GET");
    let request = request(req, url, var);
    let res = &r["response"];
    let mut examples = Vec::new();
    if !res.is_null() {
        let headers = fields(&res["headers"]);
        examples.push(obj! {
            "name" => format!("{} {}", str_of(&res["status"]), str_of(&res["reason"])).trim_end(),
            "originalRequest" => &request,
            "status" => &res["reason"],
            "code" => &res["status"],
            "_postman_previewlanguage" => language(header(&headers, "content-type")),
            "header" => key_values(&headers),
            "cookie" => Vec::new(),
            "body" => str_of(&res["body"]["text"]),
        });
    }
    let mut notes = Vec::new();
    for (side, body) in [("request", &req["body"]), ("response", &res["body"])] {
        if body["encoding"] == "base64" {
            notes.push(format!(
                "The {side} body was binary; it is shown base64-encoded."
            ));
        }
        if body["truncated"] == true {
            let size = body["size"].as_u64().unwrap_or(0);
            notes.push(format!(
                "The {side} body was cut to the capture limit ({size} bytes in all)."
            ));
        }
    }
    let mut item = obj! {
        "name" => format!("{method} {}", url.path_and_query),
        "request" => request,
        "response" => examples,
    };
    if !notes.is_empty() {
        item.set("description", notes.join(" "));
    }
    item
}

fn request(req: &Json, url: &Url<'_>, var: Option<&str>) -> Json {
    let headers = fields(&req["headers"]);
    let list: Vec<Json> = headers
        .iter()
        .filter(|(n, _)| !NOT_REPLAYED.iter().any(|h| n.eq_ignore_ascii_case(h)))
        .map(|(k, v)| {
            let mut h = obj! { "key" => k, "value" => v };
            if v == REDACTED {
                h.set("disabled", true);
            }
            h
        })
        .collect();
    let mut out =
        obj! { "method" => &req["method"], "header" => list, "url" => postman_url(url, var) };
    let body = &req["body"];
    if !body.is_null() {
        let mime = header(&headers, "content-type");
        let body = match form_pairs(mime, body) {
            Some(params) => {
                let list = params.map(|(k, v)| obj! { "key" => k, "value" => v });
                obj! { "mode" => "urlencoded", "urlencoded" => list.collect::<Vec<_>>() }
            }
            None => {
                let options = obj! { "raw" => obj! { "language" => language(mime) } };
                obj! { "mode" => "raw", "raw" => str_of(&body["text"]), "options" => options }
            }
        };
        out.set("body", body);
    }
    out
}

/// A Postman URL object; `raw` is the URL as captured, or with `{{var}}` for its origin.
fn postman_url(url: &Url<'_>, var: Option<&str>) -> Json {
    let split = url
        .authority
        .rsplit_once(':')
        .filter(|(h, p)| !p.contains(']') && !h.is_empty());
    let (host, port) = match split {
        Some((h, p)) => (h, Some(p)),
        None => (url.authority, None),
    };
    let host: Vec<Json> = if host.starts_with('[') {
        vec![host.into()]
    } else {
        host.split('.').map(Json::from).collect()
    };
    let path_only = url.path_and_query.split('?').next().unwrap_or("");
    let path: Vec<Json> = match path_only.strip_prefix('/') {
        _ if path_only.is_empty() => Vec::new(),
        rest => rest
            .unwrap_or(path_only)
            .split('/')
            .map(Json::from)
            .collect(),
    };
    let mut out = match var {
        // The variable holds scheme, host and port; Postman resolves it, then parses the URL.
        Some(var) => {
            let var = format!("{{{{{var}}}}}");
            let raw = format!("{var}{}", url.path_and_query);
            obj! { "raw" => raw, "host" => vec![Json::from(var)], "path" => path }
        }
        None => obj! { "raw" => url.raw, "protocol" => url.scheme, "host" => host, "path" => path },
    };
    if let (Some(port), None) = (port, var) {
        out.set("port", port);
    }
    if let Some(q) = url.query {
        // Kept encoded, as Postman does: it sends them as written.
        let query = q
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| match p.split_once('=') {
                Some((k, v)) => obj! { "key" => k, "value" => v },
                None => obj! { "key" => p, "value" => Json::Null },
            });
        out.set("query", query.collect::<Vec<_>>());
    }
    out
}

/// Postman's name for the syntax of a body, from its media type.
fn language(mime: Option<&str>) -> &'static str {
    let m = mime.unwrap_or("").to_ascii_lowercase();
    ["json", "xml", "html", "javascript"]
        .into_iter()
        .find(|l| m.contains(l))
        .unwrap_or("text")
}

/// Header pairs as Postman `{key, value}` objects.
fn key_values(headers: &[(String, String)]) -> Vec<Json> {
    headers
        .iter()
        .map(|(k, v)| obj! { "key" => k, "value" => v })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::parse;

    const SAMPLE: &str = include_str!("../../tests/fixtures/capture/sample.ndjson");

    #[test]
    fn urls() {
        // (URL, Postman URL object without raw)
        for (raw, expected) in [
            (
                "http://a.example:8080/x/y/?q=1&r",
                concat!(
                    r#""protocol":"http","host":["a","example"],"path":["x","y",""],"#,
                    r#""port":"8080","#,
                    r#""query":[{"key":"q","value":"1"},{"key":"r","value":null}]}"#
                ),
            ),
            (
                "http://[::1]/",
                r#""protocol":"http","host":["[::1]"],"path":[""]}"#,
            ),
            (
                "http://a.example",
                r#""protocol":"http","host":["a","example"],"path":[]}"#,
            ),
        ] {
            let text = postman_url(&split_url(raw).unwrap(), None).text();
            assert_eq!(text, format!(r#"{{"raw":"{raw}",{expected}"#));
        }
    }

    #[test]
    fn collection_of_sample() {
        let records = parse(SAMPLE.as_bytes()).unwrap().records;
        let all = Options {
            keep_duplicates: true,
            ..Options::default()
        };
        let c = postman(&records, "demo", &all);
        assert!(c["info"]["schema"] == POSTMAN_SCHEMA && c["info"]["name"] == "demo");
        let folders = c["item"].items();
        assert_eq!(folders.len(), 1, "one host in the sample");
        assert_eq!(folders[0]["name"], "api.example.test:8080");
        let items = folders[0]["item"].items();
        let exchanges = records.iter().filter(|r| r["type"] == "http").count();
        assert_eq!(
            items.len(),
            exchanges,
            "one item per exchange, tunnels left out"
        );
        for item in items {
            let headers = item["request"]["header"].items();
            assert!(headers
                .iter()
                .all(|h| h["key"] != "Host" && h["key"] != "Proxy-Authorization"));
            for h in headers.iter().filter(|h| h["value"] == REDACTED) {
                assert_eq!(h["disabled"], true);
            }
        }
        let by_name = |name: &str| items.iter().find(|i| i["name"] == name).unwrap();
        let form = &by_name("POST /form")["request"]["body"];
        assert_eq!(
            form.text(),
            concat!(
                r#"{"mode":"urlencoded","urlencoded":[{"key":"name","value":"a b"},"#,
                r#"{"key":"x","value":"1"}]}"#
            )
        );
        let post = by_name("POST /api/items");
        assert_eq!(
            post["request"]["body"]["options"]["raw"]["language"],
            "json"
        );
        let example = &post["response"][0];
        assert_eq!(
            (example["code"].as_u64(), example["status"].as_str()),
            (Some(201), Some("Created"))
        );
        assert_eq!(example["body"], r#"{"name":"widget","n":3}"#);
        let upload = by_name("PUT /upload");
        assert!(upload["description"].as_str().unwrap().contains("binary"));
        // A 407 the proxy gave: still an item, its example the 407.
        assert!(items
            .iter()
            .any(|i| i["response"][0]["code"].as_u64() == Some(407)));
    }

    #[test]
    fn merged_captures_variables_and_tests() {
        let records = parse(SAMPLE.as_bytes()).unwrap().records;
        let options = Options {
            tests: Some(TestLevel::Shape),
            base_url_var: true,
            keep_duplicates: false,
        };
        let c = postman(&records, "demo", &options);
        assert_eq!(
            c["variable"].text(),
            r#"[{"key":"baseUrl","value":"http://api.example.test:8080","type":"string"}]"#
        );
        let items = c["item"][0]["item"].items();
        // GET /private was captured twice (a 407 of the proxy, then the origin's 200): one
        // item, the origin's answer its example, its checks from that answer.
        assert_eq!(items.len(), 7);
        let private: Vec<&Json> = items
            .iter()
            .filter(|i| i["name"] == "GET /private")
            .collect();
        assert_eq!(private.len(), 1);
        assert_eq!(private[0]["response"][0]["code"].as_u64(), Some(200));
        let description = private[0]["description"].as_str().unwrap();
        assert!(
            description.contains("Captured 2 times") && description.contains("origin answered"),
            "{description}"
        );
        let exec = &private[0]["event"][0]["script"]["exec"];
        assert_eq!(private[0]["event"][0]["listen"], "test");
        assert!(exec
            .items()
            .iter()
            .any(|l| l.as_str().unwrap().contains(r#"pm.test("status is 200""#)));
        let url = &items[0]["request"]["url"];
        assert_eq!(
            url.text(),
            concat!(
                r#"{"raw":"{{baseUrl}}/hello?a=1","host":["{{baseUrl}}"],"path":["hello"],"#,
                r#""query":[{"key":"a","value":"1"}]}"#
            )
        );
        // Every item here was answered by the origin: each has its checks.
        assert!(items.iter().all(|i| !i["event"].is_null()));
        // --dedupe off: both captures, and the proxy's 407 gets no checks.
        let all = Options {
            keep_duplicates: true,
            ..options
        };
        let c = postman(&records, "demo", &all);
        let items = c["item"][0]["item"].items();
        assert_eq!(items.len(), 8);
        let denied = items
            .iter()
            .find(|i| i["response"][0]["code"].as_u64() == Some(407))
            .unwrap();
        assert!(denied["event"].is_null() && denied["description"].is_null());
        // Without options: no variable, no checks.
        let plain = postman(&records, "demo", &Options::default());
        assert!(plain["variable"].is_null());
        assert!(plain["item"][0]["item"]
            .items()
            .iter()
            .all(|i| i["event"].is_null()));
    }
}

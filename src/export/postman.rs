//! Postman Collection v2.1 from capture records, for replaying with newman or Postman.
//!
//! One folder per host (in order of first appearance), one item per exchange, named
//! `METHOD /path?query`, with the captured response as its saved example. A collection is for
//! replaying, so: CONNECT tunnels are left out (they cannot be replayed); the headers that the
//! sender sets itself or that belong to one connection (Host, Content-Length, Connection,
//! Proxy-*, ...) are left out; redacted values are kept but disabled, so a replay does not send
//! `REDACTED`. A form body (`application/x-www-form-urlencoded`) becomes mode `urlencoded`,
//! anything else mode `raw` (a binary body as its base64 text, said so in the description).

use super::{fields, form_pairs, header, split_url, str_of, Url};
use crate::capture::REDACTED;
use crate::json::Json;
use crate::obj;

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
/// exchange with the captured response as its saved example. Tunnels are left out.
pub fn postman(records: &[Json], name: &str) -> Json {
    let mut folders: Vec<(String, Vec<Json>)> = Vec::new();
    for r in records.iter().filter(|r| r["type"] == "http") {
        let Some(url) = r["request"]["url"].as_str().and_then(split_url) else {
            continue;
        };
        let host = url.authority.to_string();
        let item = item(r, &url);
        match folders.iter_mut().find(|(h, _)| *h == host) {
            Some((_, items)) => items.push(item),
            None => folders.push((host, vec![item])),
        }
    }
    let folders = folders
        .into_iter()
        .map(|(host, item)| obj! { "name" => host, "item" => item });
    obj! {
        "info" => obj! {
            "name" => name,
            "description" => "Captured by smolproxy; replay with newman or open in Postman.",
            "schema" => POSTMAN_SCHEMA,
        },
        "item" => folders.collect::<Vec<_>>(),
    }
}

/// One exchange: its request, and its response as the saved example.
fn item(r: &Json, url: &Url<'_>) -> Json {
    let req = &r["request"];
    let method = req["method"].as_str().unwrap_or("GET");
    let request = request(req, url);
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

fn request(req: &Json, url: &Url<'_>) -> Json {
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
    let mut out = obj! { "method" => &req["method"], "header" => list, "url" => postman_url(url) };
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

/// A Postman URL object; `raw` is the URL as captured.
fn postman_url(url: &Url<'_>) -> Json {
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
    let mut out =
        obj! { "raw" => url.raw, "protocol" => url.scheme, "host" => host, "path" => path };
    if let Some(port) = port {
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
            let text = postman_url(&split_url(raw).unwrap()).text();
            assert_eq!(text, format!(r#"{{"raw":"{raw}",{expected}"#));
        }
    }

    #[test]
    fn collection_of_sample() {
        let records = parse(SAMPLE.as_bytes()).unwrap().records;
        let c = postman(&records, "demo");
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
}

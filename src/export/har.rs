//! HAR 1.2 from capture records (<http://www.softwareishard.com/blog/har-12-spec/>).
//!
//! Every required field is filled; what a capture does not know is `-1` where HAR allows it
//! (`headersSize`, the `connect` timing of an answer the proxy gave itself). Our own fields
//! start with `_`, as HAR asks: `_client`, `_user`, `_route`, `_decision`, `_rule` on every
//! entry, `_truncated` on bodies cut to the capture limit, and `_tunnel` on a CONNECT tunnel,
//! which becomes an entry with method CONNECT, URL `https://host:port` and no content. A form
//! body gets its decoded `params` only when it was captured whole, as Postman's `urlencoded`
//! does; a cut one is its `text` alone.
//! `time` is the sum of the timings, as HAR defines it.

use super::{fields, form_pairs, header, pairs, split_url, str_of};
use crate::capture::REDACTED;
use crate::error::reason;
use crate::json::Json;
use crate::obj;
use crate::target::authority;

/// A HAR 1.2 log of the records; `name` becomes the log's comment.
pub fn har(records: &[Json], name: &str) -> Json {
    obj! {
        "log" => obj! {
            "version" => "1.2",
            "creator" => obj! { "name" => "smolproxy", "version" => env!("CARGO_PKG_VERSION") },
            "entries" => records.iter().map(entry).collect::<Vec<_>>(),
            "comment" => name,
        },
    }
}

/// One entry: an exchange, or a tunnel with its `_tunnel` fields.
fn entry(r: &Json) -> Json {
    let t = &r["timings"];
    let connect = t["connect_ms"].micros();
    // HAR: -1 for a phase that does not apply; `time` sums the others.
    let ms = |us: Option<u64>| us.map_or(Json::Num("-1".into()), Json::millis);
    let mut out = if r["type"] == "tunnel" {
        let total = t["total_ms"].micros().unwrap_or(0);
        let receive = total.saturating_sub(connect.unwrap_or(0));
        let status = r["status"]
            .as_u64()
            .and_then(|s| u16::try_from(s).ok())
            .unwrap_or(0);
        let host = r["host"].as_str().unwrap_or("");
        let port = r["port"].as_u64().and_then(|p| u16::try_from(p).ok());
        let text = if status == 200 {
            "Connection established"
        } else {
            reason(status)
        };
        obj! {
            "startedDateTime" => &r["start"],
            "time" => Json::millis(connect.unwrap_or(0) + receive),
            "request" => obj! {
                "method" => "CONNECT",
                "url" => format!("https://{}", authority(host, port.unwrap_or(0))),
                "httpVersion" => "HTTP/1.1",
                "cookies" => Vec::new(),
                "headers" => Vec::new(),
                "queryString" => Vec::new(),
                "headersSize" => -1i64,
                "bodySize" => 0u64,
            },
            "response" => obj! {
                "status" => status,
                "statusText" => text,
                "httpVersion" => "HTTP/1.1",
                "cookies" => Vec::new(),
                "headers" => Vec::new(),
                "content" => obj! { "size" => 0u64, "mimeType" => "x-unknown" },
                "redirectURL" => "",
                "headersSize" => -1i64,
                "bodySize" => 0u64,
            },
            "cache" => obj! {},
            "timings" => obj! {
                "connect" => ms(connect), "send" => 0u64, "wait" => 0u64,
                "receive" => Json::millis(receive),
            },
            "_tunnel" => obj! {
                "host" => &r["host"], "port" => &r["port"], "bytesUp" => &r["bytes_up"],
                "bytesDown" => &r["bytes_down"], "durationMs" => Json::millis(total),
                "route" => &r["route"],
            },
        }
    } else {
        let wait = t["wait_ms"].micros().unwrap_or(0);
        let receive = t["receive_ms"].micros().unwrap_or(0);
        obj! {
            "startedDateTime" => &r["start"],
            "time" => Json::millis(connect.unwrap_or(0) + wait + receive),
            "request" => request(&r["request"]),
            "response" => response(&r["response"]),
            "cache" => obj! {},
            "timings" => obj! {
                "connect" => ms(connect), "send" => 0u64, "wait" => Json::millis(wait),
                "receive" => Json::millis(receive),
            },
        }
    };
    for key in ["client", "user", "route", "decision", "rule"] {
        out.set(&format!("_{key}"), &r[key]);
    }
    out
}

fn request(req: &Json) -> Json {
    let url = req["url"].as_str().unwrap_or("");
    let headers = fields(&req["headers"]);
    let query = split_url(url).and_then(|u| u.query).unwrap_or("");
    let cookies: Vec<Json> = headers
        .iter()
        .filter(|(n, v)| n.eq_ignore_ascii_case("cookie") && v != REDACTED)
        .flat_map(|(_, v)| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .map(|(name, value)| obj! { "name" => name, "value" => value })
        .collect();
    let body = &req["body"];
    let mut out = obj! {
        "method" => &req["method"],
        "url" => url,
        "httpVersion" => req["http_version"].as_str().unwrap_or("HTTP/1.1"),
        "cookies" => cookies,
        "headers" => name_values(&headers),
        "queryString" => pairs(query, false).map(name_value).collect::<Vec<_>>(),
        "headersSize" => -1i64,
        "bodySize" => body["size"].as_u64().unwrap_or(0),
    };
    if !body.is_null() {
        let mime = header(&headers, "content-type").unwrap_or("application/octet-stream");
        let text = str_of(&body["text"]);
        let mut post = obj! { "mimeType" => mime };
        if let Some(params) = form_pairs(Some(mime), body) {
            post.set("params", params.map(name_value).collect::<Vec<_>>());
        }
        post.set("text", text);
        if body["encoding"] == "base64" {
            post.set("_encoding", "base64");
        }
        post.set("_truncated", &body["truncated"]);
        out.set("postData", post);
    }
    out
}

fn response(res: &Json) -> Json {
    if res.is_null() {
        // Nothing could be sent back (the client went away first): HAR's "no response".
        return obj! {
            "status" => 0u64, "statusText" => "", "httpVersion" => "", "cookies" => Vec::new(),
            "headers" => Vec::new(),
            "content" => obj! { "size" => 0u64, "mimeType" => "x-unknown" },
            "redirectURL" => "", "headersSize" => -1i64, "bodySize" => -1i64,
        };
    }
    let headers = fields(&res["headers"]);
    let cookies: Vec<Json> = headers
        .iter()
        .filter(|(n, v)| n.eq_ignore_ascii_case("set-cookie") && v != REDACTED)
        .filter_map(|(_, v)| set_cookie(v))
        .collect();
    let body = &res["body"];
    let size = body["size"].as_u64().unwrap_or(0);
    let mut content = obj! {
        "size" => size,
        "mimeType" => header(&headers, "content-type").unwrap_or("x-unknown"),
    };
    if !body.is_null() {
        content.set("text", &body["text"]);
        if body["encoding"] == "base64" {
            content.set("encoding", "base64");
        }
        content.set("_truncated", &body["truncated"]);
    }
    // What the proxy answered itself was not captured byte for byte: size unknown.
    let body_size = if res["source"] == "proxy" {
        -1
    } else {
        i64::try_from(size).unwrap_or(-1)
    };
    obj! {
        "status" => &res["status"],
        "statusText" => &res["reason"],
        "httpVersion" => &res["http_version"],
        "cookies" => cookies,
        "headers" => name_values(&headers),
        "content" => content,
        "redirectURL" => header(&headers, "location").unwrap_or(""),
        "headersSize" => -1i64,
        "bodySize" => body_size,
        "_source" => &res["source"],
    }
}

/// Header pairs as HAR `{name, value}` objects.
fn name_values(headers: &[(String, String)]) -> Vec<Json> {
    headers
        .iter()
        .map(|(n, v)| obj! { "name" => n, "value" => v })
        .collect()
}

/// A decoded query or form pair as a HAR `{name, value}` object.
fn name_value((name, value): (String, String)) -> Json {
    obj! { "name" => name, "value" => value }
}

/// A HAR cookie from a Set-Cookie value (RFC 6265 §4.1): `name=value; Attr=...`.
fn set_cookie(value: &str) -> Option<Json> {
    let mut parts = value.split(';');
    let (name, val) = parts.next()?.trim().split_once('=')?;
    let mut cookie = obj! { "name" => name, "value" => val };
    for attr in parts {
        let (key, v) = attr.trim().split_once('=').unwrap_or((attr.trim(), ""));
        match key.to_ascii_lowercase().as_str() {
            "path" => cookie.set("path", v),
            "domain" => cookie.set("domain", v),
            "expires" => cookie.set("_expires", v),
            "httponly" => cookie.set("httpOnly", true),
            "secure" => cookie.set("secure", true),
            _ => {}
        }
    }
    Some(cookie)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::parse;

    const SAMPLE: &str = include_str!("../../tests/fixtures/capture/sample.ndjson");

    #[test]
    fn every_required_field() {
        let records = parse(SAMPLE.as_bytes()).unwrap().records;
        let h = har(&records, "demo");
        let entries = h["log"]["entries"].items();
        assert_eq!(entries.len(), records.len());
        assert_eq!(
            (h["log"]["version"].as_str(), h["log"]["comment"].as_str()),
            (Some("1.2"), Some("demo"))
        );
        let required = [
            (
                "",
                &[
                    "startedDateTime",
                    "time",
                    "request",
                    "response",
                    "cache",
                    "timings",
                ][..],
            ),
            (
                "request",
                &[
                    "method",
                    "url",
                    "httpVersion",
                    "cookies",
                    "headers",
                    "queryString",
                    "headersSize",
                    "bodySize",
                ],
            ),
            (
                "response",
                &[
                    "status",
                    "statusText",
                    "httpVersion",
                    "cookies",
                    "headers",
                    "content",
                    "redirectURL",
                    "headersSize",
                    "bodySize",
                ],
            ),
            ("timings", &["send", "wait", "receive"]),
        ];
        for e in entries {
            for (part, keys) in required {
                let obj = if part.is_empty() { e } else { &e[part] };
                for key in keys {
                    assert!(!obj[*key].is_null(), "{part}.{key} missing in {}", e.text());
                }
            }
            let t = &e["timings"];
            let sum: u64 = ["connect", "send", "wait", "receive"]
                .iter()
                .filter_map(|k| t[*k].micros())
                .sum();
            assert_eq!(Json::millis(sum), e["time"], "{}", e.text());
        }
    }

    #[test]
    fn bodies_cookies_and_tunnels() {
        let records = parse(SAMPLE.as_bytes()).unwrap().records;
        let h = har(&records, "demo");
        let entries = h["log"]["entries"].items();
        let find = |method: &str, path: &str| {
            let url = |e: &&Json| {
                e["request"]["url"]
                    .as_str()
                    .is_some_and(|u| u.ends_with(path))
            };
            entries
                .iter()
                .find(|e| e["request"]["method"] == method && url(e))
                .unwrap()
        };
        let post = &find("POST", "/api/items")["request"]["postData"];
        assert_eq!(
            post.text(),
            concat!(
                r#"{"mimeType":"application/json","text":"{\"name\":\"widget\",\"n\":3}","#,
                r#""_truncated":false}"#
            )
        );
        let form = &find("POST", "/form")["request"]["postData"]["params"];
        assert_eq!(
            form.text(),
            r#"[{"name":"name","value":"a b"},{"name":"x","value":"1"}]"#
        );
        let binary = &find("PUT", "/upload")["request"]["postData"];
        assert!(binary["_encoding"] == "base64" && binary["_truncated"] == true);
        let get = find("GET", "/hello?a=1");
        assert_eq!(
            get["request"]["queryString"].text(),
            r#"[{"name":"a","value":"1"}]"#
        );
        assert_eq!(
            get["request"]["cookies"].text(),
            "[]",
            "redacted cookies are not parsed"
        );
        assert_eq!(get["response"]["content"]["mimeType"], "application/json");
        let tunnel = find("CONNECT", "db.example.test:9000");
        assert_eq!(tunnel["_tunnel"]["bytesUp"].as_u64(), Some(4));
        assert_eq!(tunnel["response"]["statusText"], "Connection established");
        let denied = find("CONNECT", ":22");
        assert!(
            denied["response"]["status"].as_u64() == Some(403) && denied["_decision"] == "deny"
        );
        assert_eq!(
            set_cookie("sid=1; Path=/; HttpOnly").unwrap().text(),
            r#"{"name":"sid","value":"1","path":"/","httpOnly":true}"#
        );
    }
}

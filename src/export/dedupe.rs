//! Which captures are the same request, so a collection has one item for them, not one per
//! capture: the same method, the same URL once volatile query values are blanked, and a body
//! of the same shape ([`key`]).
//!
//! A query value is volatile when it is there to differ on every request: a cache buster, a
//! timestamp, a nonce, a signature or token. Told by its name (a short list of the usual
//! ones) or by its look (a UUID, ten digits or more, a date, a long hexadecimal or random-case
//! string). Values that name things (`?page=2`, `?q=shoes`, `?id=42`) are kept, so those
//! requests stay apart. Bodies count by shape, not content: two orders with different items
//! are the same request.

use super::{decode, fields, form_pairs, header, is_json, media_type, split_url};
use crate::json::Json;

use super::shape::Shape;

/// Query parameter names whose value is volatile whatever it looks like (compared without
/// case): cache busters (jQuery's `_`), times, nonces, signatures and tokens.
const VOLATILE_NAMES: [&str; 13] = [
    "_",
    "_t",
    "ts",
    "timestamp",
    "nonce",
    "cb",
    "cachebuster",
    "rand",
    "random",
    "sig",
    "signature",
    "token",
    "access_token",
];

/// Shortest all-hexadecimal value taken for a token or hash (64 bits); shorter hex strings
/// are as often names (`cafe`, `deadbeef`).
const HEX_TOKEN: usize = 16;
/// Shortest value of mixed-case letters and digits taken for a random token (about 119 bits
/// in base64url); slugs and names are one case, or shorter.
const RANDOM_TOKEN: usize = 20;
/// Fewest digits in an all-digit value taken for a time (Unix seconds have 10 since 2001);
/// shorter numbers are ids, pages and counts.
const TIME_DIGITS: usize = 10;

/// The key that captures of one request share: `METHOD URL-with-volatile-values-blanked
/// BODY-SHAPE`.
pub fn key(r: &Json) -> String {
    let req = &r["request"];
    let method = req["method"].as_str().unwrap_or("");
    let raw = req["url"].as_str().unwrap_or("");
    let url = match split_url(raw) {
        Some(u) => {
            let path = u.path_and_query.split('?').next().unwrap_or("");
            let mut url = format!("{}://{}{path}", u.scheme, u.authority);
            if let Some(q) = u.query {
                url.push('?');
                url.push_str(&stable_query(q));
            }
            url
        }
        None => raw.to_string(),
    };
    format!("{method} {url} {}", body_shape(req))
}

/// A query string with the values of volatile parameters removed (`ts=&page=2`).
fn stable_query(q: &str) -> String {
    let pairs: Vec<String> = q
        .split('&')
        .map(|p| match p.split_once('=') {
            Some((k, v)) if volatile(&decode(k, true), &decode(v, true)) => format!("{k}="),
            _ => p.to_string(),
        })
        .collect();
    pairs.join("&")
}

/// Whether a query parameter's value is there to differ on every request (file doc).
fn volatile(name: &str, value: &str) -> bool {
    let named = VOLATILE_NAMES.iter().any(|n| n.eq_ignore_ascii_case(name));
    let b = value.as_bytes();
    let all = |f: fn(&u8) -> bool| !b.is_empty() && b.iter().all(f);
    let any = |f: fn(&u8) -> bool| b.iter().any(f);
    let uuid = b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        });
    let time = b.len() >= TIME_DIGITS && all(u8::is_ascii_digit);
    // 2024-05-01, 2024-05-01T12:00:00Z, ...
    let date = b.len() >= 10
        && b[..10].iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            _ => c.is_ascii_digit(),
        });
    let hex = b.len() >= HEX_TOKEN && all(u8::is_ascii_hexdigit) && any(u8::is_ascii_digit);
    let token_char = |c: &u8| c.is_ascii_alphanumeric() || b"-_.~+/=%".contains(c);
    let random = b.len() >= RANDOM_TOKEN
        && all(token_char)
        && any(u8::is_ascii_uppercase)
        && any(u8::is_ascii_lowercase)
        && any(u8::is_ascii_digit);
    named || uuid || time || date || hex || random
}

/// A request body reduced to what makes two requests different: none, a form's keys, a JSON
/// body's shape, or else only its media type.
fn body_shape(req: &Json) -> String {
    let body = &req["body"];
    if body.is_null() {
        return "-".into();
    }
    let headers = fields(&req["headers"]);
    let mime = header(&headers, "content-type");
    if let Some(pairs) = form_pairs(mime, body) {
        let keys: Vec<String> = pairs.map(|(k, _)| k).collect();
        return format!("form:{}", keys.join("&"));
    }
    let media = media_type(mime);
    let whole_text = body["encoding"] == "utf8" && body["truncated"] == false;
    let parsed = body["text"].as_str().map(Json::parse);
    match parsed {
        Some(Ok(v)) if whole_text && is_json(&media) => {
            format!("json:{}", Shape::of(&v).signature())
        }
        _ => format!("body:{media}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::obj;

    #[test]
    fn volatile_values() {
        // (name, value, volatile)
        for (name, value, expected) in [
            ("_", "1", true),
            ("TS", "x", true),
            ("access_token", "abc", true),
            ("id", "550e8400-e29b-41d4-a716-446655440000", true),
            ("since", "1716890000", true),
            ("since", "1716890000123", true),
            ("from", "2024-05-01", true),
            ("from", "2024-05-01T12:00:00Z", true),
            ("etag", "9f86d081884c7d65", true),
            ("session", "Xa9fQ2LmZt7KpR4sVw1B", true),
            ("jwt", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig", true),
            ("page", "2", false),
            ("id", "42", false),
            ("id", "123456789", false),
            ("q", "shoes", false),
            ("color", "deadbeef", false),
            ("hash", "abcdefabcdefabcdef", false),
            ("slug", "my-long-article-title-2024", false),
            ("sort", "created_at", false),
            ("x", "", false),
        ] {
            assert_eq!(volatile(name, value), expected, "{name}={value}");
        }
    }

    fn record(method: &str, url: &str, ct: Option<&str>, body: Option<&str>) -> Json {
        let headers: Vec<Json> = ct
            .map(|ct| obj! { "name" => "Content-Type", "value" => ct })
            .into_iter()
            .collect();
        let body = body.map(|t| {
            obj! { "size" => 1u64, "truncated" => false, "encoding" => "utf8", "text" => t }
        });
        let req = obj! { "method" => method, "url" => url, "headers" => headers, "body" => body };
        obj! { "request" => req }
    }

    #[test]
    fn keys() {
        let json = Some("application/json");
        let form = Some("application/x-www-form-urlencoded");
        // (record, key)
        for (r, expected) in [
            (
                record(
                    "GET",
                    "http://a.test/items?page=2&_=1716890000123",
                    None,
                    None,
                ),
                "GET http://a.test/items?page=2&_= -",
            ),
            (
                record("GET", "http://a.test:8080?ts=5&q=x%20y", None, None),
                "GET http://a.test:8080?ts=&q=x%20y -",
            ),
            (
                record(
                    "POST",
                    "http://a.test/o",
                    json,
                    Some(r#"{"id":7,"items":[{"n":1}]}"#),
                ),
                r#"POST http://a.test/o json:{"id":number,"items":[{"n":number}]}"#,
            ),
            (
                record("POST", "http://a.test/o", form, Some("a=1&b=2")),
                "POST http://a.test/o form:a&b",
            ),
            (
                record(
                    "PUT",
                    "http://a.test/t",
                    Some("Text/Plain; charset=utf-8"),
                    Some("hi"),
                ),
                "PUT http://a.test/t body:text/plain",
            ),
            // Not JSON after all: by its media type only.
            (
                record("POST", "http://a.test/o", json, Some("{oops")),
                "POST http://a.test/o body:application/json",
            ),
        ] {
            assert_eq!(key(&r), expected);
        }
        // Same shape, other values: the same request. Another key or type: another request.
        let body = |b: &str| key(&record("POST", "http://a.test/o", json, Some(b)));
        assert_eq!(body(r#"{"id":1,"n":"a"}"#), body(r#"{"id":2,"n":"b"}"#));
        assert_ne!(body(r#"{"id":1}"#), body(r#"{"id":"1"}"#));
        assert_ne!(body(r#"{"id":1}"#), body(r#"{"key":1}"#));
        let get = |u: &str| key(&record("GET", u, None, None));
        assert_ne!(get("http://a.test/x?page=1"), get("http://a.test/x?page=2"));
        assert_ne!(get("http://a.test/x"), get("http://b.test/x"));
        assert_ne!(get("http://a.test/x"), get("https://a.test/x"));
    }
}

//! `smolproxy export`: capture files (NDJSON) to a HAR 1.2 log, a Postman Collection v2.1 or
//! a Postman environment.
//!
//! Pure conversion: [`parse`] reads the lines of one capture file into records, [`har()`],
//! [`postman()`] and [`environment()`] (one submodule each) turn records into the output
//! document; `dedupe`, `shape` and `assertions` are what `--tests` and the merging of repeated
//! captures are made of. Only [`run`] touches files, stdout and stderr. A final line that does
//! not parse is what a killed proxy leaves behind: it is skipped with a warning. Any other line
//! that is not a valid record is an error naming its line.
//!
//! `--tests values`: argh has no switch that may take a value, so `--tests` is a switch and
//! `values` arrives among the capture file names, where (after `--tests`) it is the level; a
//! file called `values` is named `./values`.
//!
//! HAR keeps everything (tunnels become entries with `_tunnel` fields, our extra fields start
//! with `_` as HAR 1.2 asks). A Postman collection is for replaying: CONNECT tunnels cannot be
//! replayed and are left out (with a note on stderr); the connection-level headers that
//! Postman sets itself (Host, Content-Length, Connection, ...) are left out of the requests;
//! redacted headers are kept but disabled, so a replay does not send `REDACTED`.

use std::io::Write;
use std::process::ExitCode;

use crate::json::Json;

use crate::config::{ExportArgs, ExportFormat};

mod assertions;
mod dedupe;
mod har;
mod origins;
mod postman;
mod shape;
pub use assertions::TestLevel;
pub use har::har;
pub use origins::environment;
pub use postman::{postman, Options, POSTMAN_SCHEMA};

/// The records of one capture file, in file order.
#[derive(Debug)]
pub struct Parsed {
    /// One JSON object per complete line.
    pub records: Vec<Json>,
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
        let parsed = std::str::from_utf8(line)
            .map_err(|_| "not UTF-8".to_string())
            .and_then(Json::parse)
            .map_err(|e| format!("not JSON: {e}"));
        match parsed.and_then(|v| check(&v).map(|()| v)) {
            Ok(v) => records.push(v),
            Err(why) if Some(i) == last && why.starts_with("not JSON") => truncated = true,
            Err(why) => return Err((i + 1, why)),
        }
    }
    Ok(Parsed { records, truncated })
}

/// Whether a JSON value is a record this version can export.
fn check(v: &Json) -> Result<(), String> {
    let need = |ok: bool, what: &str| match ok {
        true => Ok(()),
        false => Err(format!("not a capture record: no {what}")),
    };
    need(v["start"].as_str().is_some(), "start")?;
    match v["type"].as_str() {
        Some("http") => {
            need(v["request"]["method"].as_str().is_some(), "request.method")?;
            let url = v["request"]["url"].as_str().and_then(split_url);
            need(url.is_some(), "absolute request.url")
        }
        Some("tunnel") => {
            need(v["host"].as_str().is_some(), "host")?;
            need(v["port"].as_u64().is_some(), "port")
        }
        _ => Err("not a capture record: type is neither http nor tunnel".into()),
    }
}

/// The whole command: read every file, convert, print. Exit 0, or 1 with one line saying why.
pub fn run(args: &ExportArgs) -> ExitCode {
    // `--tests` is a switch, so argh hands its optional level over as a positional (file doc).
    let values = args.tests && args.captures.iter().any(|c| c == "values");
    let captures: Vec<&String> = args
        .captures
        .iter()
        .filter(|c| !(args.tests && *c == "values"))
        .collect();
    if captures.is_empty() {
        eprintln!("smolproxy: export: name at least one capture file");
        return ExitCode::from(2);
    }
    if args.format == ExportFormat::Har && (args.tests || args.base_url_var) {
        eprintln!("smolproxy: export: --tests and --base-url-var are for --format postman");
        return ExitCode::from(2);
    }
    let options = Options {
        tests: args.tests.then_some(match values {
            true => TestLevel::Values,
            false => TestLevel::Shape,
        }),
        base_url_var: args.base_url_var,
        keep_duplicates: !args.dedupe,
    };
    let mut records = Vec::new();
    for path in captures {
        let data = match std::fs::read(path) {
            Ok(d) => d,
            Err(e) => {
                eprintln!(
                    "smolproxy: export: cannot read {path}: {}",
                    crate::error::describe(&e)
                );
                return ExitCode::from(1);
            }
        };
        match parse(&data) {
            Ok(parsed) => {
                if parsed.truncated {
                    eprintln!(
                        "warning: {path}: the last line is incomplete (the proxy was stopped \
                         while writing it); skipped"
                    );
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
                eprintln!(
                    "note: {tunnels} CONNECT tunnel(s) left out: a collection cannot replay them"
                );
            }
            postman(&records, &args.name, &options)
        }
        ExportFormat::PostmanEnvironment => environment(&records, &args.name),
    };
    let mut text = doc.pretty();
    text.push('\n');
    let mut out = std::io::stdout().lock();
    let written = out.write_all(text.as_bytes()).and_then(|()| out.flush());
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!(
                "smolproxy: export: cannot write to stdout: {}",
                crate::error::describe(&e)
            );
            ExitCode::from(1)
        }
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
    Some(Url {
        raw,
        scheme,
        authority,
        path_and_query,
        query,
    })
}

/// A record's header list as (name, value) pairs.
fn fields(v: &Json) -> Vec<(String, String)> {
    v.items()
        .iter()
        .map(|h| (str_of(&h["name"]), str_of(&h["value"])))
        .collect()
}

/// The string (or a number's text), or empty.
fn str_of(v: &Json) -> String {
    match v {
        Json::Str(s) | Json::Num(s) => s.clone(),
        _ => String::new(),
    }
}

/// The media type of a Content-Type value, lowercase, without parameters (`text/plain`);
/// empty when there is none.
fn media_type(content_type: Option<&str>) -> String {
    let value = content_type.unwrap_or("");
    value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// Whether a media type is JSON: `application/json` or a `+json` type (RFC 6839 §3.1), as
/// `application/problem+json`.
fn is_json(media_type: &str) -> bool {
    media_type == "application/json" || media_type.ends_with("+json")
}

/// The first value of header `name`.
fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// The decoded pairs of a captured request body that is a whole form, for HAR's `params` and
/// Postman's `urlencoded`: `None` unless its media type is `application/x-www-form-urlencoded`,
/// it was kept as UTF-8 text, and it was not cut to the capture limit (the last pair of a cut
/// body may be cut too, and must not be presented as complete).
fn form_pairs<'a>(
    mime: Option<&str>,
    body: &'a Json,
) -> Option<impl Iterator<Item = (String, String)> + 'a> {
    let form = mime.is_some_and(|m| {
        m.trim()
            .to_ascii_lowercase()
            .starts_with("application/x-www-form-urlencoded")
    });
    let whole = form && body["encoding"] == "utf8" && body["truncated"] == false;
    whole.then(|| pairs(body["text"].as_str().unwrap_or(""), true))
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

    #[test]
    fn parse_lines() {
        let ok = r#"{"type":"tunnel","start":"x","host":"h","port":1}"#;
        // (input, Ok(records, truncated) or Err(line))
        type Expected = Result<(usize, bool), usize>;
        let cases: [(String, Expected); 8] = [
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
            (
                format!("{ok}\n{{\"type\":\"other\",\"start\":\"x\"}}\n"),
                Err(2),
            ),
        ];
        for (input, expected) in cases {
            let got = parse(input.as_bytes())
                .map(|p| (p.records.len(), p.truncated))
                .map_err(|(l, _)| l);
            assert_eq!(got, expected, "{input:?}");
        }
    }

    #[test]
    fn urls() {
        let u = split_url("http://a.example:8080/x/y?q=1&r").unwrap();
        assert_eq!(
            (u.scheme, u.authority, u.path_and_query, u.query),
            ("http", "a.example:8080", "/x/y?q=1&r", Some("q=1&r"))
        );
        let u = split_url("http://[::1]:80?x").unwrap();
        assert_eq!(
            (u.authority, u.path_and_query, u.query),
            ("[::1]:80", "?x", Some("x"))
        );
        assert_eq!(split_url("http://a").map(|u| u.path_and_query), Some(""));
        assert!(split_url("a.example:443").is_none());
        assert!(split_url("http:///x").is_none());
    }

    #[test]
    fn form_bodies() {
        let body = |encoding: &str, truncated: bool| {
            let text = r#""text":"a=1+2&b=%26""#;
            let json = format!(r#"{{"truncated":{truncated},"encoding":"{encoding}",{text}}}"#);
            Json::parse(&json).unwrap()
        };
        let form = Some("Application/X-WWW-Form-Urlencoded; charset=utf-8");
        // (media type, encoding, truncated, pairs)
        for (mime, encoding, truncated, expected) in [
            (form, "utf8", false, Some(vec![("a", "1 2"), ("b", "&")])),
            (form, "utf8", true, None),
            (form, "base64", false, None),
            (Some("text/plain"), "utf8", false, None),
            (None, "utf8", false, None),
        ] {
            let body = body(encoding, truncated);
            let got: Option<Vec<(String, String)>> = form_pairs(mime, &body).map(Iterator::collect);
            let expected = expected.map(|v| {
                v.into_iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect()
            });
            assert_eq!(got, expected, "{mime:?} {encoding} {truncated}");
        }
        // A form body cut to the capture limit is its text alone in both exports: HAR has no
        // params, Postman sends it raw.
        let sample = include_str!("../tests/fixtures/capture/sample.ndjson");
        let line = sample.lines().find(|l| l.contains("name=a+b&x=1")).unwrap();
        let cut = line.replacen(r#""truncated":false"#, r#""truncated":true"#, 1);
        let records = parse(cut.as_bytes()).unwrap().records;
        let post = &har(&records, "cut")["log"]["entries"][0]["request"]["postData"];
        assert!(post["params"].is_null(), "{}", post.text());
        assert!(post["text"] == "name=a+b&x=1" && post["_truncated"] == true);
        let cut = postman(&records, "cut", &Options::default());
        let body = &cut["item"][0]["item"][0]["request"]["body"];
        assert!(body["mode"] == "raw" && body["raw"] == "name=a+b&x=1");
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
}

//! The test script `export --tests` gives a request: Postman sandbox JavaScript (`pm.test`)
//! that checks a replayed response against what the captured ones agreed on ([`expect`]):
//! the status; the media type of `Content-Type`; for a JSON body its shape (`shape.rs`): each
//! key present and its JSON type, arrays by their first element. Never values, unless
//! `--tests values` and the request was captured at least twice with the same value each
//! time: a value seen once may be a date, an id or a token, which differ on every run.
//!
//! A check runs only when the one it depends on passed (a status guard around the body checks,
//! a type guard around an object's keys), so a change fails one named check, not every check
//! under it: an endpoint that now answers 500 fails "status is 200" and nothing else. Other
//! bodies get the status and media type checks only. The script is meant to be read and
//! edited in Postman: one line per check, named like `body.items[0].id is a number`.

use super::shape::Shape;
use super::{fields, header, is_json, media_type};
use crate::json::{quote, Json};

/// How much `--tests` checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestLevel {
    /// Status, media type and JSON shape.
    Shape,
    /// Also the scalar values that were the same in every capture.
    Values,
}

/// Longest value shown in a check's name; the check itself compares the whole value.
const NAME_VALUE_CHARS: usize = 40;

/// What the captured responses of one request agree on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    /// The status of the item's example.
    pub status: u64,
    /// The media type (`application/json`, lowercase) when every capture had the same one.
    pub media_type: Option<String>,
    /// The JSON shape every capture's body had, when the media type is JSON.
    pub body: Option<Shape>,
    /// Why a JSON body's shape is not checked, said in the script.
    pub unchecked: Option<&'static str>,
    /// How many captured responses this comes from.
    pub captures: usize,
    /// The level asked for.
    pub level: TestLevel,
}

/// What to expect of a replay of `example`, from the responses of `same` (every capture of
/// the request, `example` among them) that came from the origin with the example's status.
/// `None` when the example has no response from the origin: an answer of the proxy itself
/// (407, 403, 502) says nothing about what the origin will answer.
pub fn expect(example: &Json, same: &[&Json], level: TestLevel) -> Option<Expected> {
    let res = &example["response"];
    let status = res["status"].as_u64()?;
    if res["source"] != "origin" {
        return None;
    }
    let responses: Vec<&Json> = same
        .iter()
        .map(|r| &r["response"])
        .filter(|r| r["source"] == "origin" && r["status"].as_u64() == Some(status))
        .collect();
    let media = |r: &Json| media_type(header(&fields(&r["headers"]), "content-type"));
    let first = media(res);
    let agreed = !first.is_empty() && responses.iter().all(|r| media(r) == first);
    let media_type = agreed.then_some(first);
    let (mut body, mut unchecked) = (None, None);
    if media_type.as_deref().is_some_and(is_json) {
        match common_shape(&responses) {
            Ok(shape) => body = Some(shape),
            Err(why) => unchecked = Some(why),
        }
    }
    if level == TestLevel::Shape || responses.len() < 2 {
        body = body.map(|b| b.without_values());
    }
    Some(Expected {
        status,
        media_type,
        body,
        unchecked,
        captures: responses.len(),
        level,
    })
}

/// The shape that the JSON bodies of `responses` agree on, or why there is none.
fn common_shape(responses: &[&Json]) -> Result<Shape, &'static str> {
    let mut common: Option<Shape> = None;
    for b in responses.iter().map(|r| &r["body"]) {
        let whole = b["encoding"] == "utf8" && b["truncated"] == false;
        let shape = match b["text"].as_str().map(Json::parse) {
            Some(Ok(v)) if whole => Shape::of(&v),
            _ if b.is_null() => return Err("a captured response had no body"),
            _ if b["truncated"] == true => {
                return Err("the captured body was cut to the capture limit")
            }
            _ => return Err("a captured body was not JSON"),
        };
        common = Some(match common {
            None => shape,
            Some(c) => c
                .common(&shape)
                .ok_or("the captured bodies had different types")?,
        });
    }
    common.ok_or("a captured response had no body")
}

/// The test script, one string per line (Postman's `exec`).
pub fn script(e: &Expected) -> Vec<String> {
    let mut s = Script::default();
    let plural = if e.captures == 1 { "" } else { "s" };
    let mut what = match (&e.body, &e.media_type) {
        (Some(_), _) => "status, media type and JSON shape (keys and types)",
        (None, Some(_)) => "status and media type",
        (None, None) => "status",
    }
    .to_string();
    if e.level == TestLevel::Values && e.captures > 1 && e.body.is_some() {
        what.push_str(&format!(
            ", and the values that were the same in all {}",
            e.captures
        ));
    }
    s.line(&format!(
        "// smolproxy: checks from {} captured response{plural}: {what}.",
        e.captures
    ));
    if e.level == TestLevel::Values && e.captures < 2 && e.body.is_some() {
        s.line("// Values are not checked: captured once, a value may differ on every run.");
    }
    let status = e.status;
    s.test(
        &format!("status is {status}"),
        &format!("pm.response.to.have.status({status})"),
    );
    let Some(media) = &e.media_type else {
        return s.lines;
    };
    s.open(&format!("if (pm.response.code === {status}) {{"));
    s.line(concat!(
        r#"const mediaType = String(pm.response.headers.get("Content-Type"))"#,
        r#".split(";")[0].trim().toLowerCase();"#
    ));
    let m = js_string(media);
    s.test(
        &format!("Content-Type is {media}"),
        &format!("pm.expect(mediaType).to.equal({m})"),
    );
    if let Some(body) = &e.body {
        s.open(&format!("if (mediaType === {m}) {{"));
        s.line("let body;");
        s.line("try { body = pm.response.json(); } catch (e) { /* not JSON: checked below */ }");
        s.line(concat!(
            r#"const jsonType = (v) => (v === null ? "null" : Array.isArray(v) ? "array" : "#,
            "typeof v);"
        ));
        s.shape("body", body);
        s.close();
    }
    if let Some(why) = e.unchecked {
        s.line(&format!("// The body's shape is not checked: {why}."));
    }
    s.close();
    s.lines
}

/// A script being written: lines and the current indentation.
#[derive(Default)]
struct Script {
    /// The lines so far.
    lines: Vec<String>,
    /// Open blocks.
    depth: usize,
}

impl Script {
    fn line(&mut self, text: &str) {
        self.lines
            .push(format!("{}{text}", "    ".repeat(self.depth)));
    }

    /// `pm.test("name", () => assertion);`
    fn test(&mut self, name: &str, assertion: &str) {
        self.line(&format!("pm.test({}, () => {assertion});", js_string(name)));
    }

    fn open(&mut self, text: &str) {
        self.line(text);
        self.depth += 1;
    }

    fn close(&mut self) {
        self.depth -= 1;
        self.line("}");
    }

    /// The checks of the value at `path` (a JavaScript expression, also its name), and the
    /// checks of what is inside it, guarded by its type.
    fn shape(&mut self, path: &str, shape: &Shape) {
        let kind = shape.kind();
        let article = if kind == "object" || kind == "array" {
            "an"
        } else {
            "a"
        };
        let type_check = format!("pm.expect({path}).to.be.{article}(\"{kind}\")");
        match shape {
            Shape::Scalar { value, .. } => {
                self.test(&format!("{path} is {article} {kind}"), &type_check);
                if let Some(v) = value {
                    let mut shown = v.text();
                    if shown.chars().count() > NAME_VALUE_CHARS {
                        shown = shown.chars().take(NAME_VALUE_CHARS).collect::<String>() + "…";
                    }
                    let expected = v.text();
                    self.test(
                        &format!("{path} equals {shown}"),
                        &format!("pm.expect({path}).to.equal({expected})"),
                    );
                }
            }
            Shape::Array(element) => {
                self.test(&format!("{path} is an array"), &type_check);
                // An element that was null says nothing about the next one.
                if let Some(element) = element.as_deref().filter(|e| e.kind() != "null") {
                    self.open(&format!(
                        "if (jsonType({path}) === \"array\" && {path}.length > 0) {{"
                    ));
                    self.shape(&format!("{path}[0]"), element);
                    self.close();
                }
            }
            Shape::Object(fields) => {
                self.test(&format!("{path} is an object"), &type_check);
                if fields.is_empty() {
                    return;
                }
                self.open(&format!("if (jsonType({path}) === \"object\") {{"));
                for (key, value) in fields {
                    let member = member(path, key);
                    if value.kind() == "null" {
                        // Present, type unknown: null here may be a string next time.
                        self.test(
                            &format!("{member} is present"),
                            &format!("pm.expect({path}).to.have.property({})", js_string(key)),
                        );
                    } else {
                        self.shape(&member, value);
                    }
                }
                self.close();
            }
        }
    }
}

/// `path.key`, or `path["key"]` when the key is not a JavaScript identifier.
fn member(path: &str, key: &str) -> String {
    let mut chars = key.chars();
    let start = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == '$');
    if start && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$') {
        format!("{path}.{key}")
    } else {
        format!("{path}[{}]", js_string(key))
    }
}

/// A JavaScript string literal (a JSON one is one).
fn js_string(s: &str) -> String {
    let mut out = String::new();
    quote(&mut out, s);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::obj;

    /// A capture record answered by the origin with `status`, `content_type` and `body`.
    fn record(status: u16, content_type: &str, body: &str, truncated: bool) -> Json {
        let headers = vec![obj! { "name" => "Content-Type", "value" => content_type }];
        let body =
            obj! { "size" => 1u64, "truncated" => truncated, "encoding" => "utf8", "text" => body };
        let res =
            obj! { "status" => status, "source" => "origin", "headers" => headers, "body" => body };
        obj! { "response" => res }
    }

    fn json(body: &str) -> Json {
        record(200, "application/json; charset=utf-8", body, false)
    }

    /// The lines of a script that hold a check, reduced to the check's name.
    fn names(lines: &[String]) -> Vec<String> {
        lines
            .iter()
            .filter_map(|l| {
                let rest = l.trim_start().strip_prefix("pm.test(")?;
                let (name, _) = rest.split_once(", () =>")?;
                Some(serde_like_unquote(name))
            })
            .collect()
    }

    fn serde_like_unquote(s: &str) -> String {
        Json::parse(s).unwrap().as_str().unwrap().to_string()
    }

    #[test]
    fn check_names() {
        // (captured responses, level, names of the checks)
        let cases: Vec<(Vec<Json>, TestLevel, Vec<&str>)> = vec![
            (
                vec![json(
                    r#"{"items":[{"id":1,"tags":["a"]}],"total":1,"next":null}"#,
                )],
                TestLevel::Shape,
                vec![
                    "status is 200",
                    "Content-Type is application/json",
                    "body is an object",
                    "body.items is an array",
                    "body.items[0] is an object",
                    "body.items[0].id is a number",
                    "body.items[0].tags is an array",
                    "body.items[0].tags[0] is a string",
                    "body.total is a number",
                    "body.next is present",
                ],
            ),
            (
                vec![json(r#"{"content-type":"x","ok":true,"list":[],"1st":{}}"#)],
                TestLevel::Shape,
                vec![
                    "status is 200",
                    "Content-Type is application/json",
                    "body is an object",
                    r#"body["content-type"] is a string"#,
                    "body.ok is a boolean",
                    "body.list is an array",
                    r#"body["1st"] is an object"#,
                ],
            ),
            (
                vec![record(404, "text/plain", "no such thing", false)],
                TestLevel::Values,
                vec!["status is 404", "Content-Type is text/plain"],
            ),
            // Values: only with two captures or more, only those that were the same.
            (
                vec![json(r#"{"v":1,"id":7}"#)],
                TestLevel::Values,
                vec![
                    "status is 200",
                    "Content-Type is application/json",
                    "body is an object",
                    "body.v is a number",
                    "body.id is a number",
                ],
            ),
            (
                vec![
                    json(r#"{"v":1,"id":7,"s":"ok","at":"10:00"}"#),
                    json(r#"{"v":1,"id":8,"s":"ok","at":"10:01"}"#),
                ],
                TestLevel::Values,
                vec![
                    "status is 200",
                    "Content-Type is application/json",
                    "body is an object",
                    "body.v is a number",
                    "body.v equals 1",
                    "body.id is a number",
                    r#"body.s is a string"#,
                    r#"body.s equals "ok""#,
                    r#"body.at is a string"#,
                ],
            ),
            (
                vec![json(r#"{"v":1}"#), json(r#"{"v":1}"#)],
                TestLevel::Shape,
                vec![
                    "status is 200",
                    "Content-Type is application/json",
                    "body is an object",
                    "body.v is a number",
                ],
            ),
            // A JSON body cut to the capture limit: status and media type only.
            (
                vec![record(200, "application/json", r#"{"a":[1,2"#, true)],
                TestLevel::Shape,
                vec!["status is 200", "Content-Type is application/json"],
            ),
            // Media types that differ between captures are not checked.
            (
                vec![
                    record(200, "text/plain", "a", false),
                    record(200, "text/html", "b", false),
                ],
                TestLevel::Shape,
                vec!["status is 200"],
            ),
            // A capture with another status does not count.
            (
                vec![json(r#"{"a":1}"#), record(500, "text/plain", "oops", false)],
                TestLevel::Shape,
                vec![
                    "status is 200",
                    "Content-Type is application/json",
                    "body is an object",
                    "body.a is a number",
                ],
            ),
        ];
        for (records, level, expected) in cases {
            let same: Vec<&Json> = records.iter().collect();
            let e = expect(&records[0], &same, level).unwrap();
            assert_eq!(names(&script(&e)), expected, "{records:?}");
        }
    }

    #[test]
    fn whole_script() {
        let r = json(r#"{"user":{"id":1},"tags":["a"]}"#);
        let e = expect(&r, &[&r], TestLevel::Shape).unwrap();
        let expected = r#"// smolproxy: checks from 1 captured response: status, media type and JSON shape (keys and types).
pm.test("status is 200", () => pm.response.to.have.status(200));
if (pm.response.code === 200) {
    const mediaType = String(pm.response.headers.get("Content-Type")).split(";")[0].trim().toLowerCase();
    pm.test("Content-Type is application/json", () => pm.expect(mediaType).to.equal("application/json"));
    if (mediaType === "application/json") {
        let body;
        try { body = pm.response.json(); } catch (e) { /* not JSON: checked below */ }
        const jsonType = (v) => (v === null ? "null" : Array.isArray(v) ? "array" : typeof v);
        pm.test("body is an object", () => pm.expect(body).to.be.an("object"));
        if (jsonType(body) === "object") {
            pm.test("body.user is an object", () => pm.expect(body.user).to.be.an("object"));
            if (jsonType(body.user) === "object") {
                pm.test("body.user.id is a number", () => pm.expect(body.user.id).to.be.a("number"));
            }
            pm.test("body.tags is an array", () => pm.expect(body.tags).to.be.an("array"));
            if (jsonType(body.tags) === "array" && body.tags.length > 0) {
                pm.test("body.tags[0] is a string", () => pm.expect(body.tags[0]).to.be.a("string"));
            }
        }
    }
}"#;
        assert_eq!(script(&e).join("\n"), expected);
    }

    #[test]
    fn no_checks_for_answers_of_the_proxy() {
        let r = Json::parse(r#"{"response":{"status":407,"source":"proxy","headers":[]}}"#);
        let r = r.unwrap();
        assert_eq!(expect(&r, &[&r], TestLevel::Shape), None);
        let none = Json::parse(r#"{"response":null}"#).unwrap();
        assert_eq!(expect(&none, &[&none], TestLevel::Shape), None);
        // A JSON media type and no body (a HEAD): no shape, and the script says why.
        let head = Json::parse(concat!(
            r#"{"response":{"status":200,"source":"origin","#,
            r#""headers":[{"name":"Content-Type","value":"application/json"}],"body":null}}"#
        ))
        .unwrap();
        let lines = script(&expect(&head, &[&head], TestLevel::Shape).unwrap());
        assert_eq!(
            names(&lines),
            ["status is 200", "Content-Type is application/json"]
        );
        assert!(lines
            .iter()
            .any(|l| l.contains("not checked: a captured response had no body")));
        // No Content-Type, no body: the status alone, no empty block.
        let bare = Json::parse(
            r#"{"response":{"status":204,"source":"origin","headers":[],"body":null}}"#,
        )
        .unwrap();
        let lines = script(&expect(&bare, &[&bare], TestLevel::Shape).unwrap());
        assert_eq!(lines.len(), 2, "{lines:?}");
    }

    #[test]
    fn members() {
        for (key, expected) in [
            ("id", "b.id"),
            ("_x$1", "b._x$1"),
            ("content-type", r#"b["content-type"]"#),
            ("1st", r#"b["1st"]"#),
            ("", r#"b[""]"#),
            ("a\"b", r#"b["a\"b"]"#),
            ("é", r#"b["é"]"#),
        ] {
            assert_eq!(member("b", key), expected);
        }
    }
}

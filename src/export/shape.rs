//! The shape of a JSON body: which keys are there and which JSON type each has, down to
//! [`MAX_DEPTH`], arrays by their first element. What the tests of `export --tests` check, and
//! what tells two request bodies apart when captures are merged into one item.
//!
//! Values are not part of a shape, except that a scalar remembers its value for as long as
//! every capture merged into it ([`Shape::common`]) had the same one: the stable values that
//! `--tests values` asserts. This file decides nothing about JavaScript; `assertions.rs`
//! writes the checks.

use crate::json::Json;

/// Levels below the body that are checked: `body.a.b.c.d`, or `body.items[0].id` and one level
/// more. Deeper parts are not checked (their parent's type is). Deep enough for the usual
/// envelopes (`body.data.items[0].id`), shallow enough that a script stays readable: every
/// level is one more indented block.
pub const MAX_DEPTH: usize = 4;

/// Most checks one body gets, the body itself included; the keys beyond (in document order,
/// depth first) are not checked. A captured body may hold 64 KiB of JSON: thousands of keys
/// would make a script nobody reads.
pub const MAX_CHECKS: usize = 50;

/// The shape of one JSON value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shape {
    /// A string, number, boolean or null, and its value while every capture had the same.
    Scalar {
        /// The JSON type, as chai names it: `string`, `number`, `boolean` or `null`.
        kind: &'static str,
        /// The value, if every capture merged into this shape had this one.
        value: Option<Json>,
    },
    /// An array, and the shape of its first element (`None` when empty, or beyond the depth).
    Array(Option<Box<Shape>>),
    /// An object: its keys in order, with their shapes (none beyond the depth).
    Object(Vec<(String, Shape)>),
}

impl Shape {
    /// The shape of `v` within [`MAX_DEPTH`] and [`MAX_CHECKS`].
    pub fn of(v: &Json) -> Shape {
        let mut budget = MAX_CHECKS;
        Shape::bounded(v, 0, &mut budget)
    }

    /// The shape of `v` at `depth`; every shape made takes one from `budget` (the caller
    /// already took this one's).
    fn bounded(v: &Json, depth: usize, budget: &mut usize) -> Shape {
        *budget = budget.saturating_sub(1);
        let deeper = depth < MAX_DEPTH;
        match v {
            Json::Null => Shape::scalar("null", v),
            Json::Bool(_) => Shape::scalar("boolean", v),
            Json::Num(_) => Shape::scalar("number", v),
            Json::Str(_) => Shape::scalar("string", v),
            Json::Arr(a) => {
                let first = a.first().filter(|_| deeper && *budget > 0);
                Shape::Array(first.map(|e| Box::new(Shape::bounded(e, depth + 1, budget))))
            }
            Json::Obj(o) => {
                let mut fields = Vec::new();
                for (k, v) in o.iter().filter(|_| deeper) {
                    if *budget == 0 {
                        break;
                    }
                    fields.push((k.clone(), Shape::bounded(v, depth + 1, budget)));
                }
                Shape::Object(fields)
            }
        }
    }

    fn scalar(kind: &'static str, v: &Json) -> Shape {
        Shape::Scalar {
            kind,
            value: Some(v.clone()),
        }
    }

    /// The JSON type, as chai's `to.be.a(...)` names it.
    pub fn kind(&self) -> &'static str {
        match self {
            Shape::Scalar { kind, .. } => kind,
            Shape::Array(_) => "array",
            Shape::Object(_) => "object",
        }
    }

    /// What two captures of one response agree on: the keys both have, with the type both
    /// gave them, and a value only where both had the same. A key that was `null` in one and
    /// something else in the other stays as `null` (present, type unknown: an optional
    /// value); any other disagreement drops the key. `None` when the types differ.
    pub fn common(&self, other: &Shape) -> Option<Shape> {
        match (self, other) {
            (Shape::Scalar { kind: a, value: x }, Shape::Scalar { kind: b, value: y })
                if a == b =>
            {
                let value = x.clone().filter(|_| x == y);
                Some(Shape::Scalar { kind: a, value })
            }
            (Shape::Scalar { kind: "null", .. }, _) | (_, Shape::Scalar { kind: "null", .. }) => {
                Some(Shape::Scalar {
                    kind: "null",
                    value: None,
                })
            }
            (Shape::Array(a), Shape::Array(b)) => Some(Shape::Array(match (a, b) {
                (Some(a), Some(b)) => a.common(b).map(Box::new),
                // An empty array says nothing about the elements of the other.
                (a, b) => a.clone().or_else(|| b.clone()),
            })),
            (Shape::Object(a), Shape::Object(b)) => Some(Shape::Object(
                a.iter()
                    .filter_map(|(k, x)| {
                        let (_, y) = b.iter().find(|(key, _)| key == k)?;
                        Some((k.clone(), x.common(y)?))
                    })
                    .collect(),
            )),
            _ => None,
        }
    }

    /// This shape with every value forgotten.
    pub fn without_values(&self) -> Shape {
        match self {
            Shape::Scalar { kind, .. } => Shape::Scalar { kind, value: None },
            Shape::Array(e) => Shape::Array(e.as_ref().map(|e| Box::new(e.without_values()))),
            Shape::Object(o) => Shape::Object(
                o.iter()
                    .map(|(k, v)| (k.clone(), v.without_values()))
                    .collect(),
            ),
        }
    }

    /// A compact text of the shape without values, equal for equal shapes:
    /// `{"id":number,"tags":[string]}`. Tells request bodies apart when merging captures.
    pub fn signature(&self) -> String {
        let mut out = String::new();
        self.write_signature(&mut out);
        out
    }

    fn write_signature(&self, out: &mut String) {
        match self {
            Shape::Scalar { kind, .. } => out.push_str(kind),
            Shape::Array(e) => {
                out.push('[');
                if let Some(e) = e {
                    e.write_signature(out);
                }
                out.push(']');
            }
            Shape::Object(o) => {
                out.push('{');
                for (i, (k, v)) in o.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    crate::json::quote(out, k);
                    out.push(':');
                    v.write_signature(out);
                }
                out.push('}');
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(text: &str) -> Shape {
        Shape::of(&Json::parse(text).unwrap())
    }

    #[test]
    fn signatures() {
        // (JSON, signature)
        for (text, expected) in [
            ("3", "number"),
            (r#""x""#, "string"),
            ("null", "null"),
            ("[]", "[]"),
            ("[true,1]", "[boolean]"),
            (
                r#"{"id":1,"tags":["a"],"owner":{"name":"ann","x":null}}"#,
                r#"{"id":number,"tags":[string],"owner":{"name":string,"x":null}}"#,
            ),
            // Depth: body.a.b.c.d is checked (as an object), its keys are not.
            (
                r#"{"a":{"b":{"c":{"d":{"e":1}}}}}"#,
                r#"{"a":{"b":{"c":{"d":{}}}}}"#,
            ),
            (r#"[[[[[1]]]]]"#, "[[[[[]]]]]"),
            (r#"{"a":[{"b":[{"c":1}]}]}"#, r#"{"a":[{"b":[{}]}]}"#),
        ] {
            assert_eq!(shape(text).signature(), expected, "{text}");
        }
    }

    #[test]
    fn at_most_max_checks() {
        let keys: Vec<String> = (0..80).map(|i| format!(r#""k{i}":{{"v":{i}}}"#)).collect();
        let s = shape(&format!("{{{}}}", keys.join(",")));
        let Shape::Object(fields) = &s else { panic!() };
        // The body, then each key and its one child: 1 + 2 × 24 = 49, and one more key.
        assert_eq!(fields.len(), 25);
        assert_eq!(fields[24].1, Shape::Object(vec![]));
        fn count(s: &Shape) -> usize {
            1 + match s {
                Shape::Scalar { .. } => 0,
                Shape::Array(e) => e.as_deref().map_or(0, count),
                Shape::Object(o) => o.iter().map(|(_, v)| count(v)).sum(),
            }
        }
        assert_eq!(count(&s), MAX_CHECKS);
    }

    #[test]
    fn common_parts() {
        // (first capture, second capture, what both agree on; values shown as `=value`)
        fn show(s: &Shape) -> String {
            match s {
                Shape::Scalar {
                    kind,
                    value: Some(v),
                } => format!("{kind}={}", v.text()),
                Shape::Scalar { kind, value: None } => kind.to_string(),
                Shape::Array(e) => format!("[{}]", e.as_deref().map(show).unwrap_or_default()),
                Shape::Object(o) => {
                    let fields: Vec<String> =
                        o.iter().map(|(k, v)| format!("{k}:{}", show(v))).collect();
                    format!("{{{}}}", fields.join(","))
                }
            }
        }
        for (a, b, expected) in [
            ("1", "1", Some("number=1")),
            ("1", "2", Some("number")),
            (r#""1""#, "1", None),
            ("null", r#""x""#, Some("null")),
            (r#""x""#, "null", Some("null")),
            (
                r#"{"id":7,"name":"a","gone":1}"#,
                r#"{"name":"a","id":8,"new":2}"#,
                Some("{id:number,name:string=\"a\"}"),
            ),
            (r#"{"n":1}"#, r#"{"n":"1"}"#, Some("{}")),
            ("[]", r#"[{"a":1}]"#, Some("[{a:number=1}]")),
            (r#"[{"a":1}]"#, "[]", Some("[{a:number=1}]")),
            (r#"[{"a":1}]"#, r#"[{"a":2}]"#, Some("[{a:number}]")),
            ("[1]", r#"["x"]"#, Some("[]")),
            ("{}", "[]", None),
        ] {
            let got = shape(a).common(&shape(b)).map(|s| show(&s));
            assert_eq!(got.as_deref(), expected, "{a} and {b}");
        }
        let s = shape(r#"{"a":[{"b":true}]}"#);
        assert_eq!(show(&s.without_values()), "{a:[{b:boolean}]}");
    }
}

//! JSON values for capture records and exports: build, write, and parse (RFC 8259).
//!
//! A small tree: objects keep their keys in order (so records and exports read in a sensible
//! order), numbers keep their text (nothing here needs floating point: durations are written
//! and read as fixed-point milliseconds, see [`Json::millis`] and [`Json::micros`]). The parser
//! (`json/parse.rs`) is strict and bounded in depth, so a hostile or corrupt capture file is an
//! error, never a panic or a stack overflow. Hand-written for the size budget (SPEC §9):
//! capture and export built on serde_json added 163 KB to the release binary, built on this
//! file 102 KB (measured, x86_64, stripped).

use std::fmt::Write as _;
use std::ops::Index;

mod parse;

/// A JSON value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Json {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A number, as its JSON text.
    Num(String),
    /// A string.
    Str(String),
    /// An array.
    Arr(Vec<Json>),
    /// An object, keys in order.
    Obj(Vec<(String, Json)>),
}

/// What indexing a missing key or element gives.
static NULL: Json = Json::Null;

/// Builds a [`Json::Obj`]: `obj! { "key" => value, ... }`, values anything `Into<Json>`.
#[macro_export]
macro_rules! obj {
    ($($key:expr => $value:expr),* $(,)?) => {
        $crate::json::Json::object(vec![$(($key, $crate::json::Json::from($value))),*])
    };
}

impl Json {
    /// An object from its fields; what [`obj!`] expands to. Not inlined: exports build
    /// hundreds of objects, and one call each keeps the binary small.
    #[inline(never)]
    pub fn object(fields: Vec<(&str, Json)>) -> Json {
        Json::Obj(
            fields
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        )
    }

    /// Milliseconds with microsecond precision from a count of microseconds: `1234` is `1.234`.
    pub fn millis(micros: u64) -> Json {
        Json::Num(format!("{}.{:03}", micros / 1000, micros % 1000))
    }

    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Json::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The number, if this is a non-negative integer that fits.
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Json::Num(n) => n.parse().ok(),
            _ => None,
        }
    }

    /// A non-negative number of milliseconds (`1.5`, `2`, `0.001`) as whole microseconds;
    /// digits beyond the microsecond are dropped.
    pub fn micros(&self) -> Option<u64> {
        let Json::Num(n) = self else { return None };
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        let (int, frac) = n.split_once('.').unwrap_or((n, "0"));
        if !digits(int) || !digits(frac) {
            return None;
        }
        let frac: String = frac.chars().chain("000".chars()).take(3).collect();
        int.parse::<u64>()
            .ok()?
            .checked_mul(1000)?
            .checked_add(frac.parse().ok()?)
    }

    /// The elements, or none if this is not an array.
    pub fn items(&self) -> &[Json] {
        match self {
            Json::Arr(a) => a,
            _ => &[],
        }
    }

    /// Whether this is `null`.
    pub fn is_null(&self) -> bool {
        *self == Json::Null
    }

    /// Sets `key` in an object (replacing an existing value); does nothing to other values.
    pub fn set(&mut self, key: &str, value: impl Into<Json>) {
        let Json::Obj(fields) = self else { return };
        let value = value.into();
        match fields.iter_mut().find(|(k, _)| k == key) {
            Some((_, v)) => *v = value,
            None => fields.push((key.to_string(), value)),
        }
    }

    /// Appends the fields of object `more` to this object.
    pub fn extend(&mut self, more: Json) {
        if let (Json::Obj(fields), Json::Obj(more)) = (self, more) {
            fields.extend(more);
        }
    }

    /// Compact JSON text, one line (no raw control characters even inside strings).
    pub fn text(&self) -> String {
        let mut out = String::new();
        self.write(&mut out, None);
        out
    }

    /// Indented JSON text for people.
    pub fn pretty(&self) -> String {
        let mut out = String::new();
        self.write(&mut out, Some(0));
        out
    }

    fn write(&self, out: &mut String, indent: Option<usize>) {
        // Between elements: a newline and indentation when pretty.
        let newline = |out: &mut String, level: usize| {
            if indent.is_some() {
                out.push('\n');
                for _ in 0..level {
                    out.push_str("  ");
                }
            }
        };
        let inner = indent.map(|i| i + 1);
        match self {
            Json::Null => out.push_str("null"),
            Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Json::Num(n) => out.push_str(n),
            Json::Str(s) => quote(out, s),
            Json::Arr(a) if a.is_empty() => out.push_str("[]"),
            Json::Obj(o) if o.is_empty() => out.push_str("{}"),
            Json::Arr(a) => {
                out.push('[');
                for (i, v) in a.iter().enumerate() {
                    out.push_str(if i == 0 { "" } else { "," });
                    newline(out, inner.unwrap_or(0));
                    v.write(out, inner);
                }
                newline(out, indent.unwrap_or(0));
                out.push(']');
            }
            Json::Obj(o) => {
                out.push('{');
                for (i, (k, v)) in o.iter().enumerate() {
                    out.push_str(if i == 0 { "" } else { "," });
                    newline(out, inner.unwrap_or(0));
                    quote(out, k);
                    out.push_str(if indent.is_some() { ": " } else { ":" });
                    v.write(out, inner);
                }
                newline(out, indent.unwrap_or(0));
                out.push('}');
            }
        }
    }
}

/// Appends `s` as a JSON string literal (RFC 8259 §7).
pub fn quote(out: &mut String, s: &str) {
    out.reserve(s.len() + 2);
    out.push('"');
    // Runs that need no escape are copied whole; every byte that needs one is ASCII, so the
    // slices below always fall on character boundaries.
    let mut run = 0;
    for (i, b) in s.bytes().enumerate() {
        let escape = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..0x20 | 0x7f => "",
            _ => continue,
        };
        out.push_str(&s[run..i]);
        if escape.is_empty() {
            let _ = write!(out, "\\u{b:04x}");
        } else {
            out.push_str(escape);
        }
        run = i + 1;
    }
    out.push_str(&s[run..]);
    out.push('"');
}

impl Index<&str> for Json {
    type Output = Json;
    fn index(&self, key: &str) -> &Json {
        match self {
            Json::Obj(o) => o.iter().find(|(k, _)| k == key).map_or(&NULL, |(_, v)| v),
            _ => &NULL,
        }
    }
}

impl Index<usize> for Json {
    type Output = Json;
    fn index(&self, i: usize) -> &Json {
        self.items().get(i).unwrap_or(&NULL)
    }
}

impl PartialEq<&str> for Json {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == Some(*other)
    }
}

impl PartialEq<bool> for Json {
    fn eq(&self, other: &bool) -> bool {
        *self == Json::Bool(*other)
    }
}

/// `From` conversions, each one call rather than inlined at every use (binary size).
macro_rules! from {
    ($($t:ty => |$v:ident| $e:expr;)*) => {$(
        impl From<$t> for Json {
            #[inline(never)]
            fn from($v: $t) -> Json {
                $e
            }
        }
    )*};
}

from! {
    &str => |s| Json::Str(s.to_string());
    String => |s| Json::Str(s);
    &String => |s| Json::Str(s.clone());
    bool => |b| Json::Bool(b);
    u64 => |n| Json::Num(n.to_string());
    u16 => |n| Json::Num(n.to_string());
    i64 => |n| Json::Num(n.to_string());
    Vec<Json> => |a| Json::Arr(a);
    &Json => |v| v.clone();
}

impl<T: Into<Json>> From<Option<T>> for Json {
    fn from(v: Option<T>) -> Json {
        v.map_or(Json::Null, Into::into)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_escapes_what_rfc_8259_requires_and_copies_the_rest() {
        for (raw, quoted) in [
            ("", r#""""#),
            ("plain", r#""plain""#),
            ("a\u{1}b", r#""a\u0001b""#),
            ("q\"b\\n\nr\rt\td\u{7f}", r#""q\"b\\n\nr\rt\td\u007f""#),
            ("é€\n😀", "\"é€\\n😀\""),
        ] {
            let mut out = String::new();
            quote(&mut out, raw);
            assert_eq!(out, quoted, "{raw:?}");
        }
    }

    macro_rules! cases {
        (micros: $($text:expr => $micros:expr),*) => {$(
            assert_eq!(Json::Num($text.into()).micros(), $micros, "{}", $text);
        )*};
    }

    #[test]
    fn access_and_build() {
        let mut v = obj! { "s" => "x", "n" => 5u64, "none" => None::<&str>, "t" => 1234u64 };
        v.set("t", Json::millis(1234));
        v.set("new", true);
        assert_eq!(
            v.text(),
            r#"{"s":"x","n":5,"none":null,"t":1.234,"new":true}"#
        );
        assert_eq!((v["s"].as_str(), v["n"].as_u64()), (Some("x"), Some(5)));
        assert!(v["missing"]["deeper"].is_null() && v[3].is_null());
        assert!(v["s"] == "x" && v["new"] == true && v["n"] != "5");
        let nested = obj! {"a" => vec![Json::from(1u64)], "b" => obj! {}};
        assert_eq!(
            nested.pretty(),
            "{\n  \"a\": [\n    1\n  ],\n  \"b\": {}\n}"
        );
    }

    #[test]
    fn fixed_point_milliseconds() {
        cases! { micros:
            "1.234" => Some(1234), "2" => Some(2000), "0.5" => Some(500), "0.0015" => Some(1),
            "-1" => None, "1e3" => None, "1." => None
        }
        assert_eq!(Json::millis(5).text(), "0.005");
    }
}

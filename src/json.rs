//! JSON values for capture records and exports: build, write, and parse (RFC 8259).
//!
//! A small tree: objects keep their keys in order (so records and exports read in a sensible
//! order), numbers keep their text (nothing here needs floating point: durations are written
//! and read as fixed-point milliseconds, see [`Json::millis`] and [`Json::micros`]). The parser
//! is strict and bounded in depth, so a hostile or corrupt capture file is an error, never a
//! panic or a stack overflow. Hand-written because this is all the proxy needs, and
//! serde_json cost about 160 KB of binary for the same job (measured; SPEC §9 budget).

use std::fmt::Write as _;
use std::ops::Index;

/// Deepest nesting the parser accepts; capture records are 4 levels deep.
const MAX_DEPTH: usize = 64;

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
        $crate::json::Json::Obj(vec![$(($key.to_string(), $crate::json::Json::from($value))),*])
    };
}

impl Json {
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
        int.parse::<u64>().ok()?.checked_mul(1000)?.checked_add(frac.parse().ok()?)
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

    /// Parses one JSON text (surrounding whitespace allowed). The error says what and where.
    pub fn parse(text: &str) -> Result<Json, String> {
        let mut p = Parser { s: text.as_bytes(), i: 0 };
        let v = p.value(0)?;
        p.ws();
        if p.i != p.s.len() {
            return Err(p.error("unexpected text after the value"));
        }
        Ok(v)
    }
}

/// Appends `s` as a JSON string literal (RFC 8259 §7).
fn quote(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
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

impl From<&str> for Json {
    fn from(s: &str) -> Json {
        Json::Str(s.to_string())
    }
}

impl From<String> for Json {
    fn from(s: String) -> Json {
        Json::Str(s)
    }
}

impl From<&String> for Json {
    fn from(s: &String) -> Json {
        Json::Str(s.clone())
    }
}

impl From<bool> for Json {
    fn from(b: bool) -> Json {
        Json::Bool(b)
    }
}

impl From<u64> for Json {
    fn from(n: u64) -> Json {
        Json::Num(n.to_string())
    }
}

impl From<u16> for Json {
    fn from(n: u16) -> Json {
        Json::Num(n.to_string())
    }
}

impl From<i64> for Json {
    fn from(n: i64) -> Json {
        Json::Num(n.to_string())
    }
}

impl From<Vec<Json>> for Json {
    fn from(a: Vec<Json>) -> Json {
        Json::Arr(a)
    }
}

impl From<&Json> for Json {
    fn from(v: &Json) -> Json {
        v.clone()
    }
}

impl<T: Into<Json>> From<Option<T>> for Json {
    fn from(v: Option<T>) -> Json {
        v.map_or(Json::Null, Into::into)
    }
}

/// A recursive-descent parser over bytes.
struct Parser<'a> {
    /// The whole text.
    s: &'a [u8],
    /// The next byte to read.
    i: usize,
}

impl Parser<'_> {
    fn error(&self, what: &str) -> String {
        format!("{what} at column {}", self.i + 1)
    }

    fn ws(&mut self) {
        while self.s.get(self.i).is_some_and(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    fn eat(&mut self, b: u8) -> bool {
        self.ws();
        let yes = self.s.get(self.i) == Some(&b);
        self.i += usize::from(yes);
        yes
    }

    fn value(&mut self, depth: usize) -> Result<Json, String> {
        if depth > MAX_DEPTH {
            return Err(self.error("nested too deeply"));
        }
        self.ws();
        let word = |p: &mut Parser<'_>, w: &str, v: Json| {
            if p.s[p.i..].starts_with(w.as_bytes()) {
                p.i += w.len();
                Ok(v)
            } else {
                Err(p.error("unexpected character"))
            }
        };
        match self.s.get(self.i) {
            None => Err(self.error("unexpected end")),
            Some(b'n') => word(self, "null", Json::Null),
            Some(b't') => word(self, "true", Json::Bool(true)),
            Some(b'f') => word(self, "false", Json::Bool(false)),
            Some(b'"') => self.string().map(Json::Str),
            Some(b'[') => {
                self.i += 1;
                let mut items = Vec::new();
                if !self.eat(b']') {
                    loop {
                        items.push(self.value(depth + 1)?);
                        if self.eat(b']') {
                            break;
                        }
                        if !self.eat(b',') {
                            return Err(self.error("expected , or ]"));
                        }
                    }
                }
                Ok(Json::Arr(items))
            }
            Some(b'{') => {
                self.i += 1;
                let mut fields = Vec::new();
                if !self.eat(b'}') {
                    loop {
                        self.ws();
                        if self.s.get(self.i) != Some(&b'"') {
                            return Err(self.error("expected a key"));
                        }
                        let key = self.string()?;
                        if !self.eat(b':') {
                            return Err(self.error("expected :"));
                        }
                        fields.push((key, self.value(depth + 1)?));
                        if self.eat(b'}') {
                            break;
                        }
                        if !self.eat(b',') {
                            return Err(self.error("expected , or }"));
                        }
                    }
                }
                Ok(Json::Obj(fields))
            }
            Some(_) => self.number(),
        }
    }

    /// RFC 8259 §6: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`
    fn number(&mut self) -> Result<Json, String> {
        let start = self.i;
        let digits = |p: &mut Parser<'_>| {
            let from = p.i;
            while p.s.get(p.i).is_some_and(u8::is_ascii_digit) {
                p.i += 1;
            }
            p.i > from
        };
        self.i += usize::from(self.s.get(self.i) == Some(&b'-'));
        let leading_zero = self.s.get(self.i) == Some(&b'0');
        if !digits(self) || (leading_zero && self.i - start > 1 + usize::from(self.s[start] == b'-')) {
            self.i = start;
            return Err(self.error("unexpected character"));
        }
        if self.s.get(self.i) == Some(&b'.') {
            self.i += 1;
            if !digits(self) {
                return Err(self.error("bad number"));
            }
        }
        if matches!(self.s.get(self.i), Some(b'e' | b'E')) {
            self.i += 1;
            self.i += usize::from(matches!(self.s.get(self.i), Some(b'+' | b'-')));
            if !digits(self) {
                return Err(self.error("bad number"));
            }
        }
        // The bytes are ASCII digits and signs, so this cannot fail.
        Ok(Json::Num(String::from_utf8_lossy(&self.s[start..self.i]).into_owned()))
    }

    /// A string literal, the opening quote at `self.i`.
    fn string(&mut self) -> Result<String, String> {
        self.i += 1;
        let mut out = Vec::new();
        loop {
            let Some(&b) = self.s.get(self.i) else { return Err(self.error("unterminated string")) };
            self.i += 1;
            match b {
                b'"' => break,
                b'\\' => {
                    let esc = self.s.get(self.i).copied();
                    self.i += 1;
                    let c = match esc {
                        Some(b'"') => '"',
                        Some(b'\\') => '\\',
                        Some(b'/') => '/',
                        Some(b'b') => '\u{8}',
                        Some(b'f') => '\u{c}',
                        Some(b'n') => '\n',
                        Some(b'r') => '\r',
                        Some(b't') => '\t',
                        Some(b'u') => self.unicode()?,
                        _ => return Err(self.error("bad escape")),
                    };
                    out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
                }
                b if b < 0x20 => return Err(self.error("control character in string")),
                b => out.push(b),
            }
        }
        // The input is a &str, and escapes were added as UTF-8: this is valid.
        String::from_utf8(out).map_err(|_| self.error("invalid UTF-8"))
    }

    /// The rest of a `\uXXXX` escape (and of its low surrogate, if it starts a pair).
    fn unicode(&mut self) -> Result<char, String> {
        let hex4 = |p: &mut Parser<'_>| {
            let h = p.s.get(p.i..p.i + 4).and_then(|h| std::str::from_utf8(h).ok());
            let n = h.and_then(|h| u32::from_str_radix(h, 16).ok()).filter(|_| h.is_some_and(|h| !h.starts_with('+')));
            p.i += 4;
            n.ok_or_else(|| p.error("bad \\u escape"))
        };
        let hi = hex4(self)?;
        let code = if (0xd800..0xdc00).contains(&hi) {
            if self.s.get(self.i..self.i + 2) != Some(b"\\u") {
                return Err(self.error("lone surrogate"));
            }
            self.i += 2;
            let lo = hex4(self)?;
            if !(0xdc00..0xe000).contains(&lo) {
                return Err(self.error("lone surrogate"));
            }
            0x10000 + ((hi - 0xd800) << 10) + (lo - 0xdc00)
        } else {
            hi
        };
        char::from_u32(code).ok_or_else(|| self.error("lone surrogate"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for text in [
            r#"{"a":1,"b":[true,false,null],"c":{"d":"e"},"z":-0.5e+3}"#,
            r#"[]"#,
            r#"{}"#,
            r#""\"\\\n\r\t\u0001 é ☃ 😀""#,
            r#"[{"k":[]},{}]"#,
        ] {
            assert_eq!(Json::parse(text).unwrap().text(), text, "{text}");
        }
        // Escapes written the long way come back short.
        assert_eq!(Json::parse(r#""\/\b\u00e9\ud83d\ude00""#).unwrap(), Json::Str("/\u{8}é😀".into()));
    }

    #[test]
    fn rejects() {
        for bad in [
            "", "{", "[1,]", "{\"a\"}", "{\"a\":1,}", "01", "-", "1.", "1e", ".5", "+1", "nul",
            "\"abc", "\"\\x\"", "\"\\ud800\"", "\"\\udc00\"", "\"\\u12\"", "\"\\u+123\"",
            "\"a\u{1}\"", "1 2", "{\"a\":1}x", "[-]", "NaN",
        ] {
            assert!(Json::parse(bad).is_err(), "{bad:?}");
        }
        let deep = "[".repeat(MAX_DEPTH + 2) + &"]".repeat(MAX_DEPTH + 2);
        assert!(Json::parse(&deep).is_err());
    }

    #[test]
    fn access_and_build() {
        let mut v = obj! { "s" => "x", "n" => 5u64, "none" => None::<&str>, "t" => 1234u64 };
        v.set("t", Json::millis(1234));
        v.set("new", true);
        assert_eq!(v.text(), r#"{"s":"x","n":5,"none":null,"t":1.234,"new":true}"#);
        assert_eq!((v["s"].as_str(), v["n"].as_u64(), v["missing"]["deeper"].is_null()), (Some("x"), Some(5), true));
        assert!(v["s"] == "x" && v["new"] == true && v["n"] != "5");
        assert_eq!(v[3], Json::Null);
        assert_eq!(obj! {"a" => vec![Json::from(1u64)], "b" => obj! {}}.pretty(), "{\n  \"a\": [\n    1\n  ],\n  \"b\": {}\n}");
    }

    #[test]
    fn fixed_point_milliseconds() {
        for (text, micros) in [("1.234", Some(1234)), ("2", Some(2000)), ("0.5", Some(500)), ("0.0015", Some(1)), ("-1", None), ("1e3", None), ("1.", None)] {
            assert_eq!(Json::Num(text.into()).micros(), micros, "{text}");
        }
        assert_eq!(Json::millis(5).text(), "0.005");
    }
}

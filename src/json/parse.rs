//! Parsing JSON text (RFC 8259) into a [`Json`] tree: strict, and bounded in depth, so a
//! corrupt or hostile capture file or authorization answer is an error naming the column, never
//! a panic or a stack overflow. Numbers are checked against the grammar and kept as text.
//!
//! Where RFC 8259 leaves a choice, this parser makes serde_json's (tests/json_reference.rs
//! holds the two against each other), so a document means to the proxy what it means to a
//! service written with any mainstream library:
//! - a repeated key keeps its last value, at the key's first place (§4; JavaScript's
//!   `JSON.parse` does the same), so `{"allowed":true,"allowed":false}` is a denial (a scan
//!   finds a repeat in a small object, an index in a large one: never n² for a hostile one);
//! - at most [`MAX_NESTING`] arrays and objects are open at once (§9).
//!
//! One deliberate difference: a number beyond the range of f64 (`1e400`) is accepted and kept
//! as its text (§9 allows any range), where serde_json rejects the document; nothing here reads
//! a number as a float.

use super::Json;

/// Most arrays and objects open at once: serde_json's limit (it counts 128 down and fails at
/// zero), so the two agree on every document. Capture records are 4 levels deep; 127 frames
/// of [`Parser::value`] fit in a small thread stack (see the test).
const MAX_NESTING: usize = 127;
/// Keys of an object checked for repeats by a scan; larger objects get an index. Capture
/// records and authorization answers have fewer.
const SMALL_OBJECT: usize = 16;

impl Json {
    /// Parses one JSON text (surrounding whitespace allowed). The error says what and where.
    /// A repeated key keeps its last value; a number beyond f64 is kept as text (file doc).
    pub fn parse(text: &str) -> Result<Json, String> {
        let mut p = Parser {
            s: text.as_bytes(),
            i: 0,
        };
        let v = p.value(0)?;
        p.ws();
        if p.i != p.s.len() {
            return Err(p.error("unexpected text after the value"));
        }
        Ok(v)
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
        while self
            .s
            .get(self.i)
            .is_some_and(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
        {
            self.i += 1;
        }
    }

    fn eat(&mut self, b: u8) -> bool {
        self.ws();
        let yes = self.s.get(self.i) == Some(&b);
        self.i += usize::from(yes);
        yes
    }

    /// One value, inside `depth` arrays and objects.
    fn value(&mut self, depth: usize) -> Result<Json, String> {
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
            Some(b'[' | b'{') if depth >= MAX_NESTING => Err(self.error("nested too deeply")),
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
                let mut fields: Vec<(String, Json)> = Vec::new();
                let mut index: Option<std::collections::HashMap<String, usize>> = None;
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
                        let value = self.value(depth + 1)?;
                        // A repeated key keeps its last value, at the key's first place (see
                        // the file doc).
                        let seen = match &index {
                            Some(map) => map.get(&key).copied(),
                            None => fields.iter().position(|(k, _)| *k == key),
                        };
                        match seen {
                            Some(at) => fields[at] = (key, value),
                            None => {
                                if let Some(map) = &mut index {
                                    map.insert(key.clone(), fields.len());
                                }
                                fields.push((key, value));
                                // Past a few keys, an index: a hostile object with many keys
                                // costs n, not n², to check for repeats.
                                if index.is_none() && fields.len() > SMALL_OBJECT {
                                    index = Some(
                                        fields
                                            .iter()
                                            .enumerate()
                                            .map(|(i, (k, _))| (k.clone(), i))
                                            .collect(),
                                    );
                                }
                            }
                        }
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
        if !digits(self)
            || (leading_zero && self.i - start > 1 + usize::from(self.s[start] == b'-'))
        {
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
        Ok(Json::Num(
            String::from_utf8_lossy(&self.s[start..self.i]).into_owned(),
        ))
    }

    /// A string literal, the opening quote at `self.i`.
    fn string(&mut self) -> Result<String, String> {
        self.i += 1;
        let mut out = Vec::new();
        loop {
            let Some(&b) = self.s.get(self.i) else {
                return Err(self.error("unterminated string"));
            };
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
            let h =
                p.s.get(p.i..p.i + 4)
                    .and_then(|h| std::str::from_utf8(h).ok());
            let n = h
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .filter(|_| h.is_some_and(|h| !h.starts_with('+')));
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

    macro_rules! cases {
        (round_trip: $($text:expr),*) => {$(
            assert_eq!(Json::parse($text).unwrap().text(), $text, "{}", $text);
        )*};
        (reject: $($bad:expr),*) => {$(
            assert!(Json::parse($bad).is_err(), "{:?}", $bad);
        )*};
    }

    #[test]
    fn round_trips() {
        cases! { round_trip:
            r#"{"a":1,"b":[true,false,null],"c":{"d":"e"},"z":-0.5e+3}"#, "[]", "{}",
            r#""\"\\\n\r\t\u0001 é ☃ 😀""#, r#"[{"k":[]},{}]"#, "-0", "0.25E-2"
        }
        // Escapes written the long way come back short.
        let long = Json::parse(r#""\/\b\u00e9\ud83d\ude00""#).unwrap();
        assert_eq!(long, Json::Str("/\u{8}é😀".into()));
    }

    #[test]
    fn rejects() {
        cases! { reject:
            "", "{", "[1,]", "{\"a\"}", "{\"a\":1,}", "01", "-01", "-", "1.", "1e", ".5", "+1",
            "nul", "\"abc", "\"\\x\"", "\"\\ud800\"", "\"\\udc00\"", "\"\\u12\"", "\"\\u+123\"",
            "\"a\u{1}\"", "1 2", "{\"a\":1}x", "[-]", "NaN", "{1:2}"
        }
    }

    /// `n` arrays, or objects, one inside the other around `inner`.
    fn nested(n: usize, object: bool, inner: &str) -> String {
        let (open, close) = if object { ("{\"k\":", "}") } else { ("[", "]") };
        open.repeat(n) + inner + &close.repeat(n)
    }

    #[test]
    fn nesting_is_bounded_by_containers_as_in_serde_json() {
        // Regression: the bound was 64 and counted scalars too, so `[[…[1]…]]` 65 deep was
        // refused while `[[…[]…]]` 65 deep parsed; serde_json takes 127 containers.
        for (n, object, inner, ok) in [
            (MAX_NESTING, false, "1", true),
            (MAX_NESTING, true, "[]", false),
            (MAX_NESTING, true, "\"s\"", true),
            (MAX_NESTING + 1, false, "", false),
            (MAX_NESTING + 1, true, "0", false),
            (100_000, false, "", false),
        ] {
            let text = nested(n, object, inner);
            assert_eq!(Json::parse(&text).is_ok(), ok, "{n} {object} {inner}");
        }
    }

    #[test]
    fn the_deepest_document_fits_a_small_stack() {
        let text = nested(MAX_NESTING, true, "1");
        let parsed = std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || Json::parse(&text).is_ok())
            .expect("spawn a test thread")
            .join();
        assert!(matches!(parsed, Ok(true)));
    }

    #[test]
    fn a_repeated_key_keeps_its_last_value_at_its_first_place() {
        // Regression: both fields were kept and `v["allowed"]` found the first, so
        // `{"allowed":true,"allowed":false}` read as allowed where serde_json and JavaScript
        // read a denial.
        for (text, fields) in [
            (
                r#"{"allowed":true,"allowed":false}"#,
                r#"{"allowed":false}"#,
            ),
            (r#"{"a":1,"b":2,"a":3}"#, r#"{"a":3,"b":2}"#),
            (r#"{"b":1,"a":2,"b":3,"a":4,"b":5}"#, r#"{"b":5,"a":4}"#),
            (
                r#"{"a":{"x":1,"x":2},"a":[{"y":1,"y":null}]}"#,
                r#"{"a":[{"y":null}]}"#,
            ),
            (r#"{"\u0061":1,"a":2,"ab":3}"#, r#"{"a":2,"ab":3}"#),
        ] {
            assert_eq!(
                Json::parse(text).map(|v| v.text()),
                Ok(fields.into()),
                "{text}"
            );
        }
        assert!(Json::parse(r#"{"allowed":true,"allowed":false}"#).unwrap()["allowed"] == false);
        // Past SMALL_OBJECT keys the repeats are found through the index, with the same result:
        // k0..k39, then k3 and k39 again.
        let keys = |n: usize| (0..n).map(|i| format!(r#""k{i}":{i}"#)).collect::<Vec<_>>();
        let mut text = keys(40);
        text.extend([r#""k3":"again""#.to_string(), r#""k39":null"#.into()]);
        let mut want = keys(40);
        want[3] = r#""k3":"again""#.into();
        want[39] = r#""k39":null"#.into();
        let parsed = Json::parse(&format!("{{{}}}", text.join(",")));
        assert_eq!(
            parsed.map(|v| v.text()),
            Ok(format!("{{{}}}", want.join(",")))
        );
    }

    #[test]
    fn mangled_records_never_panic() {
        let sample = include_str!("../../tests/fixtures/capture/sample.ndjson");
        let line = sample.lines().nth(1).unwrap().as_bytes();
        // Every cut, and every byte replaced by each JSON-significant character.
        for i in 0..line.len() {
            let _ = Json::parse(&String::from_utf8_lossy(&line[..i]));
            for b in *b"{}[]\",:0-e.\\u" {
                let mut m = line.to_vec();
                m[i] = b;
                let _ = Json::parse(&String::from_utf8_lossy(&m));
            }
        }
    }
}

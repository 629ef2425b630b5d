//! The proxy's own JSON parser (`smolproxy::json`) held against serde_json as a reference: the
//! same bytes go to both, both must accept or both reject, and what both accept must be the
//! same value, and must read the same again once written back by `Json::text` and
//! `Json::pretty`.
//!
//! Inputs: generated documents (nested arrays and objects, strings with every escape, `\u` in
//! either case, surrogate pairs and raw non-ASCII, numbers of every shape, whitespace, repeated
//! keys), the same documents damaged (bytes overwritten, inserted, deleted, copied elsewhere,
//! the text cut or followed by garbage; inserted tokens include lone surrogates, control and
//! invalid UTF-8 bytes, leading zeros), random bytes, and a table of known edge cases.
//!
//! How values are compared:
//! - Numbers: we keep a number's text. It equals serde_json's number when serde_json, reading
//!   that text alone, makes the same `serde_json::Number`: integers that fit u64 or i64
//!   exactly, any other number as the same f64 (so `-0` equals `0`, as in serde_json). A digit,
//!   sign or exponent lost or changed in our hands fails; both sides parse the same digits, so
//!   the rounding of serde_json's float parser cannot cause a false failure.
//! - A number beyond f64 (`1e400`): serde_json rejects the whole document ("number out of
//!   range"); we accept it and keep the text (a deliberate difference, see `src/json/parse.rs`).
//!   So the reference replaces each such number by `null` in the bytes before reading them, our
//!   side turns it into `null` too, and the rest of the document is compared as usual.
//! - Objects: our keys must be unique (a repeated key keeps its last value, as in serde_json);
//!   serde_json's map is sorted here (no `preserve_order`), so key order is not compared.
//! - Bytes that are not UTF-8: our parser takes `&str`, so, like its callers, the test checks
//!   UTF-8 first; serde_json rejects such documents too.
//!
//! Both parsers accept 127 nested arrays and objects and reject 128.

use proptest::prelude::*;
use proptest::sample::{select, Index};
use serde_json::Value;
use smolproxy::json::Json;

/// Cases for generated documents and random bytes, and for damaged documents (few of which
/// stay valid, so they need more); the file runs in about two seconds in a debug build.
const VALID_CASES: u32 = 512;
const DAMAGED_CASES: u32 = 3072;

/// What both parsers made of one input.
#[derive(Debug, PartialEq)]
enum Verdict {
    /// Both accept, with the same value.
    Accept,
    /// Both reject.
    Reject,
}

/// Whether serde_json failed only because a number does not fit an f64.
fn out_of_range(e: &serde_json::Error) -> bool {
    e.to_string().starts_with("number out of range")
}

/// Length of the JSON number at the start of `s` (RFC 8259 §6, longest match).
fn number_len(s: &[u8]) -> usize {
    let digits = |i: usize| i + s[i..].iter().take_while(|b| b.is_ascii_digit()).count();
    let mut i = digits(usize::from(s.first() == Some(&b'-')));
    if s.get(i) == Some(&b'.') {
        i = digits(i + 1);
    }
    if matches!(s.get(i), Some(b'e' | b'E')) {
        i += 1;
        i += usize::from(matches!(s.get(i), Some(b'+' | b'-')));
        i = digits(i);
    }
    i
}

/// serde_json's reading of `bytes`, each number beyond f64 replaced by `null` first (file doc).
fn reference(bytes: &[u8]) -> Option<Value> {
    let mut bytes = bytes.to_vec();
    // Each round turns one number into `null`, so there are fewer rounds than bytes.
    for _ in 0..=bytes.len() {
        let e = match serde_json::from_slice(&bytes) {
            Ok(v) => return Some(v),
            Err(e) if out_of_range(&e) => e,
            Err(_) => return None,
        };
        // serde_json points (line, byte column, both from 1) at a byte of the number.
        let line_start = bytes
            .split_inclusive(|&b| b == b'\n')
            .take(e.line() - 1)
            .map(<[u8]>::len)
            .sum::<usize>();
        let at = line_start + e.column() - 1;
        let number = |b: &u8| b.is_ascii_digit() || b"+-.eE".contains(b);
        assert!(bytes.get(at).is_some_and(number), "{e} in {bytes:?}");
        let start = bytes[..at]
            .iter()
            .rposition(|b| !number(b))
            .map_or(0, |i| i + 1);
        let len = number_len(&bytes[start..]);
        bytes.splice(start..start + len, *b"null");
    }
    panic!("serde_json keeps finding numbers out of range in {bytes:?}");
}

/// Our value in serde_json's terms (file doc), or why it cannot be one.
fn to_value(v: &Json) -> Result<Value, String> {
    Ok(match v {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Bool(*b),
        Json::Num(n) => match serde_json::from_str(n) {
            Ok(Value::Number(n)) => Value::Number(n),
            Err(e) if out_of_range(&e) => Value::Null,
            _ => return Err(format!("we kept {n:?} as a number")),
        },
        Json::Str(s) => Value::String(s.clone()),
        Json::Arr(a) => Value::Array(a.iter().map(to_value).collect::<Result<_, _>>()?),
        Json::Obj(o) => {
            let mut map = serde_json::Map::new();
            for (k, v) in o {
                if map.insert(k.clone(), to_value(v)?).is_some() {
                    return Err(format!("we kept the key {k:?} twice"));
                }
            }
            Value::Object(map)
        }
    })
}

/// The common verdict of both parsers on `bytes`, or how they disagree.
fn verdict(bytes: impl AsRef<[u8]>) -> Result<Verdict, String> {
    let bytes = bytes.as_ref();
    let ours = std::str::from_utf8(bytes)
        .map_err(|e| e.to_string())
        .and_then(Json::parse);
    let v = match (ours, reference(bytes)) {
        (Err(_), None) => return Ok(Verdict::Reject),
        (Ok(v), None) => return Err(format!("we accept {v:?}, serde_json rejects")),
        (Err(e), Some(r)) => return Err(format!("we reject ({e}), serde_json reads {r}")),
        (Ok(v), Some(r)) if to_value(&v).as_ref() != Ok(&r) => {
            return Err(format!("we read {:?}, serde_json {r}", to_value(&v)))
        }
        (Ok(v), Some(_)) => v,
    };
    // Written back, compact or pretty, it is the same value to both parsers.
    for text in [v.text(), v.pretty()] {
        if Json::parse(&text).as_ref() != Ok(&v) {
            return Err(format!(
                "{text:?}, written from {v:?}, reads back differently"
            ));
        }
        if reference(text.as_bytes()) != to_value(&v).ok() {
            return Err(format!(
                "serde_json reads {text:?}, written from {v:?}, differently"
            ));
        }
    }
    Ok(Verdict::Accept)
}

/// Runs [`verdict`] in a property.
fn check(bytes: &[u8]) -> Result<Verdict, TestCaseError> {
    verdict(bytes).map_err(|e| TestCaseError::fail(format!("{e}\n  input {bytes:?}")))
}

/// Whitespace as RFC 8259 §2 allows it, most often none.
fn ws() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => Just(String::new()),
        1 => prop::collection::vec(select(&[" ", "\t", "\n", "\r"][..]), 1..4)
            .prop_map(|w| w.concat()),
    ]
}

/// Numbers of every shape: the grammar at random (exponents up to 999, so some out of f64's
/// range), and the edges of u64, i64 and f64.
fn number() -> impl Strategy<Value = String> {
    const EDGES: &str = "0 -0 -0.0 0e0 0E-0 1E+2 0.1 5e-324 2e-324 1e-400 18446744073709551615 \
        18446744073709551616 -9223372036854775808 -9223372036854775809 9007199254740993 \
        1.7976931348623157e308 1.7976931348623159e308 1e400 -1e400 0e400 \
        123456789012345678901234567890";
    prop_oneof![
        "-?(0|[1-9][0-9]{0,24})(\\.[0-9]{1,20})?([eE][+-]?[0-9]{1,3})?",
        select(EDGES.split(' ').map(String::from).collect::<Vec<_>>()),
    ]
}

/// A string literal: plain text, every escape of RFC 8259 §7 (`\u` in either case of hex, a
/// surrogate pair for a character beyond the BMP) and raw non-ASCII.
fn string() -> impl Strategy<Value = String> {
    let escaped = |c: char, upper: bool| {
        let mut units = [0; 2];
        let hex = c
            .encode_utf16(&mut units)
            .iter()
            .map(|u| format!("\\u{u:04x}"));
        let hex = hex.collect::<String>();
        if upper {
            hex.to_uppercase().replace("\\U", "\\u")
        } else {
            hex
        }
    };
    let piece = prop_oneof![
        "[a-zA-Z0-9 !#$%&'()*+,./:;<=>?@^_`{|}~-]{1,8}",
        select(&["\\\"", "\\\\", "\\/", "\\b", "\\f", "\\n", "\\r", "\\t"][..])
            .prop_map(String::from),
        // A raw character where JSON allows it raw, escaped where it must be.
        any::<char>().prop_map(move |c| match c {
            '\0'..='\u{1f}' | '"' | '\\' => escaped(c, false),
            c => c.to_string(),
        }),
        (any::<char>(), any::<bool>()).prop_map(move |(c, upper)| escaped(c, upper)),
    ];
    prop::collection::vec(piece, 0..6).prop_map(|p| format!("\"{}\"", p.concat()))
}

/// An object key: often one of a few, so that keys repeat (`"\u0061"` is `"a"` too).
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => select(&["\"a\"", "\"b\"", "\"\\u0061\"", "\"\""][..]).prop_map(String::from),
        1 => string(),
    ]
}

/// A JSON text: any value, nested up to 6 deep, with whitespace around every token.
fn document() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        select(&["null", "true", "false"][..]).prop_map(String::from),
        number(),
        string(),
    ];
    let value = leaf.prop_recursive(6, 48, 5, |inner| {
        let item = (ws(), inner.clone(), ws()).prop_map(|(a, v, b)| format!("{a}{v}{b}"));
        let field = (ws(), key(), ws(), ws(), inner, ws())
            .prop_map(|(a, k, b, c, v, d)| format!("{a}{k}{b}:{c}{v}{d}"));
        prop_oneof![
            (ws(), prop::collection::vec(item, 0..5)).prop_map(|(w, items)| match items {
                items if items.is_empty() => format!("[{w}]"),
                items => format!("[{}]", items.join(",")),
            }),
            (ws(), prop::collection::vec(field, 0..5)).prop_map(|(w, fields)| match fields {
                fields if fields.is_empty() => format!("{{{w}}}"),
                fields => format!("{{{}}}", fields.join(",")),
            }),
        ]
    });
    (ws(), value, ws()).prop_map(|(a, v, b)| format!("{a}{v}{b}"))
}

/// What damage inserts or writes over a byte: JSON's own characters, the start of escapes,
/// lone and paired surrogates, control characters, bytes that are not UTF-8 (a surrogate
/// encoded in UTF-8, an overlong `/`, a code point past U+10FFFF), a BOM, leading zeros,
/// numbers out of range, a repeated key.
#[rustfmt::skip] // A table, grouped by kind, reads better than one token a line.
const TOKENS: &[&[u8]] = &[
    b"{", b"}", b"[", b"]", b"\"", b",", b":", b"\\", b"0", b"-", b"+", b".", b"e", b"E",
    b" ", b"\t", b"\n", b"\r", b"\x00", b"\x01", b"\x1f", b"\x7f",
    b"\x80", b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xc0\xaf", b"\xf4\x90\x80\x80", b"\xef\xbb\xbf",
    b"\\u", b"\\u00", b"\\ud800", b"\\udbff\\u0041", b"\\udc00", b"\\uDFFF", b"\\ud83d\\ude00",
    b"\\x", b"\\'", b"null", b"tru", b"01", b"-0", b"1e400", b"9e99999999999999999999",
    b"\"a\":1,", b",\"a\":2", b"NaN", b"/*", b"\xc3\xa9",
];

/// One piece of damage to a document.
#[derive(Debug, Clone)]
enum Damage {
    /// Write a token (or a random byte) over the byte at a place.
    Overwrite(Index, Vec<u8>),
    /// Insert a token (or a random byte) at a place.
    Insert(Index, Vec<u8>),
    /// Cut the text at a place.
    Truncate(Index),
    /// Delete up to 8 bytes from a place.
    Delete(Index, usize),
    /// Copy up to 16 bytes from one place to another (repeats keys and values).
    Copy(Index, usize, Index),
    /// Append garbage.
    Append(Vec<u8>),
}

impl Damage {
    fn apply(&self, v: &mut Vec<u8>) {
        match self {
            Damage::Overwrite(at, t) if !v.is_empty() => {
                let at = at.index(v.len());
                v.splice(at..at + 1, t.iter().copied());
            }
            Damage::Overwrite(..) => {}
            Damage::Insert(at, t) => {
                let at = at.index(v.len() + 1);
                v.splice(at..at, t.iter().copied());
            }
            Damage::Truncate(at) => v.truncate(at.index(v.len() + 1)),
            Damage::Delete(at, n) => {
                let at = at.index(v.len() + 1);
                v.drain(at..(at + n).min(v.len()));
            }
            Damage::Copy(from, n, to) => {
                let from = from.index(v.len() + 1);
                let piece = v[from..(from + n).min(v.len())].to_vec();
                let to = to.index(v.len() + 1);
                v.splice(to..to, piece);
            }
            Damage::Append(t) => v.extend_from_slice(t),
        }
    }
}

/// A generated document with one to four pieces of damage.
fn damaged() -> impl Strategy<Value = Vec<u8>> {
    let token = prop_oneof![
        3 => select(TOKENS).prop_map(<[u8]>::to_vec),
        1 => any::<u8>().prop_map(|b| vec![b]),
    ];
    let damage = prop_oneof![
        3 => (any::<Index>(), token.clone()).prop_map(|(at, t)| Damage::Overwrite(at, t)),
        3 => (any::<Index>(), token.clone()).prop_map(|(at, t)| Damage::Insert(at, t)),
        1 => any::<Index>().prop_map(Damage::Truncate),
        1 => (any::<Index>(), 1..8usize).prop_map(|(at, n)| Damage::Delete(at, n)),
        1 => (any::<Index>(), 1..16usize, any::<Index>())
            .prop_map(|(from, n, to)| Damage::Copy(from, n, to)),
        1 => token.prop_map(Damage::Append),
    ];
    (document(), prop::collection::vec(damage, 1..5)).prop_map(|(doc, damage)| {
        let mut v = doc.into_bytes();
        for d in &damage {
            d.apply(&mut v);
        }
        v
    })
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: VALID_CASES,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn generated_documents_read_the_same(doc in document()) {
        // Every generated document is valid JSON: a rejection here is a finding too.
        prop_assert_eq!(check(doc.as_bytes())?, Verdict::Accept);
    }

    #[test]
    fn random_bytes_get_the_same_verdict(bytes in prop::collection::vec(any::<u8>(), 0..32)) {
        check(&bytes)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: DAMAGED_CASES,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn damaged_documents_get_the_same_verdict(bytes in damaged()) {
        check(&bytes)?;
    }
}

/// `n` arrays or objects, one inside the other, around `inner`.
fn nested(n: usize, object: bool, inner: &str) -> String {
    let (open, close) = if object { ("{\"k\":", "}") } else { ("[", "]") };
    open.repeat(n) + inner + &close.repeat(n)
}

macro_rules! agree {
    ($($text:expr => $verdict:ident),* $(,)?) => {$(
        assert_eq!(verdict($text), Ok(Verdict::$verdict), "{:?}", $text);
    )*};
}

#[test]
fn edge_cases_get_the_same_verdict() {
    agree! {
        // Numbers: signs, zeros, exponents, the edges of u64, i64 and f64.
        "0" => Accept, "-0" => Accept, "-0.0" => Accept, "0.0e-0" => Accept, "1E+2" => Accept,
        "1e-400" => Accept, "18446744073709551615" => Accept,
        "18446744073709551616" => Accept, "-9223372036854775808" => Accept,
        "-9223372036854775809" => Accept, "1.7976931348623157e308" => Accept,
        "123456789012345678901234567890" => Accept, "[1e400, -1e400 ,2e308]" => Accept,
        "0e400" => Accept, "[\"é\", {\"x\":\n 1.5e999999999999999}]" => Accept,
        "01" => Reject, "-01" => Reject, "00" => Reject, "1." => Reject, ".1" => Reject,
        "1e" => Reject, "1e+" => Reject, "+1" => Reject, "-" => Reject, "--1" => Reject,
        "0x10" => Reject, "NaN" => Reject, "Infinity" => Reject, "-Infinity" => Reject,
        "1_000" => Reject, "1.5e400.5" => Reject, "[1e400 x]" => Reject,
        // Structure, whitespace, what may follow the value.
        " \t\r\n[ ]\n" => Accept, "{ }" => Accept, "[[],{},[{}]]" => Accept,
        "" => Reject, " " => Reject, "[1,]" => Reject, "[,1]" => Reject, "{\"a\":1,}" => Reject,
        "{,}" => Reject, "{\"a\"}" => Reject, "{\"a\" 1}" => Reject, "{a:1}" => Reject,
        "{'a':1}" => Reject, "[1 2]" => Reject, "1 2" => Reject, "[1]x" => Reject,
        "{\"a\":1}{}" => Reject, "//c\n1" => Reject, "/*c*/1" => Reject, "\u{feff}1" => Reject,
        "\u{a0}1" => Reject, "\x0c1" => Reject, "nul" => Reject, "nulll" => Reject,
        "True" => Reject, "\x00" => Reject,
        // Strings: escapes, surrogates, control characters, raw non-ASCII.
        "\"\"" => Accept, "\"\\u0000\"" => Accept, "\"\\uD83D\\uDE00\\ud83d\\ude00\"" => Accept,
        "\"\\uFFFF\\u00e9\\u00E9\\/\"" => Accept, "\"\u{7f}\u{2028}😀\"" => Accept,
        "\"\\ud800\"" => Reject, "\"\\udc00\"" => Reject, "\"\\ud800\\u0041\"" => Reject,
        "\"\\ud800\\n\"" => Reject, "\"\\ud800\\ud800\"" => Reject, "\"\\ude00\\ud83d\"" => Reject,
        "\"\\u12\"" => Reject, "\"\\u12G4\"" => Reject, "\"\\u+123\"" => Reject,
        "\"\\u-123\"" => Reject, "\"\\x41\"" => Reject, "\"\\'\"" => Reject,
        "\"\\U0041\"" => Reject, "\"a\u{1}\"" => Reject, "\"\t\"" => Reject, "\"\n\"" => Reject,
        "\"abc" => Reject, "\"\\" => Reject, "[\"a\\\"]" => Reject,
        b"\"\xff\"" => Reject, b"\"\xed\xa0\x80\"" => Reject, b"\"\xc0\xaf\"" => Reject,
        b"\"\xf4\x90\x80\x80\"" => Reject, b"\"\xc3\"" => Reject,
        // Repeated keys: the last value counts.
        "{\"a\":1,\"a\":2}" => Accept, "{\"a\":1,\"\\u0061\":[2],\"b\":3,\"a\":{}}" => Accept,
        // Depth: 127 arrays and objects, not 128, whatever is inside.
        nested(127, false, "") => Accept, nested(127, true, "1") => Accept,
        nested(128, false, "") => Reject, nested(128, true, "null") => Reject,
        nested(64, false, &nested(63, true, "\"x\"")) => Accept,
        nested(64, false, &nested(64, true, "[]")) => Reject,
    }
}

#[test]
fn what_we_keep_is_what_was_written() {
    // Our own value, independent of serde_json: number text verbatim, escapes decoded, the
    // last value of a repeated key at the key's first place.
    for (text, compact) in [
        (
            " [ -0 , 1E400 ,0.50, 18446744073709551616 ] ",
            "[-0,1E400,0.50,18446744073709551616]",
        ),
        (
            r#""\u00e9\ud83d\ude00\/\b\u001F""#,
            "\"é😀/\\u0008\\u001f\"",
        ),
        (r#"{"a":1,"b":2,"a":3}"#, r#"{"a":3,"b":2}"#),
        (r#"{"b":{"a":1,"a":2},"\u0062":false}"#, r#"{"b":false}"#),
    ] {
        assert_eq!(
            Json::parse(text).map(|v| v.text()),
            Ok(compact.into()),
            "{text}"
        );
    }
}

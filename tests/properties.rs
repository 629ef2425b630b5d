//! Property tests for the parsers, on the stable toolchain in the normal suite.
//!
//! Two kinds of property: no input makes a parser panic (arbitrary bytes, and valid messages
//! with random damage, which reach deeper than noise), and parse → serialize → parse round
//! trips: a chunked body encoded here and relayed in Pass mode comes out byte for byte, in
//! Decode mode as the original data; a generated request or response head parses back to the
//! same method, target, status and fields; a parsed target printed and parsed again is the same.
//! The fuzz targets under `fuzz/` search the same ground for longer with coverage feedback.
//! Case counts are kept modest so the whole file runs in a few seconds.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_lite::future::block_on;
use futures_lite::AsyncRead;
use proptest::prelude::*;
use smolproxy::body::{parse_chunk_size, relay, Mode};
use smolproxy::head::{parse_request, parse_response, Framing};
use smolproxy::reader::Reader;
use smolproxy::target::{Scheme, Target};

/// Cases per property: enough to shake out edge cases, small enough for a quick suite.
const CASES: u32 = 256;

fn config() -> ProptestConfig {
    ProptestConfig { cases: CASES, failure_persistence: None, ..ProptestConfig::default() }
}

/// A reader that hands out at most `step` bytes per read, so that size lines, CRLFs and
/// trailers straddle reads the way they do on a real socket.
struct Trickle<'a> {
    /// What is left to read.
    data: &'a [u8],
    /// Most bytes returned by one read.
    step: usize,
}

impl AsyncRead for Trickle<'_> {
    fn poll_read(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let n = self.step.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Poll::Ready(Ok(n))
    }
}

/// Relays `input` as a body with `framing`, read `step` bytes at a time.
fn run(input: &[u8], step: usize, framing: Framing, mode: Mode) -> Result<Vec<u8>, String> {
    let mut src = Reader::new(Trickle { data: input, step }, Duration::from_secs(1));
    let mut out = Vec::new();
    block_on(relay(&mut src, &mut out, framing, mode, Duration::from_secs(1)))
        .map(|n| {
            assert_eq!(n, out.len() as u64, "relay reported a wrong byte count");
            out
        })
        .map_err(|e| format!("{e:?}"))
}

/// Valid messages to damage.
const SAMPLES: [&[u8]; 4] = [
    b"GET http://example.com/a?b HTTP/1.1\r\nHost: example.com\r\nConnection: keep-alive\r\n\r\n",
    b"POST http://a:8080/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nVia: 1.1 b\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nX-A: b\r\n c\r\nConnection: close\r\n\r\n",
    b"5;ext=1\r\nhello\r\nA\r\n0123456789\r\n0\r\nX-T: 1\r\n\r\n",
];

/// A valid sample with a few bytes overwritten, inserted or cut.
fn damaged() -> impl Strategy<Value = Vec<u8>> {
    (0..SAMPLES.len(), prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0..3u8), 1..4))
        .prop_map(|(i, edits)| {
            let mut v = SAMPLES[i].to_vec();
            for (at, byte, kind) in edits {
                let at = at.index(v.len() + 1);
                match kind {
                    0 if at < v.len() => v[at] = byte,
                    1 => v.insert(at, byte),
                    _ => v.truncate(at),
                }
            }
            v
        })
}

/// Arbitrary bytes, or damaged valid messages.
fn noise() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![prop::collection::vec(any::<u8>(), 0..600), damaged()]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn request_parser_never_panics(input in noise()) {
        if let Ok(req) = parse_request(&input) {
            let _ = (req.keep_alive(), req.is_upgrade(), req.expects_continue(), req.passed_through("x"));
            let _ = (req.head.fields().count(), req.target.to_string());
        }
    }

    #[test]
    fn response_parser_never_panics(input in noise(), head_request in any::<bool>()) {
        if let Ok(res) = parse_response(&input, head_request) {
            let _ = (res.keep_alive(), res.head.fields().count());
        }
    }

    #[test]
    fn target_parsers_never_panic(s in "\\PC{0,80}") {
        let _ = Target::parse_absolute(&s);
        let _ = Target::parse_authority(&s);
    }

    /// A chunked body from noise: no panic; whatever Pass forwards is exactly a prefix of the
    /// input, and Decode accepts the same bodies as Pass.
    #[test]
    fn chunked_relay_never_panics(input in noise(), step in 1..64usize) {
        let pass = run(&input, step, Framing::Chunked, Mode::Pass);
        let decoded = run(&input, step, Framing::Chunked, Mode::Decode);
        prop_assert_eq!(pass.is_ok(), decoded.is_ok());
        if let Ok(pass) = pass {
            prop_assert!(input.starts_with(&pass));
        }
        let _ = parse_chunk_size(&input);
    }

    #[test]
    fn chunk_size_round_trips(n in 0..(1u64 << 60), upper in any::<bool>(), zeros in 0..20usize) {
        let hex = if upper { format!("{n:X}") } else { format!("{n:x}") };
        let line = format!("{}{hex}\r\n", "0".repeat(zeros));
        prop_assert_eq!(parse_chunk_size(line.as_bytes()).ok(), Some(n));
    }

    /// Encode chunks, then relay: Pass gives the identical bytes, Decode gives the data, and
    /// bytes after the body (the next message) are never taken.
    #[test]
    fn chunked_round_trips(
        chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 1..300), 0..8),
        big in prop::option::of(20_000..40_000usize),
        ext in prop::option::of("[a-z]{1,8}(=[a-z0-9]{1,8})?"),
        trailers in prop::collection::vec(("[A-Za-z][A-Za-z0-9-]{0,15}", "[ -~]{0,30}"), 0..3),
        step in prop_oneof![1..8usize, 8..70_000usize],
    ) {
        let mut chunks = chunks;
        if let Some(len) = big {
            // One chunk larger than the read buffer, so the buffer is refilled mid-chunk.
            chunks.push((0..len).map(|i| i as u8).collect());
        }
        let mut wire = Vec::new();
        for c in &chunks {
            wire.extend_from_slice(format!("{:x}", c.len()).as_bytes());
            if let Some(e) = &ext {
                wire.extend_from_slice(format!(";{e}").as_bytes());
            }
            wire.extend_from_slice(b"\r\n");
            wire.extend_from_slice(c);
            wire.extend_from_slice(b"\r\n");
        }
        wire.extend_from_slice(b"0\r\n");
        for (name, value) in &trailers {
            wire.extend_from_slice(format!("{name}: {}\r\n", value.trim()).as_bytes());
        }
        wire.extend_from_slice(b"\r\n");
        let mut input = wire.clone();
        input.extend_from_slice(b"GET http://next/ HTTP/1.1\r\n\r\n");

        let pass = run(&input, step, Framing::Chunked, Mode::Pass);
        prop_assert_eq!(pass, Ok(wire.clone()));
        let decoded = run(&input, step, Framing::Chunked, Mode::Decode);
        prop_assert_eq!(decoded, Ok(chunks.concat()));
        // A body cut anywhere before its end is an error, never a complete relay.
        let cut = wire.len() / 2;
        prop_assert!(run(&wire[..cut], step, Framing::Chunked, Mode::Pass).is_err());
    }

    /// A Content-Length body is relayed exactly: its bytes and no more; a short one fails.
    #[test]
    fn length_body_is_exact(body in prop::collection::vec(any::<u8>(), 0..3000), extra in 0..50usize, step in 1..5000usize) {
        let mut input = body.clone();
        input.extend(std::iter::repeat(b'x').take(extra));
        let n = body.len() as u64;
        prop_assert_eq!(run(&input, step, Framing::Length(n), Mode::Pass), Ok(body.clone()));
        prop_assert!(run(&input, step, Framing::Length(n + extra as u64 + 1), Mode::Pass).is_err());
    }

    /// A generated valid request head parses back to what was generated.
    #[test]
    fn request_head_round_trips(
        method in "[A-Z]{1,10}",
        scheme in prop::sample::select(vec!["http", "ws", "HTTP"]),
        host in host(),
        port in prop::option::of(1..=65535u16),
        path in "(/[A-Za-z0-9._~!$&'()*+,;=:@%-]{0,12}){0,4}(\\?[A-Za-z0-9=&]{0,12})?",
        fields in prop::collection::vec(field(), 0..12),
        minor in 0..2u8,
    ) {
        prop_assume!(method != "CONNECT");
        let authority = match port {
            Some(p) => format!("{host}:{p}"),
            None => host.clone(),
        };
        let uri = format!("{scheme}://{authority}{path}");
        let mut head = format!("{method} {uri} HTTP/1.{minor}\r\nHost: {authority}\r\n");
        for (name, value) in &fields {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");

        let req = parse_request(head.as_bytes()).map_err(|e| TestCaseError::fail(format!("{e}: {head:?}")))?;
        prop_assert_eq!(&req.method, &method);
        prop_assert_eq!(&req.uri, &uri);
        prop_assert_eq!(req.minor, minor);
        prop_assert_eq!(req.framing, Framing::Empty);
        let scheme = if scheme.eq_ignore_ascii_case("ws") { Scheme::Ws } else { Scheme::Http };
        prop_assert_eq!(req.target.scheme, scheme);
        prop_assert_eq!(&req.target.host, &host.to_ascii_lowercase().trim_matches(['[', ']']).to_string());
        prop_assert_eq!(req.target.port, port.unwrap_or(80));
        let expected_path = if path.starts_with('?') { format!("/{path}") } else { path.clone() };
        prop_assert_eq!(&req.target.path, &expected_path);
        let got: Vec<(String, Vec<u8>)> = req.head.fields().map(|(n, v)| (n.to_string(), v.to_vec())).collect();
        let mut want = vec![("Host".to_string(), authority.into_bytes())];
        want.extend(fields.iter().map(|(n, v)| (n.clone(), v.clone().into_bytes())));
        prop_assert_eq!(got, want);
        // The target printed for the next hop parses back to the same target.
        prop_assert_eq!(Target::parse_absolute(&req.target.to_string()), Ok(req.target.clone()));
    }

    /// A generated valid response head parses back to its status, reason, fields and framing.
    #[test]
    fn response_head_round_trips(
        code in 200..600u16,
        reason in "[A-Za-z]([A-Za-z ]{0,20}[A-Za-z])?",
        fields in prop::collection::vec(field(), 0..12),
        length in prop::option::of(0..u64::MAX / 2),
        minor in 0..2u8,
    ) {
        let mut head = format!("HTTP/1.{minor} {code} {reason}\r\n");
        for (name, value) in &fields {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        if let Some(n) = length {
            head.push_str(&format!("Content-Length: {n}\r\n"));
        }
        head.push_str("\r\n");
        let res = parse_response(head.as_bytes(), false).map_err(|e| TestCaseError::fail(format!("{e}: {head:?}")))?;
        prop_assert_eq!(res.code, code);
        prop_assert_eq!(&res.reason, &reason);
        prop_assert_eq!(res.minor, minor);
        let framing = match (code, length) {
            (204 | 304, _) | (_, Some(0)) => Framing::Empty,
            (_, Some(n)) => Framing::Length(n),
            (_, None) => Framing::Close,
        };
        prop_assert_eq!(res.framing, framing);
        let got: Vec<(String, Vec<u8>)> = res.head.fields().map(|(n, v)| (n.to_string(), v.to_vec())).collect();
        let mut want: Vec<(String, Vec<u8>)> = fields.iter().map(|(n, v)| (n.clone(), v.clone().into_bytes())).collect();
        if let Some(n) = length {
            want.push(("Content-Length".into(), n.to_string().into_bytes()));
        }
        prop_assert_eq!(got, want);
        // As a response to HEAD there is never a body.
        let res = parse_response(head.as_bytes(), true).map_err(TestCaseError::fail)?;
        prop_assert_eq!(res.framing, Framing::Empty);
    }

    /// Whatever target parses, printed and parsed again, is the same target.
    #[test]
    fn targets_round_trip(s in target_like()) {
        if let Ok(t) = Target::parse_absolute(&s) {
            prop_assert_eq!(Target::parse_absolute(&t.to_string()), Ok(t.clone()), "{:?}", s);
        }
        if let Ok(t) = Target::parse_authority(&s) {
            prop_assert_eq!(Target::parse_authority(&t.host_port()), Ok(t.clone()), "{:?}", s);
        }
    }

    /// Generated authorities parse to their host (lowercased, no brackets) and port.
    #[test]
    fn authority_round_trips(host in host(), port in 1..=65535u16) {
        let t = Target::parse_authority(&format!("{host}:{port}")).map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
        prop_assert_eq!(t.scheme, Scheme::Connect);
        prop_assert_eq!(&t.host, &host.to_ascii_lowercase().trim_matches(['[', ']']).to_string());
        prop_assert_eq!(t.port, port);
        prop_assert_eq!(t.path.as_str(), "");
    }
}

/// Host names, IPv4 and bracketed IPv6 literals.
fn host() -> impl Strategy<Value = String> {
    prop_oneof![
        "[A-Za-z0-9_-]{1,12}(\\.[A-Za-z0-9_-]{1,12}){0,3}",
        any::<[u8; 4]>().prop_map(|b| std::net::Ipv4Addr::from(b).to_string()),
        any::<[u16; 8]>().prop_map(|s| format!("[{}]", std::net::Ipv6Addr::from(s))),
    ]
}

/// A header field that changes neither framing nor Host: token name, visible-ASCII value.
fn field() -> impl Strategy<Value = (String, String)> {
    ("X-[A-Za-z0-9!#$%&'*+.^_`|~-]{1,12}", "([!-~]([ \t]*[!-~])*)?")
}

/// Strings shaped like targets, with the characters that matter to the parser.
fn target_like() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("http://".to_string()),
        Just("https://".to_string()),
        Just("ws://".to_string()),
        Just("[".to_string()),
        Just("]".to_string()),
        Just(":".to_string()),
        Just("@".to_string()),
        Just("/".to_string()),
        Just("?".to_string()),
        Just("#".to_string()),
        Just("%".to_string()),
        "[a-zA-Z0-9._-]{1,6}",
        "[0-9]{1,6}",
        "[0-9a-f:]{1,8}",
        "\\PC",
    ];
    prop::collection::vec(piece, 0..10).prop_map(|v| v.concat())
}

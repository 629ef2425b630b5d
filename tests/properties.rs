//! Property tests for the parsers, on the stable toolchain in the normal suite.
//!
//! Two kinds of property: no input makes a parser panic (arbitrary bytes, and valid messages
//! with random damage, which reach deeper than noise), and parse → serialize → parse round
//! trips: a chunked body encoded here and relayed in Pass mode comes out byte for byte, in
//! Decode mode as the original data; a generated request or response head parses back to the
//! same method, target, status and fields; a parsed target or pattern list printed and parsed
//! again is the same; a SOCKS5 handshake against a generated valid server leaves exactly the
//! tunnel bytes unread.
//! The fuzz targets under `fuzz/` search the same ground for longer with coverage feedback.
//! Case counts are kept modest so the whole file runs in a few seconds.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_lite::future::block_on;
use futures_lite::AsyncRead;
use futures_lite::AsyncWrite;
use proptest::prelude::*;
use smolproxy::body::{parse_chunk_size, relay, Mode};
use smolproxy::head::{parse_request, parse_response, Framing};
use smolproxy::pattern::PatternList;
use smolproxy::reader::Reader;
use smolproxy::socks5::{self, Addr};
use smolproxy::target::{Scheme, Target};

/// Cases per property: enough to shake out edge cases, small enough for a quick suite.
const CASES: u32 = 256;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: CASES,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
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
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let n = self.step.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Poll::Ready(Ok(n))
    }
}

/// A scripted SOCKS5 server: answers from `input`, records what the client wrote.
struct Socks<'a> {
    /// What is left of the server's answers (and any tunnel data after them).
    input: &'a [u8],
    /// What the client sent.
    sent: Vec<u8>,
}

impl AsyncRead for Socks<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let n = buf.len().min(self.input.len());
        buf[..n].copy_from_slice(&self.input[..n]);
        self.input = &self.input[n..];
        Poll::Ready(Ok(n))
    }
}

impl AsyncWrite for Socks<'_> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.sent.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Relays `input` as a body with `framing`, read `step` bytes at a time.
fn run(input: &[u8], step: usize, framing: Framing, mode: Mode) -> Result<Vec<u8>, String> {
    let mut src = Reader::new(Trickle { data: input, step }, Duration::from_secs(1));
    let mut out = Vec::new();
    block_on(relay(
        &mut src,
        &mut out,
        framing,
        mode,
        Duration::from_secs(1),
    ))
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
    (
        0..SAMPLES.len(),
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0..3u8), 1..4),
    )
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
        input.extend(std::iter::repeat_n(b'x', extra));
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

    #[test]
    fn pattern_parser_never_panics(list in pattern_like(), host in "\\PC{0,40}", port in any::<u16>()) {
        let (lenient, _) = PatternList::parse_lenient(&list);
        let _ = lenient.matches(&host, port);
        if let Ok(parsed) = PatternList::parse(&list) {
            let _ = parsed.matches(&host, port);
            if let Ok(ip) = host.parse() {
                let _ = parsed.matches_ip(ip, port);
            }
            // Printed and parsed again, a list is the same list.
            prop_assert_eq!(PatternList::parse(&parsed.to_string()), Ok(parsed.clone()), "{:?}", list);
            // A strict parse and a lenient one agree on a list without bad entries.
            prop_assert_eq!(lenient, parsed);
        }
    }

    /// `example.com`, `.example.com` and `*.example.com` all match the domain and every name
    /// under it, in any case and with a trailing dot, and never a name that merely ends the same.
    #[test]
    fn domain_patterns_match_the_domain_and_below(
        name in "[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?(\\.[a-z]([a-z0-9-]{0,8}[a-z0-9])?){1,3}",
        spelling in 0..3usize,
        sub in "[a-z0-9]{1,8}",
        port in 1..=65535u16,
        pinned in any::<bool>(),
    ) {
        let entry = [name.clone(), format!(".{name}"), format!("*.{name}")][spelling].clone();
        let entry = if pinned { format!("{entry}:{port}") } else { entry };
        let list = PatternList::parse(&entry).map_err(TestCaseError::fail)?;
        prop_assert!(list.matches(&name, port).is_some(), "{} vs {}", entry, name);
        let (shouted, below, lookalike) = (format!("{}.", name.to_uppercase()), format!("{sub}.{name}"), format!("{sub}{name}"));
        prop_assert!(list.matches(&shouted, port).is_some(), "{} vs {}", entry, shouted);
        prop_assert!(list.matches(&below, port).is_some(), "{} vs {}", entry, below);
        prop_assert!(list.matches(&lookalike, port).is_none(), "{} matched {}", entry, lookalike);
        let other = if port == 1 { 2 } else { port - 1 };
        prop_assert_eq!(list.matches(&name, other).is_some(), !pinned);
    }

    /// Any bytes as a SOCKS5 server's answers: no panic, and a successful handshake never reads
    /// past the longest possible reply.
    #[test]
    fn socks5_handshake_never_panics(answers in prop::collection::vec(any::<u8>(), 0..300), creds in any::<bool>(), name in any::<bool>()) {
        let creds = creds.then_some(("user", "pass"));
        let addr = if name { Addr::Name("example.com") } else { Addr::Ip([127, 0, 0, 1].into()) };
        let mut server = Socks { input: &answers, sent: Vec::new() };
        if block_on(socks5::handshake(&mut server, creds, addr, 443)).is_ok() {
            prop_assert!(answers.len() - server.input.len() <= 2 + 2 + 4 + 1 + 255 + 2);
        }
    }

    /// A valid server conversation: the handshake succeeds, sends exactly the RFC 1928/1929
    /// messages, and leaves the tunnel bytes after the reply unread.
    #[test]
    fn socks5_handshake_round_trips(
        creds in prop::option::of(("[a-z]{1,20}", "[ -~]{0,30}")),
        target in prop_oneof![
            "[a-z0-9.-]{1,60}".prop_map(Err),
            any::<[u8; 4]>().prop_map(|b| Ok(std::net::IpAddr::from(b))),
            any::<[u8; 16]>().prop_map(|b| Ok(std::net::IpAddr::from(b))),
        ],
        port in 1..=65535u16,
        bound in prop_oneof![
            any::<[u8; 4]>().prop_map(|b| [&[1u8][..], &b].concat()),
            any::<[u8; 16]>().prop_map(|b| [&[4u8][..], &b].concat()),
            "[a-z.]{0,255}".prop_map(|n| [&[3u8, n.len() as u8][..], n.as_bytes()].concat()),
        ],
        tunnel in prop::collection::vec(any::<u8>(), 0..40),
    ) {
        let creds_ref = creds.as_ref().map(|(u, p)| (u.as_str(), p.as_str()));
        let addr = match &target {
            Err(name) => Addr::Name(name),
            Ok(ip) => Addr::Ip(*ip),
        };
        let mut answers = vec![5, if creds.is_some() { 2 } else { 0 }];
        if creds.is_some() {
            answers.extend([1, 0]);
        }
        answers.extend([5, 0, 0]);
        answers.extend(&bound);
        answers.extend([0x1f, 0x90]);
        answers.extend(&tunnel);
        let mut server = Socks { input: &answers, sent: Vec::new() };
        let result = block_on(socks5::handshake(&mut server, creds_ref, addr, port));
        prop_assert!(result.is_ok(), "{:?}", result);
        prop_assert_eq!(server.input, &tunnel[..], "the handshake read into the tunnel");

        let mut want = socks5::greeting(creds.is_some());
        if let Some((u, p)) = creds_ref {
            want.extend(socks5::credentials(u, p));
        }
        let mut request = vec![5, 1, 0];
        match &target {
            Err(name) => {
                request.extend([3, name.len() as u8]);
                request.extend(name.as_bytes());
            }
            Ok(std::net::IpAddr::V4(v4)) => {
                request.push(1);
                request.extend(v4.octets());
            }
            Ok(std::net::IpAddr::V6(v6)) => {
                request.push(4);
                request.extend(v6.octets());
            }
        }
        request.extend(port.to_be_bytes());
        want.extend(request);
        prop_assert_eq!(server.sent, want);
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
    (
        "X-[A-Za-z0-9!#$%&'*+.^_`|~-]{1,12}",
        "([!-~]([ \t]*[!-~])*)?",
    )
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

/// Strings shaped like pattern lists, with the characters that matter to the parser.
fn pattern_like() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("*".to_string()),
        Just(".".to_string()),
        Just(",".to_string()),
        Just(" ".to_string()),
        Just(":".to_string()),
        Just("/".to_string()),
        Just("[".to_string()),
        Just("]".to_string()),
        Just("<local>".to_string()),
        "[a-zA-Z0-9_-]{1,6}",
        "[0-9]{1,5}",
        "[0-9a-f:]{1,8}",
        "\\PC",
    ];
    prop::collection::vec(piece, 0..12).prop_map(|v| v.concat())
}

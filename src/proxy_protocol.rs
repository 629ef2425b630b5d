//! The PROXY protocol header (HAProxy's `proxy-protocol.txt`, versions 1 and 2) that a load
//! balancer sends before the bytes it relays, naming the client it relays for.
//!
//! A pure parser over the bytes arrived so far, like the SOCKS messages: `Ok(None)` while the
//! header is incomplete (and could still become a valid one), `Ok(Some(header))` with its
//! length, so that the caller takes exactly those bytes and leaves what follows to the
//! connection, or `Err(why)` for anything this proxy does not accept. Whom to believe is not
//! decided here: `server.rs` reads a header only from `--proxy-protocol-from` peers. Fuzzed by
//! `fuzz/fuzz_targets/proxy_protocol.rs`.
//!
//! Accepted: v1 `TCP4`, `TCP6` and `UNKNOWN`; v2 `PROXY` for TCP over IPv4 or IPv6, and v2
//! `LOCAL` (a load balancer's own connection, such as a health check), TLVs skipped unread.
//! v2 `PROXY` with another valid family or protocol (UNSPEC, UDP, UNIX) falls back to the
//! connection's real peer, as the specification asks of a receiver that does not implement
//! them. The destination address and port are checked for form and otherwise ignored.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The v2 signature (spec §2.2); its NUL and CRLFs make it invalid in HTTP, TLS and SOCKS.
const SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// How a v1 header begins (spec §2.1).
const V1_PREFIX: &[u8] = b"PROXY ";
/// Longest v1 line, CRLF included (spec §2.1: `PROXY UNKNOWN` and two full IPv6 forms).
pub const MAX_V1: usize = 107;
/// Longest v2 header accepted, the 16 fixed bytes included. Addresses take at most 52 bytes
/// (216 for UNIX); the rest are TLVs: cloud load balancers' (AWS, Azure, GCP) take a few dozen
/// bytes and HAProxy's SSL ones a few hundred. The specification keeps headers within 536
/// bytes (one minimum-MSS segment); this leaves room beyond that and still bounds what an
/// untrusted length field can make the proxy buffer.
pub const MAX_V2: usize = 1024;
/// Most bytes a caller ever needs to hold before [`parse`] decides.
pub const MAX: usize = MAX_V2;

/// Why a header is refused when it is not one at all.
const NOT_A_HEADER: &str = "not a PROXY protocol header";
/// Why a v1 line is refused when its fields are wrong.
const BAD_V1: &str = "malformed v1 header";

/// A complete header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The client's address it carries; `None` for v2 LOCAL, v1 UNKNOWN and v2 families not
    /// handled here, where the connection's real peer is the client.
    pub source: Option<SocketAddr>,
    /// Bytes the header takes (CRLF or TLVs included); the client's own bytes follow.
    pub len: usize,
}

/// Parses the header at the start of `buf`, which may hold more bytes after it.
pub fn parse(buf: &[u8]) -> Result<Option<Header>, &'static str> {
    match buf.first() {
        None => Ok(None),
        Some(b'P') => v1(buf),
        Some(b'\r') => v2(buf),
        Some(_) => Err(NOT_A_HEADER),
    }
}

/// Whether `buf` and `prefix` agree as far as both go.
fn agrees(buf: &[u8], prefix: &[u8]) -> bool {
    let n = buf.len().min(prefix.len());
    buf[..n] == prefix[..n]
}

/// The text form: `PROXY TCP4|TCP6 SRC DST SPORT DPORT\r\n` or `PROXY UNKNOWN ...\r\n`.
fn v1(buf: &[u8]) -> Result<Option<Header>, &'static str> {
    if !agrees(buf, V1_PREFIX) {
        return Err(NOT_A_HEADER);
    }
    let window = &buf[..buf.len().min(MAX_V1)];
    let Some(lf) = window.iter().position(|&b| b == b'\n') else {
        return match buf.len() < MAX_V1 {
            true => Ok(None),
            false => Err("v1 header longer than 107 bytes"),
        };
    };
    // A lone LF does not end the line (spec §2.1).
    let line = window[..lf].strip_suffix(b"\r").ok_or(BAD_V1)?;
    let mut fields = line.split(|&b| b == b' ').skip(1);
    let v6 = match fields.next() {
        // Whatever follows UNKNOWN is to be ignored.
        Some(b"UNKNOWN") => {
            return Ok(Some(Header {
                source: None,
                len: lf + 1,
            }))
        }
        Some(b"TCP4") => false,
        Some(b"TCP6") => true,
        _ => return Err("v1 header with an unknown protocol"),
    };
    let (Some(src), Some(dst), Some(sport), Some(dport), None) = (
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
    ) else {
        return Err(BAD_V1);
    };
    let (Some(src), Some(_), Some(sport), Some(_)) =
        (ip(src, v6), ip(dst, v6), port(sport), port(dport))
    else {
        return Err(BAD_V1);
    };
    Ok(Some(Header {
        source: Some(SocketAddr::new(src, sport)),
        len: lf + 1,
    }))
}

/// A v1 address of the family the protocol names. std refuses leading zeros in IPv4 octets,
/// as the specification does.
fn ip(field: &[u8], v6: bool) -> Option<IpAddr> {
    let s = std::str::from_utf8(field).ok()?;
    Some(match v6 {
        false => IpAddr::V4(s.parse().ok()?),
        true => IpAddr::V6(s.parse().ok()?),
    })
}

/// A v1 port: decimal digits without a leading zero, 0 to 65535.
fn port(field: &[u8]) -> Option<u16> {
    let digits = field.iter().all(u8::is_ascii_digit);
    let padded = field.len() > 1 && field[0] == b'0';
    match digits && !padded {
        true => std::str::from_utf8(field).ok()?.parse().ok(),
        false => None,
    }
}

/// The binary form: signature, version and command, family and protocol, length, addresses
/// and TLVs.
fn v2(buf: &[u8]) -> Result<Option<Header>, &'static str> {
    if !agrees(buf, SIGNATURE) {
        return Err(NOT_A_HEADER);
    }
    // Version 2 only; command 0 LOCAL or 1 PROXY (spec §2.2: others must be dropped).
    if buf.get(12).is_some_and(|&b| b >> 4 != 2 || b & 0xf > 1) {
        return Err("v2 header with an unknown version or command");
    }
    // Families UNSPEC, INET, INET6, UNIX; protocols UNSPEC, STREAM, DGRAM.
    if buf.get(13).is_some_and(|&b| b >> 4 > 3 || b & 0xf > 2) {
        return Err("v2 header with an unknown family or protocol");
    }
    let Some(&[command, family, hi, lo]) = buf.get(12..16) else {
        return Ok(None);
    };
    let len = 16 + usize::from(u16::from_be_bytes([hi, lo]));
    if len > MAX_V2 {
        return Err("v2 header longer than 1024 bytes");
    }
    let Some(block) = buf.get(16..len) else {
        return Ok(None);
    };
    let short = "v2 header too short for its addresses";
    let source = match (command & 0xf, family) {
        (0, _) => None,
        (_, 0x11) => {
            let a: &[u8; 12] = block
                .get(..12)
                .and_then(|a| a.try_into().ok())
                .ok_or(short)?;
            let ip = Ipv4Addr::new(a[0], a[1], a[2], a[3]);
            Some(SocketAddr::new(ip.into(), u16::from_be_bytes([a[8], a[9]])))
        }
        (_, 0x21) => {
            let a: &[u8; 36] = block
                .get(..36)
                .and_then(|a| a.try_into().ok())
                .ok_or(short)?;
            let mut ip = [0u8; 16];
            ip.copy_from_slice(&a[..16]);
            let ip = Ipv6Addr::from(ip);
            Some(SocketAddr::new(
                ip.into(),
                u16::from_be_bytes([a[32], a[33]]),
            ))
        }
        _ => None,
    };
    Ok(Some(Header { source, len }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A v2 header: command byte, family byte, then the block after the length.
    fn v2(command: u8, family: u8, block: &[u8]) -> Vec<u8> {
        let mut h = SIGNATURE.to_vec();
        h.extend_from_slice(&[command, family]);
        h.extend_from_slice(&(block.len() as u16).to_be_bytes());
        h.extend_from_slice(block);
        h
    }

    /// A v2 TCP over IPv4 block: 192.0.2.7:4321 to 10.0.0.1:3128, then `tlvs`.
    fn tcp4(tlvs: &[u8]) -> Vec<u8> {
        let mut b = vec![192, 0, 2, 7, 10, 0, 0, 1, 0x10, 0xe1, 0x0c, 0x38];
        b.extend_from_slice(tlvs);
        b
    }

    macro_rules! cases {
        ($($input:expr => $expected:expr;)*) => {$(
            let input: &[u8] = &$input;
            assert_eq!(parse(input), $expected, "{:?}", String::from_utf8_lossy(input));
        )*};
    }

    fn done(source: Option<&str>, len: usize) -> Result<Option<Header>, &'static str> {
        let source = source.map(|s| s.parse().unwrap());
        Ok(Some(Header { source, len }))
    }

    #[test]
    fn version_1() {
        cases! {
            *b"PROXY TCP4 192.0.2.7 10.0.0.1 4321 3128\r\nGET" => done(Some("192.0.2.7:4321"), 41);
            *b"PROXY TCP6 2001:db8::7 ::1 65535 0\r\n" => done(Some("[2001:db8::7]:65535"), 36);
            *b"PROXY UNKNOWN\r\n" => done(None, 15);
            *b"PROXY UNKNOWN ignored \xff stuff\r\nrest" => done(None, 31);
            *b"" => Ok(None);
            *b"PRO" => Ok(None);
            *b"PROXY TCP4 192.0.2.7 10.0.0.1 4321 3128\r" => Ok(None);
            *b"PROXY TCP4 192.0.2.7 10.0.0.1 4321 3128\n" => Err(BAD_V1);
            *b"PROXZ" => Err(NOT_A_HEADER);
            *b"GET / HTTP/1.1\r\n\r\n" => Err(NOT_A_HEADER);
            *b"PROXY TCP5 1.2.3.4 1.2.3.4 1 1\r\n" => Err("v1 header with an unknown protocol");
            *b"PROXY tcp4 1.2.3.4 1.2.3.4 1 1\r\n" => Err("v1 header with an unknown protocol");
            *b"PROXY TCP4 1.2.3.4 1.2.3.4 1\r\n" => Err(BAD_V1);
            *b"PROXY TCP4 1.2.3.4 1.2.3.4 1 1 1\r\n" => Err(BAD_V1);
            *b"PROXY TCP4  1.2.3.4 1.2.3.4 1 1\r\n" => Err(BAD_V1);
            *b"PROXY TCP4 01.2.3.4 1.2.3.4 1 1\r\n" => Err(BAD_V1);
            *b"PROXY TCP4 ::1 ::1 1 1\r\n" => Err(BAD_V1);
            *b"PROXY TCP6 1.2.3.4 1.2.3.4 1 1\r\n" => Err(BAD_V1);
            *b"PROXY TCP4 1.2.3.4 1.2.3.4 01 1\r\n" => Err(BAD_V1);
            *b"PROXY TCP4 1.2.3.4 1.2.3.4 +1 1\r\n" => Err(BAD_V1);
            *b"PROXY TCP4 1.2.3.4 1.2.3.4 65536 1\r\n" => Err(BAD_V1);
            *b"PROXY TCP4 1.2.3.4 1.2.3.4 1 \r\n" => Err(BAD_V1);
        }
        let long = [b"PROXY UNKNOWN ".as_slice(), &[b'x'; 93]].concat();
        assert_eq!(long.len(), MAX_V1);
        assert_eq!(parse(&long[..106]), Ok(None));
        assert_eq!(parse(&long), Err("v1 header longer than 107 bytes"));
        let longest = [&long[..105], b"\r\n"].concat();
        assert_eq!(parse(&longest), done(None, 107));
    }

    #[test]
    fn version_2() {
        let local = v2(0x20, 0x00, &[]);
        let mut tlv = v2(0x21, 0x11, &tcp4(&[0x04, 0x00, 0x03, b'a', b'b', b'c']));
        let tlv_len = tlv.len();
        tlv.extend_from_slice(b"\x16\x03\x01"); // the client's TLS ClientHello begins
        let mut six = vec![0x20, 0x01, 0x0d, 0xb8];
        six.extend_from_slice(&[0; 11]);
        six.push(7);
        six.extend_from_slice(&[0; 16]);
        six.extend_from_slice(&[0x01, 0xbb, 0x0c, 0x38]);
        cases! {
            local => done(None, 16);
            v2(0x20, 0x11, &tcp4(&[])) => done(None, 28);
            v2(0x21, 0x11, &tcp4(&[])) => done(Some("192.0.2.7:4321"), 28);
            tlv => done(Some("192.0.2.7:4321"), tlv_len);
            v2(0x21, 0x21, &six) => done(Some("[2001:db8::7]:443"), 52);
            v2(0x21, 0x00, &[]) => done(None, 16);
            v2(0x21, 0x12, &tcp4(&[])) => done(None, 28);
            v2(0x21, 0x31, &[0; 216]) => done(None, 232);
            v2(0x21, 0x11, &tcp4(&[]))[..27] => Ok(None);
            SIGNATURE[..5] => Ok(None);
            v2(0x21, 0x11, &[0; 11]) => Err("v2 header too short for its addresses");
            v2(0x21, 0x21, &[0; 35]) => Err("v2 header too short for its addresses");
            v2(0x11, 0x11, &tcp4(&[]))[..13] => Err("v2 header with an unknown version or command");
            v2(0x22, 0x11, &tcp4(&[])) => Err("v2 header with an unknown version or command");
            v2(0x21, 0x41, &tcp4(&[]))[..14] => Err("v2 header with an unknown family or protocol");
            v2(0x21, 0x13, &tcp4(&[])) => Err("v2 header with an unknown family or protocol");
            *b"\r\n\r\n\0\r\nQUIT\r" => Err(NOT_A_HEADER);
            *b"\r\nGET" => Err(NOT_A_HEADER);
            *b"\x16\x03\x01\x02\x00" => Err(NOT_A_HEADER);
            *b"\x05\x01\x00" => Err(NOT_A_HEADER);
        }
        let mut big = v2(0x21, 0x11, &tcp4(&[0; MAX_V2 - 28]));
        assert_eq!(parse(&big), done(Some("192.0.2.7:4321"), MAX_V2));
        big = v2(0x21, 0x11, &tcp4(&[0; MAX_V2 - 27]));
        assert_eq!(parse(&big[..16]), Err("v2 header longer than 1024 bytes"));
    }

    #[test]
    fn every_prefix_of_a_header_is_incomplete() {
        let headers = [
            b"PROXY TCP4 192.0.2.7 10.0.0.1 4321 3128\r\n".to_vec(),
            v2(0x21, 0x11, &tcp4(&[1, 0, 0])),
        ];
        for h in headers {
            for n in 0..h.len() {
                assert_eq!(parse(&h[..n]), Ok(None), "{n}");
            }
            assert_eq!(parse(&h).unwrap().unwrap().len, h.len());
        }
    }
}

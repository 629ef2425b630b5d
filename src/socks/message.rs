//! SOCKS messages as a server reads and writes them (RFC 1928, RFC 1929, SOCKS4 and 4a): pure
//! functions over bytes, tested with tables below and fuzzed (`fuzz/fuzz_targets/socks.rs`).
//!
//! Each parser takes what has arrived so far and answers `Ok(None)` while the message is
//! incomplete, so the caller reads more without ever reading past it. A malformed message is
//! an `Err` carrying the SOCKS5 reply code that says why (0x07 command, 0x08 address type,
//! 0x01 anything else); SOCKS4 has only "rejected".

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// SOCKS version 5.
pub const V5: u8 = 5;
/// SOCKS version 4 (and 4a).
pub const V4: u8 = 4;
/// Method: no authentication required.
pub const NO_AUTH: u8 = 0x00;
/// Method: username/password (RFC 1929).
pub const USER_PASS: u8 = 0x02;
/// Method reply: no acceptable methods.
pub const NO_ACCEPTABLE: u8 = 0xff;

/// RFC 1928 §6 reply codes.
pub mod reply {
    /// Succeeded.
    pub const OK: u8 = 0x00;
    /// General SOCKS server failure.
    pub const GENERAL: u8 = 0x01;
    /// Connection not allowed by ruleset.
    pub const RULESET: u8 = 0x02;
    /// Network unreachable.
    pub const NETWORK: u8 = 0x03;
    /// Host unreachable.
    pub const HOST: u8 = 0x04;
    /// Connection refused.
    pub const REFUSED: u8 = 0x05;
    /// TTL expired (used for timeouts).
    pub const TIMEOUT: u8 = 0x06;
    /// Command not supported.
    pub const COMMAND: u8 = 0x07;
    /// Address type not supported.
    pub const ADDRESS: u8 = 0x08;
}

/// What a client asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// A TCP connection to the destination.
    Connect,
    /// A listening socket for the destination to connect back (refused here).
    Bind,
    /// A UDP relay (SOCKS5 only).
    UdpAssociate,
}

/// A destination as the client named it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dest {
    /// An address.
    Ip(IpAddr),
    /// A name, for the proxy to resolve (SOCKS5 ATYP 3, SOCKS4a).
    Name(String),
}

impl Dest {
    /// The host as the rest of the proxy names it: lowercase, IPv6 without brackets.
    pub fn host(&self) -> String {
        match self {
            Dest::Ip(ip) => ip.to_string(),
            Dest::Name(name) => name.to_ascii_lowercase(),
        }
    }
}

/// A parsed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// 5 or 4.
    pub version: u8,
    /// What is asked.
    pub command: Command,
    /// Where to.
    pub dest: Dest,
    /// The destination port.
    pub port: u16,
}

/// The method selection message (RFC 1928 §3): the methods offered, and the message's length.
pub fn greeting(buf: &[u8]) -> Result<Option<(&[u8], usize)>, u8> {
    let Some((&version, rest)) = buf.split_first() else {
        return Ok(None);
    };
    if version != V5 {
        return Err(reply::GENERAL);
    }
    let Some((&n, rest)) = rest.split_first() else {
        return Ok(None);
    };
    if n == 0 {
        return Err(reply::GENERAL);
    }
    let n = usize::from(n);
    Ok((rest.len() >= n).then(|| (&rest[..n], 2 + n)))
}

/// Which method to answer with: username/password when credentials are needed; else no
/// authentication, or username/password for a client that offers only that (its credentials
/// are then checked but not required, as for an exempt HTTP client); [`NO_ACCEPTABLE`] when
/// nothing fits.
pub fn choose(offered: &[u8], needs_credentials: bool) -> u8 {
    if !needs_credentials && offered.contains(&NO_AUTH) {
        NO_AUTH
    } else if offered.contains(&USER_PASS) {
        USER_PASS
    } else {
        NO_ACCEPTABLE
    }
}

/// A user name and password as sent, and the length of the message that carried them.
pub type Credentials<'a> = (&'a [u8], &'a [u8], usize);

/// The username/password message (RFC 1929 §2): user, password, and the message's length.
pub fn credentials(buf: &[u8]) -> Result<Option<Credentials<'_>>, u8> {
    let Some((&version, rest)) = buf.split_first() else {
        return Ok(None);
    };
    if version != 1 {
        return Err(reply::GENERAL);
    }
    let Some((user, rest)) = counted(rest) else {
        return Ok(None);
    };
    let Some((password, _)) = counted(rest) else {
        return Ok(None);
    };
    Ok(Some((user, password, 3 + user.len() + password.len())))
}

/// A length byte and that many bytes, if they have all arrived.
fn counted(buf: &[u8]) -> Option<(&[u8], &[u8])> {
    let (&n, rest) = buf.split_first()?;
    let n = usize::from(n);
    (rest.len() >= n).then(|| rest.split_at(n))
}

/// A SOCKS5 request (RFC 1928 §4) and its length.
pub fn request5(buf: &[u8]) -> Result<Option<(Request, usize)>, u8> {
    if buf.len() < 4 {
        return Ok(None);
    }
    if buf[0] != V5 {
        return Err(reply::GENERAL);
    }
    let command = match buf[1] {
        1 => Command::Connect,
        2 => Command::Bind,
        3 => Command::UdpAssociate,
        _ => return Err(reply::COMMAND),
    };
    let Some(parsed) = address(buf[3], &buf[4..])? else {
        return Ok(None);
    };
    let (dest, port, len) = parsed;
    let request = Request {
        version: V5,
        command,
        dest,
        port,
    };
    Ok(Some((request, 4 + len)))
}

/// An address of type `atyp` and a port at the start of `buf` (RFC 1928 §5): the destination,
/// the port, and how many bytes they took.
pub fn address(atyp: u8, buf: &[u8]) -> Result<Option<(Dest, u16, usize)>, u8> {
    let (dest, len) = match atyp {
        1 => {
            let Some(b) = buf.get(..4) else {
                return Ok(None);
            };
            (Dest::Ip(Ipv4Addr::new(b[0], b[1], b[2], b[3]).into()), 4)
        }
        4 => {
            let Some(b) = buf.get(..16) else {
                return Ok(None);
            };
            let octets: [u8; 16] = b.try_into().map_err(|_| reply::GENERAL)?;
            (Dest::Ip(Ipv6Addr::from(octets).into()), 16)
        }
        3 => {
            let Some((name, _)) = counted(buf) else {
                return Ok(None);
            };
            (
                Dest::Name(name_of(name).ok_or(reply::HOST)?),
                1 + name.len(),
            )
        }
        _ => return Err(reply::ADDRESS),
    };
    let Some(p) = buf.get(len..len + 2) else {
        return Ok(None);
    };
    Ok(Some((dest, u16::from_be_bytes([p[0], p[1]]), len + 2)))
}

/// A host name from the wire: non-empty, printable ASCII without spaces (the target parser
/// judges the rest, as for HTTP).
fn name_of(bytes: &[u8]) -> Option<String> {
    let ok = !bytes.is_empty() && bytes.iter().all(|b| b.is_ascii_graphic());
    ok.then(|| String::from_utf8_lossy(bytes).into_owned())
}

/// Longest SOCKS4 user id or 4a host name read: 255, as SOCKS5 allows.
const MAX_FIELD4: usize = 255;

/// A SOCKS4 or 4a request and its length. The user id is read and ignored (SOCKS4 carries no
/// password, so it proves nothing).
pub fn request4(buf: &[u8]) -> Result<Option<(Request, usize)>, u8> {
    if buf.len() < 8 {
        return Ok(None);
    }
    if buf[0] != V4 {
        return Err(reply::GENERAL);
    }
    let command = match buf[1] {
        1 => Command::Connect,
        2 => Command::Bind,
        _ => return Err(reply::COMMAND),
    };
    let port = u16::from_be_bytes([buf[2], buf[3]]);
    let ip = Ipv4Addr::new(buf[4], buf[5], buf[6], buf[7]);
    let Some(user_end) = nul(&buf[8..])? else {
        return Ok(None);
    };
    let mut len = 8 + user_end + 1;
    // SOCKS4a: 0.0.0.x with x != 0 means "the name follows".
    let dest = if ip.octets()[..3] == [0, 0, 0] && ip.octets()[3] != 0 {
        let Some(name_end) = nul(&buf[len..])? else {
            return Ok(None);
        };
        let name = name_of(&buf[len..len + name_end]).ok_or(reply::HOST)?;
        len += name_end + 1;
        Dest::Name(name)
    } else {
        Dest::Ip(ip.into())
    };
    let request = Request {
        version: V4,
        command,
        dest,
        port,
    };
    Ok(Some((request, len)))
}

/// Where the NUL ending a SOCKS4 field is, if it has arrived; too long a field is an error.
fn nul(buf: &[u8]) -> Result<Option<usize>, u8> {
    match buf.iter().take(MAX_FIELD4 + 1).position(|&b| b == 0) {
        Some(at) => Ok(Some(at)),
        None if buf.len() > MAX_FIELD4 => Err(reply::GENERAL),
        None => Ok(None),
    }
}

/// A SOCKS5 reply (RFC 1928 §6) with the address the proxy bound.
pub fn reply5(code: u8, bound: SocketAddr) -> Vec<u8> {
    let mut out = vec![V5, code, 0];
    push_address(&mut out, bound);
    out
}

/// A SOCKS4 reply: granted (0x5A) or rejected (0x5B), with the bound port and address.
pub fn reply4(granted: bool, bound: SocketAddr) -> [u8; 8] {
    let ip = match bound.ip() {
        IpAddr::V4(ip) => ip.octets(),
        IpAddr::V6(_) => [0; 4],
    };
    let port = bound.port().to_be_bytes();
    let code = if granted { 0x5a } else { 0x5b };
    [0, code, port[0], port[1], ip[0], ip[1], ip[2], ip[3]]
}

/// ATYP, address and port of `addr`.
fn push_address(out: &mut Vec<u8>, addr: SocketAddr) {
    match addr.ip().to_canonical() {
        IpAddr::V4(ip) => {
            out.push(1);
            out.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            out.push(4);
            out.extend_from_slice(&ip.octets());
        }
    }
    out.extend_from_slice(&addr.port().to_be_bytes());
}

/// A UDP datagram from the client (RFC 1928 §7): its fragment number, destination, port and
/// where the payload starts. `None` when it is malformed or incomplete.
pub fn udp_request(datagram: &[u8]) -> Option<(u8, Dest, u16, usize)> {
    let head = datagram.get(..4)?;
    let (frag, atyp) = (head[2], head[3]);
    let (dest, port, len) = address(atyp, &datagram[4..]).ok()??;
    Some((frag, dest, port, 4 + len))
}

/// A datagram for the client: the UDP header naming `from`, then `payload`.
pub fn udp_reply(from: SocketAddr, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 22);
    out.extend_from_slice(&[0, 0, 0]);
    push_address(&mut out, from);
    out.extend_from_slice(payload);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greetings() {
        assert_eq!(greeting(b""), Ok(None));
        assert_eq!(greeting(b"\x05"), Ok(None));
        assert_eq!(greeting(b"\x05\x02\x00"), Ok(None));
        assert_eq!(
            greeting(b"\x05\x02\x00\x02xx"),
            Ok(Some((&b"\x00\x02"[..], 4)))
        );
        assert_eq!(greeting(b"\x06\x01\x00"), Err(reply::GENERAL));
        assert_eq!(greeting(b"\x05\x00"), Err(reply::GENERAL));
        assert_eq!(choose(b"\x00\x02", true), USER_PASS);
        assert_eq!(choose(b"\x00\x02", false), NO_AUTH);
        assert_eq!(choose(b"\x00", true), NO_ACCEPTABLE);
        assert_eq!(choose(b"\x02", false), USER_PASS);
        assert_eq!(choose(b"\x01", false), NO_ACCEPTABLE);
    }

    #[test]
    fn credentials_messages() {
        assert_eq!(
            credentials(b"\x01\x03ann\x02pw"),
            Ok(Some((&b"ann"[..], &b"pw"[..], 8)))
        );
        assert_eq!(credentials(b"\x01\x03an"), Ok(None));
        assert_eq!(credentials(b"\x01\x03ann\x02p"), Ok(None));
        assert_eq!(
            credentials(b"\x01\x00\x00"),
            Ok(Some((&b""[..], &b""[..], 3)))
        );
        assert_eq!(credentials(b"\x05\x03ann\x02pw"), Err(reply::GENERAL));
        let long = [&[1u8, 255][..], &[b'u'; 255], &[0]].concat();
        assert_eq!(credentials(&long).unwrap().unwrap().0.len(), 255);
    }

    #[test]
    fn requests5() {
        let r = |dest, port, command| Request {
            version: V5,
            command,
            dest,
            port,
        };
        let ip4 = Dest::Ip(Ipv4Addr::new(127, 0, 0, 1).into());
        assert_eq!(
            request5(b"\x05\x01\x00\x01\x7f\x00\x00\x01\x00\x50"),
            Ok(Some((r(ip4, 80, Command::Connect), 10)))
        );
        assert_eq!(
            request5(b"\x05\x01\x00\x03\x09Localhost\x01\xbb"),
            Ok(Some((
                r(Dest::Name("Localhost".into()), 443, Command::Connect),
                16
            )))
        );
        let mut v6 = b"\x05\x03\x00\x04".to_vec();
        v6.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        v6.extend_from_slice(&[0, 0]);
        let (req, len) = request5(&v6).unwrap().unwrap();
        assert_eq!(
            (req.command, req.dest.host(), len),
            (Command::UdpAssociate, "::1".into(), 22)
        );
        for cut in 0..v6.len() {
            assert_eq!(request5(&v6[..cut]), Ok(None), "{cut}");
        }
        assert_eq!(
            request5(b"\x05\x09\x00\x01\x7f\x00\x00\x01\x00\x50"),
            Err(reply::COMMAND)
        );
        assert_eq!(
            request5(b"\x05\x01\x00\x09\x7f\x00\x00\x01\x00\x50"),
            Err(reply::ADDRESS)
        );
        assert_eq!(request5(b"\x05\x01\x00\x03\x00\x00\x50"), Err(reply::HOST));
        assert_eq!(
            request5(b"\x05\x01\x00\x03\x03a b\x00\x50"),
            Err(reply::HOST)
        );
        assert_eq!(
            request5(b"\x04\x01\x00\x01\x7f\x00\x00\x01\x00\x50"),
            Err(reply::GENERAL)
        );
        assert_eq!(
            request5(b"\x05\x02\x00\x01\x7f\x00\x00\x01\x00\x50")
                .unwrap()
                .unwrap()
                .0
                .command,
            Command::Bind
        );
    }

    #[test]
    fn requests4() {
        let (req, len) = request4(b"\x04\x01\x00\x50\x7f\x00\x00\x01ann\x00")
            .unwrap()
            .unwrap();
        assert_eq!(
            (req.dest.host(), req.port, len),
            ("127.0.0.1".into(), 80, 12)
        );
        let a = b"\x04\x01\x01\xbb\x00\x00\x00\x01\x00example.com\x00rest";
        let (req, len) = request4(a).unwrap().unwrap();
        assert_eq!(
            (req.dest, req.port, len),
            (Dest::Name("example.com".into()), 443, 21)
        );
        for cut in 0..21 {
            assert_eq!(request4(&a[..cut]), Ok(None), "{cut}");
        }
        assert_eq!(
            request4(b"\x04\x05\x00\x50\x7f\x00\x00\x01\x00"),
            Err(reply::COMMAND)
        );
        let endless = [&b"\x04\x01\x00\x50\x7f\x00\x00\x01"[..], &[b'u'; 300]].concat();
        assert_eq!(request4(&endless), Err(reply::GENERAL));
        assert_eq!(
            request4(b"\x04\x01\x00\x50\x00\x00\x00\x01\x00\x00"),
            Err(reply::HOST)
        );
    }

    #[test]
    fn replies_and_datagrams() {
        let v4: SocketAddr = "10.1.2.3:8080".parse().unwrap();
        assert_eq!(reply5(0, v4), b"\x05\x00\x00\x01\x0a\x01\x02\x03\x1f\x90");
        let v6: SocketAddr = "[::1]:1".parse().unwrap();
        assert_eq!(reply5(5, v6).len(), 22);
        assert_eq!(reply4(true, v4), [0, 0x5a, 0x1f, 0x90, 10, 1, 2, 3]);
        assert_eq!(reply4(false, v6)[1], 0x5b);
        let wrapped = udp_reply(v4, b"hi");
        assert_eq!(
            udp_request(&wrapped),
            Some((0, Dest::Ip(v4.ip()), 8080, 10))
        );
        assert_eq!(&wrapped[10..], b"hi");
        assert_eq!(udp_request(b"\x00\x00\x01\x01\x7f\x00"), None);
        assert_eq!(
            udp_request(b"\x00\x00\x00\x09\x7f\x00\x00\x01\x00\x50"),
            None
        );
    }
}

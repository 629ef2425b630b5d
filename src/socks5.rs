//! The client side of a SOCKS5 handshake: RFC 1928 CONNECT with RFC 1929 username/password.
//!
//! The messages are built and read by pure functions (tested with byte tables below); one
//! async function runs them over any stream. Every read has an exact length, so nothing after
//! the reply is consumed: the stream is the tunnel once [`handshake`] returns. Name resolution
//! for `socks5://` is the caller's: this file sends whatever address it is given.

use std::io;
use std::net::IpAddr;

use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Protocol version byte (RFC 1928 §3).
const VERSION: u8 = 5;
/// Method "no authentication required".
const NO_AUTH: u8 = 0x00;
/// Method "username/password" (RFC 1929).
const USER_PASS: u8 = 0x02;
/// Reply "no acceptable methods".
const NO_ACCEPTABLE: u8 = 0xff;
/// Version of the username/password subnegotiation (RFC 1929 §2).
const AUTH_VERSION: u8 = 1;

/// Where the proxy should connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Addr<'a> {
    /// An address (resolved here, or a literal).
    Ip(IpAddr),
    /// A name for the proxy to resolve (`socks5h://`).
    Name(&'a str),
}

/// Why a handshake failed.
#[derive(Debug)]
pub enum Failure {
    /// The stream failed or closed.
    Io(io::Error),
    /// The proxy answered, but no: the reason in a few words.
    Refused(String),
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Failure {
        Failure::Io(e)
    }
}

/// The method selection message (RFC 1928 §3): offer username/password only when we have
/// credentials, so a proxy that requires them refuses clearly instead of letting us in half.
pub fn greeting(with_credentials: bool) -> Vec<u8> {
    if with_credentials {
        vec![VERSION, 2, NO_AUTH, USER_PASS]
    } else {
        vec![VERSION, 1, NO_AUTH]
    }
}

/// Reads the method the proxy chose: `true` when it wants username/password.
pub fn chosen(reply: [u8; 2], with_credentials: bool) -> Result<bool, String> {
    match reply {
        [VERSION, NO_AUTH] => Ok(false),
        [VERSION, USER_PASS] if with_credentials => Ok(true),
        [VERSION, USER_PASS] | [VERSION, NO_ACCEPTABLE] if !with_credentials => {
            Err("it requires credentials (none given in the upstream URL)".into())
        }
        [VERSION, NO_ACCEPTABLE] => Err("it accepts none of our authentication methods".into()),
        [VERSION, m] => Err(format!(
            "it chose an authentication method we did not offer ({m:#04x})"
        )),
        [v, _] => Err(format!("not a SOCKS5 server (version {v})")),
    }
}

/// The username/password request (RFC 1929 §2). The lengths were checked when the upstream
/// URL was parsed; longer values are cut rather than sent with a wrong length byte.
pub fn credentials(user: &str, pass: &str) -> Vec<u8> {
    let (u, p) = (
        &user.as_bytes()[..user.len().min(255)],
        &pass.as_bytes()[..pass.len().min(255)],
    );
    let mut out = Vec::with_capacity(3 + u.len() + p.len());
    out.extend([AUTH_VERSION, u.len() as u8]);
    out.extend_from_slice(u);
    out.push(p.len() as u8);
    out.extend_from_slice(p);
    out
}

/// Reads the username/password status: 0 is success (RFC 1929 §2).
pub fn authenticated(reply: [u8; 2]) -> Result<(), String> {
    match reply {
        [_, 0] => Ok(()),
        _ => Err("it rejected the credentials".into()),
    }
}

/// The CONNECT request (RFC 1928 §4–§5).
pub fn connect_request(addr: Addr<'_>, port: u16) -> Result<Vec<u8>, String> {
    let mut out = vec![VERSION, 1, 0];
    match addr {
        Addr::Ip(IpAddr::V4(v4)) => {
            out.push(1);
            out.extend_from_slice(&v4.octets());
        }
        Addr::Ip(IpAddr::V6(v6)) => {
            out.push(4);
            out.extend_from_slice(&v6.octets());
        }
        Addr::Name(name) => {
            let len = u8::try_from(name.len())
                .map_err(|_| "host name longer than 255 bytes".to_string())?;
            out.extend([3, len]);
            out.extend_from_slice(name.as_bytes());
        }
    }
    out.extend_from_slice(&port.to_be_bytes());
    Ok(out)
}

/// Checks the first four bytes of the reply (RFC 1928 §6) and returns how many bytes of
/// bound address and port follow; for a name (type 3) the caller reads its length byte first,
/// and this returns 1 to say so.
pub fn reply_rest(head: [u8; 4]) -> Result<usize, String> {
    let [version, rep, _, atyp] = head;
    if version != VERSION {
        return Err(format!("not a SOCKS5 reply (version {version})"));
    }
    if rep != 0 {
        return Err(format!("{} (SOCKS5 reply {rep})", reply_text(rep)));
    }
    match atyp {
        1 => Ok(4 + 2),
        4 => Ok(16 + 2),
        3 => Ok(1),
        other => Err(format!("bad address type {other} in the reply")),
    }
}

/// RFC 1928 §6 reply field, in words.
fn reply_text(rep: u8) -> &'static str {
    match rep {
        1 => "general failure",
        2 => "not allowed by its rules",
        3 => "network unreachable",
        4 => "host unreachable",
        5 => "connection refused",
        6 => "TTL expired",
        7 => "command not supported",
        8 => "address type not supported",
        _ => "unknown error",
    }
}

/// Runs the whole handshake over `s`: method, optional credentials, CONNECT, reply.
pub async fn handshake<S>(
    s: &mut S,
    creds: Option<(&str, &str)>,
    addr: Addr<'_>,
    port: u16,
) -> Result<(), Failure>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // Sending greeting and request in one write would save a round trip, but some servers
    // read the greeting alone and drop what follows it: stay in lock step.
    s.write_all(&greeting(creds.is_some())).await?;
    s.flush().await?;
    let mut two = [0u8; 2];
    s.read_exact(&mut two).await?;
    if chosen(two, creds.is_some()).map_err(Failure::Refused)? {
        let (user, pass) = creds.unwrap_or_default();
        s.write_all(&credentials(user, pass)).await?;
        s.flush().await?;
        s.read_exact(&mut two).await?;
        authenticated(two).map_err(Failure::Refused)?;
    }
    s.write_all(&connect_request(addr, port).map_err(Failure::Refused)?)
        .await?;
    s.flush().await?;
    let mut head = [0u8; 4];
    s.read_exact(&mut head).await?;
    let mut rest = reply_rest(head).map_err(Failure::Refused)?;
    if rest == 1 {
        let mut len = [0u8; 1];
        s.read_exact(&mut len).await?;
        rest = usize::from(len[0]) + 2;
    }
    let mut bound = [0u8; 255 + 2];
    s.read_exact(&mut bound[..rest]).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future::block_on;

    #[test]
    fn messages() {
        assert_eq!(greeting(false), [5, 1, 0]);
        assert_eq!(greeting(true), [5, 2, 0, 2]);
        assert_eq!(chosen([5, 0], true), Ok(false));
        assert_eq!(chosen([5, 2], true), Ok(true));
        assert!(chosen([5, 2], false)
            .unwrap_err()
            .contains("requires credentials"));
        assert!(chosen([5, 0xff], false)
            .unwrap_err()
            .contains("requires credentials"));
        assert!(chosen([5, 0xff], true)
            .unwrap_err()
            .contains("accepts none"));
        assert!(chosen([4, 0], false)
            .unwrap_err()
            .contains("not a SOCKS5 server"));
        assert!(chosen([5, 1], true).unwrap_err().contains("did not offer"));
        assert_eq!(
            credentials("ann", "pw"),
            [1, 3, b'a', b'n', b'n', 2, b'p', b'w']
        );
        assert_eq!(credentials("a", ""), [1, 1, b'a', 0]);
        assert_eq!(authenticated([1, 0]), Ok(()));
        assert!(authenticated([1, 1]).is_err());
        let v4 = Addr::Ip("127.0.0.1".parse().unwrap());
        assert_eq!(
            connect_request(v4, 80).unwrap(),
            [5, 1, 0, 1, 127, 0, 0, 1, 0, 80]
        );
        let v6 = Addr::Ip("::1".parse().unwrap());
        let mut want = vec![5, 1, 0, 4];
        want.extend([0; 15]);
        want.extend([1, 0x01, 0xbb]);
        assert_eq!(connect_request(v6, 443).unwrap(), want);
        assert_eq!(
            connect_request(Addr::Name("localhost"), 8080).unwrap(),
            b"\x05\x01\x00\x03\x09localhost\x1f\x90"
        );
        assert!(connect_request(Addr::Name(&"a".repeat(256)), 1).is_err());
        assert_eq!(reply_rest([5, 0, 0, 1]), Ok(6));
        assert_eq!(reply_rest([5, 0, 0, 4]), Ok(18));
        assert_eq!(reply_rest([5, 0, 0, 3]), Ok(1));
        assert_eq!(
            reply_rest([5, 5, 0, 1]),
            Err("connection refused (SOCKS5 reply 5)".into())
        );
        assert!(reply_rest([5, 0, 0, 9]).is_err());
        assert!(reply_rest([0, 90, 0, 0]).is_err());
    }

    /// A scripted server: what it answers, in order; records what the client sent.
    struct Script {
        /// Bytes the server sends.
        answer: std::io::Cursor<Vec<u8>>,
        /// Bytes the client wrote.
        sent: Vec<u8>,
    }

    impl AsyncRead for Script {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &mut [u8],
        ) -> std::task::Poll<io::Result<usize>> {
            std::task::Poll::Ready(std::io::Read::read(&mut self.answer, buf))
        }
    }

    impl AsyncWrite for Script {
        fn poll_write(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<io::Result<usize>> {
            self.sent.extend_from_slice(buf);
            std::task::Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
        fn poll_close(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }

    fn run(
        answer: &[u8],
        creds: Option<(&str, &str)>,
        addr: Addr<'_>,
    ) -> (Result<(), Failure>, Vec<u8>, u64) {
        let mut s = Script {
            answer: std::io::Cursor::new(answer.to_vec()),
            sent: Vec::new(),
        };
        let r = block_on(handshake(&mut s, creds, addr, 443));
        let read = s.answer.position();
        (r, s.sent, read)
    }

    #[test]
    fn conversations() {
        // With credentials, a name for the proxy to resolve, and a name in the reply.
        let answer = b"\x05\x02\x01\x00\x05\x00\x00\x03\x04abcd\x01\xbbTUNNEL";
        let (r, sent, read) = run(answer, Some(("u", "p")), Addr::Name("localhost"));
        assert!(r.is_ok());
        assert_eq!(
            sent,
            b"\x05\x02\x00\x02\x01\x01u\x01p\x05\x01\x00\x03\x09localhost\x01\xbb"
        );
        // Tunnel bytes that followed the reply were not consumed.
        assert_eq!(read as usize, answer.len() - b"TUNNEL".len());
        // Wrong password.
        let (r, _, _) = run(b"\x05\x02\x01\x01", Some(("u", "bad")), Addr::Name("x"));
        assert!(matches!(r, Err(Failure::Refused(m)) if m.contains("rejected the credentials")));
        // Refused connection, IPv4 without credentials.
        let (r, _, _) = run(
            b"\x05\x00\x05\x05\x00\x01\0\0\0\0\0\0",
            None,
            Addr::Ip("127.0.0.1".parse().unwrap()),
        );
        assert!(matches!(r, Err(Failure::Refused(m)) if m.starts_with("connection refused")));
        // The server hangs up in the middle.
        let (r, _, _) = run(b"\x05\x00\x05\x00", None, Addr::Name("x"));
        assert!(matches!(r, Err(Failure::Io(e)) if e.kind() == io::ErrorKind::UnexpectedEof));
    }
}

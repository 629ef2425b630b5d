//! Streaming message bodies from one peer to another without holding them whole.
//!
//! A body is copied in buffer-sized pieces according to its [`Framing`]. Chunked bodies are
//! checked chunk by chunk while they pass (size lines, CRLFs, trailer section size), so a
//! malformed or overflowing chunk stops the relay instead of desynchronizing the connection.
//! For HTTP/1.0 clients a chunked body is decoded to plain bytes (RFC 9112 §7.1).

use std::io;
use std::time::Duration;

use futures_lite::{AsyncRead, AsyncWrite, AsyncWriteExt, FutureExt};

use crate::head::{Framing, MAX_HEAD};
use crate::reader::Reader;

/// Longest chunk-size line accepted, extensions included.
const MAX_CHUNK_LINE: usize = 4096;

/// How a chunked body is passed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Byte for byte, in the framing it arrived in.
    Pass,
    /// Chunked decoded to raw bytes, trailers dropped (for HTTP/1.0 recipients).
    Decode,
}

/// Why a body relay stopped early.
#[derive(Debug)]
pub enum BodyError {
    /// Reading from the sender failed, timed out or ended early.
    Read(io::Error),
    /// Writing to the recipient failed or timed out.
    Write(io::Error),
    /// The sender's framing is malformed.
    Malformed(&'static str),
}

/// A copy of the first bytes of a body's data as it streams past, for the capture.
///
/// It sees data only (chunk data decoded, never chunk framing or trailers), keeps at most
/// `limit` bytes and counts the rest, so a capture never holds more of a body than its limit.
#[derive(Debug, Clone, Default)]
pub struct Tap {
    /// Most bytes kept.
    pub limit: usize,
    /// The first data bytes, at most `limit` of them.
    pub kept: Vec<u8>,
    /// Every data byte seen, kept or not.
    pub total: u64,
}

impl Tap {
    /// An empty tap keeping up to `limit` bytes; nothing is allocated until data arrives.
    pub fn new(limit: usize) -> Tap {
        Tap {
            limit,
            kept: Vec::new(),
            total: 0,
        }
    }

    /// Takes note of `data`: counts it, and keeps what fits under the limit.
    pub fn take(&mut self, data: &[u8]) {
        let room = self.limit - self.kept.len();
        self.kept.extend_from_slice(&data[..data.len().min(room)]);
        self.total += data.len() as u64;
    }

    /// Whether some of the data was not kept.
    pub fn truncated(&self) -> bool {
        self.total > self.kept.len() as u64
    }
}

/// Copies one body from `src` to `dst`; returns the bytes written to `dst`.
pub async fn relay<R, W>(
    src: &mut Reader<R>,
    dst: &mut W,
    framing: Framing,
    mode: Mode,
    timeout: Duration,
) -> Result<u64, BodyError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    relay_tap(src, dst, framing, mode, timeout, None).await
}

/// [`relay`], also handing the body's data bytes to `tap` as they pass.
pub async fn relay_tap<R, W>(
    src: &mut Reader<R>,
    dst: &mut W,
    framing: Framing,
    mode: Mode,
    timeout: Duration,
    tap: Option<&mut Tap>,
) -> Result<u64, BodyError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut out = Writer {
        dst,
        timeout,
        written: 0,
        tap,
    };
    match framing {
        Framing::Empty => {}
        Framing::Length(n) => copy_exact(src, &mut out, n).await?,
        Framing::Close => loop {
            if src.buffered().is_empty() && fill(src).await? == 0 {
                break;
            }
            let n = src.buffered().len();
            out.write_data(src.buffered()).await?;
            src.consume(n);
        },
        Framing::Chunked => relay_chunked(src, &mut out, mode).await?,
    }
    out.flush().await?;
    Ok(out.written)
}

async fn relay_chunked<R, W>(
    src: &mut Reader<R>,
    out: &mut Writer<'_, W>,
    mode: Mode,
) -> Result<(), BodyError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    loop {
        let len = read_line(src, MAX_CHUNK_LINE).await?;
        let size = parse_chunk_size(&src.buffered()[..len])?;
        if mode == Mode::Pass {
            out.write(&src.buffered()[..len]).await?;
        }
        src.consume(len);
        if size == 0 {
            break;
        }
        copy_exact(src, out, size).await?;
        // Each chunk's data is followed by CRLF.
        while src.buffered().len() < 2 {
            if fill(src).await? == 0 {
                return Err(BodyError::Read(io::ErrorKind::UnexpectedEof.into()));
            }
        }
        if &src.buffered()[..2] != b"\r\n" {
            return Err(BodyError::Malformed("chunk data not followed by CRLF"));
        }
        if mode == Mode::Pass {
            out.write(b"\r\n").await?;
        }
        src.consume(2);
    }
    // Trailer section: field lines up to an empty line, bounded like a head.
    let mut total = 0;
    loop {
        let len = read_line(src, MAX_HEAD).await?;
        total += len;
        if total > MAX_HEAD {
            return Err(BodyError::Malformed("trailer section too large"));
        }
        let line = &src.buffered()[..len];
        let last = line == b"\r\n";
        if !last && !valid_trailer(line) {
            return Err(BodyError::Malformed("invalid trailer field"));
        }
        if mode == Mode::Pass {
            out.write(line).await?;
        }
        src.consume(len);
        if last {
            return Ok(());
        }
    }
}

/// A trailer field line: token ":" value CRLF, no bare CR, no NUL.
fn valid_trailer(line: &[u8]) -> bool {
    let Some(body) = line.strip_suffix(b"\r\n") else {
        return false;
    };
    let Some(colon) = body.iter().position(|&b| b == b':') else {
        return false;
    };
    let (name, value) = body.split_at(colon);
    !name.is_empty()
        && name.iter().all(|&b| is_tchar(b))
        && value[1..]
            .iter()
            .all(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

/// RFC 9110 §5.6.2 tchar.
pub fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Parses a chunk-size line (`HEX [; ext] CRLF`), RFC 9112 §7.1.
pub fn parse_chunk_size(line: &[u8]) -> Result<u64, BodyError> {
    let line = line
        .strip_suffix(b"\r\n")
        .ok_or(BodyError::Malformed("chunk size line without CRLF"))?;
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return Err(BodyError::Malformed("invalid chunk size"));
    }
    // 16 hex digits fill a u64; leading zeros beyond that are allowed but suspicious, so cap.
    let significant = line[..digits].iter().skip_while(|&&b| b == b'0').count();
    if significant > 15 {
        return Err(BodyError::Malformed("chunk size overflows"));
    }
    let size = line[..digits]
        .iter()
        .fold(0u64, |n, &b| n * 16 + u64::from(hex(b)));
    let rest = &line[digits..];
    let ws = rest
        .iter()
        .take_while(|&&b| b == b' ' || b == b'\t')
        .count();
    let ext = &rest[ws..];
    if !ext.is_empty()
        && (ext[0] != b';' || ext.iter().any(|&b| b < 0x20 && b != b'\t' || b == 0x7f))
    {
        return Err(BodyError::Malformed("invalid chunk extension"));
    }
    if ext.is_empty() && !rest.is_empty() {
        return Err(BodyError::Malformed("invalid chunk size"));
    }
    Ok(size)
}

fn hex(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        _ => b - b'A' + 10,
    }
}

/// Ensures a whole line (ending in LF) is buffered; returns its length.
async fn read_line<R: AsyncRead + Unpin>(
    src: &mut Reader<R>,
    limit: usize,
) -> Result<usize, BodyError> {
    let mut scanned = 0;
    loop {
        if let Some(i) = src.buffered()[scanned..].iter().position(|&b| b == b'\n') {
            return Ok(scanned + i + 1);
        }
        scanned = src.buffered().len();
        if scanned > limit {
            return Err(BodyError::Malformed("line too long in chunked body"));
        }
        if fill(src).await? == 0 {
            return Err(BodyError::Read(io::ErrorKind::UnexpectedEof.into()));
        }
    }
}

/// Copies exactly `n` bytes.
async fn copy_exact<R, W>(
    src: &mut Reader<R>,
    out: &mut Writer<'_, W>,
    mut n: u64,
) -> Result<(), BodyError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    while n > 0 {
        if src.buffered().is_empty() && fill(src).await? == 0 {
            return Err(BodyError::Read(io::ErrorKind::UnexpectedEof.into()));
        }
        let take = src
            .buffered()
            .len()
            .min(usize::try_from(n).unwrap_or(usize::MAX));
        out.write_data(&src.buffered()[..take]).await?;
        src.consume(take);
        n -= take as u64;
    }
    Ok(())
}

async fn fill<R: AsyncRead + Unpin>(src: &mut Reader<R>) -> Result<usize, BodyError> {
    src.fill().await.map_err(BodyError::Read)
}

/// The sending side with a per-write timeout and a byte count.
struct Writer<'a, W> {
    /// The recipient.
    dst: &'a mut W,
    /// Longest a single write may wait for the recipient.
    timeout: Duration,
    /// Bytes written so far.
    written: u64,
    /// Where body data (not framing) is also copied, for the capture.
    tap: Option<&'a mut Tap>,
}

impl<W: AsyncWrite + Unpin> Writer<'_, W> {
    /// Writes body data, which the tap sees too (framing goes through [`Writer::write`]).
    async fn write_data(&mut self, data: &[u8]) -> Result<(), BodyError> {
        if let Some(tap) = self.tap.as_deref_mut() {
            tap.take(data);
        }
        self.write(data).await
    }

    async fn write(&mut self, data: &[u8]) -> Result<(), BodyError> {
        let timeout = self.timeout;
        self.dst
            .write_all(data)
            .or(async {
                crate::alarm::sleep(timeout).await;
                Err(io::ErrorKind::TimedOut.into())
            })
            .await
            .map_err(BodyError::Write)?;
        self.written += data.len() as u64;
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), BodyError> {
        self.dst.flush().await.map_err(BodyError::Write)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future::block_on;

    fn run(input: &[u8], framing: Framing, mode: Mode) -> Result<Vec<u8>, String> {
        let mut src = Reader::new(input, Duration::from_secs(1));
        let mut out = Vec::new();
        block_on(relay(
            &mut src,
            &mut out,
            framing,
            mode,
            Duration::from_secs(1),
        ))
        .map(|_| out)
        .map_err(|e| format!("{e:?}"))
    }

    macro_rules! chunked {
        ($($input:expr => $pass:expr, $decoded:expr;)*) => {$(
            let pass = run($input, Framing::Chunked, Mode::Pass).ok();
            let decoded = run($input, Framing::Chunked, Mode::Decode).ok();
            assert_eq!(pass.as_deref(), $pass.map(|s: &[u8]| s), "pass {:?}", String::from_utf8_lossy($input));
            assert_eq!(decoded.as_deref(), $decoded.map(|s: &[u8]| s), "decode {:?}", String::from_utf8_lossy($input));
        )*};
    }

    #[test]
    fn chunked_cases() {
        let none: Option<&[u8]> = None;
        chunked! {
            b"5\r\nhello\r\n0\r\n\r\n" => Some(&b"5\r\nhello\r\n0\r\n\r\n"[..]), Some(&b"hello"[..]);
            b"5;ext=1\r\nhello\r\n0\r\nX-T: 1\r\n\r\n" => Some(&b"5;ext=1\r\nhello\r\n0\r\nX-T: 1\r\n\r\n"[..]), Some(&b"hello"[..]);
            b"A\r\n0123456789\r\n0\r\n\r\n" => Some(&b"A\r\n0123456789\r\n0\r\n\r\n"[..]), Some(&b"0123456789"[..]);
            b"5\r\nhelloXX0\r\n\r\n" => none, none;
            b"-5\r\nhello\r\n0\r\n\r\n" => none, none;
            b"0x5\r\nhello\r\n0\r\n\r\n" => none, none;
            b"fffffffffffffffff\r\n" => none, none;
            b"10000000000000000\r\n" => none, none;
            b"5 \r\nhello\r\n0\r\n\r\n" => none, none;
            b"5\nhello\r\n0\r\n\r\n" => none, none;
            b"5\r\nhel" => none, none;
            b"0\r\nBad Trailer\r\n\r\n" => none, none;
            b"000000000000000000005\r\nhello\r\n0\r\n\r\n" => Some(&b"000000000000000000005\r\nhello\r\n0\r\n\r\n"[..]), Some(&b"hello"[..]);
        }
    }

    fn tapped(input: &[u8], framing: Framing, mode: Mode, limit: usize) -> Tap {
        let mut src = Reader::new(input, Duration::from_secs(1));
        let mut tap = Tap::new(limit);
        let timeout = Duration::from_secs(1);
        let mut out = Vec::new();
        block_on(relay_tap(
            &mut src,
            &mut out,
            framing,
            mode,
            timeout,
            Some(&mut tap),
        ))
        .unwrap();
        tap
    }

    #[test]
    fn tap_sees_data_only_up_to_its_limit() {
        let chunked = b"5\r\nhello\r\n6;x=1\r\n world\r\n0\r\nX-T: 1\r\n\r\n";
        // (input, framing, mode, limit) => (kept, total)
        for (input, framing, mode, limit, kept, total) in [
            (
                &chunked[..],
                Framing::Chunked,
                Mode::Pass,
                100,
                &b"hello world"[..],
                11,
            ),
            (
                &chunked[..],
                Framing::Chunked,
                Mode::Decode,
                100,
                b"hello world",
                11,
            ),
            (
                &chunked[..],
                Framing::Chunked,
                Mode::Pass,
                7,
                b"hello w",
                11,
            ),
            (&chunked[..], Framing::Chunked, Mode::Pass, 0, b"", 11),
            (b"hello world", Framing::Length(5), Mode::Pass, 3, b"hel", 5),
            (
                b"all of it",
                Framing::Close,
                Mode::Pass,
                64,
                b"all of it",
                9,
            ),
            (b"", Framing::Empty, Mode::Pass, 64, b"", 0),
        ] {
            let tap = tapped(input, framing, mode, limit);
            assert_eq!(
                (tap.kept.as_slice(), tap.total),
                (kept, total),
                "{framing:?} {limit}"
            );
            assert_eq!(tap.truncated(), (kept.len() as u64) < total);
        }
    }

    #[test]
    fn length_and_close() {
        assert_eq!(
            run(b"hello world", Framing::Length(5), Mode::Pass).unwrap(),
            b"hello"
        );
        assert!(run(b"hel", Framing::Length(5), Mode::Pass).is_err());
        assert_eq!(
            run(b"all of it", Framing::Close, Mode::Pass).unwrap(),
            b"all of it"
        );
        assert_eq!(run(b"ignored", Framing::Empty, Mode::Pass).unwrap(), b"");
    }
}

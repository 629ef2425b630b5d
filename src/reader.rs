//! A buffered reader that finds message heads and hands out what follows them.
//!
//! Both sides of an exchange read through a [`Reader`]: it keeps bytes that arrived after a
//! head (a body, the next pipelined request, tunnel data sent early) so nothing is lost. The
//! buffer is taken from a spare pool when bytes are read and given back as soon as it is empty
//! or a read has to wait, so a connection waiting for its peer (an idle keep-alive client, a
//! request waiting for its origin's answer) holds no buffer: the buffers in use are those of
//! connections with bytes in hand, and the heap does not grow with the connections that wait
//! (measured: 50 keep-alive clients held 1.6 MB of buffers, left behind as heap after the load).
//! Every read is bounded by a timeout.

use std::io;
use std::pin::Pin;
use std::time::{Duration, Instant};

use futures_lite::{future, AsyncRead, FutureExt};

use crate::alarm::Alarm;
use crate::head::{MAX_HEAD, MAX_URI};
use crate::spare::{Lease, Spares};

/// Size of the read buffer: large enough for most heads and efficient body copies.
const BUFFER_SIZE: usize = 16 * 1024;

/// Read buffers of connections that went idle or closed, kept for the next one (up to 1 MiB):
/// a connection then costs neither an allocation nor zeroing 16 KiB per request.
pub static READ_BUFFERS: Spares = Spares::new(BUFFER_SIZE, 64);

/// Why a head could not be read.
#[derive(Debug)]
pub enum HeadError {
    /// The peer closed before sending a complete head; `true` if some bytes had arrived.
    Closed(bool),
    /// The head (or its first line) exceeded the limits.
    TooLarge,
    /// The first line alone exceeded [`MAX_URI`].
    LineTooLong,
    /// Reading failed or timed out.
    Io(io::Error),
}

/// A read buffer over a stream.
pub struct Reader<S> {
    /// The stream read from.
    pub io: S,
    /// Buffer; none while nothing is buffered.
    buf: Option<Lease>,
    /// Start of the unconsumed bytes.
    start: usize,
    /// End of the valid bytes.
    end: usize,
    /// Longest wait for one read before it fails with `TimedOut`.
    pub timeout: Duration,
    /// The one timer behind every read's timeout.
    alarm: Alarm,
}

impl<S: AsyncRead + Unpin> Reader<S> {
    /// A reader with an idle timeout per read.
    pub fn new(io: S, timeout: Duration) -> Reader<S> {
        Reader {
            io,
            buf: None,
            start: 0,
            end: 0,
            timeout,
            alarm: Alarm::default(),
        }
    }

    /// The bytes buffered and not yet consumed.
    pub fn buffered(&self) -> &[u8] {
        match &self.buf {
            Some(lease) => &lease.buf[self.start..self.end],
            None => &[],
        }
    }

    /// The buffered bytes, taken out: the buffer goes back to the pool (bytes read past a head
    /// that now belong to a tunnel).
    pub fn take_buffered(&mut self) -> Vec<u8> {
        let rest = self.buffered().to_vec();
        self.consume(rest.len());
        rest
    }

    /// Marks `n` buffered bytes as used; an emptied buffer goes back to the pool.
    pub fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
        self.release();
    }

    /// Frees the buffer if nothing is in it (an idle connection then holds no memory for it).
    pub fn release(&mut self) {
        if self.start == self.end {
            self.buf = None;
            self.start = 0;
            self.end = 0;
        }
    }

    /// Reads more bytes into the buffer; returns 0 at end of stream.
    pub async fn fill(&mut self) -> io::Result<usize> {
        let Reader {
            io,
            buf,
            start,
            end,
            timeout,
            alarm,
        } = self;
        if let Some(lease) = buf.as_mut().filter(|lease| *end == lease.buf.len()) {
            if *start > 0 {
                lease.buf.copy_within(*start..*end, 0);
                *end -= *start;
                *start = 0;
            } else {
                // Only a head that is still incomplete grows the buffer, up to the head limit.
                lease.buf.resize(lease.buf.len() * 2, 0);
            }
        }
        let read = future::poll_fn(|cx| {
            let lease = buf.get_or_insert_with(|| READ_BUFFERS.take());
            let got = Pin::new(&mut *io).poll_read(cx, &mut lease.buf[*end..]);
            // Nothing to read yet: an empty buffer waits in the pool, not in this connection.
            if got.is_pending() && start == end {
                (*buf, *start, *end) = (None, 0, 0);
            }
            got
        });
        // A read must complete `timeout` after it started.
        let (since, timeout) = (Instant::now(), *timeout);
        let n = read
            .or(async {
                alarm.wait(|| since + timeout).await;
                Err(io::ErrorKind::TimedOut.into())
            })
            .await?;
        *end += n;
        Ok(n)
    }

    /// Reads until a whole head is buffered and returns its length (including the blank
    /// line). Empty lines before it are skipped (RFC 9112 §2.2).
    pub async fn read_head(&mut self) -> Result<usize, HeadError> {
        let (mut scanned, mut skipped) = (0, 0);
        loop {
            // Skip empty lines (CRLF, or a bare LF) left over between messages, e.g. the CRLF
            // old clients send after a body. A CR alone is not an empty line: it stays, and
            // the head parser rejects it.
            let blank = empty_lines(self.buffered());
            if blank > 0 {
                self.consume(blank);
                skipped += blank;
                scanned = 0;
            }
            let data = self.buffered();
            if let Some(end) = find_head_end(data, scanned) {
                return Ok(end);
            }
            // Resume the scan a little before the end: a terminator may straddle two reads.
            scanned = data.len().saturating_sub(3);
            // Skipped lines count too, so a peer cannot send empty lines for ever.
            if skipped + data.len() > MAX_HEAD {
                return Err(HeadError::TooLarge);
            }
            if data.len() > MAX_URI + 64 && !data.contains(&b'\n') {
                return Err(HeadError::LineTooLong);
            }
            match self.fill().await {
                Ok(0) => return Err(HeadError::Closed(!self.buffered().is_empty())),
                Ok(_) => {}
                Err(e) => return Err(HeadError::Io(e)),
            }
        }
    }
}

/// The length of the empty lines (CRLF or LF) at the start of `data`.
fn empty_lines(data: &[u8]) -> usize {
    let mut n = 0;
    while let Some(rest) = data.get(n..) {
        match rest {
            [b'\r', b'\n', ..] => n += 2,
            [b'\n', ..] => n += 1,
            _ => break,
        }
    }
    n
}

/// Finds the end of a head (after `\n\r\n` or `\n\n`), looking from `from` on.
fn find_head_end(data: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while let Some(pos) = data[i..].iter().position(|&b| b == b'\n') {
        let nl = i + pos;
        match data.get(nl + 1) {
            Some(b'\n') => return Some(nl + 2),
            Some(b'\r') if data.get(nl + 2) == Some(&b'\n') => return Some(nl + 3),
            _ => i = nl + 1,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::AsyncReadExt;

    #[test]
    fn head_end() {
        assert_eq!(
            find_head_end(b"GET / HTTP/1.1\r\nA: b\r\n\r\nbody", 0),
            Some(24)
        );
        assert_eq!(find_head_end(b"GET / HTTP/1.1\nA: b\n\nbody", 0), Some(21));
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\nA: b\r\n", 0), None);
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\nA: b\r\n\r", 0), None);
    }

    #[test]
    fn split_heads_and_leftovers() {
        let data: &[u8] = b"\r\nGET http://a/ HTTP/1.1\r\nHost: a\r\n\r\nNEXT";
        let mut r = Reader::new(data, Duration::from_secs(1));
        let n = futures_lite::future::block_on(r.read_head()).unwrap();
        assert!(r.buffered()[..n].starts_with(b"GET"));
        r.consume(n);
        assert_eq!(r.buffered(), b"NEXT");
    }

    #[test]
    fn empty_lines_before_a_head() {
        assert_eq!(empty_lines(b"\r\n\n\r\nGET"), 5);
        assert_eq!(empty_lines(b"\r\n\r"), 2);
        assert_eq!(empty_lines(b"\rGET"), 0);
        assert_eq!(empty_lines(b"\r\r\n"), 0);
        assert_eq!(empty_lines(b""), 0);
        // A CRLF split over two reads is still skipped whole.
        let data: &[u8] = b"\r\nGET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n";
        let two_reads = (&data[..1]).chain(&data[1..]);
        let mut r = Reader::new(two_reads, Duration::from_secs(1));
        let n = futures_lite::future::block_on(r.read_head()).unwrap();
        assert_eq!(&r.buffered()[..n], &data[2..]);
        // A bare CR stays for the head parser to reject.
        let data: &[u8] = b"\rGET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n";
        let mut r = Reader::new(data, Duration::from_secs(1));
        let n = futures_lite::future::block_on(r.read_head()).unwrap();
        assert_eq!(&r.buffered()[..n], data);
        // Endless empty lines end like an oversized head.
        let data = b"\r\n".repeat(MAX_HEAD);
        let mut r = Reader::new(&data[..], Duration::from_secs(1));
        let got = futures_lite::future::block_on(r.read_head());
        assert!(matches!(got, Err(HeadError::TooLarge)));
    }

    /// A stream with nothing to read yet.
    struct Silent;

    impl AsyncRead for Silent {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            _: &mut [u8],
        ) -> std::task::Poll<io::Result<usize>> {
            std::task::Poll::Pending
        }
    }

    #[test]
    fn no_buffer_is_held_while_empty_or_waiting() {
        let mut r = Reader::new(
            &b"GET http://a/ HTTP/1.1\r\n\r\n"[..],
            Duration::from_secs(1),
        );
        let n = futures_lite::future::block_on(r.read_head()).unwrap();
        assert!(r.buf.is_some(), "a buffer holds the head");
        r.consume(n);
        assert!(r.buf.is_none(), "an emptied buffer goes back");
        let mut waiting = Reader::new(Silent, Duration::from_secs(1));
        let polled =
            futures_lite::future::block_on(futures_lite::future::poll_once(waiting.fill()));
        assert!(polled.is_none(), "the read waits");
        assert!(waiting.buf.is_none(), "a waiting read holds no buffer");
    }

    #[test]
    fn oversized_head() {
        let data = vec![b'a'; MAX_HEAD * 2];
        let mut r = Reader::new(&data[..], Duration::from_secs(1));
        let got = futures_lite::future::block_on(r.read_head());
        assert!(matches!(got, Err(HeadError::LineTooLong)));
    }
}

//! Any bytes as a SOCKS5 server's answers to our handshake (first byte: with or without
//! credentials, name or address): never panics, and never reads past the reply.
#![no_main]
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_lite::{future::block_on, AsyncRead, AsyncWrite};
use libfuzzer_sys::fuzz_target;
use smolproxy::socks5::{handshake, Addr};

/// The server side: answers from the fuzz input, everything we send is accepted.
struct Server<'a>(&'a [u8]);

impl AsyncRead for Server<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let n = buf.len().min(self.0.len());
        buf[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        Poll::Ready(Ok(n))
    }
}

impl AsyncWrite for Server<'_> {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, answers)) = data.split_first() else {
        return;
    };
    let creds = (flags & 1 == 1).then_some(("user", "pass"));
    let addr = if flags & 2 == 2 {
        Addr::Name("example.com")
    } else {
        Addr::Ip(IpAddr::V4(Ipv4Addr::LOCALHOST))
    };
    // A reply is at most 2 + 2 + 4 + 1 + 255 + 2 bytes; whatever follows belongs to the tunnel.
    let mut server = Server(answers);
    if block_on(handshake(&mut server, creds, addr, 443)).is_ok() {
        assert!(answers.len() - server.0.len() <= 266, "read past the reply");
    }
});

//! Reaching a host: name resolution with a bounded number of lookups in flight, then
//! connection attempts to every address, staggered in the spirit of Happy Eyeballs (RFC 8305
//! §5), all under the connect timeout. Nothing here speaks HTTP.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use async_io::{Async, Timer};
use futures_lite::{future, FutureExt};
use smol::lock::Semaphore;

use crate::stream::Tcp;

/// Lookups running at once. Each takes a thread from `blocking`'s pool (which grows to 500
/// threads otherwise); 16 keeps a router's memory flat while serving a busy LAN.
const MAX_LOOKUPS: usize = 16;
/// Delay before the next address is tried while earlier attempts are still pending
/// (RFC 8305 §5 recommends 250 ms).
const ATTEMPT_DELAY: Duration = Duration::from_millis(250);

static LOOKUPS: Semaphore = Semaphore::new(MAX_LOOKUPS);

/// Resolves `host` (a name or IP literal) to addresses, IPv6 and IPv4 interleaved.
pub async fn resolve(host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let _slot = LOOKUPS.acquire().await;
    let addrs = smol::net::resolve((host, port)).await?;
    if addrs.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            "name does not resolve",
        ));
    }
    Ok(interleave(addrs))
}

/// RFC 8305 §4: alternate address families, starting with the first one returned.
fn interleave(addrs: Vec<SocketAddr>) -> Vec<SocketAddr> {
    let first_v6 = addrs[0].is_ipv6();
    let (a, b): (Vec<_>, Vec<_>) = addrs.into_iter().partition(|s| s.is_ipv6() == first_v6);
    let mut out = Vec::with_capacity(a.len() + b.len());
    for i in 0..a.len().max(b.len()) {
        out.extend(a.get(i));
        out.extend(b.get(i));
    }
    out
}

/// Resolves and connects to `host:port` within `timeout`.
pub async fn connect(host: &str, port: u16, timeout: Duration) -> io::Result<Tcp> {
    connect_checked(host, port, timeout, &|_| Ok(()))
        .await
        .map_err(|e| match e {
            DialError::Io(e) => e,
            DialError::Refused(why) => io::Error::other(why),
        })
}

/// A check on each address before it is dialled; `Err` says which rule refused it.
pub type Admit<'a> = dyn Fn(IpAddr) -> Result<(), String> + Sync + 'a;

/// Why [`connect_checked`] did not connect.
#[derive(Debug)]
pub enum DialError {
    /// The check refused every address; the first refusal.
    Refused(String),
    /// The name did not resolve, every attempt failed, or the time ran out.
    Io(io::Error),
}

/// Resolves `host` and connects, within `timeout`, only to addresses `admit` accepts: the
/// egress policy sees exactly the addresses that are dialled, so a name that resolves into a
/// refused network cannot get there (no DNS-rebinding bypass between a check and the dial).
pub async fn connect_checked(
    host: &str,
    port: u16,
    timeout: Duration,
    admit: &Admit<'_>,
) -> Result<Tcp, DialError> {
    async {
        let mut refused = None;
        let addrs: Vec<SocketAddr> = resolve(host, port)
            .await
            .map_err(DialError::Io)?
            .into_iter()
            .filter(|a| match admit(a.ip()) {
                Ok(()) => true,
                Err(why) => {
                    refused.get_or_insert(why);
                    false
                }
            })
            .collect();
        if addrs.is_empty() {
            if let Some(why) = refused {
                return Err(DialError::Refused(why));
            }
        }
        race(&addrs).await.map_err(DialError::Io)
    }
    .or(async {
        crate::alarm::sleep(timeout).await;
        Err(DialError::Io(io::ErrorKind::TimedOut.into()))
    })
    .await
    .map(Tcp::new)
}

type Attempt = Pin<Box<dyn Future<Output = io::Result<Async<TcpStream>>> + Send>>;

/// Starts an attempt per address, the next one after [`ATTEMPT_DELAY`] or as soon as one
/// fails; the first to connect wins and the others are dropped (closing their sockets).
async fn race(addrs: &[SocketAddr]) -> io::Result<Async<TcpStream>> {
    let mut pending: Vec<Attempt> = Vec::new();
    let mut next = 0;
    let mut delay = Timer::never();
    let mut last_err = io::Error::new(io::ErrorKind::NotFound, "no address");
    // Set when an attempt failed: the next one starts without waiting for the delay.
    let mut failed = false;
    future::poll_fn(|cx| {
        loop {
            let start = next < addrs.len()
                && (pending.is_empty()
                    || std::mem::take(&mut failed)
                    || Pin::new(&mut delay).poll(cx).is_ready());
            if !start {
                break;
            }
            pending.push(Box::pin(Async::<TcpStream>::connect(addrs[next])));
            next += 1;
            if next < addrs.len() {
                // Only worth a timer when there is another address to try.
                delay.set_after(ATTEMPT_DELAY);
            }
        }
        let mut i = 0;
        while i < pending.len() {
            match pending[i].as_mut().poll(cx) {
                Poll::Ready(Ok(stream)) => return Poll::Ready(Ok(stream)),
                Poll::Ready(Err(e)) => {
                    last_err = e;
                    drop(pending.swap_remove(i));
                    // A failure starts the next attempt right away (RFC 8305 §5).
                    if next < addrs.len() {
                        failed = true;
                        cx.waker().wake_by_ref();
                    }
                }
                Poll::Pending => i += 1,
            }
        }
        if pending.is_empty() && next >= addrs.len() {
            let e = std::mem::replace(&mut last_err, io::ErrorKind::NotFound.into());
            return Poll::Ready(Err(e));
        }
        Poll::Pending
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interleaves_families() {
        let a: Vec<SocketAddr> = ["[::1]:1", "[::2]:1", "1.1.1.1:1", "[::3]:1", "2.2.2.2:1"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let got: Vec<String> = interleave(a).iter().map(|s| s.to_string()).collect();
        assert_eq!(
            got,
            ["[::1]:1", "1.1.1.1:1", "[::2]:1", "2.2.2.2:1", "[::3]:1"]
        );
    }

    #[test]
    fn refused_then_next_address() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let good = listener.local_addr().unwrap();
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let got = future::block_on(race(&[closed, good])).unwrap();
        assert_eq!(got.get_ref().peer_addr().unwrap(), good);
        let err = future::block_on(race(&[closed])).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
    }

    #[test]
    fn refused_addresses_are_never_dialled() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let limit = Duration::from_secs(5);
        let deny = |ip: IpAddr| Err(format!("no {ip}"));
        let got = future::block_on(connect_checked("127.0.0.1", port, limit, &deny));
        assert!(matches!(got, Err(DialError::Refused(why)) if why == "no 127.0.0.1"));
        listener.set_nonblocking(true).unwrap();
        assert!(listener.accept().is_err(), "a refused address was dialled");
        let allow = |_: IpAddr| Ok(());
        assert!(future::block_on(connect_checked("127.0.0.1", port, limit, &allow)).is_ok());
    }
}

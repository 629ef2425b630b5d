//! Fault injection: broken peers on either side of the real proxy binary.
//!
//! Each test starts `smolproxy` on port 0 and an origin on 127.0.0.1:0 that misbehaves in one
//! precise way: it closes or stalls in the middle of a response, resets a tunnel, or the client
//! vanishes while a body is moving. What a user checks is asserted: the client sees the
//! truncation (a closed connection, never a hang and never a response that looks complete),
//! the proxy gives up on a stalled peer within a few seconds of `--idle-timeout`, and the other
//! side of an abandoned exchange is closed promptly instead of being left open. DNS failure is
//! tested with the proxy in its own mount namespace whose /etc/resolv.conf points at a dead
//! local resolver, so no query ever leaves the machine.
//!
//! Not here: an external authorization service that stalls is tested with the rest of
//! `--authz-url` (tests/policy.rs).

mod common;

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::{assert_still_serving, build_request, show, Conn, Origin, Proxy};

/// The idle timeout given to the proxy where a stall is tested.
const IDLE: &str = "1s";
/// How long after `IDLE` the proxy may take to act on it (a loaded 2-core CI machine).
const SLACK: Duration = Duration::from_secs(4);

/// How a connection ended from the reader's point of view.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// End of stream.
    Eof,
    /// Reset or another error: the peer is gone.
    Reset,
    /// Still open at the deadline: the peer hangs.
    Open,
}

/// Reads everything until the peer closes or `within` passes; returns the bytes (including
/// what `conn` had buffered) and how it ended.
fn read_until_close(conn: &mut Conn, within: Duration) -> (Vec<u8>, End) {
    let mut out = conn.buffered().to_vec();
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 64 * 1024];
    loop {
        let Some(left) = deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
        else {
            return (out, End::Open);
        };
        conn.stream.set_read_timeout(Some(left)).unwrap();
        match conn.stream.read(&mut buf) {
            Ok(0) => return (out, End::Eof),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return (out, End::Reset),
        }
    }
}

/// A GET for `url` that keeps the connection alive (so only the proxy can end it).
fn keep_alive_get(url: &str) -> Vec<u8> {
    build_request("GET", url, &[], b"")
}

#[test]
fn origin_closes_mid_content_length_body() {
    let origin = Origin::tcp(|conn| {
        let _ = conn.read_head();
        // Promise 100 bytes, send 10, close.
        let _ = conn.try_write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789");
    });
    let proxy = Proxy::start(&[]);
    let mut client = Conn::connect(proxy.addr);
    client.write(&keep_alive_get(&origin.url("/truncated")));
    let head = client.read_head().unwrap().expect("a response head");
    assert_eq!(head.status(), 200, "{}", head.text());
    assert_eq!(head.get("content-length"), Some("100"), "{}", head.text());
    let (body, end) = read_until_close(&mut client, SLACK);
    assert_ne!(
        end,
        End::Open,
        "the client connection hangs after the origin closed mid-body"
    );
    assert_eq!(
        body, b"0123456789",
        "the client must get exactly what the origin sent"
    );
    assert_still_serving(proxy.addr, &Origin::echo());
}

#[test]
fn a_broken_request_body_after_the_response_began_cuts_it_short_instead_of_a_400() {
    // The origin answers before the upload is done; then the client's chunked body turns out
    // malformed. A 400 now would land in the middle of the 200's body.
    let origin = Origin::tcp(|conn| {
        let _ = conn.read_head();
        let _ = conn.try_write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n");
        let _ = conn.try_write(&[b'a'; 900]);
        thread::sleep(Duration::from_secs(3));
    });
    let proxy = Proxy::start(&[]);
    let mut client = Conn::connect(proxy.addr);
    client.write(
        format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
            origin.url("/upload"),
            origin.authority()
        )
        .as_bytes(),
    );
    let head = client.read_head().unwrap().expect("a response head");
    assert_eq!(head.status(), 200, "{}", head.text());
    client.write(b"not-a-chunk-size\r\n");
    let (body, end) = read_until_close(&mut client, SLACK);
    assert_ne!(end, End::Open, "the client connection hangs");
    assert!(
        body.len() < 1000,
        "a cut body was made to look complete: {} bytes",
        body.len()
    );
    assert!(
        !String::from_utf8_lossy(&body).contains("HTTP/1.1 400"),
        "an error reply inside a body: {}",
        String::from_utf8_lossy(&body)
    );
    assert_still_serving(proxy.addr, &Origin::echo());
}

#[test]
fn origin_closes_mid_chunked_body() {
    let origin = Origin::tcp(|conn| {
        let _ = conn.read_head();
        let _ = conn.try_write(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n8\r\nwor",
        );
    });
    let proxy = Proxy::start(&[]);
    let mut client = Conn::connect(proxy.addr);
    client.write(&keep_alive_get(&origin.url("/truncated-chunked")));
    let head = client.read_head().unwrap().expect("a response head");
    assert_eq!(head.status(), 200, "{}", head.text());
    assert_eq!(
        head.tokens("transfer-encoding").last().map(String::as_str),
        Some("chunked"),
        "{}",
        head.text()
    );
    let (body, end) = read_until_close(&mut client, SLACK);
    assert_ne!(
        end,
        End::Open,
        "the client connection hangs after the origin closed mid-chunk"
    );
    // Never a fabricated last chunk: the client must not be able to take this as complete.
    assert!(
        !show(&body).contains("0\r\n\r\n"),
        "a last chunk was invented: {}",
        show(&body)
    );
    assert!(body.starts_with(b"5\r\nhello\r\n"), "{}", show(&body));
    assert_still_serving(proxy.addr, &Origin::echo());
}

#[test]
fn origin_closes_mid_chunked_body_for_an_http10_client() {
    // An HTTP/1.0 client gets the chunked body decoded and delimited by the close of the
    // connection (RFC 9112 §7.1), so a plain close would make the truncated body look
    // complete. The only signal left is an abortive close (a reset).
    let origin = Origin::tcp(|conn| {
        let _ = conn.read_head();
        let _ = conn.try_write(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n8\r\nwor",
        );
    });
    let proxy = Proxy::start(&[]);
    let mut client = Conn::connect(proxy.addr);
    client.write(format!("GET {} HTTP/1.0\r\n\r\n", origin.url("/truncated-for-1.0")).as_bytes());
    let head = client.read_head().unwrap().expect("a response head");
    assert_eq!(head.status(), 200, "{}", head.text());
    let (body, end) = read_until_close(&mut client, SLACK);
    assert_ne!(
        end,
        End::Open,
        "the client connection hangs after the origin closed mid-chunk"
    );
    assert_eq!(
        end,
        End::Reset,
        "a truncated body reached an HTTP/1.0 client as a clean close, which reads as complete: {}",
        show(&body)
    );
    assert_still_serving(proxy.addr, &Origin::echo());
}

#[test]
fn origin_stalls_before_the_head_gives_504() {
    let origin = Origin::tcp(|conn| {
        let _ = conn.read_head();
        thread::sleep(Duration::from_secs(10)); // say nothing, keep the connection open
    });
    let proxy = Proxy::start(&["--idle-timeout", IDLE]);
    let started = Instant::now();
    let mut client = Conn::connect(proxy.addr);
    client.set_timeout(SLACK + Duration::from_secs(1));
    client.write(&keep_alive_get(&origin.url("/stall")));
    let res = client
        .read_response()
        .expect("a 504 before the test's own timeout");
    let took = started.elapsed();
    res.assert_error(504);
    assert!(
        took >= Duration::from_millis(900),
        "gave up before the idle timeout: {took:?}"
    );
    assert!(
        took < Duration::from_secs(1) + SLACK,
        "took {took:?} to give up on a silent origin"
    );
    assert_still_serving(proxy.addr, &Origin::echo());
}

#[test]
fn origin_stalls_mid_body_closes_the_client() {
    let origin = Origin::tcp(|conn| {
        let _ = conn.read_head();
        let _ = conn.try_write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789");
        thread::sleep(Duration::from_secs(10));
    });
    let proxy = Proxy::start(&["--idle-timeout", IDLE]);
    let mut client = Conn::connect(proxy.addr);
    client.write(&keep_alive_get(&origin.url("/stall-body")));
    let head = client.read_head().unwrap().expect("a response head");
    assert_eq!(head.status(), 200);
    let started = Instant::now();
    let (body, end) = read_until_close(&mut client, Duration::from_secs(1) + SLACK);
    assert_ne!(
        end,
        End::Open,
        "the proxy kept a client waiting on a stalled origin for {:?}",
        started.elapsed()
    );
    assert_eq!(body, b"0123456789");
    assert_still_serving(proxy.addr, &Origin::echo());
}

/// CONNECT to a TCP origin that echoes one message, then fails as `die` says; the client
/// must see the tunnel close.
fn tunnel_peer_dies(die: fn(&mut Conn)) {
    let origin = Origin::tcp(move |conn| {
        let mut buf = [0u8; 4];
        if conn.stream.read_exact(&mut buf).is_ok() && conn.stream.write_all(&buf).is_ok() {
            die(conn);
        }
    });
    let proxy = Proxy::start(&["--connect-ports", "any"]);
    let mut client = Conn::connect(proxy.addr);
    let authority = origin.authority();
    client.write(format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n").as_bytes());
    let head = client.read_head().unwrap().expect("a CONNECT response");
    assert_eq!(head.status(), 200, "{}", head.text());
    client.write(b"ping");
    assert_eq!(client.read_exact(4).unwrap(), b"ping");
    let _ = client.try_write(b"more");
    let started = Instant::now();
    let (rest, end) = read_until_close(&mut client, SLACK);
    assert_ne!(
        end,
        End::Open,
        "the tunnel stayed open {:?} after its origin died",
        started.elapsed()
    );
    assert!(
        rest.is_empty(),
        "unexpected bytes after the origin died: {}",
        show(&rest)
    );
    assert_still_serving(proxy.addr, &Origin::echo());
}

#[test]
fn tunnel_origin_closes() {
    // A FIN toward the proxy right after the echo; the socket itself stays open for a while,
    // so this is a clean close and not a reset.
    tunnel_peer_dies(|conn| {
        let _ = conn.stream.shutdown(Shutdown::Write);
        thread::sleep(Duration::from_secs(3));
    });
}

#[test]
fn tunnel_origin_resets() {
    // Let "more" arrive, then close without reading it: the kernel answers with a reset.
    tunnel_peer_dies(|_| thread::sleep(Duration::from_millis(300)));
}

#[test]
fn upstream_proxy_dies_mid_tunnel() {
    // A fake HTTP upstream proxy: accepts the CONNECT, echoes one message, then resets.
    let upstream = Origin::tcp(|conn| {
        if !matches!(conn.read_head(), Ok(Some(h)) if h.method() == "CONNECT") {
            return;
        }
        conn.write(b"HTTP/1.1 200 Connection established\r\n\r\n");
        let mut buf = [0u8; 4];
        let pending = conn.buffered().to_vec();
        let got = pending.len().min(4);
        buf[..got].copy_from_slice(&pending[..got]);
        if conn.stream.read_exact(&mut buf[got..]).is_ok() && conn.stream.write_all(&buf).is_ok() {
            thread::sleep(Duration::from_millis(300));
        }
    });
    let upstream_url = format!("http://{}", upstream.authority());
    // 127.0.0.1 bypasses the upstream, so the check that the proxy still serves goes direct.
    let proxy = Proxy::start(&[
        "--connect-ports",
        "any",
        "--upstream",
        &upstream_url,
        "--bypass",
        "127.0.0.1",
    ]);
    let mut client = Conn::connect(proxy.addr);
    client.write(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n");
    let head = client.read_head().unwrap().expect("a CONNECT response");
    assert_eq!(head.status(), 200, "{}", head.text());
    client.write(b"ping");
    assert_eq!(client.read_exact(4).unwrap(), b"ping");
    let _ = client.try_write(b"more");
    let (_, end) = read_until_close(&mut client, SLACK);
    assert_ne!(
        end,
        End::Open,
        "the tunnel stayed open after the upstream proxy died"
    );
    assert_still_serving(proxy.addr, &Origin::echo());
}

/// What an origin saw of a request body: bytes read and how the connection ended, with the
/// time it ended.
type BodySeen = (usize, End, Instant);

/// An origin that reads one request head, then the body until the connection ends (or 10 s
/// pass), and reports what it saw.
fn body_reading_origin() -> (Origin, mpsc::Receiver<BodySeen>) {
    let (tx, rx) = mpsc::channel();
    let origin = Origin::tcp(move |conn| {
        if conn.read_head().is_err() {
            return;
        }
        let (body, end) = read_until_close(conn, Duration::from_secs(10));
        let _ = tx.send((body.len(), end, Instant::now()));
    });
    (origin, rx)
}

/// Starts an upload of 1 MB announced and 64 KiB sent; returns the client connection.
fn start_upload(proxy: &Proxy, origin: &Origin) -> TcpStream {
    let mut client = TcpStream::connect(proxy.addr).unwrap();
    client
        .set_write_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Length: 1000000\r\n\r\n",
        origin.url("/upload"),
        origin.authority()
    );
    client.write_all(head.as_bytes()).unwrap();
    client.write_all(&vec![b'u'; 64 * 1024]).unwrap();
    thread::sleep(Duration::from_millis(300)); // let the proxy pass it on
    client
}

#[test]
fn client_disappears_mid_upload() {
    let (origin, seen) = body_reading_origin();
    let proxy = Proxy::start(&[]);
    let client = start_upload(&proxy, &origin);
    let gone = Instant::now();
    drop(client);
    let (bytes, end, at) = seen
        .recv_timeout(SLACK + Duration::from_secs(6))
        .expect("the origin saw nothing");
    assert_ne!(
        end,
        End::Open,
        "the origin connection was left open after the client vanished"
    );
    assert!(
        bytes < 1_000_000,
        "the origin got a whole body the client never sent"
    );
    assert!(
        at - gone < SLACK,
        "the origin side was closed {:?} after the client left",
        at - gone
    );
    assert_still_serving(proxy.addr, &Origin::echo());
}

#[test]
fn client_goes_silent_mid_upload() {
    let (origin, seen) = body_reading_origin();
    let proxy = Proxy::start(&["--idle-timeout", IDLE]);
    let client = start_upload(&proxy, &origin);
    let silent = Instant::now();
    let (bytes, end, at) = seen
        .recv_timeout(SLACK + Duration::from_secs(6))
        .expect("the origin saw nothing");
    assert_ne!(
        end,
        End::Open,
        "the origin connection was left open behind a silent client"
    );
    assert!(bytes < 1_000_000);
    assert!(
        at - silent < Duration::from_secs(1) + SLACK,
        "closed only after {:?}",
        at - silent
    );
    drop(client);
    assert_still_serving(proxy.addr, &Origin::echo());
}

/// What a streaming origin saw: how many bytes it wrote and when its writes started failing.
type DownloadSeen = (usize, Option<Instant>);

/// An origin that answers with a 1 GiB body and writes it until a write fails (or 15 s pass).
fn streaming_origin() -> (Origin, mpsc::Receiver<DownloadSeen>) {
    let (tx, rx) = mpsc::channel();
    let origin = Origin::tcp(move |conn| {
        if conn.read_head().is_err() {
            return;
        }
        let _ = conn
            .stream
            .set_write_timeout(Some(Duration::from_millis(100)));
        let mut written = 0;
        let chunk = vec![b'd'; 64 * 1024];
        let head = b"HTTP/1.1 200 OK\r\nContent-Length: 1073741824\r\n\r\n";
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut pending: &[u8] = head;
        let failed = loop {
            if Instant::now() > deadline {
                break None;
            }
            if pending.is_empty() {
                pending = &chunk;
            }
            match conn.stream.write(pending) {
                Ok(n) => {
                    written += n;
                    pending = &pending[n..];
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) => {}
                Err(_) => break Some(Instant::now()),
            }
        };
        let _ = tx.send((written, failed));
    });
    (origin, rx)
}

/// Starts a download and reads its head and the first 256 KiB.
fn start_download(proxy: &Proxy, origin: &Origin) -> Conn {
    let mut client = Conn::connect(proxy.addr);
    client.write(&keep_alive_get(&origin.url("/download")));
    let head = client.read_head().unwrap().expect("a response head");
    assert_eq!(head.status(), 200);
    client
        .read_exact(256 * 1024)
        .expect("the start of the body");
    client
}

#[test]
fn client_disappears_mid_download() {
    let (origin, seen) = streaming_origin();
    let proxy = Proxy::start(&[]);
    let client = start_download(&proxy, &origin);
    let gone = Instant::now();
    drop(client); // unread data in its buffer: a reset toward the proxy
    let (written, failed) = seen
        .recv_timeout(Duration::from_secs(20))
        .expect("the origin reported nothing");
    let failed = failed.unwrap_or_else(|| {
        panic!("the origin could still write ({written} bytes) 15 s after the client left")
    });
    assert!(
        failed - gone < SLACK,
        "the origin side was closed {:?} after the client left",
        failed - gone
    );
    assert_still_serving(proxy.addr, &Origin::echo());
}

#[test]
fn client_stops_reading_mid_download() {
    let (origin, seen) = streaming_origin();
    let proxy = Proxy::start(&["--idle-timeout", IDLE]);
    let client = start_download(&proxy, &origin);
    let stopped = Instant::now();
    let (written, failed) = seen
        .recv_timeout(Duration::from_secs(20))
        .expect("the origin reported nothing");
    let failed = failed.unwrap_or_else(|| {
        panic!(
            "the origin could still write ({written} bytes) 15 s after the client stopped reading"
        )
    });
    assert!(
        failed - stopped < Duration::from_secs(1) + SLACK,
        "the origin side was closed {:?} after the client stopped reading",
        failed - stopped
    );
    drop(client);
    assert_still_serving(proxy.addr, &Origin::echo());
}

#[test]
fn dns_failure_is_502() {
    // Every lookup fails at once, and the real resolver never sees a query.
    let Some(mut cmd) = common::without_dns(common::bin()) else {
        return;
    };
    cmd.args([
        "--listen",
        "127.0.0.1:0",
        "--connect-timeout",
        "5s",
        "--connect-ports",
        "any",
    ]);
    let proxy = Proxy::spawn(cmd);
    let name = "no-such-host.smolproxy-test.invalid";

    let started = Instant::now();
    let mut client = Conn::connect(proxy.addr);
    client.write(&build_request(
        "GET",
        &format!("http://{name}/"),
        &[("Connection", "close")],
        b"",
    ));
    let res = client.response();
    res.assert_error(502);
    assert!(
        res.text().contains(name),
        "the error should name the host: {}",
        res.text()
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "a failed lookup took {:?}",
        started.elapsed()
    );

    let mut client = Conn::connect(proxy.addr);
    client.write(format!("CONNECT {name}:443 HTTP/1.1\r\nHost: {name}:443\r\n\r\n").as_bytes());
    client.response_to("CONNECT").assert_error(502);
    assert_still_serving(proxy.addr, &Origin::echo());
}

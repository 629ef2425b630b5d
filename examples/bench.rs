//! Load generator and test peer for `scripts/bench.sh`: plain std (and a blocking rustls client
//! for HTTPS), one thread per job.
//!
//! It measures what wrk cannot: CONNECT and SOCKS5 tunnels, and HTTPS inside them through an
//! intercepting proxy. Every subcommand talks only to 127.0.0.1, every loop is bounded by a
//! count or a deadline, and every socket has a timeout, so a stuck proxy makes a run fail
//! instead of hang.
//! It is not a test of the proxy's correctness beyond counting bytes and checking statuses;
//! `tests/` does that.
//!
//! ```text
//! bench freeport                               print a free 127.0.0.1 port
//! bench sink [PORT]                            serve the bench protocol, print `listening on ADDR`
//! bench bulk PROXY|direct TARGET BYTES         one tunnel, BYTES each way at once
//! bench setups PROXY|direct TARGET INFLIGHT SECS [client|sink]
//!                                              open a tunnel, one small round trip, close;
//!                                              the client closes first, or the sink does
//! bench setups-count PROXY TARGET COUNT        exactly COUNT setups as above, one at a time,
//!                                              the client closing first (scripts/instructions.sh)
//! bench requests PROXY ORIGIN COUNT keepalive|close
//!                                              exactly COUNT absolute-form `GET /1k`, one at a
//!                                              time: on one connection (a new one whenever
//!                                              the proxy closes), or one per request with
//!                                              `Connection: close`
//! bench hold PROXY TARGET COUNT SECS           open COUNT idle tunnels, print `ready`, keep SECS
//! bench intercept-keepalive PROXY|direct ORIGIN CA CONNS SECS
//!                                              CONNS tunnels, each: CONNECT, TLS trusting CA,
//!                                              then back-to-back `GET /1k` with keep-alive
//! bench intercept-sessions PROXY|direct ORIGIN CA INFLIGHT SECS
//!                                              each round: new TCP, CONNECT, full TLS
//!                                              handshake, one `GET /1k`, close
//! ```
//!
//! PROXY is `127.0.0.1:PORT` for an HTTP proxy, asked with `CONNECT`, or
//! `socks5://127.0.0.1:PORT` for a SOCKS5 server, asked without authentication for a CONNECT to
//! the target's IP address (RFC 1928); either way the tunnel then carries the same work, so a
//! SOCKS row and its HTTP row differ only in how the tunnel was opened.
//!
//! ORIGIN is an HTTPS server on 127.0.0.1 (nginx in the bench) serving `/1k`; CA is the PEM
//! file of the CA the client trusts: the proxy's interception CA through a proxy, the origin's
//! own CA for `direct`. The name checked is the IP address, as a client sends no SNI for one.
//! Session resumption is off, so every handshake is a full one (the costly case, and the same
//! for every proxy).
//!
//! The bench protocol, spoken once the tunnel is up: the client sends one command byte and a
//! big-endian u64 argument. `B n`: both sides send `n` bytes and read `n` bytes at the same
//! time, then the client closes. `P n`: the sink echoes the next `n` bytes, then the client
//! closes. `E n`: the sink echoes the next `n` bytes and closes; the client closes once it has
//! read the end. `H 0`: the sink answers `k` and holds the connection, sending nothing, until
//! the client closes. Nobody half-closes: the client closes only once it has everything, so a
//! proxy that tears a tunnel down at the first FIN (tinyproxy does) still delivers every byte.
//!
//! Who closes first decides where the TIME_WAIT lands. When the client does (`P`), it lands on
//! an ephemeral port of the client and of the proxy's connection to the sink; when the sink
//! does (`E`), on the sink's and the proxy's listening ports, which cost no ephemeral port.
//! `setups ... sink` uses `E` for a proxy that binds its outgoing sockets before connecting
//! (dante): a bound port in TIME_WAIT is not handed out again for 60 s, so at thousands of
//! setups a second such a proxy uses up the ephemeral range within seconds and every later
//! connection on the machine fails until it drains.

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use rustls::client::Resumption;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

/// Threads accepting on the sink's listener; more than the 32 setups in flight, so the sink
/// never queues a short connection behind another.
const SINK_WORKERS: usize = 64;
/// Stack of the sink's threads; they hold one small frame and a copy buffer on the heap.
const SINK_STACK: usize = 128 * 1024;
/// Copy buffer for bulk transfers: big enough that syscalls are not what is measured.
const CHUNK: usize = 256 * 1024;
/// Time to reach the proxy or the sink; loopback answers in microseconds.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest a single read or write may block before the run is called failed.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest CONNECT response head we wait for.
const MAX_HEAD: usize = 16 * 1024;
/// Bytes of the round trip in `setups`.
const PING_BYTES: usize = 16;
/// How often the sink checks whether held connections were closed by their clients.
const REAP_EVERY: Duration = Duration::from_millis(500);
/// Upper bound for any duration given on the command line, so a typo cannot hang the bench.
const MAX_SECS: u64 = 600;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match args.as_slice() {
        ["freeport"] => freeport(),
        ["sink"] => sink(0),
        ["sink", port] => number(port, "port").and_then(|p| sink(p as u16)),
        ["bulk", proxy, target, bytes] => bulk(via(proxy), addr(target), number(bytes, "bytes")),
        ["setups", proxy, target, inflight, secs] => setups(
            via(proxy),
            addr(target),
            number(inflight, "inflight").map(|n| n.clamp(1, 1024) as usize),
            seconds(secs),
            Ok(false),
        ),
        ["setups", proxy, target, inflight, secs, closer] => setups(
            via(proxy),
            addr(target),
            number(inflight, "inflight").map(|n| n.clamp(1, 1024) as usize),
            seconds(secs),
            sink_closes(closer),
        ),
        ["setups-count", proxy, target, count] => {
            setups_count(via(proxy), addr(target), number(count, "count"))
        }
        ["requests", proxy, origin, count, mode] => requests(
            addr(proxy),
            addr(origin),
            number(count, "count"),
            keepalive(mode),
        ),
        ["hold", proxy, target, count, secs] => hold(
            via(proxy),
            addr(target),
            number(count, "count").map(|n| n.min(100_000) as usize),
            seconds(secs),
        ),
        [mode @ ("intercept-keepalive" | "intercept-sessions"), proxy, origin, ca, n, secs] => {
            intercepted(
                *mode == "intercept-sessions",
                via(proxy),
                addr(origin),
                tls_config(ca),
                number(n, "connections").map(|n| n.clamp(1, 1024) as usize),
                seconds(secs),
            )
        }
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "usage: see the top of examples/bench.rs",
        )),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn bad(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, what)
}

fn number(s: &str, what: &str) -> io::Result<u64> {
    s.parse()
        .map_err(|_| bad(format!("{what}: expected a number, got '{s}'")))
}

/// `sink` (the sink closes first) or `client` (the client does).
fn sink_closes(s: &str) -> io::Result<bool> {
    match s {
        "sink" => Ok(true),
        "client" => Ok(false),
        _ => Err(bad(format!("expected client or sink, got '{s}'"))),
    }
}

/// `keepalive` (requests share a connection) or `close` (one connection per request).
fn keepalive(s: &str) -> io::Result<bool> {
    match s {
        "keepalive" => Ok(true),
        "close" => Ok(false),
        _ => Err(bad(format!("expected keepalive or close, got '{s}'"))),
    }
}

fn seconds(s: &str) -> io::Result<Duration> {
    number(s, "seconds").map(|n| Duration::from_secs(n.clamp(1, MAX_SECS)))
}

/// Parses a loopback address; anything else is refused, this tool only measures this machine.
fn addr(s: &str) -> io::Result<SocketAddr> {
    let a: SocketAddr = s
        .parse()
        .map_err(|_| bad(format!("expected 127.0.0.1:PORT, got '{s}'")))?;
    if !a.ip().is_loopback() {
        return Err(bad(format!("{a}: only loopback addresses are measured")));
    }
    Ok(a)
}

/// How a client reaches its target.
#[derive(Clone, Copy)]
enum Via {
    /// Straight to the target (`direct`).
    Direct,
    /// Through an HTTP proxy at this address, with `CONNECT`.
    Connect(SocketAddr),
    /// Through a SOCKS5 server at this address (`socks5://ADDR`), with its CONNECT command.
    Socks5(SocketAddr),
}

impl Via {
    /// The proxy's address, if there is one.
    fn proxy(self) -> Option<SocketAddr> {
        match self {
            Via::Direct => None,
            Via::Connect(p) | Via::Socks5(p) => Some(p),
        }
    }
}

/// `direct` means no proxy, `socks5://ADDR` a SOCKS5 server, anything else an HTTP proxy.
fn via(s: &str) -> io::Result<Via> {
    if s == "direct" {
        Ok(Via::Direct)
    } else if let Some(a) = s.strip_prefix("socks5://") {
        addr(a).map(Via::Socks5)
    } else {
        addr(s).map(Via::Connect)
    }
}

fn freeport() -> io::Result<()> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    println!("{}", l.local_addr()?.port());
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The sink: the origin end of every tunnel.

/// Connections in `H` mode, kept open without a thread until their client closes.
type Held = Arc<Mutex<Vec<TcpStream>>>;

fn sink(port: u16) -> io::Result<()> {
    let listener = TcpListener::bind(("127.0.0.1", port))?;
    eprintln!("listening on {}", listener.local_addr()?);
    let held: Held = Arc::default();
    let mut workers = Vec::new();
    for _ in 0..SINK_WORKERS {
        let listener = listener.try_clone()?;
        let held = held.clone();
        workers.push(
            thread::Builder::new()
                .stack_size(SINK_STACK)
                .spawn(move || loop {
                    // Each worker accepts and serves one connection at a time; the kernel hands a new
                    // connection to whichever worker is waiting.
                    match listener.accept() {
                        Ok((s, _)) => {
                            if let Err(e) = serve(s, &held) {
                                if e.kind() != io::ErrorKind::UnexpectedEof {
                                    eprintln!("sink: {e}");
                                }
                            }
                        }
                        Err(e) => {
                            eprintln!("sink: accept: {e}");
                            thread::sleep(Duration::from_millis(10));
                        }
                    }
                })?,
        );
    }
    // Drops held connections whose client has gone, so one sink serves many runs.
    loop {
        thread::sleep(REAP_EVERY);
        let mut held = held.lock().unwrap_or_else(|p| p.into_inner());
        held.retain(|s| {
            let mut byte = [0u8; 1];
            matches!(s.peek(&mut byte), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
        });
    }
}

fn serve(mut s: TcpStream, held: &Held) -> io::Result<()> {
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut cmd = [0u8; 9];
    s.read_exact(&mut cmd)?;
    let n = u64::from_be_bytes(cmd[1..].try_into().expect("8 bytes"));
    match cmd[0] {
        b'B' => {
            let w = s.try_clone()?;
            let writer = thread::Builder::new()
                .stack_size(SINK_STACK)
                .spawn(move || send(w, n))?;
            receive(&mut s, n)?;
            writer
                .join()
                .map_err(|_| bad("sink writer panicked".into()))??;
            // Wait for the client's close so the client, not the sink, closes first.
            let _ = s.read(&mut [0u8; 1]);
        }
        b'P' => {
            let mut buf = vec![0u8; n.min(MAX_HEAD as u64) as usize];
            s.read_exact(&mut buf)?;
            s.write_all(&buf)?;
            // Wait for the client's close so the client, not the sink, closes first.
            let _ = s.read(&mut buf);
        }
        b'E' => {
            let mut buf = vec![0u8; n.min(MAX_HEAD as u64) as usize];
            s.read_exact(&mut buf)?;
            s.write_all(&buf)?;
            // Returning closes: the sink first, so the TIME_WAIT is on the sink's port.
        }
        b'H' => {
            s.write_all(b"k")?;
            s.set_nonblocking(true)?;
            held.lock().unwrap_or_else(|p| p.into_inner()).push(s);
        }
        other => return Err(bad(format!("unknown command byte {other}"))),
    }
    Ok(())
}

/// Sends `n` bytes.
fn send(mut s: TcpStream, n: u64) -> io::Result<()> {
    let buf = vec![0x5au8; CHUNK];
    let mut left = n;
    while left > 0 {
        let k = left.min(CHUNK as u64) as usize;
        s.write_all(&buf[..k])?;
        left -= k as u64;
    }
    Ok(())
}

/// Reads exactly `n` bytes.
fn receive(s: &mut TcpStream, n: u64) -> io::Result<()> {
    let mut buf = vec![0u8; CHUNK];
    let mut got = 0u64;
    while got < n {
        let want = (n - got).min(CHUNK as u64) as usize;
        match s.read(&mut buf[..want]) {
            Ok(0) => return Err(bad(format!("bulk: peer closed after {got} of {n} bytes"))),
            Ok(k) => got += k as u64,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Clients.

/// Opens a connection to `target`, through a tunnel when `via` names a proxy.
fn open(via: Via, target: SocketAddr) -> io::Result<TcpStream> {
    let mut s = TcpStream::connect_timeout(&via.proxy().unwrap_or(target), CONNECT_TIMEOUT)?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    match via {
        Via::Direct => {}
        Via::Connect(_) => connect(&mut s, target)?,
        Via::Socks5(_) => socks5(&mut s, target)?,
    }
    Ok(s)
}

/// Asks an HTTP proxy for a tunnel to `target` and reads its answer, which must be a 2xx.
fn connect(s: &mut TcpStream, target: SocketAddr) -> io::Result<()> {
    // One write, as curl and browsers send it: `write!` on an unbuffered socket would send the
    // head in several segments, and make every proxy read a partial head.
    s.write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes())?;
    // The sink says nothing before our command, so every byte read here is the proxy's.
    let mut head = Vec::with_capacity(256);
    let mut buf = [0u8; 512];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > MAX_HEAD {
            return Err(bad("CONNECT response head too large".into()));
        }
        let k = s.read(&mut buf)?;
        if k == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "proxy closed during CONNECT",
            ));
        }
        head.extend_from_slice(&buf[..k]);
    }
    let status = head.split(|&b| b == b' ').nth(1).unwrap_or_default();
    if !status.starts_with(b"2") {
        let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
        return Err(bad(format!(
            "CONNECT refused: {}",
            String::from_utf8_lossy(line)
        )));
    }
    Ok(())
}

/// Asks a SOCKS5 server for a tunnel to `target` (RFC 1928): no authentication, CONNECT by IP
/// address, and the reply, which must be 0 (succeeded). Each message waits for its answer, as
/// curl does: microsocks reads one message per `recv` and would lose a second one sent with the
/// first, so the two round trips are part of what a SOCKS5 setup costs.
fn socks5(s: &mut TcpStream, target: SocketAddr) -> io::Result<()> {
    // §3: version 5, one method offered, 0x00 "no authentication required".
    s.write_all(&[5, 1, 0])?;
    let mut choice = [0u8; 2];
    s.read_exact(&mut choice)?;
    if choice != [5, 0] {
        return Err(bad(format!(
            "SOCKS5: no-auth refused (version {}, method {:#04x})",
            choice[0], choice[1]
        )));
    }
    // §4: VER 5, CMD 1 (CONNECT), RSV 0, ATYP 1 (IPv4) or 4 (IPv6), DST.ADDR, DST.PORT.
    let mut request = Vec::with_capacity(22);
    request.extend_from_slice(&[5, 1, 0]);
    match target.ip() {
        IpAddr::V4(ip) => {
            request.push(1);
            request.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            request.push(4);
            request.extend_from_slice(&ip.octets());
        }
    }
    request.extend_from_slice(&target.port().to_be_bytes());
    s.write_all(&request)?;
    // §6: VER, REP, RSV, ATYP, then BND.ADDR as ATYP says and BND.PORT, read and dropped.
    let mut reply = [0u8; 4];
    s.read_exact(&mut reply)?;
    if reply[0] != 5 || reply[1] != 0 {
        return Err(bad(format!(
            "SOCKS5 CONNECT refused: version {}, reply {:#04x}",
            reply[0], reply[1]
        )));
    }
    let bound = match reply[3] {
        1 => 4 + 2,
        4 => 16 + 2,
        3 => {
            let mut len = [0u8; 1];
            s.read_exact(&mut len)?;
            usize::from(len[0]) + 2
        }
        other => return Err(bad(format!("SOCKS5: reply address type {other}"))),
    };
    // At most a 255-byte name and a port.
    let mut rest = [0u8; 257];
    s.read_exact(&mut rest[..bound])
}

fn command(s: &mut TcpStream, cmd: u8, n: u64, extra: &[u8]) -> io::Result<()> {
    let mut msg = Vec::with_capacity(9 + extra.len());
    msg.push(cmd);
    msg.extend_from_slice(&n.to_be_bytes());
    msg.extend_from_slice(extra);
    s.write_all(&msg)
}

fn bulk(
    proxy: io::Result<Via>,
    target: io::Result<SocketAddr>,
    bytes: io::Result<u64>,
) -> io::Result<()> {
    let (proxy, target, n) = (proxy?, target?, bytes?);
    let mut s = open(proxy, target)?;
    let start = Instant::now();
    command(&mut s, b'B', n, &[])?;
    let w = s.try_clone()?;
    let writer = thread::spawn(move || send(w, n));
    receive(&mut s, n)?;
    writer.join().map_err(|_| bad("writer panicked".into()))??;
    let secs = start.elapsed().as_secs_f64();
    println!(
        "bulk bytes={n} secs={secs:.3} mbps={:.1}",
        n as f64 / secs / 1e6
    );
    Ok(())
}

/// What one thread of `setups` or `intercept-*` measured.
#[derive(Default)]
struct Tally {
    /// Times of the successful rounds (a setup to close, or one request), in microseconds.
    micros: Vec<u32>,
    /// Failed attempts.
    errors: u64,
    /// The first failure, to show what went wrong.
    first_error: Option<String>,
}

impl Tally {
    /// Counts a round that took from `t0` until now.
    fn done(&mut self, t0: Instant) {
        self.micros
            .push(t0.elapsed().as_micros().min(u32::MAX as u128) as u32);
    }

    /// Counts a failure, then pauses briefly so a dead proxy is not spun on.
    fn fail(&mut self, e: io::Error) {
        self.errors += 1;
        self.first_error.get_or_insert_with(|| e.to_string());
        thread::sleep(Duration::from_millis(1));
    }

    /// Adds up the tallies of all threads.
    fn join(threads: Vec<thread::JoinHandle<Tally>>) -> io::Result<Tally> {
        let mut all = Tally::default();
        for th in threads {
            let t = th.join().map_err(|_| bad("bench thread panicked".into()))?;
            all.micros.extend(t.micros);
            all.errors += t.errors;
            if all.first_error.is_none() {
                all.first_error = t.first_error;
            }
        }
        Ok(all)
    }

    /// Prints `LABEL ok=N errors=N secs=S rate=R p50_ms=X p99_ms=Y`, the line bench.sh reads,
    /// and the first failure on stderr.
    fn report(mut self, label: &str, secs: f64) {
        self.micros.sort_unstable();
        let pct = |p: f64| {
            let i =
                ((self.micros.len() as f64 * p) as usize).min(self.micros.len().saturating_sub(1));
            self.micros.get(i).map_or(0.0, |&us| us as f64 / 1000.0)
        };
        if let Some(e) = &self.first_error {
            eprintln!("{label}: {} failed, first: {e}", self.errors);
        }
        println!(
            "{label} ok={} errors={} secs={secs:.3} rate={:.1} p50_ms={:.3} p99_ms={:.3}",
            self.micros.len(),
            self.errors,
            self.micros.len() as f64 / secs,
            pct(0.50),
            pct(0.99)
        );
    }
}

/// Opens tunnels, `inflight` at a time, until `secs` have passed; each carries a `P` round trip
/// and is closed by the client, or an `E` one closed by the sink first when `sink_closes`.
fn setups(
    proxy: io::Result<Via>,
    target: io::Result<SocketAddr>,
    inflight: io::Result<usize>,
    secs: io::Result<Duration>,
    sink_closes: io::Result<bool>,
) -> io::Result<()> {
    let (proxy, target, inflight, secs, sink_closes) =
        (proxy?, target?, inflight?, secs?, sink_closes?);
    let cmd = if sink_closes { b'E' } else { b'P' };
    let start = Instant::now();
    let deadline = start + secs;
    let threads: Vec<_> = (0..inflight)
        .map(|_| {
            thread::spawn(move || {
                let mut t = Tally::default();
                let ping = [0x42u8; PING_BYTES];
                // Bounded by the deadline.
                while Instant::now() < deadline {
                    let t0 = Instant::now();
                    let round = open(proxy, target).and_then(|mut s| {
                        command(&mut s, cmd, PING_BYTES as u64, &ping)?;
                        let mut back = [0u8; PING_BYTES];
                        s.read_exact(&mut back)?;
                        if back != ping {
                            return Err(bad("echo differs".into()));
                        }
                        // The sink's close, relayed by the proxy, before ours.
                        if sink_closes && s.read(&mut back)? != 0 {
                            return Err(bad("bytes after the echo".into()));
                        }
                        Ok(())
                    });
                    match round {
                        Ok(()) => t.done(t0),
                        Err(e) => t.fail(e),
                    }
                }
                t
            })
        })
        .collect();
    Tally::join(threads)?.report("setups", start.elapsed().as_secs_f64());
    Ok(())
}

/// Exactly `count` CONNECT setups, one after another (open, 16-byte round trip, the client
/// closes), so that two counts differ by exactly the work between them; the first failure ends
/// the run.
fn setups_count(
    proxy: io::Result<Via>,
    target: io::Result<SocketAddr>,
    count: io::Result<u64>,
) -> io::Result<()> {
    let (proxy, target, count) = (proxy?, target?, count?);
    let ping = [0x42u8; PING_BYTES];
    for _ in 0..count {
        let mut s = open(proxy, target)?;
        command(&mut s, b'P', PING_BYTES as u64, &ping)?;
        let mut back = [0u8; PING_BYTES];
        s.read_exact(&mut back)?;
        if back != ping {
            return Err(bad("echo differs".into()));
        }
    }
    println!("setups ok={count}");
    Ok(())
}

/// Exactly `count` absolute-form `GET http://ORIGIN/1k` through an HTTP proxy, one at a time,
/// each response read to the end of its `Content-Length` body. With keep-alive they share a
/// connection, and a new one is opened whenever the proxy closes (tinyproxy does after every
/// response); otherwise each asks `Connection: close` on a connection of its own.
fn requests(
    proxy: io::Result<SocketAddr>,
    origin: io::Result<SocketAddr>,
    count: io::Result<u64>,
    keepalive: io::Result<bool>,
) -> io::Result<()> {
    let (proxy, origin, count, keepalive) = (proxy?, origin?, count?, keepalive?);
    let close = if keepalive {
        ""
    } else {
        "Connection: close\r\n"
    };
    let request = format!("GET http://{origin}/1k HTTP/1.1\r\nHost: {origin}\r\n{close}\r\n");
    let mut conn: Option<TcpStream> = None;
    let mut buf = Vec::with_capacity(4096);
    for _ in 0..count {
        // A kept connection the proxy closed without saying so is retried once on a new one.
        let reused = conn.is_some();
        let mut s = match conn.take() {
            Some(s) => s,
            None => open(Via::Direct, proxy)?,
        };
        let open_after = match s
            .write_all(request.as_bytes())
            .and_then(|()| response(&mut s, &mut buf))
        {
            Err(_) if reused && buf.is_empty() => {
                s = open(Via::Direct, proxy)?;
                s.write_all(request.as_bytes())?;
                response(&mut s, &mut buf)?
            }
            r => r?,
        };
        if open_after && keepalive {
            conn = Some(s);
        }
    }
    println!("requests ok={count}");
    Ok(())
}

/// Reads one `200` response with a `Content-Length` body; true if the connection stays open.
fn response(s: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<bool> {
    buf.clear();
    let mut chunk = [0u8; 4096];
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > MAX_HEAD {
            return Err(bad("response head too large".into()));
        }
        let k = s.read(&mut chunk)?;
        if k == 0 {
            return Err(bad("closed before the response head".into()));
        }
        buf.extend_from_slice(&chunk[..k]);
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    if !head.starts_with("http/1.1 200") && !head.starts_with("http/1.0 200") {
        return Err(bad(format!(
            "not a 200: {}",
            head.lines().next().unwrap_or("")
        )));
    }
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| bad("no Content-Length".into()))?;
    let mut have = buf.len() - end;
    while have < length {
        let k = s.read(&mut chunk)?;
        if k == 0 {
            return Err(bad("closed in the body".into()));
        }
        have += k;
    }
    Ok(!head.contains("connection: close") && !head.starts_with("http/1.0"))
}

fn hold(
    proxy: io::Result<Via>,
    target: io::Result<SocketAddr>,
    count: io::Result<usize>,
    secs: io::Result<Duration>,
) -> io::Result<()> {
    let (proxy, target, count, secs) = (proxy?, target?, count?, secs?);
    if proxy.proxy().is_none() {
        return Err(bad("hold needs a proxy".into()));
    }
    let mut tunnels = Vec::with_capacity(count);
    let mut failure = None;
    // One at a time: what is measured is the state after setup, not the setup rate. The first
    // failure ends the opening (a proxy at its connection limit would only make us wait).
    for _ in 0..count {
        let t = open(proxy, target).and_then(|mut s| {
            command(&mut s, b'H', 0, &[])?;
            let mut ack = [0u8; 1];
            s.read_exact(&mut ack)?;
            Ok(s)
        });
        match t {
            Ok(s) => tunnels.push(s),
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    let held = tunnels.len();
    match &failure {
        Some(e) => println!("ready held={held} error={e}"),
        None => println!("ready held={held}"),
    }
    io::stdout().flush()?;
    // Bounded: the script kills us once it has measured; if it does not, we leave anyway.
    thread::sleep(secs);
    drop(tunnels);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// HTTPS through an intercepting proxy: the client end of the TLS session the proxy opens.

/// A TLS session over a tunnel (or straight to the origin).
type Session = StreamOwned<ClientConnection, TcpStream>;

/// Response header lines we make room for; nginx sends about eight.
const MAX_HEADERS: usize = 32;
/// Largest response body read; the bench file is 1 KB.
const MAX_BODY: usize = 64 * 1024;
/// Bytes read from a session at a time: a TLS record's worth.
const READ_CHUNK: usize = 16 * 1024;

/// A client configuration trusting only the certificates in the PEM file `ca`.
fn tls_config(ca: &str) -> io::Result<Arc<ClientConfig>> {
    let what = |e: &dyn std::fmt::Display| bad(format!("{ca}: {e}"));
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).map_err(|e| what(&e))? {
        roots
            .add(cert.map_err(|e| what(&e))?)
            .map_err(|e| what(&e))?;
    }
    if roots.is_empty() {
        return Err(bad(format!("{ca}: no certificate")));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    // As curl and browsers do over HTTP/1.1; an intercepting proxy must agree on it.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    // Every handshake a full one: what a new client costs, and the same for every proxy.
    config.resumption = Resumption::disabled();
    Ok(Arc::new(config))
}

/// Opens a TLS session with `origin`, through a tunnel when `proxy` names one, and completes
/// the handshake, so a refused certificate fails here.
fn session(proxy: Via, origin: SocketAddr, config: &Arc<ClientConfig>) -> io::Result<Session> {
    let tcp = open(proxy, origin)?;
    // An IP address: no SNI is sent, and the certificate must carry it as an IP SAN.
    let name = ServerName::IpAddress(origin.ip().into());
    let conn = ClientConnection::new(config.clone(), name).map_err(io::Error::other)?;
    let mut s = StreamOwned::new(conn, tcp);
    while s.conn.is_handshaking() {
        s.conn.complete_io(&mut s.sock)?;
    }
    Ok(s)
}

/// Ends a session as a polite client does: `close_notify`, then the TCP close (on drop).
fn close(mut s: Session) {
    s.conn.send_close_notify();
    while s.conn.wants_write() {
        if s.conn.write_tls(&mut s.sock).is_err() {
            break;
        }
    }
}

/// Sends `GET /1k` and reads the whole response, which must be a 200 with a Content-Length.
/// `buf` holds bytes read past the response for the next one. Returns whether the server
/// keeps the session open.
fn get(s: &mut Session, origin: SocketAddr, buf: &mut Vec<u8>) -> io::Result<bool> {
    // One write, so the request leaves in one TLS record.
    let request =
        format!("GET /1k HTTP/1.1\r\nHost: {origin}\r\nUser-Agent: smolproxy-bench\r\n\r\n");
    s.write_all(request.as_bytes())?;
    // Bounded: the head by MAX_HEAD, the body by MAX_BODY.
    let (head_len, body_len, keep) = loop {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut headers);
        match response.parse(buf) {
            Ok(httparse::Status::Complete(n)) => {
                if response.code != Some(200) {
                    return Err(bad(format!(
                        "response {} {}",
                        response.code.unwrap_or(0),
                        response.reason.unwrap_or("")
                    )));
                }
                let value = |name: &str| {
                    response
                        .headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case(name))
                        .map(|h| String::from_utf8_lossy(h.value).trim().to_ascii_lowercase())
                };
                let length = value("content-length")
                    .and_then(|v| v.parse::<usize>().ok())
                    .filter(|&n| n <= MAX_BODY)
                    .ok_or_else(|| bad("response without a usable Content-Length".into()))?;
                let keep = value("connection").is_none_or(|v| !v.contains("close"));
                break (n, length, keep);
            }
            Ok(httparse::Status::Partial) if buf.len() <= MAX_HEAD => fill(s, buf)?,
            Ok(httparse::Status::Partial) => return Err(bad("response head too large".into())),
            Err(e) => return Err(bad(format!("response head: {e}"))),
        }
    };
    while buf.len() < head_len + body_len {
        fill(s, buf)?;
    }
    buf.drain(..head_len + body_len);
    Ok(keep)
}

/// Appends what the session has to `buf`; the end of the session is an error here, since we
/// only read while a response is due.
fn fill(s: &mut Session, buf: &mut Vec<u8>) -> io::Result<()> {
    let mut chunk = [0u8; READ_CHUNK];
    match s.read(&mut chunk)? {
        0 => Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "session closed before the response ended",
        )),
        k => {
            buf.extend_from_slice(&chunk[..k]);
            Ok(())
        }
    }
}

/// `intercept-keepalive` (`sessions` false): `n` sessions, each sending GETs back to back
/// until `secs` have passed; counts requests. `intercept-sessions`: `n` threads, each opening
/// a session, sending one GET and closing, again and again; counts sessions.
fn intercepted(
    sessions: bool,
    proxy: io::Result<Via>,
    origin: io::Result<SocketAddr>,
    config: io::Result<Arc<ClientConfig>>,
    n: io::Result<usize>,
    secs: io::Result<Duration>,
) -> io::Result<()> {
    let (proxy, origin, config, n, secs) = (proxy?, origin?, config?, n?, secs?);
    let start = Instant::now();
    let deadline = start + secs;
    let threads: Vec<_> = (0..n)
        .map(|_| {
            let config = config.clone();
            thread::spawn(move || {
                let mut t = Tally::default();
                let mut buf = Vec::with_capacity(2 * READ_CHUNK);
                let mut open_session: Option<Session> = None;
                // Bounded by the deadline; a request in flight then is finished and counted.
                while Instant::now() < deadline {
                    if sessions {
                        let t0 = Instant::now();
                        buf.clear();
                        let round = session(proxy, origin, &config).and_then(|mut s| {
                            get(&mut s, origin, &mut buf)?;
                            close(s);
                            Ok(())
                        });
                        match round {
                            Ok(()) => t.done(t0),
                            Err(e) => t.fail(e),
                        }
                        continue;
                    }
                    // Keep-alive: the handshake is outside the timed request; a session the
                    // server ends (or that fails) is replaced by a new one.
                    let s = match open_session.as_mut() {
                        Some(s) => s,
                        None => match session(proxy, origin, &config) {
                            Ok(s) => {
                                buf.clear();
                                open_session.insert(s)
                            }
                            Err(e) => {
                                t.fail(e);
                                continue;
                            }
                        },
                    };
                    let t0 = Instant::now();
                    match get(s, origin, &mut buf) {
                        Ok(keep) => {
                            t.done(t0);
                            if let Some(s) = open_session.take_if(|_| !keep) {
                                close(s);
                            }
                        }
                        Err(e) => {
                            t.fail(e);
                            open_session = None;
                        }
                    }
                }
                if let Some(s) = open_session {
                    close(s);
                }
                t
            })
        })
        .collect();
    let label = if sessions {
        "intercept-sessions"
    } else {
        "intercept-keepalive"
    };
    Tally::join(threads)?.report(label, start.elapsed().as_secs_f64());
    Ok(())
}

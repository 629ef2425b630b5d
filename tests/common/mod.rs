//! Shared helpers for the integration tests: the real proxy binary, origin servers on port 0,
//! raw HTTP/1.1 clients over std sockets, peer processes (stunnel as TLS in front of an
//! origin), a reference authorization service, test certificates made with the openssl
//! command (a PKI, and certificates a verifying client must refuse), and the npm tools that
//! check exports.
//!
//! Everything listens and connects on loopback only (127.0.0.1 or [::1]); the only name any
//! test may resolve is `localhost`. Every read is bounded by a timeout, so a broken proxy fails
//! a test instead of hanging the suite. Nothing here depends on the proxy's source: the tests
//! see it exactly as a user does, through its command line, its sockets and its stderr.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

/// Longest any single read or write in a test may block. Generous, so a slow CI machine does
/// not fail a good proxy; a test that expects something sooner passes its own bound.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the proxy may take to print its `listening on` lines.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Proxy-related environment variables removed from every child so a developer's shell (or
/// the CI runner) cannot change where the proxy or curl sends requests.
pub const PROXY_ENV: [&str; 10] = [
    "http_proxy",
    "HTTP_PROXY",
    "https_proxy",
    "HTTPS_PROXY",
    "all_proxy",
    "ALL_PROXY",
    "no_proxy",
    "NO_PROXY",
    "SMOLPROXY_AUTH",
    "CURL_HOME",
];

// ---------------------------------------------------------------------------------------------
// The proxy process
// ---------------------------------------------------------------------------------------------

/// The path of the binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_smolproxy")
}

/// A running `smolproxy` child. Its stderr is collected line by line (errors, warnings and the
/// access log); the process is killed when this is dropped.
pub struct Proxy {
    /// The first announced listening address.
    pub addr: SocketAddr,
    /// Every announced listening address, in the order printed.
    pub addrs: Vec<SocketAddr>,
    /// The announced TLS listeners' addresses (`--listen-tls`), also in `addrs`.
    pub tls_addrs: Vec<SocketAddr>,
    /// The child process (for signals and exit status).
    child: Child,
    /// Every stderr line so far, and a condition variable signalled on each new line.
    lines: Arc<(Mutex<Vec<String>>, Condvar)>,
}

impl Proxy {
    /// Starts the proxy with `args`, adding `--listen 127.0.0.1:0` unless `args` has a
    /// `--listen` of its own, with the proxy environment variables cleared. Waits until every
    /// listening socket has been announced; panics (with the stderr so far) if the process
    /// exits or stays silent instead.
    pub fn start(args: &[&str]) -> Proxy {
        Proxy::start_with_env(args, &[])
    }

    /// Like [`Proxy::start`], with these environment variables set for the child (after the
    /// proxy variables of [`PROXY_ENV`] were removed).
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Proxy {
        Proxy::spawn(proxy_command(args, env))
    }

    /// Starts a prepared command whose process ends up being `smolproxy` (e.g. `unshare ... sh
    /// -c 'exec smolproxy ...'`). The command should already carry its `--listen` flags.
    pub fn spawn(mut cmd: Command) -> Proxy {
        let expected = cmd.get_args().filter(|a| *a == "--listen").count().max(1)
            + cmd.get_args().filter(|a| *a == "--listen-tls").count();
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        let stderr = child.stderr.take().expect("stderr is piped");
        let lines = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
        let sink = lines.clone();
        // Drain stderr for the whole life of the child, so it never blocks on a full pipe.
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let (vec, cv) = &*sink;
                vec.lock().unwrap().push(line);
                cv.notify_all();
            }
        });
        let mut proxy = Proxy {
            addr: "0.0.0.0:0".parse().unwrap(),
            addrs: Vec::new(),
            tls_addrs: Vec::new(),
            child,
            lines,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            // `listening on ADDR`, or `listening on ADDR (TLS)` for a --listen-tls socket.
            let announced: Vec<(SocketAddr, bool)> = proxy
                .stderr_lines()
                .iter()
                .filter_map(|l| l.strip_prefix("listening on "))
                .map(|a| {
                    let (addr, tls) = match a.trim().strip_suffix(" (TLS)") {
                        Some(addr) => (addr, true),
                        None => (a.trim(), false),
                    };
                    let addr = addr
                        .parse()
                        .unwrap_or_else(|e| panic!("bad listening line {a:?}: {e}"));
                    (addr, tls)
                })
                .collect();
            proxy.addrs = announced.iter().map(|(a, _)| *a).collect();
            proxy.tls_addrs = announced
                .iter()
                .filter(|(_, t)| *t)
                .map(|(a, _)| *a)
                .collect();
            if proxy.addrs.len() >= expected {
                proxy.addr = proxy.addrs[0];
                return proxy;
            }
            if let Ok(Some(status)) = proxy.child.try_wait() {
                thread::sleep(Duration::from_millis(50)); // let the drain thread catch up
                panic!(
                    "proxy exited with {status} before listening; stderr: {:?}",
                    proxy.stderr_lines()
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "proxy did not announce {expected} listener(s); stderr: {:?}",
                    proxy.stderr_lines()
                );
            }
            proxy.wait_change(Duration::from_millis(50));
        }
    }

    /// Every line the proxy wrote to stderr so far.
    pub fn stderr_lines(&self) -> Vec<String> {
        self.lines.0.lock().unwrap().clone()
    }

    /// Waits up to `timeout` for a stderr line matching `pred` and returns it.
    pub fn wait_for_line(&self, timeout: Duration, pred: impl Fn(&str) -> bool) -> Option<String> {
        let deadline = Instant::now() + timeout;
        let (vec, cv) = &*self.lines;
        let mut guard = vec.lock().unwrap();
        loop {
            if let Some(l) = guard.iter().find(|l| pred(l)) {
                return Some(l.clone());
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            guard = cv.wait_timeout(guard, left).unwrap().0;
        }
    }

    /// Waits up to `timeout` for a stderr line containing `needle`.
    pub fn wait_for_log(&self, timeout: Duration, needle: &str) -> Option<String> {
        self.wait_for_line(timeout, |l| l.contains(needle))
    }

    fn wait_change(&self, timeout: Duration) {
        let (vec, cv) = &*self.lines;
        let guard = vec.lock().unwrap();
        let _ = cv.wait_timeout(guard, timeout).unwrap();
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal by name (`TERM`, `INT`, ...) with the `kill` command.
    pub fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "kill -{name} {} failed", self.pid());
    }

    /// Waits up to `timeout` for the process to exit; `None` if it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// `http://127.0.0.1:PORT` of the first listener, as curl's `-x` wants it.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The command that [`Proxy::start_with_env`] runs: the binary, `--listen 127.0.0.1:0` unless
/// `args` has a `--listen`, then `args`, with a clean proxy environment plus `env`.
pub fn proxy_command(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(bin());
    if !args.contains(&"--listen") {
        cmd.args(["--listen", "127.0.0.1:0"]);
    }
    cmd.args(args);
    for var in PROXY_ENV {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().copied());
    cmd
}

/// What a process printed and how it ended.
#[derive(Debug)]
pub struct Finished {
    /// The exit code, or `None` if it had to be killed (or died of a signal).
    pub code: Option<i32>,
    /// Everything on stdout.
    pub stdout: String,
    /// Everything on stderr.
    pub stderr: String,
}

/// Runs the proxy with `args` (plus `--listen 127.0.0.1:0` unless given) and waits for it to
/// exit on its own, killing it after `timeout`. For start-up errors and subcommands.
pub fn run_proxy(args: &[&str], timeout: Duration) -> Finished {
    run_to_exit(proxy_command(args, &[]), timeout)
}

/// Runs a command to completion, killing it after `timeout` (then `code` is `None`).
pub fn run_to_exit(mut cmd: Command, timeout: Duration) -> Finished {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out_t = thread::spawn(move || {
        let mut s = Vec::new();
        let _ = out.read_to_end(&mut s);
        String::from_utf8_lossy(&s).into_owned()
    });
    let err_t = thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err.read_to_end(&mut s);
        String::from_utf8_lossy(&s).into_owned()
    });
    let deadline = Instant::now() + timeout;
    let code = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(20));
    };
    Finished {
        code,
        stdout: out_t.join().unwrap(),
        stderr: err_t.join().unwrap(),
    }
}

// ---------------------------------------------------------------------------------------------
// Tools and skipping
// ---------------------------------------------------------------------------------------------

/// Whether the tests run in CI, where nothing may be skipped.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// Whether a command-line tool is on PATH. When it is missing, prints a visible
/// `SKIP: ... not installed` and returns false on a developer machine, but panics in CI
/// (`CI=true`), so CI never skips silently.
pub fn need_tool(name: &str) -> bool {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| is_executable(&dir.join(name))))
        .unwrap_or(false);
    need(&format!("{name} not installed"), found)
}

/// The same rule for any capability: `available` or a visible skip (a panic in CI).
pub fn need(what_is_missing: &str, available: bool) -> bool {
    if available {
        return true;
    }
    if in_ci() {
        panic!("CI=true but {what_is_missing}: this test must not be skipped in CI");
    }
    eprintln!("SKIP: {what_is_missing}");
    false
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A fresh directory for one test's files, under the system temp dir.
pub fn temp_dir(test: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "smolproxy-test-{}-{}-{test}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

// ---------------------------------------------------------------------------------------------
// Bytes
// ---------------------------------------------------------------------------------------------

/// FNV-1a, 64 bits: enough to compare multi-megabyte bodies without printing them.
pub fn fnv64(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// `len` deterministic pseudo-random bytes (xorshift), different for each `seed`.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Encodes `body` as chunks of the given sizes (cycled), then the last chunk and `trailers`.
pub fn chunked(body: &[u8], sizes: &[usize], trailers: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + body.len() / 64 + 64);
    let mut rest = body;
    let mut i = 0;
    while !rest.is_empty() {
        let n = sizes[i % sizes.len()].clamp(1, rest.len());
        out.extend_from_slice(format!("{n:x}\r\n").as_bytes());
        out.extend_from_slice(&rest[..n]);
        out.extend_from_slice(b"\r\n");
        rest = &rest[n..];
        i += 1;
    }
    out.extend_from_slice(b"0\r\n");
    for (name, value) in trailers {
        out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// Lossy text of some bytes, for assertion messages.
pub fn show(data: &[u8]) -> String {
    let cut = &data[..data.len().min(600)];
    let mut s = String::from_utf8_lossy(cut).into_owned();
    if data.len() > cut.len() {
        s.push_str(&format!("...({} bytes)", data.len()));
    }
    s
}

// ---------------------------------------------------------------------------------------------
// Message heads
// ---------------------------------------------------------------------------------------------

/// Header or trailer fields in order as (name, value), duplicates kept.
pub type Fields = Vec<(String, String)>;

/// A request or response head as raw bytes plus a lenient parse of it (first line and
/// fields in order, duplicates kept, names as sent, values with surrounding spaces trimmed).
#[derive(Debug, Clone, Default)]
pub struct Head {
    /// The bytes of the head, blank line included.
    pub raw: Vec<u8>,
    /// The first line (request line or status line), without its line ending.
    pub start: String,
    /// Field lines in order as (name, value).
    pub fields: Fields,
}

impl Head {
    /// Parses a head leniently; lines without a colon are kept with an empty value.
    pub fn parse(raw: &[u8]) -> Head {
        let text = String::from_utf8_lossy(raw);
        let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
        let start = lines.next().unwrap_or("").to_string();
        let fields = lines
            .take_while(|l| !l.is_empty())
            .map(|l| match l.split_once(':') {
                Some((n, v)) => (n.to_string(), v.trim_matches([' ', '\t']).to_string()),
                None => (l.to_string(), String::new()),
            })
            .collect();
        Head {
            raw: raw.to_vec(),
            start,
            fields,
        }
    }

    /// The first value of the field `name` (case-insensitive).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of the field `name`, in order.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.fields
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// Whether a field `name` is present.
    pub fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// The comma-separated elements of every `name` field, lowercased.
    pub fn tokens(&self, name: &str) -> Vec<String> {
        self.all(name)
            .iter()
            .flat_map(|v| v.split(','))
            .map(|t| t.trim().to_ascii_lowercase())
            .filter(|t| !t.is_empty())
            .collect()
    }

    /// The fields except those whose (lowercase) names are in `skip`, as (name, value).
    pub fn fields_except(&self, skip: &[&str]) -> Fields {
        self.fields
            .iter()
            .filter(|(n, _)| !skip.iter().any(|s| n.eq_ignore_ascii_case(s)))
            .cloned()
            .collect()
    }

    /// Request method (first word of the request line).
    pub fn method(&self) -> &str {
        self.start.split(' ').next().unwrap_or("")
    }

    /// Request target (second word of the request line).
    pub fn target(&self) -> &str {
        self.start.split(' ').nth(1).unwrap_or("")
    }

    /// Protocol version of a request line (`HTTP/1.1`).
    pub fn request_version(&self) -> &str {
        self.start.split(' ').nth(2).unwrap_or("")
    }

    /// Status code of a status line, 0 if there is none.
    pub fn status(&self) -> u16 {
        self.start
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }

    /// The head as text, for messages.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.raw).into_owned()
    }
}

/// A complete response as a client received it.
#[derive(Debug, Clone, Default)]
pub struct Response {
    /// The final head.
    pub head: Head,
    /// Interim (1xx) heads received before it, in order (a 101 is final, not interim).
    pub interim: Vec<Head>,
    /// The body, de-chunked if it was chunked.
    pub body: Vec<u8>,
    /// Trailer fields of a chunked body.
    pub trailers: Fields,
    /// Whether the body came chunked.
    pub chunked: bool,
    /// Whether the body was delimited by the connection closing.
    pub until_close: bool,
}

impl Response {
    /// The status code.
    pub fn status(&self) -> u16 {
        self.head.status()
    }

    /// The first value of a header field.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.get(name)
    }

    /// The body as (lossy) text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Asserts this is an error response made by the proxy as SPEC §3 wants it: the status,
    /// `text/plain`, a Content-Length equal to the body, a short one-line body, no version.
    pub fn assert_error(&self, status: u16) {
        let ctx = format!("head:\n{}body: {:?}", self.head.text(), self.text());
        assert_eq!(self.status(), status, "wrong status; {ctx}");
        assert!(
            !self.chunked && !self.until_close,
            "error reply not delimited by Content-Length; {ctx}"
        );
        let ct = self.header("content-type").unwrap_or("");
        assert!(
            ct.to_ascii_lowercase().starts_with("text/plain"),
            "error reply not text/plain; {ctx}"
        );
        let cl: usize = self
            .header("content-length")
            .and_then(|v| v.parse().ok())
            .expect("content-length");
        assert_eq!(
            cl,
            self.body.len(),
            "content-length does not match the body; {ctx}"
        );
        let text = self.text();
        let line = text.strip_suffix('\n').unwrap_or(&text);
        assert!(!line.trim().is_empty(), "empty error body; {ctx}");
        assert!(
            !line.contains('\n') && !line.contains('\r'),
            "error body is not one line; {ctx}"
        );
        assert!(text.len() <= 512, "error body is not short; {ctx}");
        assert!(
            !self.head.text().to_ascii_lowercase().contains("smolproxy/"),
            "version leaked; {ctx}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Connections
// ---------------------------------------------------------------------------------------------

/// A buffered TCP connection with bounded reads, used by test clients and origin servers.
pub struct Conn {
    /// The socket.
    pub stream: TcpStream,
    /// Bytes read and not yet consumed.
    buf: Vec<u8>,
    /// Where an origin records the body it reads: the shared log and this request's index.
    record: Option<(Arc<Mutex<Vec<Seen>>>, usize)>,
}

impl Conn {
    /// Wraps a connected socket, with [`IO_TIMEOUT`] on reads and writes.
    pub fn new(stream: TcpStream) -> Conn {
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        let _ = stream.set_nodelay(true);
        Conn {
            stream,
            buf: Vec::new(),
            record: None,
        }
    }

    /// Connects to `addr` (panics if it cannot).
    pub fn connect(addr: SocketAddr) -> Conn {
        let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
            .unwrap_or_else(|e| panic!("cannot connect to {addr}: {e}"));
        Conn::new(stream)
    }

    /// Sets the read timeout (the longest one read may wait).
    pub fn set_timeout(&mut self, d: Duration) {
        self.stream.set_read_timeout(Some(d)).unwrap();
    }

    /// Writes all of `data`, panicking on failure.
    pub fn write(&mut self, data: &[u8]) {
        self.stream
            .write_all(data)
            .unwrap_or_else(|e| panic!("write of {} bytes failed: {e}", data.len()));
    }

    /// Writes all of `data`, reporting failure (for peers expected to close early).
    pub fn try_write(&mut self, data: &[u8]) -> io::Result<()> {
        self.stream.write_all(data)
    }

    /// Closes the sending side (the peer reads end of stream).
    pub fn shutdown_write(&self) {
        let _ = self.stream.shutdown(Shutdown::Write);
    }

    /// Bytes already buffered and not yet consumed.
    pub fn buffered(&self) -> &[u8] {
        &self.buf
    }

    /// One read into the buffer; Ok(0) at end of stream.
    fn fill(&mut self) -> io::Result<usize> {
        let mut chunk = [0u8; 64 * 1024];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads one head. `Ok(None)` if the stream ended cleanly before any byte of it;
    /// `UnexpectedEof` if it ended in the middle. Leading empty lines are skipped.
    pub fn read_head(&mut self) -> io::Result<Option<Head>> {
        loop {
            let blank = self
                .buf
                .iter()
                .take_while(|b| matches!(b, b'\r' | b'\n'))
                .count();
            self.buf.drain(..blank);
            if let Some(end) = head_end(&self.buf) {
                let raw: Vec<u8> = self.buf.drain(..end).collect();
                return Ok(Some(Head::parse(&raw)));
            }
            if self.fill()? == 0 {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("stream ended in a head: {}", show(&self.buf)),
                ));
            }
        }
    }

    /// Reads exactly `n` bytes.
    pub fn read_exact(&mut self, n: usize) -> io::Result<Vec<u8>> {
        while self.buf.len() < n {
            if self.fill()? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("stream ended after {} of {n} bytes", self.buf.len()),
                ));
            }
        }
        Ok(self.buf.drain(..n).collect())
    }

    /// Reads one line including its LF.
    fn read_line(&mut self) -> io::Result<Vec<u8>> {
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                return Ok(self.buf.drain(..=i).collect());
            }
            if self.fill()? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "stream ended in a line",
                ));
            }
        }
    }

    /// Reads a chunked body; returns the decoded bytes and the trailer fields.
    pub fn read_chunked(&mut self) -> io::Result<(Vec<u8>, Fields)> {
        let bad = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
        let mut body = Vec::new();
        loop {
            let line = self.read_line()?;
            let text = String::from_utf8_lossy(&line);
            let size = text.trim_end().split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size, 16)
                .map_err(|_| bad(format!("bad chunk size line {text:?}")))?;
            if size == 0 {
                break;
            }
            body.extend_from_slice(&self.read_exact(size)?);
            if self.read_exact(2)? != b"\r\n" {
                return Err(bad("chunk not followed by CRLF".into()));
            }
        }
        let mut trailers = Vec::new();
        loop {
            let line = self.read_line()?;
            let text = String::from_utf8_lossy(&line);
            let text = text.trim_end_matches(['\r', '\n']);
            if text.is_empty() {
                return Ok((body, trailers));
            }
            let (n, v) = text
                .split_once(':')
                .ok_or_else(|| bad(format!("bad trailer {text:?}")))?;
            trailers.push((n.to_string(), v.trim().to_string()));
        }
    }

    /// Reads until the peer closes. A connection reset counts as the end.
    pub fn read_to_end(&mut self) -> io::Result<Vec<u8>> {
        loop {
            match self.fill() {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => break,
                Err(e) => return Err(e),
            }
        }
        Ok(std::mem::take(&mut self.buf))
    }

    /// Whatever arrives within `wait` (possibly nothing), without waiting for a close.
    pub fn read_available(&mut self, wait: Duration) -> Vec<u8> {
        let old = self.stream.read_timeout().ok().flatten();
        self.stream.set_read_timeout(Some(wait)).unwrap();
        let _ = self.fill();
        self.stream.set_read_timeout(old).unwrap();
        std::mem::take(&mut self.buf)
    }

    /// Whether the peer closes the connection (end of stream or reset) within `wait`, with
    /// nothing else arriving first. Data arriving counts as "not closed".
    pub fn closes_within(&mut self, wait: Duration) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        let old = self.stream.read_timeout().ok().flatten();
        self.stream.set_read_timeout(Some(wait)).unwrap();
        let got = self.fill();
        self.stream.set_read_timeout(old).unwrap();
        match got {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => !matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ),
        }
    }

    /// Reads a request body framed by `head` (chunked, Content-Length or none). At an
    /// origin, the body is also recorded in [`Origin::seen`].
    pub fn read_body(&mut self, head: &Head) -> io::Result<Vec<u8>> {
        let (body, trailers) = if head
            .tokens("transfer-encoding")
            .last()
            .is_some_and(|t| t == "chunked")
        {
            self.read_chunked()?
        } else if let Some(n) = head
            .get("content-length")
            .and_then(|v| v.parse::<usize>().ok())
        {
            (self.read_exact(n)?, Vec::new())
        } else {
            (Vec::new(), Vec::new())
        };
        if let Some((seen, i)) = &self.record {
            let mut seen = seen.lock().unwrap();
            seen[*i].body = body.clone();
            seen[*i].trailers = trailers;
        }
        Ok(body)
    }

    /// Reads the response to a request with `method`, RFC 9112 §6.3 framing: interim 1xx
    /// heads are collected, HEAD/204/304 have no body, then chunked, Content-Length, or
    /// until close. A 101 is returned at once, its body left unread.
    pub fn read_response_to(&mut self, method: &str) -> io::Result<Response> {
        let mut interim = Vec::new();
        loop {
            let head = self.read_head()?.ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed without a response",
                )
            })?;
            let status = head.status();
            if !head.start.starts_with("HTTP/1.") || !(100..=999).contains(&status) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("bad status line {:?}", head.start),
                ));
            }
            if (100..200).contains(&status) && status != 101 {
                interim.push(head);
                continue;
            }
            let mut res = Response {
                head,
                interim,
                ..Response::default()
            };
            if status == 101 || method == "HEAD" || status == 204 || status == 304 {
                return Ok(res);
            }
            let te = res.head.tokens("transfer-encoding");
            if te.last().is_some_and(|t| t == "chunked") {
                res.chunked = true;
                (res.body, res.trailers) = self.read_chunked()?;
            } else if te.is_empty() && res.head.has("content-length") {
                let n = res
                    .head
                    .get("content-length")
                    .and_then(|v| v.parse::<usize>().ok())
                    .ok_or_else(|| {
                        io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!("bad content-length in {}", res.head.text()),
                        )
                    })?;
                res.body = self.read_exact(n)?;
            } else {
                res.until_close = true;
                res.body = self.read_to_end()?;
            }
            return Ok(res);
        }
    }

    /// Reads the response to a GET (or any method with a body in its response).
    pub fn read_response(&mut self) -> io::Result<Response> {
        self.read_response_to("GET")
    }

    /// Like [`Conn::read_response_to`] but panics with context when no response can be read.
    pub fn response_to(&mut self, method: &str) -> Response {
        self.read_response_to(method).unwrap_or_else(|e| {
            panic!(
                "no complete response to {method}: {e}; buffered: {:?}",
                show(&self.buf)
            )
        })
    }

    /// Like [`Conn::read_response`] but panics with context when no response can be read.
    pub fn response(&mut self) -> Response {
        self.response_to("GET")
    }

    /// Sends `request` and reads the response to `method`.
    pub fn exchange(&mut self, method: &str, request: &[u8]) -> Response {
        self.write(request);
        self.response_to(method)
    }

    /// Writes a response with a Content-Length body (for origin handlers).
    pub fn respond(&mut self, status: &str, headers: &[(&str, &str)], body: &[u8]) {
        let _ = self.try_respond(status, headers, body);
    }

    /// Writes a response with a Content-Length body, reporting write failure.
    pub fn try_respond(
        &mut self,
        status: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> io::Result<()> {
        let mut out = format!("HTTP/1.1 {status}\r\n");
        for (n, v) in headers {
            out.push_str(&format!("{n}: {v}\r\n"));
        }
        out.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(body);
        self.stream.write_all(&bytes)
    }
}

/// End of a head (after CRLFCRLF or LFLF) in `buf`.
fn head_end(buf: &[u8]) -> Option<usize> {
    let mut i = 0;
    while let Some(p) = buf[i..].iter().position(|&b| b == b'\n') {
        let nl = i + p;
        match buf.get(nl + 1) {
            Some(b'\n') => return Some(nl + 2),
            Some(b'\r') if buf.get(nl + 2) == Some(&b'\n') => return Some(nl + 3),
            _ => i = nl + 1,
        }
    }
    None
}

// ---------------------------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------------------------

/// Connects to `proxy`, writes `bytes`, and returns everything received until the proxy
/// closes, resets, or stays silent for 3 s. Write errors are ignored (the proxy may close
/// early on purpose); the connection is never half-closed by us.
pub fn send_raw(proxy: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    send_raw_timeout(proxy, bytes, Duration::from_secs(3))
}

/// [`send_raw`] with a chosen silence timeout.
pub fn send_raw_timeout(proxy: SocketAddr, bytes: &[u8], silence: Duration) -> Vec<u8> {
    let mut conn = Conn::connect(proxy);
    conn.set_timeout(silence);
    let _ = conn.try_write(bytes);
    let mut out = Vec::new();
    loop {
        match conn.fill() {
            Ok(0) => break,
            Ok(_) => out.append(&mut conn.buf),
            Err(_) => break,
        }
    }
    out
}

/// Builds `METHOD URL HTTP/1.1` with a Host made from the URL's authority, then `headers`
/// in order, then `Content-Length` and `body` when the body is not empty.
pub fn build_request(method: &str, url: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let authority = url
        .split("://")
        .nth(1)
        .and_then(|r| r.split(['/', '?']).next())
        .unwrap_or(url);
    let mut head = format!("{method} {url} HTTP/1.1\r\nHost: {authority}\r\n");
    for (n, v) in headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    if !body.is_empty() {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(body);
    out
}

/// Sends one request on a fresh connection and reads its response (to `method`).
pub fn request(proxy: SocketAddr, method: &str, raw: &[u8]) -> Response {
    Conn::connect(proxy).exchange(method, raw)
}

/// A plain `GET url` with `Connection: close` through `proxy`; panics if no response.
pub fn get(proxy: SocketAddr, url: &str) -> Response {
    request(
        proxy,
        "GET",
        &build_request("GET", url, &[("Connection", "close")], b""),
    )
}

/// Asserts that `proxy` still forwards a normal request to `origin` (an [`Origin::echo`] or
/// any origin answering 200 at `/still-serving`). Used after every bad-input test.
pub fn assert_still_serving(proxy: SocketAddr, origin: &Origin) {
    let res = get(proxy, &origin.url("/still-serving"));
    assert_eq!(
        res.status(),
        200,
        "proxy stopped serving normal requests: {}",
        res.head.text()
    );
}

// ---------------------------------------------------------------------------------------------
// Origin servers
// ---------------------------------------------------------------------------------------------

/// One request as an origin received it.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    /// The request head exactly as it arrived.
    pub head: Head,
    /// The body, once the handler read it with [`Conn::read_body`].
    pub body: Vec<u8>,
    /// Trailer fields of a chunked body.
    pub trailers: Fields,
    /// Which accepted connection (0, 1, ...) carried it.
    pub connection: usize,
}

/// An HTTP handler: the request head and the connection (to read the body and write the
/// response). Returns whether to read another request on this connection.
pub type Handler = dyn Fn(&Head, &mut Conn) -> bool + Send + Sync + 'static;

/// A raw TCP handler: the whole connection is its own.
pub type RawHandler = dyn Fn(&mut Conn) + Send + Sync + 'static;

/// A test origin server on 127.0.0.1:0 (or [::1]:0), a thread per connection, recording every
/// request head it receives. Stops accepting when dropped.
pub struct Origin {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Requests received, in arrival order.
    seen: Arc<Mutex<Vec<Seen>>>,
    /// Connections accepted.
    connections: Arc<AtomicUsize>,
    /// Set on drop to stop the accept loop.
    stop: Arc<AtomicBool>,
}

impl Origin {
    /// An HTTP origin on 127.0.0.1:0 calling `handler` for each request.
    pub fn start(handler: impl Fn(&Head, &mut Conn) -> bool + Send + Sync + 'static) -> Origin {
        Origin::start_on("127.0.0.1:0", handler)
    }

    /// An HTTP origin on `bind` (e.g. `[::1]:0`).
    pub fn start_on(
        bind: &str,
        handler: impl Fn(&Head, &mut Conn) -> bool + Send + Sync + 'static,
    ) -> Origin {
        let handler: Arc<Handler> = Arc::new(handler);
        Origin::listen(bind, move |mut conn, seen, index| {
            conn.set_timeout(IO_TIMEOUT);
            // Serve requests until the peer closes, errs, or the handler says stop.
            while let Ok(Some(head)) = conn.read_head() {
                let i = {
                    let mut s = seen.lock().unwrap();
                    s.push(Seen {
                        head: head.clone(),
                        connection: index,
                        ..Seen::default()
                    });
                    s.len() - 1
                };
                conn.record = Some((seen.clone(), i));
                if !handler(&head, &mut conn) {
                    break;
                }
            }
        })
    }

    /// A raw TCP server on 127.0.0.1:0 (for CONNECT tests): `handler` owns each connection.
    pub fn tcp(handler: impl Fn(&mut Conn) + Send + Sync + 'static) -> Origin {
        Origin::tcp_on("127.0.0.1:0", handler)
    }

    /// A raw TCP server on `bind`.
    pub fn tcp_on(bind: &str, handler: impl Fn(&mut Conn) + Send + Sync + 'static) -> Origin {
        let handler: Arc<RawHandler> = Arc::new(handler);
        Origin::listen(bind, move |mut conn, _, _| handler(&mut conn))
    }

    /// A TCP echo server: echoes every byte until the client half-closes, then writes
    /// `BYE` and closes. Shows that a half-close travels through a tunnel both ways.
    pub fn tcp_echo() -> Origin {
        Origin::tcp(tcp_echo_handler)
    }

    /// The ready-made HTTP echo origin (see [`echo_handler`]).
    pub fn echo() -> Origin {
        Origin::start(echo_handler)
    }

    fn listen(
        bind: &str,
        serve: impl Fn(Conn, Arc<Mutex<Vec<Seen>>>, usize) + Send + Sync + 'static,
    ) -> Origin {
        let listener =
            TcpListener::bind(bind).unwrap_or_else(|e| panic!("origin cannot bind {bind}: {e}"));
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let serve = Arc::new(serve);
        let (seen2, conns2, stop2) = (seen.clone(), connections.clone(), stop.clone());
        thread::spawn(move || {
            for stream in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let index = conns2.fetch_add(1, Ordering::SeqCst);
                let (serve, seen) = (serve.clone(), seen2.clone());
                thread::spawn(move || serve(Conn::new(stream), seen, index));
            }
        });
        Origin {
            addr,
            seen,
            connections,
            stop,
        }
    }

    /// `http://ADDR{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.authority())
    }

    /// `HOST:PORT` (IPv6 in brackets), as in a Host header or a CONNECT target.
    pub fn authority(&self) -> String {
        self.addr.to_string()
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Every request received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// The last request received (panics if none).
    pub fn last(&self) -> Seen {
        self.seen().pop().expect("the origin received no request")
    }

    /// How many requests were received.
    pub fn requests(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    /// How many connections were accepted.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
    }
}

/// The echo handler: reads the body, then answers 200 with the body it got, or with
/// `METHOD TARGET` when there was none. Headers tell what it saw: `X-Method`, `X-Target`,
/// `X-Body-Len`, `X-Body-Hash` (FNV-1a, hex). HEAD gets the headers only. The connection is
/// kept unless the request says `Connection: close`.
pub fn echo_handler(head: &Head, conn: &mut Conn) -> bool {
    let Ok(body) = conn.read_body(head) else {
        return false;
    };
    let reply = if body.is_empty() {
        format!("{} {}", head.method(), head.target()).into_bytes()
    } else {
        body.clone()
    };
    let close = head.tokens("connection").iter().any(|t| t == "close");
    let len = body.len().to_string();
    let hash = format!("{:016x}", fnv64(&body));
    let mut headers = vec![
        ("Content-Type", "application/octet-stream"),
        ("X-Method", head.method()),
        ("X-Target", head.target()),
        ("X-Body-Len", len.as_str()),
        ("X-Body-Hash", hash.as_str()),
    ];
    if close {
        headers.push(("Connection", "close"));
    }
    let written = if head.method() == "HEAD" {
        let mut out = String::from("HTTP/1.1 200 OK\r\n");
        for (n, v) in &headers {
            out.push_str(&format!("{n}: {v}\r\n"));
        }
        out.push_str(&format!("Content-Length: {}\r\n\r\n", reply.len()));
        conn.stream.write_all(out.as_bytes())
    } else {
        conn.try_respond("200 OK", &headers, &reply)
    };
    written.is_ok() && !close
}

/// The raw echo: every byte back until end of stream, then `BYE`, then close.
pub fn tcp_echo_handler(conn: &mut Conn) {
    let mut buf = [0u8; 64 * 1024];
    let pending = std::mem::take(&mut conn.buf);
    if conn.stream.write_all(&pending).is_err() {
        return;
    }
    loop {
        match conn.stream.read(&mut buf) {
            Ok(0) => {
                let _ = conn.stream.write_all(b"BYE");
                let _ = conn.stream.shutdown(Shutdown::Both);
                return;
            }
            Ok(n) => {
                if conn.stream.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

/// A loopback address where connection attempts hang: a listener that never accepts, with
/// its accept queue filled, so the kernel drops further SYNs. Keep the returned value alive
/// for as long as the address must stay a black hole.
pub struct Blackhole {
    /// The address that does not answer.
    pub addr: SocketAddr,
    /// The listener (never accepted from).
    _listener: TcpListener,
    /// The connections filling its queue.
    _filling: Vec<TcpStream>,
}

impl Blackhole {
    /// Makes one; panics if connects to it still complete after filling the queue.
    pub fn new() -> Blackhole {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut filling = Vec::new();
        // std listens with a backlog of 128; a few more than that always fill it.
        for _ in 0..1000 {
            match TcpStream::connect_timeout(&addr, Duration::from_millis(100)) {
                Ok(s) => filling.push(s),
                Err(_) => {
                    return Blackhole {
                        addr,
                        _listener: listener,
                        _filling: filling,
                    }
                }
            }
        }
        panic!("connects to a full listener never hang here; cannot make a black hole");
    }
}

/// A port on 127.0.0.1 with nothing listening (bound, then released).
pub fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

// ---------------------------------------------------------------------------------------------
// Export and the npm tools
// ---------------------------------------------------------------------------------------------

/// Where the npm tools are, or `None` (after a visible skip) when they are missing.
pub fn node_tools() -> Option<PathBuf> {
    let modules = Path::new(env!("CARGO_MANIFEST_DIR")).join("node_modules");
    let node = Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !need("node not installed", node) {
        return None;
    }
    let installed = ["newman", "har-validator", "postman-collection"]
        .iter()
        .all(|m| modules.join(m).is_dir());
    need(
        "newman, har-validator or postman-collection not in node_modules (run npm install)",
        installed,
    )
    .then_some(modules)
}

/// Runs `smolproxy export` with `args`; returns (exit code, stdout, stderr).
pub fn export(args: &[&str]) -> (Option<i32>, String, String) {
    let mut cmd = Command::new(bin());
    cmd.arg("export").args(args);
    let done = run_to_exit(cmd, Duration::from_secs(20));
    (done.code, done.stdout, done.stderr)
}

/// How long capture records may take to reach the file after their exchange.
pub const RECORD_WAIT: Duration = Duration::from_secs(5);

/// Waits until the capture file `path` holds at least `n` complete lines and returns them
/// parsed; fails when, after [`RECORD_WAIT`], it holds another number.
pub fn capture_records(path: &Path, n: usize) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + RECORD_WAIT;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<&str> = text
            .split_inclusive('\n')
            .filter(|l| l.ends_with('\n'))
            .collect();
        if lines.len() >= n || Instant::now() > deadline {
            assert_eq!(lines.len(), n, "records in {}:\n{text}", path.display());
            return lines
                .iter()
                .map(|l| serde_json::from_str(l).expect("a record is JSON"))
                .collect();
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Runs curl with `args`, without any proxy variables or `.curlrc`, bounded in time
/// (`--max-time 20`, killed after 30 s).
pub fn curl(args: &[&str]) -> Finished {
    let mut cmd = Command::new("curl");
    cmd.args(["-q", "-sS", "--max-time", "20"]).args(args);
    for var in PROXY_ENV {
        cmd.env_remove(var);
    }
    run_to_exit(cmd, Duration::from_secs(30))
}

/// The capture record of `method url` (panics if none or several).
pub fn record_of<'a>(
    records: &'a [serde_json::Value],
    method: &str,
    url: &str,
) -> &'a serde_json::Value {
    let found: Vec<&serde_json::Value> = records
        .iter()
        .filter(|r| r["request"]["method"] == method && r["request"]["url"] == url)
        .collect();
    assert_eq!(found.len(), 1, "{method} {url} in {records:#?}");
    found[0]
}

/// The capture file's whole records (a line being written is left out) once `done` holds for
/// them; panics with the file after `wait`.
pub fn records_when(
    path: &Path,
    wait: Duration,
    done: impl Fn(&[serde_json::Value]) -> bool,
) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + wait;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let records: Vec<serde_json::Value> = text
            .split_inclusive('\n')
            .filter(|l| l.ends_with('\n'))
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        if done(&records) {
            return records;
        }
        assert!(
            Instant::now() < deadline,
            "the capture {} never got there: {text}",
            path.display()
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// Sends one request through `proxy` with `Connection: close` and returns the status.
pub fn send(
    proxy: SocketAddr,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> u16 {
    let mut all = headers.to_vec();
    all.push(("Connection", "close"));
    request(proxy, method, &build_request(method, url, &all, body)).status()
}

/// Runs a node script with the repository's node_modules; panics with its output on failure.
pub fn node(modules: &Path, script: &str, args: &[&Path]) -> String {
    let mut cmd = Command::new("node");
    cmd.arg("-e")
        .arg(script)
        .arg("--")
        .args(args)
        .env("NODE_PATH", modules);
    let done = run_to_exit(cmd, Duration::from_secs(30));
    assert_eq!(
        done.code,
        Some(0),
        "node failed:\n{}\n{}",
        done.stdout,
        done.stderr
    );
    done.stdout
}

/// A node script validating the HAR file named last on its command line with
/// `har-validator`; prints `valid N` (N entries) or fails with the validator's errors.
pub const VALIDATE_HAR: &str = r#"
const har = JSON.parse(require('fs').readFileSync(process.argv[process.argv.length - 1]));
require('har-validator').har(har)
  .then(() => console.log('valid ' + har.log.entries.length))
  .catch(e => { console.error(JSON.stringify(e.errors || e.message, null, 1)); process.exit(1); });
"#;

/// A node script loading the collection named last on its command line with the
/// `postman-collection` SDK: every item must have a host and one saved response. Prints
/// `loaded F folders N items`.
pub const LOAD_COLLECTION: &str = r#"
const { Collection } = require('postman-collection');
const json = JSON.parse(require('fs').readFileSync(process.argv[process.argv.length - 1]));
const c = new Collection(json);
let n = 0;
c.forEachItem(i => {
  if (!i.request.url.getHost() || i.responses.count() !== 1) {
    throw new Error('bad item ' + i.name);
  }
  n++;
});
console.log('loaded ' + c.items.count() + ' folders ' + n + ' items');
"#;

/// What a `newman run` did: how it ended and its JSON report (`run.executions`,
/// `run.failures`, `run.stats`).
pub struct NewmanRun {
    /// Exit code and output.
    pub done: Finished,
    /// The JSON reporter's document (`Null` if newman wrote none).
    pub report: serde_json::Value,
}

/// Runs `newman run COLLECTION ARGS...` with the JSON reporter into `dir`, straight to the
/// origins (no proxy variables in its environment) unless `env` sets some.
pub fn newman(
    modules: &Path,
    dir: &Path,
    collection: &Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> NewmanRun {
    let report = dir.join(format!(
        "newman-{}.json",
        NEWMAN_RUNS.fetch_add(1, Ordering::Relaxed)
    ));
    let mut cmd = Command::new(modules.join(".bin/newman"));
    cmd.arg("run")
        .arg(collection)
        .args(["--reporters", "json", "--reporter-json-export"])
        .arg(&report)
        .args(["--timeout-request", "10000"])
        .args(args);
    for var in PROXY_ENV {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().copied());
    let done = run_to_exit(cmd, Duration::from_secs(60));
    let report = std::fs::read(&report)
        .ok()
        .and_then(|r| serde_json::from_slice(&r).ok())
        .unwrap_or_default();
    NewmanRun { done, report }
}

/// Numbers the reports of [`newman`] runs.
static NEWMAN_RUNS: AtomicUsize = AtomicUsize::new(0);

// ---------------------------------------------------------------------------------------------
// Peer processes
// ---------------------------------------------------------------------------------------------

/// A peer process (tinyproxy, stunnel, ...), killed when dropped.
pub struct Peer {
    /// The process.
    child: Child,
    /// Where it listens on 127.0.0.1.
    pub port: u16,
}

impl Peer {
    /// Starts `cmd` (output to `log`) and waits until 127.0.0.1:`port` accepts connections.
    pub fn start(mut cmd: Command, port: u16, log: &Path) -> Peer {
        let out = std::fs::File::create(log).unwrap();
        cmd.stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        let mut peer = Peer { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = peer.child.try_wait() {
                panic!(
                    "{cmd:?} exited with {status}: {}",
                    std::fs::read_to_string(log).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{cmd:?} did not listen: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
            thread::sleep(Duration::from_millis(20));
        }
        peer
    }

    /// `127.0.0.1:PORT`.
    pub fn authority(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// stunnel on a free port of 127.0.0.1, terminating TLS with `cert` and `key` and forwarding
/// the plain bytes to 127.0.0.1:`to`: TLS in front of an [`Origin`]. Its config and log go
/// to `dir`.
pub fn stunnel(dir: &Path, cert: &Path, key: &Path, to: u16) -> Peer {
    let port = closed_port();
    let conf = dir.join(format!("stunnel-{port}.conf"));
    let text = format!(
        "foreground = yes\npid =\n[tls]\naccept = 127.0.0.1:{port}\nconnect = 127.0.0.1:{to}\n\
         cert = {}\nkey = {}\n",
        cert.display(),
        key.display()
    );
    std::fs::write(&conf, text).unwrap();
    let mut cmd = Command::new("stunnel");
    cmd.arg(&conf);
    Peer::start(cmd, port, &dir.join(format!("stunnel-{port}.log")))
}

/// tinyproxy on a free port of 127.0.0.1, with `BasicAuth` when `auth` is given. It logs each
/// connection and request line (`LogLevel Connect`) to `dir/tinyproxy-PORT.log`, so a test can
/// tell what went through it.
pub fn tinyproxy(dir: &Path, auth: Option<(&str, &str)>) -> Peer {
    let port = closed_port();
    let conf = dir.join(format!("tinyproxy-{port}.conf"));
    let mut text =
        format!("Port {port}\nListen 127.0.0.1\nTimeout 30\nMaxClients 50\nLogLevel Connect\n");
    if let Some((user, pass)) = auth {
        text += &format!("BasicAuth {user} {pass}\n");
    }
    std::fs::write(&conf, text).unwrap();
    let mut cmd = Command::new("tinyproxy");
    cmd.arg("-d").arg("-c").arg(&conf);
    Peer::start(cmd, port, &dir.join(format!("tinyproxy-{port}.log")))
}

/// microsocks with `-u user -P pass` on a free port of 127.0.0.1. It logs one line per
/// tunnel (`client[N] IP: connected to HOST:PORT`) to `dir/microsocks-PORT.log`.
pub fn microsocks(dir: &Path, user: &str, pass: &str) -> Peer {
    let port = closed_port();
    let mut cmd = Command::new("microsocks");
    cmd.args([
        "-i",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "-u",
        user,
        "-P",
        pass,
    ]);
    Peer::start(cmd, port, &dir.join(format!("microsocks-{port}.log")))
}

/// What a peer started by [`tinyproxy`] or [`microsocks`] (`name`) in `dir` has logged so far.
pub fn peer_log(dir: &Path, name: &str, peer: &Peer) -> String {
    std::fs::read_to_string(dir.join(format!("{name}-{}.log", peer.port))).unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// Authorization services
// ---------------------------------------------------------------------------------------------

/// An authorization service with the rules of Postman's reference runner service: DELETE,
/// PUT and PATCH are refused, and so is every path containing `/admin`; anything else is
/// allowed. 200 `{"allowed":true}` or 403 `{"allowed":false}`, 400 when url or method is
/// missing. Answers after `delay`; every question is recorded (see [`questions`]).
pub fn reference_service(delay: Duration) -> Origin {
    Origin::start(move |head, conn| {
        let body = conn.read_body(head).unwrap_or_default();
        thread::sleep(delay);
        let q: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let (Some(url), Some(method)) = (q["url"].as_str(), q["method"].as_str()) else {
            conn.respond(
                "400 Bad Request",
                &[("Content-Type", "application/json")],
                br#"{"allowed":false}"#,
            );
            return false;
        };
        let path = url
            .split("://")
            .nth(1)
            .and_then(|r| r.find('/').map(|i| &r[i..]))
            .unwrap_or("/");
        let path = path.split('?').next().unwrap_or("/");
        let allowed = !["DELETE", "PUT", "PATCH"].contains(&method) && !path.contains("/admin");
        let (status, answer) = if allowed {
            ("200 OK", &br#"{"allowed":true}"#[..])
        } else {
            ("403 Forbidden", &br#"{"allowed":false}"#[..])
        };
        conn.respond(status, &[("Content-Type", "application/json")], answer);
        false
    })
}

/// The questions an authorization service received, parsed.
pub fn questions(service: &Origin) -> Vec<serde_json::Value> {
    service
        .seen()
        .iter()
        .map(|s| serde_json::from_slice(&s.body).expect("a JSON question"))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Certificates
// ---------------------------------------------------------------------------------------------

/// Runs `openssl ARGS` in `dir`, panicking with its stderr if it fails.
pub fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `openssl` arguments for a new P-256 key without a passphrase (fast to make).
const EC_KEY: [&str; 5] = [
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:prime256v1",
    "-nodes",
];

/// Extensions of a TLS server certificate for these subjectAltNames.
fn server_ext(san: &str) -> String {
    format!(
        "subjectAltName={san}\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\n\
         extendedKeyUsage=serverAuth\n"
    )
}

/// A test CA and a server certificate it signed for `localhost` and 127.0.0.1.
pub struct Pki {
    /// The CA certificate (what `--ca-file` gets).
    pub ca: PathBuf,
    /// The CA's key.
    pub ca_key: PathBuf,
    /// The server certificate.
    pub cert: PathBuf,
    /// The server key.
    pub key: PathBuf,
}

/// Makes the test PKI once per test run with the openssl command (P-256 keys: fast).
pub fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| {
        let dir = temp_dir("pki");
        let mut ca = vec![
            "req",
            "-x509",
            "-days",
            "2",
            "-subj",
            "/CN=smolproxy test CA",
            "-keyout",
            "ca.key",
        ];
        ca.extend(EC_KEY);
        ca.extend([
            "-out",
            "ca.pem",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
        ]);
        ca.extend(["-addext", "keyUsage=critical,keyCertSign,cRLSign"]);
        openssl(&dir, &ca);
        let mut csr = vec![
            "req",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ];
        csr.extend(EC_KEY);
        openssl(&dir, &csr);
        std::fs::write(
            dir.join("ext.cnf"),
            server_ext("DNS:localhost,IP:127.0.0.1"),
        )
        .unwrap();
        openssl(
            &dir,
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                "ext.cnf",
                "-out",
                "server.pem",
            ],
        );
        Pki {
            ca: dir.join("ca.pem"),
            ca_key: dir.join("ca.key"),
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
        }
    })
}

/// A certificate file and its key file.
pub struct Identity {
    /// The certificate (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM, mode 0600).
    pub key: PathBuf,
}

/// Certificates that a verifying client must refuse, each for one reason only.
pub struct BadCerts {
    /// For `localhost` and 127.0.0.1, signed by the [`pki`] CA, valid only in January 2020.
    pub expired: Identity,
    /// Signed by the [`pki`] CA, valid now, but for `wrong.example` only.
    pub wrong_name: Identity,
    /// For `localhost` and 127.0.0.1, valid now, signed by a CA nobody trusts.
    pub unknown_issuer: Identity,
    /// A CA certificate (CA:TRUE, keyCertSign) that expired in January 2020, and its key.
    pub expired_ca: Identity,
}

/// Makes the [`BadCerts`] once per test run, with the openssl command. OpenSSL 3.0's
/// `x509 -req` cannot set dates in the past (`-days -1` gives a notAfter before the notBefore,
/// which is another error), so these come from `openssl ca` and its `-startdate`.
pub fn bad_certs() -> &'static BadCerts {
    static BAD: OnceLock<BadCerts> = OnceLock::new();
    BAD.get_or_init(|| {
        let pki = pki();
        let dir = temp_dir("bad-certs");
        let localhost = server_ext("DNS:localhost,IP:127.0.0.1");
        let january_2020 = Some(("20200101000000Z", "20200131000000Z"));

        let mut other_ca = vec![
            "req",
            "-x509",
            "-days",
            "2",
            "-subj",
            "/CN=nobody trusts this CA",
            "-keyout",
            "other-ca.key",
            "-out",
            "other-ca.pem",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ];
        other_ca.extend(EC_KEY);
        openssl(&dir, &other_ca);
        let other = Identity {
            cert: dir.join("other-ca.pem"),
            key: dir.join("other-ca.key"),
        };
        let trusted = Identity {
            cert: pki.ca.clone(),
            key: pki.ca_key.clone(),
        };
        let ca_ext = "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n\
                      subjectKeyIdentifier=hash\n";
        BadCerts {
            expired: issue(
                &dir,
                "expired",
                "localhost",
                Some(&trusted),
                &localhost,
                january_2020,
            ),
            wrong_name: issue(
                &dir,
                "wrong-name",
                "wrong.example",
                Some(&trusted),
                &server_ext("DNS:wrong.example"),
                None,
            ),
            unknown_issuer: issue(
                &dir,
                "unknown-issuer",
                "localhost",
                Some(&other),
                &localhost,
                None,
            ),
            expired_ca: issue(
                &dir,
                "expired-ca",
                "expired test CA",
                None,
                ca_ext,
                january_2020,
            ),
        }
    })
}

/// Runs `smolproxy ca new --cert CERT --key KEY EXTRA...` (an interception CA, SPEC §10).
pub fn ca_new(cert: &Path, key: &Path, extra: &[&str]) -> Finished {
    let mut cmd = Command::new(bin());
    cmd.args(["ca", "new", "--cert"])
        .arg(cert)
        .arg("--key")
        .arg(key)
        .args(extra);
    run_to_exit(cmd, IO_TIMEOUT)
}

/// Makes `dir/NAME.key` and `dir/NAME.pem` for the common name `cn` with the extensions
/// `ext`, signed by `issuer` (self-signed when `None`), valid for two days or between `dates`
/// (openssl ca's `YYYYMMDDHHMMSSZ`). `openssl ca` wants a database: each gets its own.
fn issue(
    dir: &Path,
    name: &str,
    cn: &str,
    issuer: Option<&Identity>,
    ext: &str,
    dates: Option<(&str, &str)>,
) -> Identity {
    let (key, csr, pem) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.pem"),
    );
    let subject = format!("/CN={cn}");
    let mut req = vec!["req", "-subj", &subject, "-keyout", &key, "-out", &csr];
    req.extend(EC_KEY);
    openssl(dir, &req);

    let db = dir.join(format!("{name}-db"));
    std::fs::create_dir_all(&db).unwrap();
    std::fs::write(db.join("index.txt"), "").unwrap();
    std::fs::write(db.join("serial"), "1000\n").unwrap();
    let conf = dir.join(format!("{name}-ca.cnf"));
    std::fs::write(
        &conf,
        format!(
            "[ca]\ndefault_ca = test\n[test]\ndatabase = {db}/index.txt\nnew_certs_dir = {db}\n\
             serial = {db}/serial\ndefault_md = sha256\ndefault_days = 2\npolicy = any\n\
             unique_subject = no\n[any]\ncommonName = supplied\n",
            db = db.display()
        ),
    )
    .unwrap();
    let ext_file = dir.join(format!("{name}.ext"));
    std::fs::write(&ext_file, ext).unwrap();
    let (conf, ext_file) = (conf.to_str().unwrap(), ext_file.to_str().unwrap());
    let mut args = vec![
        "ca", "-batch", "-notext", "-config", conf, "-in", &csr, "-extfile", ext_file, "-out", &pem,
    ];
    match issuer {
        Some(ca) => args.extend([
            "-cert",
            ca.cert.to_str().unwrap(),
            "-keyfile",
            ca.key.to_str().unwrap(),
        ]),
        None => args.extend(["-selfsign", "-keyfile", &key]),
    }
    if let Some((start, end)) = dates {
        args.extend(["-startdate", start, "-enddate", end]);
    }
    openssl(dir, &args);
    Identity {
        cert: dir.join(pem),
        key: dir.join(key),
    }
}

// ---------------------------------------------------------------------------------------------
// A browser
// ---------------------------------------------------------------------------------------------

/// A page whose script fetches `/api/data` from its own origin and writes `fetched VALUE` (or
/// `failed: WHY`) into `#result`: what a browser test reads back from the DOM.
pub const FETCH_PAGE: &str = r#"<!doctype html>
<html><head><title>smolproxy browser test</title></head><body>
<p id="result">pending</p>
<script>
const result = document.getElementById("result");
fetch("/api/data")
  .then((res) => res.ok ? res.json() : Promise.reject(new Error("status " + res.status)))
  .then((data) => { result.textContent = "fetched " + data.value; })
  .catch((err) => { result.textContent = "failed: " + err; });
</script>
</body></html>
"#;

/// An origin serving [`FETCH_PAGE`] at `/` and `{"value": VALUE}` at `/api/data`; 404
/// elsewhere (browsers also ask for `/favicon.ico`).
pub fn fetch_site(value: &str) -> Origin {
    let data = format!("{{\"value\":\"{value}\"}}");
    Origin::start(move |head, conn| {
        let _ = conn.read_body(head);
        match head.target() {
            "/" => conn.respond(
                "200 OK",
                &[("Content-Type", "text/html")],
                FETCH_PAGE.as_bytes(),
            ),
            "/api/data" => conn.respond(
                "200 OK",
                &[("Content-Type", "application/json")],
                data.as_bytes(),
            ),
            _ => conn.respond("404 Not Found", &[("Content-Type", "text/plain")], b"none"),
        }
        true
    })
}

/// Loads `url` in Debian's headless Chromium through `--proxy-server=PROXY_SERVER` (loopback
/// included), lets its scripts run, and returns the DOM it printed. One launch with a fresh
/// profile and HOME under `dir`, in a namespace without DNS ([`without_dns`]), so Chromium's
/// own background requests can resolve nothing. `--virtual-time-budget` makes Chromium wait
/// until the page has been idle that long (virtual time, fast-forwarded) before it prints, so
/// a `fetch()` after the load event is done. `None` after a visible skip when chromium or
/// mount namespaces are missing.
pub fn headless_dom(dir: &Path, proxy_server: &str, url: &str) -> Option<String> {
    if !need_tool("chromium") {
        return None;
    }
    let home = dir.join("chromium-home");
    std::fs::create_dir_all(&home).unwrap();
    dump_dom(&home, &dir.join("chromium-profile"), proxy_server, url)
}

/// One headless Chromium launch (as root: the flags the project's browser tests use) with
/// `home` as HOME (where an NSS database may trust a test CA) and a fresh `profile`, through
/// `--proxy-server=PROXY_SERVER` with loopback included, without DNS ([`without_dns`]); the
/// DOM it printed for `url` once the page was idle ([`headless_dom`] says why). Panics with
/// the tail of Chromium's stderr if the launch fails; `None` after a visible skip when mount
/// namespaces are missing.
pub fn dump_dom(home: &Path, profile: &Path, proxy_server: &str, url: &str) -> Option<String> {
    let mut cmd = without_dns("chromium")?;
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-quic",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .arg(format!("--proxy-server={proxy_server}"))
    // Chromium sends loopback destinations direct unless told otherwise.
    .arg("--proxy-bypass-list=<-loopback>")
    .arg("--virtual-time-budget=5000")
    .args(["--dump-dom", url])
    .env("HOME", home)
    .env("XDG_CONFIG_HOME", home.join(".config"))
    .env("XDG_CACHE_HOME", home.join(".cache"));
    let started = Instant::now();
    let done = run_to_exit(cmd, Duration::from_secs(30));
    eprintln!("chromium --dump-dom {url}: {:?}", started.elapsed());
    // Chromium's stderr is mostly noise (D-Bus); its tail says why a launch failed.
    let tail: Vec<&str> = done.stderr.lines().rev().take(20).collect();
    assert_eq!(
        done.code,
        Some(0),
        "chromium {url} failed; stdout: {}; stderr tail: {tail:#?}",
        done.stdout
    );
    Some(done.stdout)
}

// ---------------------------------------------------------------------------------------------
// No DNS
// ---------------------------------------------------------------------------------------------

/// Runs `$2 ...` with /etc/resolv.conf and /etc/nsswitch.conf replaced by `$0` and `$1` (bind
/// mounts, seen only inside the namespace `unshare --mount` made), and an empty /run/nscd so a
/// caching daemon cannot answer either.
const NO_DNS_SCRIPT: &str = concat!(
    r#"mount --bind "$0" /etc/resolv.conf && "#,
    r#"{ [ ! -e /etc/nsswitch.conf ] || mount --bind "$1" /etc/nsswitch.conf; } && "#,
    r#"{ [ ! -d /run/nscd ] || mount -t tmpfs none /run/nscd; } && "#,
    r#"shift && exec "$@""#
);

/// A command that runs `program` in its own mount namespace where /etc/resolv.conf names a
/// resolver on 127.0.0.1:53, where nothing answers, and names are looked up in /etc/hosts and
/// that resolver only: every other lookup fails at once and no DNS query leaves this machine.
/// Add the program's arguments to it. `None` after a visible skip (a panic in CI) when mount
/// namespaces are not available here (they need root and util-linux's `unshare`).
pub fn without_dns(program: impl AsRef<std::ffi::OsStr>) -> Option<Command> {
    static FILES: OnceLock<Option<(PathBuf, PathBuf)>> = OnceLock::new();
    let files = FILES.get_or_init(|| {
        let dir = temp_dir("no-dns");
        let resolv = dir.join("resolv.conf");
        let nsswitch = dir.join("nsswitch.conf");
        std::fs::write(
            &resolv,
            "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n",
        )
        .unwrap();
        std::fs::write(&nsswitch, "hosts: files dns\n").unwrap();
        let works = Command::new("unshare")
            .args(["--mount", "sh", "-c", NO_DNS_SCRIPT])
            .arg(&resolv)
            .arg(&nsswitch)
            .arg("true")
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        works.then_some((resolv, nsswitch))
    });
    let available = need(
        "unshare --mount with bind mounts is not available (needs root and util-linux)",
        files.is_some(),
    );
    let (resolv, nsswitch) = files.as_ref().filter(|_| available)?;
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "sh", "-c", NO_DNS_SCRIPT])
        .arg(resolv)
        .arg(nsswitch)
        .arg(program);
    for var in PROXY_ENV {
        cmd.env_remove(var);
    }
    Some(cmd)
}

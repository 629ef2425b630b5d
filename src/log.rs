//! The access log: one line per request or tunnel, as text or JSON (SPEC §8).
//!
//! A line is formatted whole and written with a single `write_all` under a lock, so lines
//! from concurrent connections never interleave. Credentials are never part of an entry.
//! Errors and warnings do not go through here: they are single `eprintln!` lines. On SIGHUP
//! the file is opened again at its path ([`Log::reopen`]), so that logrotate can move it away
//! without `copytruncate`.

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use crate::config::LogFormat;
use crate::date::rfc3339;

/// What one finished request or tunnel looked like.
#[derive(Debug, Clone)]
pub struct Entry {
    /// When the request head was complete.
    pub time: SystemTime,
    /// The client's address.
    pub client: SocketAddr,
    /// The authenticated user, if any.
    pub user: Option<String>,
    /// Request method (empty, logged as `-`, if the head could not be parsed).
    pub method: String,
    /// Request target as received.
    pub target: String,
    /// Status sent to the client (0 if none could be sent).
    pub status: u16,
    /// Bytes received from the client for this exchange.
    pub up: u64,
    /// Bytes sent to the client for this exchange.
    pub down: u64,
    /// Time from the complete head to the end of the exchange.
    pub duration: Duration,
    /// How it was routed: `direct` or an upstream; empty (logged as `-`) when it was not
    /// sent anywhere. Empty rather than "-" so that a new entry allocates nothing.
    pub route: String,
    /// The rule or reason that refused it, or a note on why it went on (`--authz-fail open`).
    pub rule: Option<String>,
    /// Whether the proxy refused it: credentials (407), a rule or the client ACL (403), or the
    /// authorization service (403, or 503 with `--authz-fail closed`). Set where the refusal
    /// is made, so the capture's `decision` never has to guess it from a status code.
    pub denied: bool,
}

impl Entry {
    /// An entry for a request from `client` about which nothing is known yet.
    pub fn new(client: SocketAddr) -> Entry {
        Entry {
            time: SystemTime::now(),
            client,
            user: None,
            method: String::new(),
            target: String::new(),
            status: 0,
            up: 0,
            down: 0,
            duration: Duration::ZERO,
            route: String::new(),
            rule: None,
            denied: false,
        }
    }
}

/// Where log lines go.
pub struct Log {
    /// The destination, or `None` when quiet.
    out: Option<Mutex<Sink>>,
    /// Line format.
    format: LogFormat,
}

enum Sink {
    Stderr,
    File(File),
}

impl Log {
    /// Opens the log. `path` is `None` for no log, `-` for stderr, else a file appended to.
    pub fn open(path: Option<&str>, format: LogFormat) -> io::Result<Log> {
        let out = match path {
            None => None,
            Some("-") => Some(Mutex::new(Sink::Stderr)),
            Some(p) => Some(Mutex::new(Sink::File(
                OpenOptions::new().create(true).append(true).open(p)?,
            ))),
        };
        Ok(Log { out, format })
    }

    /// Opens the log file again at `path`, the one it was opened at, and writes there from
    /// now on (SIGHUP, after logrotate moved the old file away); whether there is such a file
    /// (not for stderr or no log). A line being written finishes in the old file. On an error
    /// the old file stays in use.
    pub fn reopen(&self, path: &str) -> io::Result<bool> {
        let Some(out) = self.out.as_ref().filter(|_| path != "-") else {
            return Ok(false);
        };
        // Opened before taking the lock, so that writers never wait on the file system.
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        if let Ok(mut sink) = out.lock() {
            *sink = Sink::File(file);
        }
        Ok(true)
    }

    /// Writes one entry. A failing log write is dropped: the log must not stop the proxy.
    pub fn write(&self, e: &Entry) {
        let Some(out) = &self.out else { return };
        let line = match self.format {
            LogFormat::Text => text(e),
            LogFormat::Json => json(e),
        };
        if let Ok(mut sink) = out.lock() {
            let _ = match &mut *sink {
                Sink::Stderr => io::stderr().write_all(line.as_bytes()),
                Sink::File(f) => f.write_all(line.as_bytes()),
            };
        }
    }
}

/// A field as logged: `-` when unknown (empty).
pub fn dash(s: &str) -> &str {
    if s.is_empty() {
        "-"
    } else {
        s
    }
}

fn text(e: &Entry) -> String {
    format!(
        "{} {} {} {} {} {} {} {} {}ms {} {}\n",
        rfc3339(e.time),
        e.client,
        e.user.as_deref().unwrap_or("-"),
        dash(&e.method),
        dash(&e.target),
        e.status,
        e.up,
        e.down,
        e.duration.as_millis(),
        dash(&e.route),
        e.rule
            .as_deref()
            .map(|r| format!("{r:?}"))
            .unwrap_or_else(|| "-".into())
    )
}

fn json(e: &Entry) -> String {
    use crate::json::quote;
    let mut s = String::with_capacity(256);
    s.push_str("{\"time\":");
    quote(&mut s, &rfc3339(e.time));
    // A socket address never needs escaping.
    let _ = write!(s, ",\"client\":\"{}\",\"user\":", e.client);
    match &e.user {
        Some(user) => quote(&mut s, user),
        None => s.push_str("null"),
    }
    s.push_str(",\"method\":");
    quote(&mut s, dash(&e.method));
    s.push_str(",\"target\":");
    quote(&mut s, dash(&e.target));
    let _ = write!(
        s,
        ",\"status\":{},\"bytes_up\":{},\"bytes_down\":{},\"duration_ms\":{},\"route\":",
        e.status,
        e.up,
        e.down,
        e.duration.as_millis()
    );
    quote(&mut s, dash(&e.route));
    s.push_str(",\"rule\":");
    match &e.rule {
        Some(rule) => quote(&mut s, rule),
        None => s.push_str("null"),
    }
    s.push_str("}\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry {
        Entry {
            time: SystemTime::UNIX_EPOCH,
            client: "127.0.0.1:5000".parse().unwrap(),
            user: Some("ann".into()),
            method: "GET".into(),
            target: "http://a/\"x\"".into(),
            status: 200,
            up: 10,
            down: 20,
            duration: Duration::from_millis(3),
            route: "direct".into(),
            rule: None,
            denied: false,
        }
    }

    #[test]
    fn formats() {
        assert_eq!(
            text(&entry()),
            "1970-01-01T00:00:00.000Z 127.0.0.1:5000 ann GET http://a/\"x\" 200 10 20 3ms direct -\n"
        );
        assert_eq!(
            json(&entry()),
            "{\"time\":\"1970-01-01T00:00:00.000Z\",\"client\":\"127.0.0.1:5000\",\"user\":\"ann\",\
             \"method\":\"GET\",\"target\":\"http://a/\\\"x\\\"\",\"status\":200,\"bytes_up\":10,\
             \"bytes_down\":20,\"duration_ms\":3,\"route\":\"direct\",\"rule\":null}\n"
        );
    }
}

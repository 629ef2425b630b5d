//! The external authorization service (`--authz-url`, SPEC §6): asked about every request the
//! local rules allowed, before any byte goes out to the destination.
//!
//! The question is Postman's runner authorization contract, so a service written for Postman's
//! egress proxy works unchanged: `POST URL` with `Content-Type: application/json` and
//! `{"url", "method", "headers", "queryParams", "body", "client", "user"}`, all strings:
//! `headers` is the request's header fields as a JSON object serialized into a string
//! (repeated fields joined with `, `, Proxy-Authorization left out), `queryParams` the raw
//! query string after `?`, `body` the request body when it is small enough to be held back
//! ([`HELD_BODY`]; else empty, and always for CONNECT). CONNECT is asked about as `https://host:port`. A 2xx answer with
//! `{"allowed": true}` allows; `{"allowed": false}` or a 403 denies; anything else (refused,
//! timed out, 5xx, not JSON) is a failure that `--authz-fail` turns into 503 or a logged pass.
//! That contract is pure code in `authz/question.rs`; this file carries it and caches the
//! answers.
//!
//! Decisions are cached per (client, user, method, URL) for `--authz-cache`, except for
//! questions that carry a body, which are always asked; identical
//! questions asked while one is on its way wait for that one answer (single flight). Failures
//! are shared with the questions waiting at that moment but never cached. With
//! `--authz-cache 0` every request is asked on its own. The service is reached directly (no
//! upstream, no egress rules: it is configuration, not a destination), one connection per
//! question, with TLS for `https://` (system store plus `--ca-file`).

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_io::Timer;
use futures_lite::{AsyncWriteExt, FutureExt};
use smol::lock::OnceCell;

mod question;
pub use question::{judge, Answer, Question};

use crate::body::{self, BodyError, Mode, Tap};
use crate::config::{show_duration, AuthzFail as Fail, AuthzSettings as Settings};
use crate::dial;
use crate::error::{describe, Error};
use crate::head::{parse_response, Request};
use crate::log::Entry;
use crate::metrics::{Metrics, Verdict};
use crate::reader::{HeadError, Reader};
use crate::stream::Stream;
use crate::target::Scheme;
use crate::tls::{self, Trust};

/// Largest request body held back for the service: a body of known length up to this size,
/// when the client is not waiting for `100 Continue`, is read before the question is asked and
/// sent as its `body` (UTF-8 only); larger, chunked or binary bodies are streamed and the
/// question's `body` is empty. 64 KiB covers API payloads and bounds what waits in memory.
pub const HELD_BODY: u64 = 64 * 1024;
/// Largest answer body read from the service; `{"allowed": true}` is 17 bytes.
const MAX_ANSWER: usize = 64 * 1024;
/// Most decisions kept. Each holds a URL (up to 8 KiB): 1024 bound the cache to a few MB at
/// worst and far less in practice, which a router can afford.
const MAX_DECISIONS: usize = 1024;

/// A question's identity in the cache: client, user, method and URL (see [`key`]), made
/// without the question itself, which is built only when the service is asked.
type Key = Vec<u8>;

/// The cache key of a question about `req` from `client` as `user`: one allocation and no
/// text formatting on the path a cached decision answers. The URL is keyed by its parts
/// (scheme, host, port, path and query), which make it; each variable-length part but the
/// last goes with its length, so no two different questions share a key.
fn key(req: &Request, client: IpAddr, user: &str) -> Key {
    let t = &req.target;
    let parts = [user, req.method.as_str(), t.scheme.name(), t.host.as_str()];
    let mut k =
        Vec::with_capacity(40 + parts.iter().map(|p| p.len()).sum::<usize>() + t.path.len());
    // The family first: it says how many octets follow.
    match client {
        IpAddr::V4(ip) => {
            k.push(4);
            k.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            k.push(6);
            k.extend_from_slice(&ip.octets());
        }
    }
    for part in parts {
        k.extend_from_slice(&(part.len() as u32).to_le_bytes());
        k.extend_from_slice(part.as_bytes());
    }
    k.extend_from_slice(&t.port.to_le_bytes());
    k.extend_from_slice(t.path.as_bytes());
    k
}

/// Whether the question about a request with this held-back `body` carries it (a UTF-8 body,
/// see `Question::new`): such questions are never cached.
fn carries_body(body: &[u8]) -> bool {
    std::str::from_utf8(body).is_ok_and(|b| !b.is_empty())
}

/// The service client: settings, cached decisions and questions on their way.
pub struct Authz {
    /// The checked settings.
    pub settings: Settings,
    /// Decisions and flights, never locked across an await.
    state: Mutex<State>,
}

/// The mutable part of [`Authz`].
#[derive(Default)]
struct State {
    /// Decisions still valid, with when they expire.
    decided: HashMap<Key, (Instant, Answer)>,
    /// Questions on their way; identical ones wait for the same answer.
    flights: HashMap<Key, Arc<OnceCell<Answer>>>,
}

impl Authz {
    /// A client with an empty cache.
    pub fn new(settings: Settings) -> Authz {
        Authz {
            settings,
            state: Mutex::default(),
        }
    }

    /// The answer to the question `q` makes: from the cache (by `key`, `None` when the
    /// question is not to be cached), from the identical question on its way, or asked;
    /// counted in `metrics` either way. The question is built only when it is asked.
    async fn ask(
        &self,
        trust: &Trust,
        metrics: &Metrics,
        key: Option<Key>,
        q: impl FnOnce() -> Question,
    ) -> Answer {
        let Some(key) = key else {
            return self.call(trust, metrics, &q().body()).await;
        };
        let flight = {
            let mut s = self.lock();
            match s.decided.get(&key) {
                Some((until, answer)) if *until > Instant::now() => {
                    metrics.authz(verdict(answer), None);
                    return answer.clone();
                }
                Some(_) => drop(s.decided.remove(&key)),
                None => {}
            }
            s.flights.entry(key.clone()).or_default().clone()
        };
        // The first to get here asks; the others wait for its answer. Should the asker be
        // dropped (its client gone), the next waiter asks instead; should every waiter go,
        // the flight is ended so abandoned questions do not pile up.
        let _waiting = Waiting {
            authz: self,
            key: &key,
            flight: &flight,
        };
        let body = q().body();
        let mut asked = false;
        let call = || {
            asked = true;
            self.call(trust, metrics, &body)
        };
        let answer = flight.get_or_init(call).await.clone();
        if !asked {
            // The identical question's call answered: counted like a cached answer.
            metrics.authz(verdict(&answer), None);
        }
        let mut s = self.lock();
        // The first to come back files the decision and ends the flight.
        if s.flights.get(&key).is_some_and(|f| Arc::ptr_eq(f, &flight)) {
            s.flights.remove(&key);
            if !matches!(answer, Answer::Failed(_)) {
                s.file(
                    key.clone(),
                    Instant::now() + self.settings.cache,
                    answer.clone(),
                );
            }
        }
        answer
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain maps behind, still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One question to the service, under `--authz-timeout`, timed in `metrics`.
    async fn call(&self, trust: &Trust, metrics: &Metrics, body: &str) -> Answer {
        let (limit, started) = (self.settings.timeout, Instant::now());
        let asked = async {
            match self.exchange(trust, body).await {
                Ok(answer) => answer,
                Err(why) => Answer::Failed(why),
            }
        };
        let answer = asked
            .or(async {
                Timer::after(limit).await;
                Answer::Failed(format!("no answer within {}", show_duration(limit)))
            })
            .await;
        metrics.authz(verdict(&answer), Some(started.elapsed()));
        answer
    }

    /// POSTs `body` and reads the answer; `Err` says why there is none.
    async fn exchange(&self, trust: &Trust, body: &str) -> Result<Answer, String> {
        let t = &self.settings.url;
        // `call` bounds the whole exchange; these inner limits only keep each step finite and
        // are longer, so that the reason given is the overall timeout.
        let step = self.settings.timeout * 2;
        let failed =
            |what: &str, e: &io::Error| format!("{what} {}: {}", t.host_port(), describe(e));
        let tcp = dial::connect(&t.host, t.port, step)
            .await
            .map_err(|e| failed("cannot connect to", &e))?;
        let mut stream = Stream::Tcp(tcp);
        if t.scheme == Scheme::Https {
            stream = tls::connect(trust, &t.host, stream)
                .await
                .map_err(|e| failed("TLS with", &e))?;
        }
        let head = format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            t.path,
            t.host_header(),
            body.len()
        );
        stream
            .write_all(head.as_bytes())
            .await
            .map_err(|e| failed("sending to", &e))?;
        stream.flush().await.map_err(|e| failed("sending to", &e))?;
        let mut r = Reader::new(stream, step);
        loop {
            let n = r.read_head().await.map_err(|e| match e {
                HeadError::Io(e) => failed("reading from", &e),
                HeadError::Closed(_) => {
                    format!("{} closed the connection without answering", t.host_port())
                }
                HeadError::TooLarge | HeadError::LineTooLong => {
                    "the answer's head is too large".into()
                }
            })?;
            let res = parse_response(&r.buffered()[..n], false)?;
            r.consume(n);
            // Interim answers (100 Continue) come before the real one.
            if (100..200).contains(&res.code) && res.code != 101 {
                continue;
            }
            if !(200..300).contains(&res.code) {
                return Ok(judge(res.code, b""));
            }
            let mut tap = Tap::new(MAX_ANSWER);
            let mut sink = futures_lite::io::sink();
            body::relay_tap(
                &mut r,
                &mut sink,
                res.framing,
                Mode::Decode,
                step,
                Some(&mut tap),
            )
            .await
            .map_err(|e| match e {
                BodyError::Read(e) | BodyError::Write(e) => failed("reading from", &e),
                BodyError::Malformed(why) => format!("the answer's body is malformed: {why}"),
            })?;
            if tap.truncated() {
                return Err(format!("the answer is larger than {MAX_ANSWER} bytes"));
            }
            return Ok(judge(res.code, &tap.kept));
        }
    }
}

/// An answer as the metrics count it.
fn verdict(answer: &Answer) -> Verdict {
    match answer {
        Answer::Allowed => Verdict::Allow,
        Answer::Denied(_) => Verdict::Deny,
        Answer::Failed(_) => Verdict::Error,
    }
}

/// One waiter on a flight; the last one to leave without an answer ends the flight.
struct Waiting<'a> {
    /// Whose flights.
    authz: &'a Authz,
    /// The question.
    key: &'a Key,
    /// The flight waited on.
    flight: &'a Arc<OnceCell<Answer>>,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let mut s = self.authz.lock();
        // Two references left: the map's and this waiter's. (After an answer the flight is
        // already gone from the map and this does nothing.)
        let ours = s
            .flights
            .get(self.key)
            .is_some_and(|f| Arc::ptr_eq(f, self.flight));
        if ours && Arc::strong_count(self.flight) <= 2 {
            s.flights.remove(self.key);
        }
    }
}

impl State {
    /// Keeps a decision until `until`, within [`MAX_DECISIONS`]: expired ones go first,
    /// then the one closest to expiring.
    fn file(&mut self, key: Key, until: Instant, answer: Answer) {
        if self.decided.len() >= MAX_DECISIONS {
            let now = Instant::now();
            self.decided.retain(|_, (u, _)| *u > now);
        }
        if self.decided.len() >= MAX_DECISIONS {
            if let Some(oldest) = self
                .decided
                .iter()
                .min_by_key(|(_, (u, _))| *u)
                .map(|(k, _)| k.clone())
            {
                self.decided.remove(&oldest);
            }
        }
        self.decided.insert(key, (until, answer));
    }
}

/// Asks the service about `req` and its `body` (what was held back, see [`HELD_BODY`]), if
/// one is configured. `Err` is the reply: 403 when it denies, 503 when it cannot answer and
/// `--authz-fail` is closed. With `open`, the failure is noted in the entry's rule and the
/// request goes on.
pub async fn check(
    authz: Option<&Authz>,
    trust: &Trust,
    metrics: &Metrics,
    req: &Request,
    body: &[u8],
    entry: &mut Entry,
) -> Result<(), Error> {
    let Some(authz) = authz else { return Ok(()) };
    let (client, user) = (entry.client.ip(), entry.user.as_deref());
    // A question with a body is asked on its own: bodies differ between requests to one URL,
    // and a cache of them would hold up to 64 KiB each.
    let cached = !authz.settings.cache.is_zero() && !carries_body(body);
    let key = cached.then(|| key(req, client, user.unwrap_or_default()));
    let q = || Question::new(req, body, client, user);
    match (authz.ask(trust, metrics, key, q).await, authz.settings.fail) {
        (Answer::Allowed, _) => Ok(()),
        (Answer::Denied(why), _) => Err(Error::Forbidden(format!("denied by --authz-url ({why})"))),
        (Answer::Failed(why), Fail::Closed) => Err(Error::Unavailable(format!(
            "authorization service unavailable: {why} (--authz-fail closed)"
        ))),
        (Answer::Failed(why), Fail::Open) => {
            entry.rule = Some(format!(
                "authorization service unavailable: {why}; allowed by --authz-fail open"
            ));
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn keys_tell_questions_apart() {
        let ip: IpAddr = "10.0.0.5".parse().unwrap();
        let k = |raw: &str, ip: IpAddr, user: &str| {
            let req = crate::head::parse_request(raw.as_bytes()).unwrap();
            let q = Question::new(&req, b"", ip, Some(user));
            (key(&req, ip, user), (q.method, q.url, q.user, q.client))
        };
        let cases = [
            k("GET http://a/x?y=1 HTTP/1.1\r\nHost: a\r\n\r\n", ip, "ann"),
            k(
                "GET http://a:80/x?y=1 HTTP/1.1\r\nHost: a\r\n\r\n",
                ip,
                "ann",
            ),
            k("GET http://a/x?y=2 HTTP/1.1\r\nHost: a\r\n\r\n", ip, "ann"),
            k(
                "GET http://a:81/x?y=1 HTTP/1.1\r\nHost: a:81\r\n\r\n",
                ip,
                "ann",
            ),
            k("GET https://a/x?y=1 HTTP/1.1\r\nHost: a\r\n\r\n", ip, "ann"),
            k("PUT http://a/x?y=1 HTTP/1.1\r\nHost: a\r\n\r\n", ip, "ann"),
            k("GET http://a/x?y=1 HTTP/1.1\r\nHost: a\r\n\r\n", ip, ""),
            k(
                "GET http://a/x?y=1 HTTP/1.1\r\nHost: a\r\n\r\n",
                "::1".parse().unwrap(),
                "ann",
            ),
            k("CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", ip, "ann"),
            k("CONNECT a:444 HTTP/1.1\r\nHost: a:444\r\n\r\n", ip, "ann"),
        ];
        // Keys are equal exactly when the questions (less headers and body) are.
        for (ka, qa) in &cases {
            for (kb, qb) in &cases {
                assert_eq!(ka == kb, qa == qb, "{qa:?} / {qb:?}");
            }
        }
        assert!(!carries_body(b"") && !carries_body(b"\xff") && carries_body(b"{}"));
    }

    #[test]
    fn cache_is_bounded() {
        let mut s = State::default();
        let now = Instant::now();
        for i in 0..MAX_DECISIONS + 10 {
            let key = format!("GET http://a/{i}").into_bytes();
            s.file(
                key,
                now + Duration::from_secs(i as u64 + 1),
                Answer::Allowed,
            );
        }
        assert_eq!(s.decided.len(), MAX_DECISIONS);
        // The ones closest to expiring went first.
        assert!(!s.decided.keys().any(|k| k.ends_with(b" http://a/0")));
        let last = format!(" http://a/{}", MAX_DECISIONS + 9);
        assert!(s.decided.keys().any(|k| k.ends_with(last.as_bytes())));
    }
}

//! Inbound access: which clients may connect, and which requests carry valid credentials.
//!
//! Pure code over plain data, no I/O. Users come from `--auth USER:PASS`, `SMOLPROXY_AUTH`
//! and the text of an `--auth-file` (read by `config.rs`); requests prove who they are with
//! Basic credentials in `Proxy-Authorization` (RFC 9110 §11.7.2, RFC 7617), which are
//! compared in constant time against every user, so the time taken tells nothing about which
//! user or how much of a password matched. `--allow-client` networks are checked once per
//! connection ([`Access::admit`]); `--auth-exempt` networks skip credentials.
//!
//! It deliberately does not send replies, log, or keep any session: HTTP authentication is
//! per request (every request on a kept-alive connection carries its credentials again), and
//! nothing here ever formats a password into a message.

use std::fmt;
use std::net::IpAddr;

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;

use crate::cidr::Cidr;
use crate::error::Error;

/// Environment variable holding `user:pass[,user:pass]`.
pub const ENV: &str = "SMOLPROXY_AUTH";
/// Realm named in `Proxy-Authenticate` unless `--realm` says otherwise.
pub const DEFAULT_REALM: &str = "smolproxy";

/// Base64 as RFC 7617 uses it: the standard alphabet. Padding is accepted present or absent,
/// because token68 (RFC 9110 §11.2) makes it optional and some clients drop it.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// One user allowed to use the proxy.
#[derive(Clone, PartialEq, Eq)]
pub struct User {
    /// The user name, as logged.
    pub name: String,
    /// `name:password` as bytes: exactly what a client's Basic credentials decode to.
    secret: Vec<u8>,
}

impl fmt::Debug for User {
    /// Shows the name only: a configuration printed for debugging must not show passwords.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("User")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Who may connect and who must prove it: the checked `--auth*`, `--realm`, `--auth-exempt`
/// and `--allow-client` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    /// Users allowed to send requests; empty means no credentials are asked for.
    pub users: Vec<User>,
    /// Realm named in `Proxy-Authenticate`.
    pub realm: String,
    /// Client networks that need no credentials.
    pub exempt: Vec<Cidr>,
    /// Client networks allowed to connect at all; empty means every client.
    pub allow: Vec<Cidr>,
}

impl Default for Access {
    fn default() -> Access {
        Access {
            users: Vec::new(),
            realm: DEFAULT_REALM.into(),
            exempt: Vec::new(),
            allow: Vec::new(),
        }
    }
}

/// Why a request's credentials were not accepted; each ends in a 407 (SPEC §3). The text goes
/// to the access log as the reason, never to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    /// No `Proxy-Authorization` field.
    Missing,
    /// Not Basic, not base64, no colon, or more than one field.
    Malformed,
    /// Well-formed but no user has these credentials.
    Wrong,
}

impl fmt::Display for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Denial::Missing => "proxy credentials missing",
            Denial::Malformed => "proxy credentials malformed",
            Denial::Wrong => "proxy credentials wrong",
        })
    }
}

impl Access {
    /// Whether any user is configured, so requests need credentials.
    pub fn asks_credentials(&self) -> bool {
        !self.users.is_empty()
    }

    /// Whether anyone who can reach the listener may use the proxy (SPEC §5 warns about it).
    pub fn is_open(&self) -> bool {
        self.users.is_empty() && self.allow.is_empty()
    }

    /// The `--allow-client` check, made once when a client connects, before reading from it.
    pub fn admit(&self, client: IpAddr) -> Result<(), Error> {
        if self.allow.is_empty() || self.allow.iter().any(|net| net.contains(client)) {
            return Ok(());
        }
        Err(Error::Forbidden(format!(
            "client {} is not in --allow-client",
            client.to_canonical()
        )))
    }

    /// What `smolproxy route` says about credentials for `client` and `user` (no password is
    /// known there, so it says what would be asked, not whether a password is right).
    pub fn describe(&self, client: Option<IpAddr>, user: Option<&str>) -> String {
        if self.users.is_empty() {
            return "none needed (no users configured)".into();
        }
        if client.is_some_and(|ip| self.exempt.iter().any(|net| net.contains(ip))) {
            return "none needed (client in --auth-exempt)".into();
        }
        match user {
            Some(name) if self.users.iter().any(|u| u.name == name) => {
                format!("Basic credentials required; {name} is a configured user")
            }
            Some(name) => format!("Basic credentials required; {name} is not a configured user"),
            None => "Basic credentials required (407 without them)".into(),
        }
    }

    /// Checks one request's `Proxy-Authorization` values; returns the user to log, if any.
    ///
    /// Without configured users everything passes anonymously. A client in `--auth-exempt`
    /// passes even with missing or wrong credentials, logged under its user if they were right.
    pub fn authenticate<'a>(
        &self,
        client: IpAddr,
        mut values: impl Iterator<Item = &'a [u8]>,
    ) -> Result<Option<String>, Denial> {
        if self.users.is_empty() {
            return Ok(None);
        }
        // Proxy-Authorization is a single credential, not a list: several fields would let
        // one request try several passwords, so they are refused as malformed.
        let found = match (values.next(), values.next()) {
            (None, _) => Err(Denial::Missing),
            (Some(_), Some(_)) => Err(Denial::Malformed),
            (Some(value), None) => parse_basic(value)
                .ok_or(Denial::Malformed)
                .and_then(|basic| check(&self.users, &basic.0).ok_or(Denial::Wrong)),
        };
        match found {
            Ok(user) => Ok(Some(user.name.clone())),
            Err(_) if self.exempt.iter().any(|net| net.contains(client)) => Ok(None),
            Err(denial) => Err(denial),
        }
    }

    /// The `Proxy-Authenticate` header line (CRLF-ended) sent with every 407 (RFC 9110
    /// §11.7.1); the realm is a quoted-string (RFC 9110 §5.6.4).
    pub fn challenge(&self) -> String {
        let mut realm = String::with_capacity(self.realm.len());
        for c in self.realm.chars() {
            if c == '"' || c == '\\' {
                realm.push('\\');
            }
            realm.push(c);
        }
        format!("Proxy-Authenticate: Basic realm=\"{realm}\"\r\n")
    }
}

/// Decoded Basic credentials: `user-id ":" password` exactly as the client sent them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Basic(pub Vec<u8>);

#[cfg(test)]
impl Basic {
    /// The user-id: everything before the first colon (RFC 7617 §2: it cannot hold one).
    pub fn user(&self) -> &[u8] {
        self.0.split(|&b| b == b':').next().unwrap_or_default()
    }

    /// The password: everything after the first colon, colons included.
    pub fn password(&self) -> &[u8] {
        let colon = self
            .0
            .iter()
            .position(|&b| b == b':')
            .unwrap_or(self.0.len());
        self.0.get(colon + 1..).unwrap_or_default()
    }
}

/// Parses a `Proxy-Authorization` value: `Basic` (any case), one or more spaces, base64 of
/// `user:password` (RFC 9110 §11.4, RFC 7617 §2). `None` for any other scheme or shape.
pub fn parse_basic(value: &[u8]) -> Option<Basic> {
    let value = value.trim_ascii();
    let space = value.iter().position(|&b| b == b' ' || b == b'\t')?;
    let (scheme, token) = (&value[..space], value[space..].trim_ascii());
    if !scheme.eq_ignore_ascii_case(b"basic") || token.is_empty() {
        return None;
    }
    let pair = BASE64.decode(token).ok()?;
    pair.contains(&b':').then_some(Basic(pair))
}

/// The user whose `name:password` equals `given`, compared in constant time.
///
/// Every user is compared over the whole of `given`, with no early exit and no branch on the
/// result, so the time depends only on the length of what the client sent and the number of
/// users, not on which user matched or how many bytes were right.
pub fn check<'u>(users: &'u [User], given: &[u8]) -> Option<&'u User> {
    let mut hit = usize::MAX;
    for (i, user) in users.iter().enumerate() {
        // All ones when equal, else zero; selects `i` without a branch.
        let mask = usize::from(equal(given, &user.secret)).wrapping_neg();
        hit = (i & mask) | (hit & !mask);
    }
    users.get(hit)
}

/// Constant-time equality: time depends on `given.len()` only, not on where bytes differ
/// nor on the length of `secret`, which is walked cyclically.
fn equal(given: &[u8], secret: &[u8]) -> bool {
    if secret.is_empty() {
        return given.is_empty();
    }
    let mut diff = u64::from(given.len() != secret.len());
    for (i, &g) in given.iter().enumerate() {
        diff |= u64::from(g ^ secret[i % secret.len()]);
    }
    // Keeps the optimizer from turning the loop into an early-exit comparison.
    std::hint::black_box(diff) == 0
}

/// Adds the user of one `--auth USER:PASS` value. Messages never repeat the value.
pub fn add_flag(users: &mut Vec<User>, value: &str) -> Result<(), String> {
    add(users, value, "--auth")
}

/// Adds the users of `SMOLPROXY_AUTH=user:pass[,user:pass]`; an empty value adds none.
/// Spaces around each entry are ignored; a password cannot hold a comma here (use a file).
pub fn add_env(users: &mut Vec<User>, value: &str) -> Result<(), String> {
    for (i, entry) in value.split(',').enumerate() {
        // Empty entries (`a:b,,c:d`, a trailing comma) are skipped, as in other list variables.
        if !entry.trim().is_empty() {
            add(users, entry.trim(), &format!("{ENV} entry {}", i + 1))?;
        }
    }
    Ok(())
}

/// Adds the users of an `--auth-file` named `name` whose bytes are `text`: one
/// `user:password` a line (the password may hold colons), `#` comment lines and blank lines
/// skipped, spaces around a line ignored, CRLF line ends and a UTF-8 byte order mark accepted.
pub fn add_file(users: &mut Vec<User>, name: &str, text: &[u8]) -> Result<(), String> {
    let text = text.strip_prefix("\u{feff}".as_bytes()).unwrap_or(text);
    for (i, line) in text.split(|&b| b == b'\n').enumerate() {
        let at = format!("--auth-file {name} line {}", i + 1);
        let line = std::str::from_utf8(line)
            .map_err(|_| format!("{at}: not UTF-8 text"))?
            .trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        add(users, line, &at)?;
    }
    Ok(())
}

/// Parses `user:password` from `source` and adds it, refusing a user given twice.
fn add(users: &mut Vec<User>, entry: &str, source: &str) -> Result<(), String> {
    let user = parse_user(entry).map_err(|e| format!("{source}: {e}"))?;
    if users.iter().any(|u| u.name == user.name) {
        return Err(format!("{source}: user '{}' is defined twice", user.name));
    }
    users.push(user);
    Ok(())
}

/// Parses `user:password`: the user is what comes before the first colon (RFC 7617 §2).
fn parse_user(entry: &str) -> Result<User, String> {
    let Some((name, password)) = entry.split_once(':') else {
        return Err("expected user:password, found no ':'".into());
    };
    // RFC 7617 §2: neither part may hold control characters; a stray CR or tab from an editor
    // would otherwise make a password no client can type. Names also go without spaces, so
    // that the user stays one field of a text log line.
    if name.is_empty() || name.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err("expected a user name without spaces or control characters before ':'".into());
    }
    if password.is_empty() {
        return Err(format!("the password of user '{name}' is empty"));
    }
    if password.chars().any(char::is_control) {
        return Err(format!(
            "the password of user '{name}' holds a control character"
        ));
    }
    Ok(User {
        name: name.into(),
        secret: entry.as_bytes().to_vec(),
    })
}

/// Parses `--realm`: printable ASCII and spaces, because it is shown to users in a
/// quoted-string and non-ASCII realms are displayed differently by every client.
pub fn parse_realm(s: &str) -> Result<String, String> {
    if !s.is_empty() && s.bytes().all(|b| (b' '..=b'~').contains(&b)) {
        Ok(s.to_string())
    } else {
        Err(format!(
            "expected a realm of printable ASCII characters, got '{s}'"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn users(list: &[&str]) -> Vec<User> {
        let mut out = Vec::new();
        for entry in list {
            add_flag(&mut out, entry).unwrap();
        }
        out
    }

    fn names(users: &[User]) -> Vec<&str> {
        users.iter().map(|u| u.name.as_str()).collect()
    }

    /// One line per case: what a source holds → the users it yields, or part of the error.
    macro_rules! sources {
        ($($add:ident($($arg:expr),*) => $want:expr;)*) => {$(
            let mut got = Vec::new();
            let result = $add(&mut got, $($arg),*).map(|()| names(&got).join(" "));
            let want: Result<&str, &str> = $want;
            match (&result, want) {
                (Ok(n), Ok(w)) => assert_eq!(n, w, "{:?}", ($($arg),*)),
                (Err(e), Err(w)) => assert!(e.contains(w), "{e:?} lacks {w:?}"),
                _ => panic!("{:?}: got {result:?}, want {want:?}", ($($arg),*)),
            }
        )*};
    }

    #[test]
    fn credential_sources() {
        sources! {
            add_flag("ann:secret") => Ok("ann");
            add_flag("ann:se:cr:et") => Ok("ann");
            add_flag("jürgen:pässwörd") => Ok("jürgen");
            add_flag("ann:pass word") => Ok("ann");
            add_flag("annsecret") => Err("--auth: expected user:password, found no ':'");
            add_flag(":secret") => Err("--auth: expected a user name");
            add_flag("ann:") => Err("--auth: the password of user 'ann' is empty");
            add_flag("ann:sec\tret") => Err("holds a control character");
            add_flag("an\rn:secret") => Err("--auth: expected a user name without spaces");
            add_flag("ann smith:secret") => Err("--auth: expected a user name without spaces");
            add_env("ann:a,bob:b:c") => Ok("ann bob");
            add_env(" ann:a , bob:b ") => Ok("ann bob");
            add_env("") => Ok("");
            add_env("ann:a,,bob:b,") => Ok("ann bob");
            add_env(" , ") => Ok("");
            add_env("ann:a,ann:b") => Err("AUTH entry 2: user 'ann' is defined twice");
            add_env("ann:a,bob") => Err("SMOLPROXY_AUTH entry 2: expected user:password");
            add_file("f", b"ann:a\nbob:b:c\n") => Ok("ann bob");
            add_file("f", b"# users\n\n  \nann:a\r\n  # bob:b\n\tcid:c d \n") => Ok("ann cid");
            add_file("f", "\u{feff}ann:a".as_bytes()) => Ok("ann");
            add_file("f", b"") => Ok("");
            add_file("f", b"ann:a\n#\nbob\n") => Err("--auth-file f line 3: expected user:pass");
            add_file("f", b"ann:a\nann:b\n") => Err("f line 2: user 'ann' is defined twice");
            add_file("f", b"ann:\n") => Err("f line 1: the password of user 'ann' is empty");
            add_file("f", b"ann:a\n\xff:b\n") => Err("--auth-file f line 2: not UTF-8 text");
        }
    }

    #[test]
    fn errors_never_show_passwords() {
        for bad in ["hunter2", "ann:hunter2\u{7}", "\u{1}:hunter2"] {
            let err = add_flag(&mut Vec::new(), bad).unwrap_err();
            assert!(!err.contains("hunter2"), "{err}");
        }
        let err = add_file(&mut Vec::new(), "f", b"hunter2\n").unwrap_err();
        assert!(!err.contains("hunter2"), "{err}");
        assert!(!format!("{:?}", users(&["ann:hunter2"])).contains("hunter2"));
    }

    #[test]
    fn basic_headers() {
        // value → Some((user, password)) or None.
        type Case = (&'static [u8], Option<(&'static str, &'static str)>);
        let cases: &[Case] = &[
            (b"Basic YW5uOnNlY3JldA==", Some(("ann", "secret"))),
            (b"basic YW5uOnNlY3JldA==", Some(("ann", "secret"))),
            (b"BASIC YW5uOnNlY3JldA==", Some(("ann", "secret"))),
            (b"Basic YW5uOnNlY3JldA", Some(("ann", "secret"))), // padding left out
            (b"Basic YW5uOnNlY3JldA=", Some(("ann", "secret"))), // padding partly there
            (b"Basic YW5uOnNlY3JldA===", None),                 // padding too long
            (b"Basic YW5u=OnNlY3JldA==", None),                 // padding inside
            (b"Basic  YW5uOnNlY3JldA==", Some(("ann", "secret"))), // two spaces
            (b" Basic YW5uOnNlY3JldA== \t", Some(("ann", "secret"))),
            (b"Basic\tYW5uOnNlY3JldA==", Some(("ann", "secret"))),
            (b"Basic YW5uOnNl Y3JldA==", None), // space inside the token
            (b"Basic YW5uOnNlY3JldA==,", None),
            (b"Basic", None),
            (b"Basic ", None),
            (b"", None),
            (b"Basicx YW5uOnNlY3JldA==", None),
            (b"Bearer YW5uOnNlY3JldA==", None),
            (b"Digest username=\"ann\"", None),
            (b"Basic !!!!", None),
            (b"Basic YW5uc2VjcmV0", None), // "annsecret": no colon
            (b"Basic YW5uOg==", Some(("ann", ""))), // "ann:": empty password
            (b"Basic OnNlY3JldA==", Some(("", "secret"))), // ":secret": empty user
            (b"Basic YW5uOmE6Yjpj", Some(("ann", "a:b:c"))),
            (b"Basic asO8cmdlbjpww6Rzcw==", Some(("jürgen", "päss"))), // UTF-8, RFC 7617 §2.1
        ];
        for (value, want) in cases {
            let got = parse_basic(value);
            let got = got.as_ref().map(|b| {
                (
                    String::from_utf8_lossy(b.user()),
                    String::from_utf8_lossy(b.password()),
                )
            });
            let want = want.map(|(u, p)| (u.into(), p.into()));
            assert_eq!(got, want, "{}", String::from_utf8_lossy(value));
        }
    }

    #[test]
    fn constant_time_check() {
        let list = users(&["ann:secret", "bob:pa:ss", "jürgen:päss"]);
        let cases: &[(&str, Option<&str>)] = &[
            ("ann:secret", Some("ann")),
            ("bob:pa:ss", Some("bob")),
            ("jürgen:päss", Some("jürgen")),
            ("ann:secreT", None),
            ("ann:secret2", None),
            ("ann:secre", None),
            ("ann:secretann:secret", None), // the cyclic walk must not accept repeats
            ("bob:secret", None),
            ("", None),
            (":", None),
        ];
        for (given, want) in cases {
            assert_eq!(
                check(&list, given.as_bytes()).map(|u| u.name.as_str()),
                *want,
                "{given}"
            );
        }
        assert!(check(&[], b"ann:secret").is_none());
    }

    #[test]
    fn decisions() {
        let access = Access {
            users: users(&["ann:secret", "bob:pw"]),
            realm: "smolproxy".into(),
            exempt: crate::cidr::parse_list("10.0.0.0/8,::1").unwrap(),
            allow: Vec::new(),
        };
        let open = Access::default();
        let ann: &[u8] = b"Basic YW5uOnNlY3JldA==";
        let bob: &[u8] = b"bAsIc Ym9iOnB3";
        let wrong: &[u8] = b"Basic YW5uOnNlY3JldDI=";
        // (access, client, Proxy-Authorization fields, result)
        type Case<'a> = (
            &'a Access,
            &'a str,
            &'a [&'a [u8]],
            Result<Option<&'a str>, Denial>,
        );
        let cases: &[Case] = &[
            (&access, "192.0.2.1", &[ann], Ok(Some("ann"))),
            (&access, "192.0.2.1", &[bob], Ok(Some("bob"))),
            (&access, "192.0.2.1", &[], Err(Denial::Missing)),
            (&access, "192.0.2.1", &[wrong], Err(Denial::Wrong)),
            (
                &access,
                "192.0.2.1",
                &[b"Basic %%%"],
                Err(Denial::Malformed),
            ),
            (
                &access,
                "192.0.2.1",
                &[b"Bearer abc"],
                Err(Denial::Malformed),
            ),
            (&access, "192.0.2.1", &[wrong, ann], Err(Denial::Malformed)),
            (&access, "10.1.2.3", &[], Ok(None)),
            (&access, "10.1.2.3", &[wrong], Ok(None)),
            (&access, "10.1.2.3", &[ann], Ok(Some("ann"))),
            (&access, "::ffff:10.1.2.3", &[], Ok(None)),
            (&access, "::1", &[], Ok(None)),
            (&access, "::2", &[], Err(Denial::Missing)),
            (&open, "192.0.2.1", &[], Ok(None)),
            (&open, "192.0.2.1", &[wrong], Ok(None)),
        ];
        for (access, client, fields, want) in cases {
            let got = access.authenticate(client.parse().unwrap(), fields.iter().copied());
            assert_eq!(
                got,
                want.map(|u| u.map(String::from)),
                "{client} {fields:?}"
            );
        }
    }

    #[test]
    fn client_networks() {
        let access = Access {
            allow: crate::cidr::parse_list("127.0.0.1,fd00::/8").unwrap(),
            ..Access::default()
        };
        for (client, admitted) in [
            ("127.0.0.1", true),
            ("::ffff:127.0.0.1", true),
            ("127.0.0.2", false),
            ("fd12::1", true),
            ("::1", false),
        ] {
            assert_eq!(
                access.admit(client.parse().unwrap()).is_ok(),
                admitted,
                "{client}"
            );
        }
        let err = access
            .admit("::ffff:127.0.0.2".parse().unwrap())
            .unwrap_err();
        assert_eq!(
            err,
            Error::Forbidden("client 127.0.0.2 is not in --allow-client".into())
        );
        assert!(Access::default()
            .admit("192.0.2.1".parse().unwrap())
            .is_ok());
        assert!(access.admit("192.0.2.1".parse().unwrap()).is_err());
    }

    #[test]
    fn open_and_challenge() {
        assert!(Access::default().is_open());
        assert!(!Access {
            users: users(&["a:b"]),
            ..Access::default()
        }
        .is_open());
        let closed = Access {
            allow: crate::cidr::parse_list("10.0.0.0/8").unwrap(),
            ..Access::default()
        };
        assert!(!closed.is_open());
        assert_eq!(
            Access::default().challenge(),
            "Proxy-Authenticate: Basic realm=\"smolproxy\"\r\n"
        );
        let odd = Access {
            realm: parse_realm(r#"my "home" \ proxy"#).unwrap(),
            ..Access::default()
        };
        assert_eq!(
            odd.challenge(),
            "Proxy-Authenticate: Basic realm=\"my \\\"home\\\" \\\\ proxy\"\r\n"
        );
        for bad in ["", "tab\there", "caf\u{e9}", "a\r\nX-Injected: 1"] {
            assert!(parse_realm(bad).is_err(), "{bad:?}");
        }
    }
}

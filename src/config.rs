//! The command line: flags parsed straight into typed values, then checked as a whole.
//!
//! argh turns the doc comment of each flag into `--help`. Every value is parsed at this
//! boundary (durations, port lists, addresses), so the rest of the proxy never sees strings.
//! A bad value exits with status 2 and one line naming the flag, the value and what was
//! expected (see `main.rs`). Nothing here opens sockets or files except to check them.

use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::Duration;

use argh::FromArgs;

use crate::auth::{self, Access};
use crate::cidr::{self, Cidr};
use crate::pattern::PatternList;
use crate::policy::{self, Policy};
use crate::route::{Routing, UpstreamFor};
use crate::target::{Scheme, Target};
use crate::tls::trust::Trust;

/// Most executor threads; a router has 1–4 cores and more threads only cost memory.
pub const MAX_THREADS: usize = 64;

/// smolproxy: a small, strict forward HTTP/1.1 proxy (HTTP forwarding and CONNECT tunnels).
#[derive(FromArgs, Debug)]
pub struct Flags {
    /// address to listen on, repeatable; IPv6 as [::1]:3128; port 0 picks a free port
    /// (default 127.0.0.1:3128)
    #[argh(option, from_str_fn(parse_listen))]
    pub listen: Vec<SocketAddr>,

    /// accept SOCKS5 and SOCKS4a clients on every --listen port, told apart from HTTP by
    /// their first byte: on or off (default on)
    #[argh(
        option,
        arg_name = "on|off",
        default = "true",
        from_str_fn(parse_on_off)
    )]
    pub socks: bool,

    /// address of a TLS listener for the same proxy (an https:// proxy: curl --proxy
    /// https://..., Chromium --proxy-server=https://...), so credentials never cross the
    /// network in clear; needs --tls-cert and --tls-key; repeatable (default none)
    #[argh(option, arg_name = "ADDR", from_str_fn(parse_listen))]
    pub listen_tls: Vec<SocketAddr>,

    /// address of a plain HTTP listener with Prometheus metrics at /metrics and a health
    /// check at /healthz, nothing else and no credentials: keep it on loopback or a private
    /// network, e.g. 127.0.0.1:9090 (default none)
    #[argh(option, arg_name = "ADDR", from_str_fn(parse_listen))]
    pub metrics_listen: Option<SocketAddr>,

    /// certificate chain of --listen-tls (PEM, the server's certificate first) (default none)
    #[argh(option, arg_name = "PEM")]
    pub tls_cert: Option<PathBuf>,

    /// private key of --tls-cert (PEM: PKCS#8, SEC1 or PKCS#1; ECDSA, Ed25519 or RSA;
    /// refused if group or others can read it) (default none)
    #[argh(option, arg_name = "PEM")]
    pub tls_key: Option<PathBuf>,

    /// ports CONNECT may reach: a list with ranges like 443,8443,9000-9100, or "any";
    /// repeatable (default 443)
    #[argh(option, from_str_fn(parse_ports))]
    pub connect_ports: Vec<Ports>,

    /// most client connections at once; beyond it new ones get 503 with Retry-After
    /// (default 512)
    #[argh(option, default = "512", from_str_fn(parse_count))]
    pub max_connections: usize,

    /// time a client has to send a whole request head, like 500ms, 10s or 5m; 408 after it
    /// (default 10s)
    #[argh(
        option,
        default = "Duration::from_secs(10)",
        from_str_fn(parse_timeout)
    )]
    pub header_timeout: Duration,

    /// time to reach an origin or upstream; 504 after it (default 10s)
    #[argh(
        option,
        default = "Duration::from_secs(10)",
        from_str_fn(parse_timeout)
    )]
    pub connect_timeout: Duration,

    /// idle keep-alive connections and tunnels are closed after this, and a peer that sends
    /// nothing for this long is given up on (default 5m)
    #[argh(
        option,
        default = "Duration::from_secs(300)",
        from_str_fn(parse_timeout)
    )]
    pub idle_timeout: Duration,

    /// executor threads (default 1)
    #[argh(option, default = "1", from_str_fn(parse_threads))]
    pub threads: usize,

    /// pseudonym in the Via header, also used to detect loops (default smolproxy)
    #[argh(
        option,
        default = "String::from(\"smolproxy\")",
        from_str_fn(parse_via)
    )]
    pub via: String,

    /// add no Via header (loops can then not be detected)
    #[argh(switch)]
    pub no_via: bool,

    /// where the access log goes: a file (appended to) or - for stderr (default -)
    #[argh(option, default = "String::from(\"-\")")]
    pub access_log: String,

    /// access log format: text or json (default text)
    #[argh(option, default = "LogFormat::Text", from_str_fn(parse_log_format))]
    pub log_format: LogFormat,

    /// no access log, errors only
    #[argh(switch)]
    pub quiet: bool,

    /// a user allowed to use the proxy, as USER:PASS; repeatable. Other local users can read
    /// the command line: prefer --auth-file or SMOLPROXY_AUTH=user:pass,user2:pass2 (default
    /// none)
    #[argh(option, arg_name = "USER:PASS")]
    pub auth: Vec<String>,

    /// file of users allowed to use the proxy: one user:password a line (the password may hold
    /// colons), # comment lines, blank lines (default none)
    #[argh(option, arg_name = "FILE")]
    pub auth_file: Option<PathBuf>,

    /// realm named in Proxy-Authenticate when credentials are asked for (default smolproxy)
    #[argh(
        option,
        default = "auth::DEFAULT_REALM.into()",
        from_str_fn(auth::parse_realm)
    )]
    pub realm: String,

    /// clients from these networks need no credentials: CIDRs like 10.0.0.0/8,fd00::/8 or
    /// addresses; repeatable (default none)
    #[argh(option, arg_name = "CIDRS", from_str_fn(cidr::parse_list))]
    pub auth_exempt: Vec<Vec<Cidr>>,

    /// only clients from these networks may connect; others get 403 and are disconnected:
    /// CIDRs like 192.168.0.0/16,::1 or addresses; repeatable (default any)
    #[argh(option, arg_name = "CIDRS", from_str_fn(cidr::parse_list))]
    pub allow_client: Vec<Vec<Cidr>>,

    /// load balancers whose connections must start with a PROXY protocol v1 or v2 header; the
    /// client address in it then counts everywhere (--allow-client, logs, capture, authz):
    /// CIDRs like 10.0.0.5,fd00::/8; repeatable (default none)
    #[argh(option, arg_name = "CIDRS", from_str_fn(cidr::parse_list))]
    pub proxy_protocol_from: Vec<Vec<Cidr>>,

    /// set SO_REUSEPORT on every listener, so that several processes serve one port (the
    /// kernel spreads new connections among them)
    #[argh(switch)]
    pub reuse_port: bool,

    /// append one JSON record per finished exchange or tunnel to FILE (NDJSON; see
    /// `smolproxy export`) (default off)
    #[argh(option, arg_name = "FILE")]
    pub capture: Option<String>,

    /// bytes of each request and response body kept in the capture; 0 keeps headers only
    /// (default 65536)
    #[argh(
        option,
        arg_name = "BYTES",
        default = "65536",
        from_str_fn(parse_body_limit)
    )]
    pub capture_body_limit: usize,

    /// keep Authorization, Cookie and Set-Cookie values in the capture (they are replaced by
    /// REDACTED otherwise; Proxy-Authorization always is)
    #[argh(switch)]
    pub capture_secrets: bool,

    /// upstream proxy: http://, https://, socks5:// (names resolved here) or socks5h:// (by
    /// the proxy), with optional percent-encoded user:password@ and a required port, like
    /// socks5h://user:pw@10.0.0.1:1080; repeat to chain hops in order (default none)
    // A String until `into_config`, so that a parse error never echoes the password.
    #[argh(option, arg_name = "URL")]
    pub upstream: Vec<String>,

    /// request schemes that use --upstream: http, https or http,https; CONNECT counts as
    /// https (default http,https)
    #[argh(
        option,
        arg_name = "SCHEMES",
        default = "UpstreamFor::default()",
        from_str_fn(UpstreamFor::parse)
    )]
    pub upstream_for: UpstreamFor,

    /// destinations that skip --upstream and go direct: *, <local>, example.com (and names
    /// under it), api-*.example.com, 10.0.0.0/8, fd00::/8, any of them with :PORT; repeatable
    /// (default none)
    #[argh(option, arg_name = "PATTERNS", from_str_fn(PatternList::parse))]
    pub bypass: Vec<PatternList>,

    /// ignore http_proxy, https_proxy, all_proxy and no_proxy (and their uppercase forms)
    #[argh(switch)]
    pub no_system_proxy: bool,

    /// egress allowlist: once given, every other destination is denied (403). Same patterns
    /// as --bypass; networks also match the addresses a name resolves to; repeatable
    /// (default everything)
    #[argh(option, arg_name = "PATTERNS", from_str_fn(PatternList::parse))]
    pub allow: Vec<PatternList>,

    /// egress denylist, checked before --allow (deny wins); same patterns as --bypass;
    /// networks also match the addresses a name resolves to; repeatable (default none)
    #[argh(option, arg_name = "PATTERNS", from_str_fn(PatternList::parse))]
    pub deny: Vec<PatternList>,

    /// deny destinations that are or resolve to loopback, private (RFC 1918), CGNAT,
    /// link-local, unique-local, multicast or unspecified addresses, or an address of this
    /// host (checked on the addresses actually dialled, after DNS)
    #[argh(switch)]
    pub block_private: bool,

    /// external authorization service asked about every request the local rules allow,
    /// before it goes out: an http:// or https:// URL like http://127.0.0.1:8080/validate
    /// (Postman's runner authorization contract) (default none)
    #[argh(option, arg_name = "URL", from_str_fn(parse_authz_url))]
    pub authz_url: Option<Target>,

    /// time the authorization service has to answer, like 500ms or 2s (default 2s)
    #[argh(
        option,
        arg_name = "DUR",
        default = "Duration::from_secs(2)",
        from_str_fn(parse_timeout)
    )]
    pub authz_timeout: Duration,

    /// what to do when the authorization service cannot answer: closed (503) or open (allow,
    /// and log why) (default closed)
    #[argh(
        option,
        arg_name = "open|closed",
        default = "AuthzFail::Closed",
        from_str_fn(parse_authz_fail)
    )]
    pub authz_fail: AuthzFail,

    /// how long one authorization decision is reused for the same client, user, method and
    /// URL; 0 asks every time (default 10s)
    #[argh(
        option,
        arg_name = "DUR",
        default = "Duration::from_secs(10)",
        from_str_fn(parse_duration)
    )]
    pub authz_cache: Duration,

    /// extra trusted CA certificates for https upstreams and https:// requests, one or many
    /// in a PEM file, on top of the system store; repeatable (default system store only)
    #[argh(option, arg_name = "PEM")]
    pub ca_file: Vec<PathBuf>,

    /// CONNECT destinations whose TLS is opened so that capture, policy and --authz-url see
    /// each request inside (SPEC §10); same patterns as --bypass; needs --intercept-ca and
    /// --intercept-key; repeatable (default none)
    #[argh(option, arg_name = "PATTERNS", from_str_fn(PatternList::parse))]
    pub intercept: Vec<PatternList>,

    /// the CA certificate that signs interception certificates (PEM; make one with
    /// `smolproxy ca new`) (default none)
    #[argh(option, arg_name = "PEM")]
    pub intercept_ca: Option<PathBuf>,

    /// the private key of --intercept-ca (PEM, PKCS#8; refused if group or others can read
    /// it) (default none)
    #[argh(option, arg_name = "PEM")]
    pub intercept_key: Option<PathBuf>,

    /// what to do instead of running the proxy (route, export)
    #[argh(subcommand)]
    pub command: Option<Command>,
}

/// Largest `--capture-body-limit`: each queued capture record may hold two bodies this size.
pub const MAX_CAPTURE_BODY: usize = 64 * 1024 * 1024;

/// Subcommands; they share the flags above.
#[derive(FromArgs, Debug)]
#[argh(subcommand)]
pub enum Command {
    /// `smolproxy route`.
    Route(RouteArgs),
    /// `smolproxy export`; only with the `export` feature (default), which the 700 KB build
    /// leaves out (SPEC §9).
    #[cfg(feature = "export")]
    Export(ExportArgs),
    /// `smolproxy ca`; not in a build without TLS, where there is no certificate code at all
    /// and every byte counts (SPEC §9: 700 KB).
    #[cfg(feature = "tls")]
    Ca(CaArgs),
}

/// manage the CA that signs interception certificates
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "ca")]
pub struct CaArgs {
    /// what to do with the CA
    #[argh(subcommand)]
    pub command: CaCommand,
}

/// `smolproxy ca` subcommands.
#[derive(FromArgs, Debug)]
#[argh(subcommand)]
pub enum CaCommand {
    /// `smolproxy ca new`.
    New(CaNewArgs),
}

/// make an ECDSA P-256 CA for interception and print how each client trusts it; existing files
/// are never overwritten
#[derive(FromArgs, Debug, Clone, PartialEq, Eq)]
#[argh(subcommand, name = "new")]
pub struct CaNewArgs {
    /// file to write the CA certificate to (PEM; the file clients trust)
    #[argh(option, arg_name = "FILE")]
    pub cert: PathBuf,

    /// file to write the CA's private key to (PEM, mode 0600)
    #[argh(option, arg_name = "FILE")]
    pub key: PathBuf,

    /// the CA's common name (default "smolproxy interception CA (HOSTNAME)")
    #[argh(option)]
    pub name: Option<String>,

    /// days the CA is valid, 1 to 7300 (default 3650)
    #[argh(option, default = "crate::ca::DEFAULT_DAYS", from_str_fn(parse_days))]
    pub days: u32,
}

/// explain where the configuration would send a request and why (route, matched entry,
/// verdict), without sending anything or resolving any name; exit 0 if allowed, 1 if denied
#[derive(FromArgs, Debug, Clone, PartialEq, Eq)]
#[argh(subcommand, name = "route")]
pub struct RouteArgs {
    /// the request URL (http://..., https://...), or host:port with --method CONNECT
    #[argh(positional)]
    pub url: String,

    /// request method (default GET)
    #[argh(option, default = "String::from(\"GET\")")]
    pub method: String,

    /// client address the request would come from, checked against --allow-client and
    /// --auth-exempt (default none)
    #[argh(option)]
    pub client: Option<IpAddr>,

    /// user the request would be authenticated as: says whether it is a configured user
    /// (default none)
    #[argh(option)]
    pub user: Option<String>,
}

/// turn capture files into a HAR 1.2 log, a Postman Collection v2.1 (optionally with tests) or
/// a Postman environment, on stdout
#[cfg(feature = "export")]
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "export")]
pub struct ExportArgs {
    /// output format: har, postman, or postman-environment (the origins as the variables of
    /// --base-url-var, with their captured values)
    #[argh(option, from_str_fn(parse_export_format))]
    pub format: ExportFormat,

    /// name of the collection or environment (postman) or comment of the log (har) (default
    /// smolproxy capture)
    #[argh(option, default = "String::from(\"smolproxy capture\")")]
    pub name: String,

    /// postman: give each request a test script from its captured responses: the status, the
    /// media type and, for JSON, the shape (keys and types), not values; `--tests values`
    /// also checks the scalar values that were the same in every capture (of two or more)
    #[argh(switch)]
    pub tests: bool,

    /// postman: the scheme, host and port of each origin become a collection variable
    /// ({{baseUrl}} for one origin, {{baseUrl_HOST_PORT}} for several), so `newman run -e ENV`
    /// runs the requests against another server
    #[argh(switch)]
    pub base_url_var: bool,

    /// postman: on makes one item of the captures of one request (same method, URL without
    /// volatile query values, body shape); off keeps every capture (default on)
    #[argh(option, default = "true", from_str_fn(parse_dedupe))]
    pub dedupe: bool,

    /// capture files written with --capture, read in order (after --tests, the word values is
    /// its level, not a file: name a file called values ./values)
    #[argh(positional, arg_name = "CAPTURE")]
    pub captures: Vec<String>,
}

/// What `smolproxy export` writes.
#[cfg(feature = "export")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// HAR 1.2.
    Har,
    /// Postman Collection v2.1.
    Postman,
    /// A Postman environment holding the origins' variables (see `--base-url-var`).
    PostmanEnvironment,
}

/// One entry of `--connect-ports`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ports {
    /// Every port.
    Any,
    /// These port ranges.
    List(Vec<RangeInclusive<u16>>),
}

impl Ports {
    /// Whether `port` is in the set.
    pub fn contains(&self, port: u16) -> bool {
        match self {
            Ports::Any => true,
            Ports::List(ranges) => ranges.iter().any(|r| r.contains(&port)),
        }
    }

    /// Whether CONNECT may reach `port`; the refusal names the rule (the proxy's 403 and
    /// `smolproxy route` both say it this way).
    pub fn permits(&self, port: u16) -> Result<(), String> {
        if self.contains(port) {
            Ok(())
        } else {
            Err(format!(
                "CONNECT to port {port} is not allowed (--connect-ports)"
            ))
        }
    }
}

/// What to do when the service cannot answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthzFail {
    /// Let the request through, with the reason in the access log.
    Open,
    /// Answer 503 (the default).
    Closed,
}

/// The checked `--authz-*` flags (the service client is `crate::authz::Authz`).
#[derive(Debug, Clone)]
pub struct AuthzSettings {
    /// The service's URL, http or https, path included.
    pub url: Target,
    /// Time the service has for one answer: connect, TLS, request and response.
    pub timeout: Duration,
    /// What a failure means for the request.
    pub fail: AuthzFail,
    /// How long a decision is reused; zero asks every time.
    pub cache: Duration,
}

impl AuthzSettings {
    /// The settings in words, for `smolproxy route`.
    pub fn describe(&self) -> String {
        let fail = match self.fail {
            AuthzFail::Open => "open",
            AuthzFail::Closed => "closed",
        };
        format!(
            "POST {} (--authz-timeout {}, --authz-fail {fail}, --authz-cache {})",
            self.url,
            show_duration(self.timeout),
            show_duration(self.cache)
        )
    }
}

/// Parses `--authz-url`: an `http://` or `https://` URL (path defaults to `/`).
pub fn parse_authz_url(s: &str) -> Result<Target, String> {
    let expected = || {
        format!(
            "expected an http:// or https:// URL like http://127.0.0.1:8080/validate, got '{s}'"
        )
    };
    let mut t = Target::parse_absolute(s).map_err(|_| expected())?;
    if !matches!(t.scheme, Scheme::Http | Scheme::Https) {
        return Err(expected());
    }
    if t.path.is_empty() {
        t.path = "/".into();
    }
    Ok(t)
}

/// Parses `--authz-fail`: `open` or `closed`.
pub fn parse_authz_fail(s: &str) -> Result<AuthzFail, String> {
    match s {
        "open" => Ok(AuthzFail::Open),
        "closed" => Ok(AuthzFail::Closed),
        _ => Err(format!("expected open or closed, got '{s}'")),
    }
}

/// Access log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One space-separated line.
    Text,
    /// One JSON object per line.
    Json,
}

/// The checked configuration the proxy runs with.
#[derive(Debug, Clone)]
pub struct Config {
    /// Addresses to listen on.
    pub listen: Vec<SocketAddr>,
    /// Accept SOCKS clients on the `--listen` ports.
    pub socks: bool,
    /// Addresses of TLS listeners (`--listen-tls`).
    pub listen_tls: Vec<SocketAddr>,
    /// The metrics listener's address (`--metrics-listen`).
    pub metrics_listen: Option<SocketAddr>,
    /// `--tls-cert` and `--tls-key`, read in [`Config::read_files`].
    pub tls_files: Option<(PathBuf, PathBuf)>,
    /// The TLS listeners' server settings, from [`Config::read_files`].
    pub tls_server: Option<crate::tls::ServerSettings>,
    /// Ports CONNECT may reach.
    pub connect_ports: Ports,
    /// Most client connections at once.
    pub max_connections: usize,
    /// Time for a whole request head.
    pub header_timeout: Duration,
    /// Time to reach the next hop.
    pub connect_timeout: Duration,
    /// Idle limit for keep-alive connections, tunnels and single reads.
    pub idle_timeout: Duration,
    /// Executor threads.
    pub threads: usize,
    /// Via pseudonym, or `None` with `--no-via`.
    pub via: Option<String>,
    /// Access log destination: `None` when quiet, `Some("-")` for stderr, else a path.
    pub access_log: Option<String>,
    /// Access log format.
    pub log_format: LogFormat,
    /// Client networks, users and realm; users of `--auth-file` join in [`Config::read_files`].
    pub access: Access,
    /// Peers that must send a PROXY protocol header (`--proxy-protocol-from`).
    pub proxy_protocol_from: Vec<Cidr>,
    /// SO_REUSEPORT on the listeners (`--reuse-port`).
    pub reuse_port: bool,
    /// The `--auth-file` to read in [`Config::read_files`].
    pub auth_file: Option<PathBuf>,
    /// How many of `access.users` come from `--auth` and `SMOLPROXY_AUTH`, ahead of the
    /// `--auth-file`'s (which SIGHUP reads again).
    pub auth_flag_users: usize,
    /// The `--capture` file, if any.
    pub capture: Option<String>,
    /// Bytes of each body kept in the capture.
    pub capture_body_limit: usize,
    /// Keep Authorization, Cookie and Set-Cookie values in the capture.
    pub capture_secrets: bool,
    /// Upstream chain, `--bypass` and the system proxy (SPEC §4), environment read at start.
    pub routing: Routing,
    /// Egress rules (`--allow`, `--deny`, `--block-private`); this host's interface addresses
    /// join in [`Config::read_files`].
    pub policy: Policy,
    /// The authorization service, with `--authz-url`.
    pub authz: Option<AuthzSettings>,
    /// The `--ca-file`s, read in [`Config::read_files`].
    pub ca_files: Vec<PathBuf>,
    /// Trusted CA certificates for TLS to upstreams and origins, from [`Config::read_files`].
    pub trust: Trust,
    /// HTTPS interception, with `--intercept`.
    pub intercept: Option<Intercept>,
}

/// The checked `--intercept*` flags (SPEC §10).
#[derive(Debug, Clone)]
pub struct Intercept {
    /// CONNECT destinations to intercept.
    pub patterns: PatternList,
    /// The CA certificate file.
    pub ca_file: PathBuf,
    /// The CA key file.
    pub key_file: PathBuf,
    /// The CA, read and checked in [`Config::read_files`].
    pub ca: Option<std::sync::Arc<crate::ca::Ca>>,
}

/// A configuration refused at start: the one line to print and the exit status (SPEC §2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// 1 when a file cannot be read, 2 for a bad value (in a flag or inside a file).
    pub status: u8,
    /// What is wrong and where, never including a password.
    pub message: String,
}

/// Largest `--auth-file` read; a user list beyond 1 MiB is a mistake (a wrong file named).
pub const MAX_AUTH_FILE: u64 = 1024 * 1024;
/// Largest `/proc/net` file read for this host's addresses: a small router's is a few KB, a
/// full Internet routing table's far beyond this, and then it is skipped.
const MAX_PROC_FILE: u64 = 4 * 1024 * 1024;

impl Config {
    /// Reads the files the flags name and adds what they hold. Apart from
    /// [`Flags::into_config`] because an unreadable file exits 1 while a bad value exits 2.
    pub fn read_files(&mut self) -> Result<(), Refused> {
        self.access.users = self.users()?;
        if self.policy.blocks_private() {
            self.policy.set_host_addresses(host_addresses());
        }
        self.trust = Trust::load(&self.ca_files, std::env::var("SSL_CERT_FILE").ok())
            .map_err(|(status, message)| Refused { status, message })?;
        // Only a build with the tls-server feature accepts --listen-tls and --intercept.
        #[cfg(feature = "tls-server")]
        if let Some((cert, key)) = &self.tls_files {
            let settings = crate::tls::server::load(cert, key)
                .map_err(|(status, message)| Refused { status, message })?;
            self.tls_server = Some(settings);
        }
        #[cfg(feature = "tls-server")]
        if let Some(i) = &mut self.intercept {
            let ca = crate::ca::Ca::load(&i.ca_file, &i.key_file)
                .map_err(|(status, message)| Refused { status, message })?;
            i.ca = Some(std::sync::Arc::new(ca));
        }
        Ok(())
    }

    /// The users of `--auth` and `SMOLPROXY_AUTH` followed by those of `--auth-file`, read
    /// now (at start, and again on SIGHUP).
    pub fn users(&self) -> Result<Vec<auth::User>, Refused> {
        let mut users = self.access.users[..self.auth_flag_users].to_vec();
        if let Some(path) = &self.auth_file {
            let name = path.display().to_string();
            let text = crate::file::read_limited(path, MAX_AUTH_FILE).map_err(|e| Refused {
                status: 1,
                message: format!("cannot read --auth-file {name}: {e}"),
            })?;
            auth::add_file(&mut users, &name, &text)
                .map_err(|message| Refused { status: 2, message })?;
        }
        Ok(users)
    }
}

/// This host's addresses, so that `--block-private` refuses a name pointing back here too.
/// Linux files; elsewhere (or beyond the size cap, on a router with a full routing table) the
/// listen addresses and the address classes still apply.
pub fn host_addresses() -> Vec<IpAddr> {
    let read = |path: &str| {
        let text = crate::file::read_limited(std::path::Path::new(path), MAX_PROC_FILE)
            .unwrap_or_default();
        String::from_utf8_lossy(&text).into_owned()
    };
    let mut addrs = policy::parse_fib_trie(&read("/proc/net/fib_trie"));
    addrs.extend(policy::parse_if_inet6(&read("/proc/net/if_inet6")));
    addrs
}

impl Flags {
    /// Checks the flags together and builds the configuration.
    pub fn into_config(self) -> Result<Config, String> {
        let mut users = Vec::new();
        for value in &self.auth {
            auth::add_flag(&mut users, value)?;
        }
        match std::env::var(auth::ENV) {
            Ok(value) => auth::add_env(&mut users, &value)?,
            Err(std::env::VarError::NotUnicode(_)) => {
                return Err(format!("{}: not UTF-8", auth::ENV));
            }
            Err(std::env::VarError::NotPresent) => {}
        }
        // The default plain listener only when no listener at all is asked for: who asks for
        // a TLS listener alone does not want credentials accepted in clear beside it.
        let listen = if self.listen.is_empty() && self.listen_tls.is_empty() {
            vec![SocketAddr::from(([127, 0, 0, 1], 3128))]
        } else {
            self.listen
        };
        let connect_ports = match self.connect_ports {
            v if v.is_empty() => Ports::List(vec![443..=443]),
            v if v.contains(&Ports::Any) => Ports::Any,
            v => Ports::List(
                v.into_iter()
                    .flat_map(|p| match p {
                        Ports::List(r) => r,
                        Ports::Any => Vec::new(),
                    })
                    .collect(),
            ),
        };
        if !cfg!(feature = "tls") && !self.ca_file.is_empty() {
            return Err("--ca-file: this build has no TLS (the tls feature is off)".into());
        }
        if let Some(url) = self
            .authz_url
            .as_ref()
            .filter(|u| u.scheme == Scheme::Https)
        {
            if !cfg!(feature = "tls") {
                return Err(format!(
                    "--authz-url {url}: this build has no TLS (the tls feature is off)"
                ));
            }
        }
        let intercept = intercept(self.intercept, self.intercept_ca, self.intercept_key)?;
        let tls_files = tls_listener(&self.listen_tls, self.tls_cert, self.tls_key)?;
        // Every address this proxy answers on, for the loop and self-upstream checks.
        let own: Vec<SocketAddr> = listen.iter().chain(&self.listen_tls).copied().collect();
        let policy = Policy::new(self.allow, self.deny, self.block_private, &own);
        let authz = self.authz_url.map(|url| AuthzSettings {
            url,
            timeout: self.authz_timeout,
            fail: self.authz_fail,
            cache: self.authz_cache,
        });
        let routing = Routing::new(
            self.upstream,
            self.upstream_for,
            self.bypass,
            !self.no_system_proxy,
            &own,
            &|name| std::env::var(name).ok(),
        )?;
        Ok(Config {
            routing,
            policy,
            authz,
            ca_files: self.ca_file,
            intercept,
            listen_tls: self.listen_tls,
            metrics_listen: self.metrics_listen,
            socks: self.socks,
            tls_files,
            tls_server: None,
            trust: Trust::default(),
            listen,
            connect_ports,
            max_connections: self.max_connections,
            header_timeout: self.header_timeout,
            connect_timeout: self.connect_timeout,
            idle_timeout: self.idle_timeout,
            threads: self.threads,
            via: (!self.no_via).then_some(self.via),
            access_log: (!self.quiet).then_some(self.access_log),
            log_format: self.log_format,
            auth_flag_users: users.len(),
            access: Access {
                users,
                realm: self.realm,
                exempt: self.auth_exempt.concat(),
                allow: self.allow_client.concat(),
            },
            proxy_protocol_from: self.proxy_protocol_from.concat(),
            reuse_port: self.reuse_port,
            auth_file: self.auth_file,
            capture: self.capture,
            capture_body_limit: self.capture_body_limit,
            capture_secrets: self.capture_secrets,
        })
    }
}

/// Checks `--listen-tls`, `--tls-cert` and `--tls-key` together: all or none.
fn tls_listener(
    listen: &[SocketAddr],
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
) -> Result<Option<(PathBuf, PathBuf)>, String> {
    let any = !listen.is_empty() || cert.is_some() || key.is_some();
    if !cfg!(feature = "tls-server") {
        return match any {
            true => Err(
                "--listen-tls: this build has no TLS server (the tls-server feature is off)".into(),
            ),
            false => Ok(None),
        };
    }
    match (listen.is_empty(), cert, key) {
        (true, None, None) => Ok(None),
        (false, Some(cert), Some(key)) => Ok(Some((cert, key))),
        (true, _, _) => Err("--tls-cert and --tls-key need --listen-tls".into()),
        (false, None, _) => Err("--listen-tls needs --tls-cert".into()),
        (false, _, None) => Err("--listen-tls needs --tls-key".into()),
    }
}

/// Checks the `--intercept*` flags together: all three or none.
fn intercept(
    lists: Vec<PatternList>,
    ca: Option<PathBuf>,
    key: Option<PathBuf>,
) -> Result<Option<Intercept>, String> {
    let mut patterns = PatternList::default();
    for list in lists {
        patterns.extend(list);
    }
    let any = !patterns.is_empty() || ca.is_some() || key.is_some();
    if !cfg!(feature = "tls-server") {
        return match any {
            true => Err(
                "--intercept: this build has no TLS server (the tls-server feature is off)".into(),
            ),
            false => Ok(None),
        };
    }
    match (patterns.is_empty(), ca, key) {
        (true, None, None) => Ok(None),
        (false, Some(ca_file), Some(key_file)) => Ok(Some(Intercept {
            patterns,
            ca_file,
            key_file,
            ca: None,
        })),
        (true, _, _) => Err("--intercept-ca and --intercept-key need --intercept".into()),
        (false, None, _) => {
            Err("--intercept needs --intercept-ca (make one with `smolproxy ca new`)".into())
        }
        (false, _, None) => Err("--intercept needs --intercept-key".into()),
    }
}

/// Parses `500ms`, `10s`, `5m`, `1h` (and `0`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let expected = || format!("expected a duration like 500ms, 10s or 5m, got '{s}'");
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let split = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(expected)?;
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits.parse().map_err(|_| expected())?;
    let ms = match unit {
        "ms" => Some(n),
        "s" => n.checked_mul(1000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        _ => None,
    }
    .ok_or_else(expected)?;
    Ok(Duration::from_millis(ms))
}

/// A duration the way the flags write it (`500ms`, `2s`), for messages.
pub fn show_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// Parses a timeout: a duration greater than zero (a zero timeout would fail everything).
pub fn parse_timeout(s: &str) -> Result<Duration, String> {
    match parse_duration(s) {
        Ok(d) if !d.is_zero() => Ok(d),
        _ => Err(format!(
            "expected a duration greater than 0 like 500ms or 2s, got '{s}'"
        )),
    }
}

/// Parses `443,8443,9000-9100` or `any`.
pub fn parse_ports(s: &str) -> Result<Ports, String> {
    if s.eq_ignore_ascii_case("any") {
        return Ok(Ports::Any);
    }
    let expected = || format!("expected ports like 443,8443,9000-9100 or any, got '{s}'");
    let port = |p: &str| p.trim().parse::<u16>().ok().filter(|&n| n != 0);
    s.split(',')
        .map(|item| match item.split_once('-') {
            Some((a, b)) => match (port(a), port(b)) {
                (Some(a), Some(b)) if a <= b => Some(a..=b),
                _ => None,
            },
            None => port(item).map(|p| p..=p),
        })
        .collect::<Option<Vec<_>>>()
        .map(Ports::List)
        .ok_or_else(expected)
}

fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    s.parse()
        .map_err(|_| format!("expected IP:PORT like 127.0.0.1:3128 or [::1]:3128, got '{s}'"))
}

fn parse_count(s: &str) -> Result<usize, String> {
    s.parse::<usize>()
        .ok()
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("expected a positive number, got '{s}'"))
}

fn parse_threads(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n @ 1..=MAX_THREADS) => Ok(n),
        _ => Err(format!("expected 1 to {MAX_THREADS} threads, got '{s}'")),
    }
}

fn parse_days(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(n) if (1..=crate::ca::MAX_DAYS).contains(&n) => Ok(n),
        _ => Err(format!(
            "expected a number of days from 1 to {}, got '{s}'",
            crate::ca::MAX_DAYS
        )),
    }
}

fn parse_on_off(s: &str) -> Result<bool, String> {
    match s {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(format!("expected on or off, got '{s}'")),
    }
}

fn parse_via(s: &str) -> Result<String, String> {
    if !s.is_empty() && s.bytes().all(crate::body::is_tchar) {
        Ok(s.to_string())
    } else {
        Err(format!(
            "expected a token (letters, digits and !#$%&'*+-.^_`|~), got '{s}'"
        ))
    }
}

fn parse_body_limit(s: &str) -> Result<usize, String> {
    s.parse::<usize>()
        .ok()
        .filter(|&n| n <= MAX_CAPTURE_BODY)
        .ok_or_else(|| {
            format!("expected a number of bytes from 0 to {MAX_CAPTURE_BODY}, got '{s}'")
        })
}

#[cfg(feature = "export")]
fn parse_export_format(s: &str) -> Result<ExportFormat, String> {
    match s {
        "har" => Ok(ExportFormat::Har),
        "postman" => Ok(ExportFormat::Postman),
        "postman-environment" => Ok(ExportFormat::PostmanEnvironment),
        _ => Err(format!(
            "expected har, postman or postman-environment, got '{s}'"
        )),
    }
}

#[cfg(feature = "export")]
fn parse_dedupe(s: &str) -> Result<bool, String> {
    match s {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(format!("expected on or off, got '{s}'")),
    }
}

fn parse_log_format(s: &str) -> Result<LogFormat, String> {
    match s {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        _ => Err(format!("expected text or json, got '{s}'")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let ok = |s, ms| assert_eq!(parse_duration(s), Ok(Duration::from_millis(ms)), "{s}");
        for shown in ["500ms", "2s", "0s", "1500ms"] {
            assert_eq!(show_duration(parse_duration(shown).unwrap()), shown);
        }
        ok("500ms", 500);
        ok("10s", 10_000);
        ok("5m", 300_000);
        ok("1h", 3_600_000);
        ok("0", 0);
        for bad in [
            "",
            "10",
            "s",
            "1.5s",
            "-1s",
            "10x",
            "99999999999999999999s",
            "5 m",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ports() {
        let p = parse_ports("443,8443,9000-9100").unwrap();
        for (port, inside) in [
            (443, true),
            (8443, true),
            (9050, true),
            (9101, false),
            (80, false),
        ] {
            assert_eq!(p.contains(port), inside, "{port}");
        }
        assert_eq!(parse_ports("ANY"), Ok(Ports::Any));
        for bad in ["", "0", "70000", "10-5", "a", "443,", "1-2-3"] {
            assert!(parse_ports(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn flags_to_config() {
        let f = Flags::from_args(&["smolproxy"], &["--no-via", "--connect-ports", "any"]).unwrap();
        let c = f.into_config().unwrap();
        assert_eq!(c.via, None);
        assert!(c.connect_ports.contains(22));
        assert_eq!(c.listen, vec![SocketAddr::from(([127, 0, 0, 1], 3128))]);
        assert!(Flags::from_args(&["smolproxy"], &["--threads", "0"]).is_err());
        for timeout in [
            "--header-timeout",
            "--connect-timeout",
            "--idle-timeout",
            "--authz-timeout",
        ] {
            assert!(
                Flags::from_args(&["smolproxy"], &[timeout, "0"]).is_err(),
                "{timeout}"
            );
            assert!(
                Flags::from_args(&["smolproxy"], &[timeout, "x"]).is_err(),
                "{timeout}"
            );
            assert!(
                Flags::from_args(&["smolproxy"], &[timeout, "250ms"]).is_ok(),
                "{timeout}"
            );
        }
        assert!(Flags::from_args(&["smolproxy"], &["--via", "a b"]).is_err());
    }

    #[test]
    fn authz_flags() {
        let t = parse_authz_url("http://127.0.0.1:8080").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.path.as_str()),
            ("127.0.0.1", 8080, "/")
        );
        assert_eq!(
            parse_authz_url("https://authz.example/validate")
                .unwrap()
                .port,
            443
        );
        for bad in [
            "ftp://a/",
            "ws://a/",
            "/validate",
            "http://u:p@a/",
            "a.example",
        ] {
            assert!(parse_authz_url(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_authz_fail("open"), Ok(AuthzFail::Open));
        assert!(parse_authz_fail("maybe").is_err());
    }
}

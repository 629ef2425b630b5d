//! Choosing the route of a request: the custom upstream chain, the system proxy, or direct.
//!
//! Pure code (SPEC §4): upstream URLs and the proxy environment variables are parsed into
//! plain data once at start, then [`decide`] picks the route of each request from its scheme,
//! host and port alone, and says which rule chose it. The same function answers `smolproxy
//! route`, so what that command prints is what the server does. Per request it only matches
//! patterns: the reason is put into words only when `route` asks ([`Decision::reason`]), and
//! the access log's name of each route is made once at start ([`Decision::label`]). Nothing
//! here resolves a name or opens a socket: walking the chain is [`crate::upstream`]'s job.
//!
//! Precedence: the custom chain when `--upstream` is set, the scheme is in `--upstream-for`
//! (CONNECT counts as https) and no `--bypass` entry matches; a `--bypass` hit goes direct
//! (the flag says "skip the custom upstream and go direct"); otherwise the system proxy for
//! the scheme unless a `no_proxy` entry matches; otherwise direct.

use std::net::SocketAddr;

use crate::pattern::{Pattern, PatternList};
pub use crate::proxy_url::{redact, Kind, Upstream};
use crate::target::Scheme;

/// Which request schemes use the custom chain (`--upstream-for`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamFor {
    /// Plain http (and ws) requests.
    pub http: bool,
    /// Absolute https requests and CONNECT.
    pub https: bool,
}

impl Default for UpstreamFor {
    fn default() -> UpstreamFor {
        UpstreamFor {
            http: true,
            https: true,
        }
    }
}

impl UpstreamFor {
    /// Parses `http`, `https` or `http,https`.
    pub fn parse(s: &str) -> Result<UpstreamFor, String> {
        let mut out = UpstreamFor {
            http: false,
            https: false,
        };
        for item in s.split(',').map(str::trim) {
            match item.to_ascii_lowercase().as_str() {
                "http" => out.http = true,
                "https" => out.https = true,
                _ => return Err(format!("expected http, https or http,https, got '{s}'")),
            }
        }
        Ok(out)
    }
}

/// A proxy taken from one environment variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvProxy {
    /// The variable it came from, e.g. `https_proxy`.
    pub var: &'static str,
    /// The proxy.
    pub upstream: Upstream,
    /// `system:VAR=URL`, the route's name in the access log, made once here.
    label: String,
    /// `upstream URL`, the route's idle-pool key and name in errors, made once here.
    pool_key: String,
}

impl EnvProxy {
    /// The proxy `upstream` from the variable `var`.
    pub fn new(var: &'static str, upstream: Upstream) -> EnvProxy {
        let label = format!("system:{var}={upstream}");
        let pool_key = format!("upstream {upstream}");
        EnvProxy {
            var,
            upstream,
            label,
            pool_key,
        }
    }
}

/// The system proxy settings, read once at start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SystemProxy {
    /// `http_proxy` / `HTTP_PROXY`.
    pub http: Option<EnvProxy>,
    /// `https_proxy` / `HTTPS_PROXY`.
    pub https: Option<EnvProxy>,
    /// `all_proxy` / `ALL_PROXY`, the fallback for both.
    pub all: Option<EnvProxy>,
    /// `no_proxy` / `NO_PROXY`, bad entries already skipped.
    pub no_proxy: PatternList,
    /// Which of the two `no_proxy` variables was used.
    pub no_proxy_var: &'static str,
}

impl SystemProxy {
    /// Reads the variables through `get` (lowercase wins when both are set; empty is unset).
    /// Bad values and proxies that are this proxy itself are skipped with a warning.
    pub fn from_env(
        get: &dyn Fn(&str) -> Option<String>,
        listen: &[SocketAddr],
        warnings: &mut Vec<String>,
    ) -> SystemProxy {
        let pick = |lower: &'static str, upper: &'static str| {
            [lower, upper]
                .into_iter()
                .find_map(|var| get(var).filter(|v| !v.trim().is_empty()).map(|v| (var, v)))
        };
        let mut proxy = |lower, upper| {
            let (var, value) = pick(lower, upper)?;
            match Upstream::parse_env(value.trim()) {
                Err(why) => warnings.push(format!("ignoring {var}: {why}")),
                Ok(u) if u.is_self(listen) => {
                    warnings.push(format!("ignoring {var}={u}: that is this proxy itself"))
                }
                Ok(u) if u.kind == Kind::Https && !cfg!(feature = "tls") => {
                    warnings.push(format!("ignoring {var}={u}: this build has no TLS"))
                }
                Ok(upstream) => return Some(EnvProxy::new(var, upstream)),
            }
            None
        };
        let (http, https, all) = (
            proxy("http_proxy", "HTTP_PROXY"),
            proxy("https_proxy", "HTTPS_PROXY"),
            proxy("all_proxy", "ALL_PROXY"),
        );
        let (no_proxy_var, no_proxy) = match pick("no_proxy", "NO_PROXY") {
            Some((var, value)) => {
                let (list, bad) = PatternList::parse_lenient(&value);
                warnings.extend(bad.into_iter().map(|why| format!("{var}: skipping {why}")));
                (var, list)
            }
            None => ("no_proxy", PatternList::default()),
        };
        SystemProxy {
            http,
            https,
            all,
            no_proxy,
            no_proxy_var,
        }
    }

    /// The proxy for a scheme, falling back to `all_proxy`.
    pub fn for_scheme(&self, https: bool) -> Option<&EnvProxy> {
        if https {
            self.https.as_ref()
        } else {
            self.http.as_ref()
        }
        .or(self.all.as_ref())
    }
}

/// Everything routing needs, checked at start.
#[derive(Debug, Clone, Default)]
pub struct Routing {
    /// The custom chain from `--upstream`, first hop first; empty when not set.
    pub upstream: Vec<Upstream>,
    /// Which schemes use the custom chain.
    pub upstream_for: UpstreamFor,
    /// `--bypass`: destinations that skip the custom chain and go direct.
    pub bypass: PatternList,
    /// The system proxy, or `None` with `--no-system-proxy`.
    pub system: Option<SystemProxy>,
    /// Warnings found while reading the environment, printed at start.
    pub warnings: Vec<String>,
    /// `upstream:URL,URL`, the custom chain's name in the access log, made once at start.
    upstream_label: String,
    /// `upstream URL -> URL`, the custom chain's idle-pool key and name in errors, made once
    /// at start.
    upstream_pool_key: String,
}

impl Routing {
    /// Builds the routing from its flags and the environment (read through `env`, once, at
    /// start). `system` is false with `--no-system-proxy`. An `--upstream` that is this proxy
    /// itself, or an `https://` one in a build without TLS, is refused.
    pub fn new(
        upstream: Vec<String>,
        upstream_for: UpstreamFor,
        bypass: Vec<PatternList>,
        system: bool,
        listen: &[SocketAddr],
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Routing, String> {
        let upstream = upstream
            .iter()
            .map(|url| {
                Upstream::parse(url).map_err(|why| format!("--upstream {}: {why}", redact(url)))
            })
            .collect::<Result<Vec<_>, _>>()?;
        // Only the first hop is dialled from here; later ones are reached through it.
        if let Some(first) = upstream.first().filter(|u| u.is_self(listen)) {
            return Err(format!(
                "--upstream {first}: that is this proxy itself (see --listen)"
            ));
        }
        if let Some(h) = upstream
            .iter()
            .find(|u| u.kind == Kind::Https && !cfg!(feature = "tls"))
        {
            return Err(format!(
                "--upstream {h}: this build has no TLS (the tls feature is off)"
            ));
        }
        let mut warnings = Vec::new();
        let system = system.then(|| SystemProxy::from_env(env, listen, &mut warnings));
        let bypass = bypass
            .into_iter()
            .fold(PatternList::default(), |mut all, list| {
                all.extend(list);
                all
            });
        if upstream.is_empty() && !bypass.is_empty() {
            warnings.push(
                "--bypass has no effect without --upstream (no_proxy is for the system proxy)"
                    .into(),
            );
        }
        let upstream_label = format!("upstream:{}", chain(&upstream, ","));
        let upstream_pool_key = format!("upstream {}", chain(&upstream, " -> "));
        Ok(Routing {
            upstream,
            upstream_for,
            bypass,
            system,
            warnings,
            upstream_label,
            upstream_pool_key,
        })
    }
}

/// Where a request goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path<'a> {
    /// Straight to the origin.
    Direct,
    /// Through the custom chain.
    Custom(&'a [Upstream]),
    /// Through the system proxy.
    System(&'a EnvProxy),
}

/// Why the custom chain was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// No `--upstream` is set.
    NoUpstream,
    /// The request's scheme is not in `--upstream-for`.
    NotFor,
}

/// What the system proxy step found, once the custom chain was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum System<'a> {
    /// `--no-system-proxy`.
    Off,
    /// No proxy variable for the scheme, nor `all_proxy`.
    Unset,
    /// This entry of the named `no_proxy` variable matched: direct.
    NoProxy(&'static str, &'a Pattern),
    /// The proxy from this variable applies.
    Used {
        /// The variable, e.g. `https_proxy`.
        var: &'static str,
        /// `no_proxy` has entries (and none of them matched).
        no_proxy_set: bool,
    },
}

/// Which rule decided the route: plain data, put into words by [`Decision::reason`] only for
/// `smolproxy route`, so the server's path builds no text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why<'a> {
    /// `--upstream` is set, the scheme is in `--upstream-for`, no `--bypass` entry matched.
    Custom,
    /// This `--bypass` entry matched: direct.
    Bypass(&'a Pattern),
    /// The custom chain was not taken, and the system proxy step decided.
    NotCustom(Skip, System<'a>),
}

/// A route and the rule that chose it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision<'a> {
    /// Where the request goes.
    pub path: Path<'a>,
    /// Why.
    pub why: Why<'a>,
    /// The request counts as https (absolute https or CONNECT), for the reason's words.
    https: bool,
    /// The route's name for the access log, made once at start (see [`Decision::label`]).
    label: &'a str,
    /// The chain's idle-pool key, made once at start (see [`Decision::pool_key`]).
    pool_key: &'a str,
}

impl<'a> Decision<'a> {
    /// The hops to walk, first first; empty for direct.
    pub fn hops(&self) -> &'a [Upstream] {
        match self.path {
            Path::Direct => &[],
            Path::Custom(hops) => hops,
            Path::System(env) => std::slice::from_ref(&env.upstream),
        }
    }

    /// The route as one space-free word for the access log: `direct`,
    /// `upstream:http://h:1,socks5://h:2` or `system:https_proxy=http://h:3`.
    pub fn label(&self) -> &'a str {
        self.label
    }

    /// `upstream URL -> URL`: the key that connections through this route's chain are pooled
    /// by (connections through different chains never mix), and its name in error messages;
    /// empty for direct.
    pub fn pool_key(&self) -> &'a str {
        self.pool_key
    }

    /// The `--bypass` or `no_proxy` entry that sent it direct, with where it came from.
    pub fn matched(&self) -> Option<(&'static str, &'a Pattern)> {
        match self.why {
            Why::Bypass(p) => Some(("--bypass", p)),
            Why::NotCustom(_, System::NoProxy(var, p)) => Some((var, p)),
            Why::Custom | Why::NotCustom(..) => None,
        }
    }

    /// Why, in a few words (for `smolproxy route`).
    pub fn reason(&self) -> String {
        let name = if self.https { "https" } else { "http" };
        let (skip, system) = match self.why {
            Why::Custom => {
                return format!(
                    "--upstream is set, {name} is in --upstream-for, no --bypass entry matched"
                )
            }
            Why::Bypass(p) => return format!("--bypass entry '{p}' matched"),
            Why::NotCustom(skip, system) => (skip, system),
        };
        let skip = match skip {
            Skip::NoUpstream => "no --upstream".to_string(),
            Skip::NotFor => format!("{name} is not in --upstream-for"),
        };
        let system = match system {
            System::Off => "--no-system-proxy".to_string(),
            System::Unset => format!("no {name}_proxy or all_proxy in the environment"),
            System::NoProxy(var, p) => format!("{var} entry '{p}' matched"),
            System::Used { var, no_proxy_set } => {
                let no = if no_proxy_set {
                    "no no_proxy entry matched"
                } else {
                    "no no_proxy set"
                };
                format!("{var} is set, {no}")
            }
        };
        format!("{skip}; {system}")
    }
}

/// The hops of a chain joined by `sep`, without credentials.
pub fn chain(hops: &[Upstream], sep: &str) -> String {
    hops.iter()
        .map(|h| h.to_string())
        .collect::<Vec<_>>()
        .join(sep)
}

/// Decides the route of a request to `host:port` with this scheme (SPEC §4). Called for every
/// request: it only matches patterns, and builds no text.
pub fn decide<'a>(r: &'a Routing, scheme: Scheme, host: &str, port: u16) -> Decision<'a> {
    let https = matches!(scheme, Scheme::Https | Scheme::Connect);
    let direct = |why| Decision {
        path: Path::Direct,
        why,
        https,
        label: "direct",
        pool_key: "",
    };
    let wanted = if https {
        r.upstream_for.https
    } else {
        r.upstream_for.http
    };
    let skip = if r.upstream.is_empty() {
        Skip::NoUpstream
    } else if !wanted {
        Skip::NotFor
    } else {
        return match r.bypass.matches(host, port) {
            Some(p) => direct(Why::Bypass(p)),
            None => Decision {
                path: Path::Custom(&r.upstream),
                why: Why::Custom,
                https,
                label: &r.upstream_label,
                pool_key: &r.upstream_pool_key,
            },
        };
    };
    let Some(sys) = &r.system else {
        return direct(Why::NotCustom(skip, System::Off));
    };
    let Some(env) = sys.for_scheme(https) else {
        return direct(Why::NotCustom(skip, System::Unset));
    };
    if let Some(p) = sys.no_proxy.matches(host, port) {
        return direct(Why::NotCustom(skip, System::NoProxy(sys.no_proxy_var, p)));
    }
    let used = System::Used {
        var: env.var,
        no_proxy_set: !sys.no_proxy.is_empty(),
    };
    Decision {
        path: Path::System(env),
        why: Why::NotCustom(skip, used),
        https,
        label: &env.label,
        pool_key: &env.pool_key,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn environment() {
        let mut w = Vec::new();
        let vars = env(&[
            ("http_proxy", "http://lower:1"),
            ("HTTP_PROXY", "http://upper:1"),
            ("https_proxy", ""),
            ("HTTPS_PROXY", "socks5h://upper:2"),
            ("ALL_PROXY", "nonsense://x"),
            ("NO_PROXY", "a.test, bad..entry, 10.0.0.0/8"),
        ]);
        let sys = SystemProxy::from_env(&vars, &[], &mut w);
        let http = sys.http.as_ref().unwrap();
        assert_eq!(
            (http.var, http.upstream.to_string().as_str()),
            ("http_proxy", "http://lower:1")
        );
        let https = sys.https.as_ref().unwrap();
        assert_eq!(
            (https.var, https.upstream.to_string().as_str()),
            ("HTTPS_PROXY", "socks5h://upper:2")
        );
        assert_eq!(sys.all, None);
        assert_eq!(
            (sys.no_proxy_var, sys.no_proxy.to_string().as_str()),
            ("NO_PROXY", "a.test,10.0.0.0/8")
        );
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(
            w[0].starts_with("ignoring ALL_PROXY: unsupported proxy scheme"),
            "{w:?}"
        );
        assert!(w[1].contains("bad..entry"), "{w:?}");
        // A proxy that is ourselves is skipped, and the fallback takes over.
        let mut w = Vec::new();
        let vars = env(&[
            ("http_proxy", "127.0.0.1:3128"),
            ("all_proxy", "socks5://127.0.0.1:1080"),
        ]);
        let sys = SystemProxy::from_env(&vars, &["127.0.0.1:3128".parse().unwrap()], &mut w);
        assert_eq!(sys.for_scheme(false).unwrap().var, "all_proxy");
        assert!(w[0].contains("this proxy itself"), "{w:?}");
    }

    #[test]
    fn precedence() {
        let vars = env(&[("http_proxy", "http://sys:1"), ("no_proxy", "np.test")]);
        let routing = |upstream: &[&str], upstream_for: &str, bypass: &str, system: bool| {
            let bypass = (!bypass.is_empty()).then(|| PatternList::parse(bypass).unwrap());
            let upstream = upstream.iter().map(|u| u.to_string()).collect();
            let upstream_for = UpstreamFor::parse(upstream_for).unwrap();
            Routing::new(
                upstream,
                upstream_for,
                bypass.into_iter().collect(),
                system,
                &[],
                &vars,
            )
            .unwrap()
        };
        let custom = routing(&["http://a:1", "socks5h://b:2"], "http", "by.test", true);
        let bare = routing(&[], "http,https", "", true);
        let none = routing(&[], "http,https", "", false);
        let mut open = bare.clone();
        open.system.as_mut().unwrap().no_proxy = PatternList::default();
        let chain = "upstream:http://a:1,socks5h://b:2";
        let system = "system:http_proxy=http://sys:1";
        use Scheme::*;
        // (routing, scheme, host, label, matched entry, reason in full)
        for (r, scheme, host, label, matched, reason) in [
            (
                &custom,
                Http,
                "x.test",
                chain,
                None,
                "--upstream is set, http is in --upstream-for, no --bypass entry matched",
            ),
            (
                &custom,
                Http,
                "www.by.test",
                "direct",
                Some(("--bypass", "by.test")),
                "--bypass entry 'by.test' matched",
            ),
            (
                &custom,
                Http,
                "np.test",
                chain,
                None,
                "--upstream is set, http is in --upstream-for, no --bypass entry matched",
            ),
            (
                &custom,
                Connect,
                "x.test",
                "direct",
                None,
                "https is not in --upstream-for; no https_proxy or all_proxy in the environment",
            ),
            (
                &bare,
                Http,
                "x.test",
                system,
                None,
                "no --upstream; http_proxy is set, no no_proxy entry matched",
            ),
            (
                &bare,
                Ws,
                "x.test",
                system,
                None,
                "no --upstream; http_proxy is set, no no_proxy entry matched",
            ),
            (
                &open,
                Http,
                "np.test",
                system,
                None,
                "no --upstream; http_proxy is set, no no_proxy set",
            ),
            (
                &bare,
                Http,
                "np.test",
                "direct",
                Some(("no_proxy", "np.test")),
                "no --upstream; no_proxy entry 'np.test' matched",
            ),
            (
                &bare,
                Https,
                "x.test",
                "direct",
                None,
                "no --upstream; no https_proxy or all_proxy in the environment",
            ),
            (
                &none,
                Http,
                "x.test",
                "direct",
                None,
                "no --upstream; --no-system-proxy",
            ),
        ] {
            let d = decide(r, scheme, host, 80);
            assert_eq!(d.label(), label, "{scheme:?} {host}");
            let entry = d.matched().map(|(source, p)| (source, p.to_string()));
            assert_eq!(
                entry,
                matched.map(|(source, p)| (source, p.to_string())),
                "{scheme:?} {host}"
            );
            assert_eq!(d.reason(), reason, "{scheme:?} {host}");
        }
    }
}

//! `smolproxy route`: what the configuration would do with one request, and why.
//!
//! Pure formatting over [`crate::route::decide`] and [`crate::policy::Policy::check`], the very
//! functions the server calls, so the explanation cannot drift from what the proxy does.
//! Nothing is sent and no name is resolved: the IP rules that apply to the addresses a name
//! resolves to are listed, and the authorization service is named, not asked.

use crate::config::{Config, RouteArgs};
use crate::route::{chain, decide, Path};
use crate::target::{Scheme, Target};

/// What `smolproxy route` prints, and its verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    /// Lines of `key: value`, newline-ended.
    pub text: String,
    /// Whether the request would be allowed (exit 0) or denied (exit 1).
    pub allowed: bool,
}

/// Explains the route of one request under `cfg`; an unusable URL is an error.
pub fn explain(cfg: &Config, args: &RouteArgs) -> Result<Explanation, String> {
    let connect = args.method.eq_ignore_ascii_case("CONNECT");
    let bad = |why: &str| format!("route: bad URL '{}': {why}", args.url);
    let t = if connect && !args.url.contains("://") {
        Target::parse_authority(&args.url).map_err(|_| bad("expected host:port for CONNECT"))?
    } else {
        let mut t = Target::parse_absolute(&args.url)
            .map_err(|_| bad("expected http://host/path or https://host/path"))?;
        if connect {
            (t.scheme, t.path) = (Scheme::Connect, String::new());
        }
        t
    };
    let mut text = format!(
        "request: {} {}\n",
        if connect {
            "CONNECT"
        } else {
            args.method.as_str()
        },
        t
    );
    let client = args.client.map_or("-".to_string(), |ip| ip.to_string());
    text += &format!(
        "client: {client}, user {}\n",
        args.user.as_deref().unwrap_or("-")
    );
    text += &format!(
        "auth: {}\n",
        cfg.access.describe(args.client, args.user.as_deref())
    );
    if let Some(Err(err)) = args.client.map(|ip| cfg.access.admit(ip)) {
        text += &format!("policy: denied: {err}\nroute: none\n");
        return Ok(Explanation {
            text,
            allowed: false,
        });
    }
    if let Some(Err(rule)) = connect.then(|| cfg.connect_ports.permits(t.port)) {
        text += &format!("policy: denied: {rule}\nroute: none\n");
        return Ok(Explanation {
            text,
            allowed: false,
        });
    }
    match cfg.policy.check(&t.host, t.port) {
        Err(rule) => {
            text += &format!("policy: {rule}\nroute: none\n");
            return Ok(Explanation {
                text,
                allowed: false,
            });
        }
        Ok(verdict) => {
            text += &format!("policy: {}\n", verdict.reason);
            if !verdict.after_dns.is_empty() {
                text += &format!(
                    "after dns: {} (checked on the addresses {} resolves to; not resolved here)\n",
                    verdict.after_dns.join(", "),
                    t.host
                );
            }
        }
    }
    if let Some(authz) = &cfg.authz {
        text += &format!(
            "authz: the service would be asked (not by route): {}\n",
            authz.describe()
        );
    }
    let d = decide(&cfg.routing, t.scheme, &t.host, t.port);
    text += &match d.path {
        Path::Direct => "route: direct\n".to_string(),
        Path::Custom([one]) => format!("route: custom upstream {one}\n"),
        Path::Custom(hops) => format!("route: custom upstream chain {}\n", chain(hops, " -> ")),
        Path::System(env) => format!("route: system proxy {} (from {})\n", env.upstream, env.var),
    };
    if let Some((source, p)) = d.matched() {
        text += &format!("matched: {source} entry '{p}'\n");
    }
    text += &format!("reason: {}\n", d.reason());
    let hops = d.hops();
    let how = match (t.scheme, hops.last()) {
        (Scheme::Http | Scheme::Ws, Some(last)) if last.is_http() => {
            format!("absolute-form request to {last}")
        }
        (Scheme::Http | Scheme::Ws, None) => format!("origin-form request to {}", t.host_port()),
        (Scheme::Http | Scheme::Ws, Some(last)) => {
            format!("SOCKS5 CONNECT through {last}, then origin-form")
        }
        (Scheme::Connect, None) => format!("tunnel to {}", t.host_port()),
        (Scheme::Connect, Some(last)) => format!("tunnel to {} through {last}", t.host_port()),
        (Scheme::Https, None) => format!("TLS to {} by the proxy", t.host_port()),
        (Scheme::Https, Some(last)) => format!(
            "tunnel to {} through {last}, TLS by the proxy",
            t.host_port()
        ),
    };
    text += &format!("how: {how}\n");
    if t.scheme == Scheme::Https && !cfg!(feature = "tls") {
        text += "note: this build has no TLS: absolute https:// requests get 501 (use CONNECT)\n";
    }
    Ok(Explanation {
        text,
        allowed: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Command, Flags};
    use argh::FromArgs;

    /// `smolproxy ARGS` (with `route ...` last), minus the environment; its explanation.
    fn run(args: &[&str]) -> Result<Explanation, String> {
        let mut all = vec!["--no-system-proxy"];
        all.extend(args);
        let mut flags = Flags::from_args(&["smolproxy"], &all).map_err(|e| e.output)?;
        let Some(Command::Route(route)) = flags.command.take() else {
            panic!("no route subcommand in {args:?}");
        };
        explain(&flags.into_config()?, &route)
    }

    #[test]
    fn explanations() {
        let up = [
            "--upstream",
            "socks5h://u:secret@127.0.0.1:1080",
            "--bypass",
            "*.lan",
        ];
        for (args, lines) in [
            (
                vec!["route", "http://a.test/x"],
                vec![
                    "request: GET http://a.test/x",
                    "route: direct",
                    "how: origin-form request to a.test:80",
                ],
            ),
            (
                vec![
                    "--allow-client",
                    "10.0.0.0/8",
                    "--auth",
                    "ann:pw",
                    "--auth-exempt",
                    "10.1.0.0/16",
                    "route",
                    "--client",
                    "127.0.0.1",
                    "--user",
                    "bob",
                    "http://a.test/x",
                ],
                vec![
                    "auth: Basic credentials required; bob is not a configured user",
                    "policy: denied: client 127.0.0.1 is not in --allow-client",
                ],
            ),
            (
                vec![
                    "--auth",
                    "ann:pw",
                    "--auth-exempt",
                    "10.1.0.0/16",
                    "route",
                    "--client",
                    "10.1.2.3",
                    "http://a.test/x",
                ],
                vec![
                    "auth: none needed (client in --auth-exempt)",
                    "route: direct",
                ],
            ),
            (
                vec![up[0], up[1], "route", "http://a.test/x"],
                vec![
                    "route: custom upstream socks5h://127.0.0.1:1080",
                    "how: SOCKS5 CONNECT through socks5h://127.0.0.1:1080, then origin-form",
                ],
            ),
            (
                vec![
                    up[0],
                    up[1],
                    up[2],
                    up[3],
                    "route",
                    "--method",
                    "CONNECT",
                    "nas.lan:443",
                ],
                vec![
                    "request: CONNECT nas.lan:443",
                    "route: direct",
                    "matched: --bypass entry '*.lan'",
                ],
            ),
            (
                vec![
                    up[0],
                    up[1],
                    "route",
                    "--method",
                    "CONNECT",
                    "https://a.test:8443/",
                ],
                vec![
                    "policy: denied: CONNECT to port 8443 is not allowed (--connect-ports)",
                    "route: none",
                ],
            ),
            (
                vec![
                    "--upstream",
                    "http://127.0.0.1:3129",
                    "route",
                    "https://a.test/",
                ],
                vec!["how: tunnel to a.test:443 through http://127.0.0.1:3129, TLS by the proxy"],
            ),
            (
                vec![
                    "--allow",
                    "a.test",
                    "--deny",
                    "admin.a.test",
                    "route",
                    "http://admin.a.test/",
                ],
                vec!["policy: denied by --deny admin.a.test", "route: none"],
            ),
            (
                vec!["--allow", "a.test", "route", "http://b.test/"],
                vec!["policy: denied: b.test:80 is not in --allow", "route: none"],
            ),
            (
                vec![
                    "--block-private",
                    "--deny",
                    "10.0.0.0/8",
                    "route",
                    "http://10.1.2.3/",
                ],
                vec!["policy: denied by --deny 10.0.0.0/8 (10.1.2.3)"],
            ),
            (
                vec![
                    "--block-private",
                    "--allow",
                    "a.test",
                    "route",
                    "http://www.a.test/x",
                ],
                vec![
                    "policy: allowed by --allow a.test",
                    "after dns: --block-private (checked on the addresses www.a.test resolves \
                     to; not resolved here)",
                    "route: direct",
                ],
            ),
            (
                vec![
                    "--authz-url",
                    "http://127.0.0.1:9/validate",
                    "route",
                    "--method",
                    "DELETE",
                    "http://a.test/",
                ],
                vec![
                    "policy: allowed (no egress policy configured)",
                    "authz: the service would be asked (not by route): POST \
                     http://127.0.0.1:9/validate (--authz-timeout 2s, --authz-fail closed, \
                     --authz-cache 10s)",
                ],
            ),
        ] {
            let out = run(&args).unwrap();
            for line in lines {
                assert!(
                    out.text.lines().any(|l| l == line),
                    "{args:?}: no {line:?} in\n{}",
                    out.text
                );
            }
            assert!(!out.text.contains("secret"), "{}", out.text);
            assert_eq!(out.allowed, !out.text.contains("denied"));
        }
        for bad in ["not a url", "/path", "ftp://a.test/"] {
            assert!(
                run(&["route", bad]).unwrap_err().contains("bad URL"),
                "{bad}"
            );
        }
        assert!(run(&["route", "--method", "CONNECT", "a.test"]).is_err());
    }
}

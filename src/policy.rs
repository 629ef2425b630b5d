//! The egress policy: which destinations a request may reach (`--allow`, `--deny`,
//! `--block-private`), decided by pure functions over plain data (SPEC §2, §4).
//!
//! A destination is judged twice. [`Policy::check`] looks at the host and port the client
//! named, before anything is resolved: `--deny` entries first (deny wins), then `--allow`
//! (once given, everything it does not match is denied). Then [`Policy::check_address`] looks
//! at every address the proxy is about to connect to, after DNS, so that a name resolving into
//! a denied network is denied too (no DNS-rebinding bypass): `--deny` networks, the address
//! classes of `--block-private` (and the addresses of this host), and `--allow` networks for
//! a name no `--allow` name entry matched. The dialer calls it per address and connects only to
//! the addresses it accepts ([`crate::dial::connect_checked`]).
//!
//! Every verdict names its rule, e.g. `denied by --deny 10.0.0.0/8 (10.1.2.3)`: the text goes
//! into the 403 body, the access log and `smolproxy route`. Nothing here resolves a name, opens
//! a socket or reads a file; the external authorization service is [`crate::authz`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::LazyLock;

use crate::cidr::Cidr;
use crate::pattern::{Pattern, PatternList};

/// The checked egress rules.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// `--allow`: `None` when not given (everything not denied is allowed).
    allow: Option<PatternList>,
    /// `--deny`, checked before `--allow`.
    deny: PatternList,
    /// `--block-private`.
    block_private: bool,
    /// Addresses of this host (listen addresses, interfaces), denied by `--block-private`.
    own: Vec<IpAddr>,
    /// How many of `own` are listen addresses, which stay when the interfaces' are replaced.
    listen_own: usize,
    /// Whether `--allow` has address entries, which can admit a name by where it resolves.
    allow_nets: bool,
    /// Whether any rule looks at addresses (see [`Policy::has_address_rules`]).
    address_rules: bool,
}

/// Why [`Policy::check`] let a destination through, for `smolproxy route`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The deciding rule in words, e.g. `allowed by --allow example.com`.
    pub reason: String,
    /// The rules still applied to the addresses the name resolves to, e.g. `--block-private`;
    /// empty for an IP literal (already checked whole) or when no IP rule exists.
    pub after_dns: Vec<String>,
}

impl Policy {
    /// Builds the policy from its flags; `listen` addresses count as this host's own.
    pub fn new(
        allow: Vec<PatternList>,
        deny: Vec<PatternList>,
        block_private: bool,
        listen: &[SocketAddr],
    ) -> Policy {
        let join = |lists: Vec<PatternList>| {
            lists
                .into_iter()
                .fold(PatternList::default(), |mut all, l| {
                    all.extend(l);
                    all
                })
        };
        let own: Vec<IpAddr> = listen
            .iter()
            .map(|a| a.ip().to_canonical())
            .filter(|ip| !ip.is_unspecified())
            .collect();
        // `--allow` given with only empty entries still means "allow nothing else".
        let allow = (!allow.is_empty()).then(|| join(allow));
        let deny = join(deny);
        let allow_nets = allow
            .iter()
            .flat_map(PatternList::iter)
            .any(Pattern::matches_addresses);
        let address_rules =
            block_private || allow_nets || deny.iter().any(Pattern::matches_addresses);
        Policy {
            allow,
            deny,
            block_private,
            listen_own: own.len(),
            own,
            allow_nets,
            address_rules,
        }
    }

    /// Adds addresses of this host (its interfaces, read at start).
    pub fn add_own(&mut self, addrs: impl IntoIterator<Item = IpAddr>) {
        for ip in addrs.into_iter().map(|ip| ip.to_canonical()) {
            if !self.own.contains(&ip) {
                self.own.push(ip);
            }
        }
    }

    /// Replaces the addresses of this host's interfaces (read at start and on SIGHUP); the
    /// listen addresses stay.
    pub fn set_host_addresses(&mut self, addrs: Vec<IpAddr>) {
        self.own.truncate(self.listen_own);
        self.add_own(addrs);
    }

    /// Whether `--block-private` is on.
    pub fn blocks_private(&self) -> bool {
        self.block_private
    }

    /// Whether any rule looks at addresses, so that a name must be resolved to be judged.
    pub fn has_address_rules(&self) -> bool {
        self.address_rules
    }

    /// Whether no rule is configured at all.
    fn is_open(&self) -> bool {
        self.allow.is_none() && self.deny.is_empty() && !self.block_private
    }

    /// Judges a destination by what the client named (a name or an IP literal), before DNS:
    /// `Err` names the rule. An IP literal meets every rule here; a name meets its IP rules in
    /// [`Policy::check_address`], as it is dialled. The request path calls this; it builds no
    /// text unless it denies.
    pub fn permits(&self, host: &str, port: u16) -> Result<(), String> {
        if self.is_open() {
            return Ok(());
        }
        if let Some(ip) = literal(host) {
            self.check_address(host, port, ip)?;
        }
        // Name entries, also those written for literals (`10.*`).
        if let Some(p) = self.deny.matches(host, port) {
            return Err(format!("denied by --deny {p}"));
        }
        match &self.allow {
            // Only an address entry could still let the name in, by where it resolves.
            Some(allow) if !self.allow_nets && allow.matches(host, port).is_none() => {
                Err(format!("denied: {host}:{port} is not in --allow"))
            }
            _ => Ok(()),
        }
    }

    /// [`Policy::permits`], explained: the deciding rule and the IP rules still to come.
    pub fn check(&self, host: &str, port: u16) -> Result<Verdict, String> {
        self.permits(host, port)?;
        let ip = literal(host);
        let allowed_by = self.allow.as_ref().and_then(|a| a.matches(host, port));
        let reason = match (&self.allow, allowed_by) {
            (_, Some(p)) => format!("allowed by --allow {p}"),
            (Some(_), None) => format!("allowed only if {host} resolves into an --allow network"),
            (None, None) if self.is_open() => "allowed (no egress policy configured)".into(),
            (None, None) => "allowed (no rule denies it)".into(),
        };
        let mut after_dns = Vec::new();
        if ip.is_none() {
            let nets = |list: &PatternList, flag: &str| -> Vec<String> {
                let nets = list.iter().filter(|p| p.matches_addresses());
                nets.map(|p| format!("{flag} {p}")).collect()
            };
            after_dns.extend(nets(&self.deny, "--deny"));
            if self.block_private {
                after_dns.push("--block-private".into());
            }
            if let (Some(allow), None) = (&self.allow, allowed_by) {
                after_dns.extend(nets(allow, "--allow"));
            }
        }
        Ok(Verdict { reason, after_dns })
    }

    /// Judges one address the proxy is about to connect to for `host` (the name the client
    /// used, or the same address as a literal). `Err` names the rule.
    pub fn check_address(&self, host: &str, port: u16, ip: IpAddr) -> Result<(), String> {
        if self.is_open() {
            return Ok(());
        }
        // `::ffff:10.1.2.3` reaches 10.1.2.3: judge it as that.
        let ip = ip.to_canonical();
        let named = literal(host).is_none();
        let what = || {
            if named {
                format!("{host} resolves to {ip}")
            } else {
                ip.to_string()
            }
        };
        if let Some(p) = self.deny.matches_ip(ip, port) {
            return Err(format!("denied by --deny {p} ({})", what()));
        }
        if self.block_private {
            let class =
                class(ip).or_else(|| self.own.contains(&ip).then_some("an address of this host"));
            if let Some(class) = class {
                return Err(format!("denied by --block-private ({}: {class})", what()));
            }
        }
        if let Some(allow) = &self.allow {
            // An entry matching what the client wrote decides (for a name, wherever it
            // resolves); otherwise the address itself must be in an --allow network.
            let by_name = allow.matches(host, port).is_some();
            if !by_name && allow.matches_ip(ip, port).is_none() {
                return Err(if named {
                    format!("denied: {host} resolves to {ip}, which is not in --allow")
                } else {
                    format!("denied: {ip}:{port} is not in --allow")
                });
            }
        }
        Ok(())
    }
}

/// The host as an IP address, if it is a literal (IPv6 with or without brackets).
fn literal(host: &str) -> Option<IpAddr> {
    let h = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    h.parse().ok()
}

/// The `--block-private` class an address belongs to, if any. IPv4-mapped (`::ffff:0:0/96`)
/// and NAT64 (`64:ff9b::/96`, RFC 6052) addresses are judged by the IPv4 address they carry.
pub fn class(ip: IpAddr) -> Option<&'static str> {
    let ip = match ip.to_canonical() {
        IpAddr::V6(v6) if NAT64.contains(IpAddr::V6(v6)) => {
            let [.., a, b, c, d] = v6.octets();
            IpAddr::V4(Ipv4Addr::new(a, b, c, d))
        }
        ip => ip,
    };
    PRIVATE
        .iter()
        .find(|(net, _)| net.contains(ip))
        .map(|(_, what)| *what)
}

/// The tables below, parsed once: this runs for every address about to be dialled.
static PRIVATE: LazyLock<Vec<(Cidr, &'static str)>> = LazyLock::new(|| {
    PRIVATE_V4
        .iter()
        .chain(&PRIVATE_V6)
        .map(|&(net, what)| (Cidr::parse(net).expect("a valid constant network"), what))
        .collect()
});

/// The NAT64 well-known prefix (RFC 6052).
static NAT64: LazyLock<Cidr> =
    LazyLock::new(|| Cidr::parse("64:ff9b::/96").expect("a valid constant network"));

/// IPv4 networks `--block-private` denies, with what each is.
const PRIVATE_V4: [(&str, &str); 10] = [
    ("0.0.0.0/8", "unspecified (\"this host\")"), // Linux connects 0.0.0.0 to itself
    ("127.0.0.0/8", "loopback"),
    ("10.0.0.0/8", "private (RFC 1918)"),
    ("172.16.0.0/12", "private (RFC 1918)"),
    ("192.168.0.0/16", "private (RFC 1918)"),
    ("100.64.0.0/10", "shared address space (CGNAT, RFC 6598)"),
    ("169.254.0.0/16", "link-local"),
    ("224.0.0.0/4", "multicast"),
    ("255.255.255.255/32", "broadcast"),
    ("240.0.0.0/4", "reserved"),
];

/// IPv6 networks `--block-private` denies (IPv4-mapped ones were turned into IPv4 first).
const PRIVATE_V6: [(&str, &str); 6] = [
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("fc00::/7", "unique-local"),
    ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local (deprecated)"),
    ("ff00::/8", "multicast"),
];

/// The local IPv4 addresses in the text of `/proc/net/fib_trie`: each `|-- ADDR` line
/// followed by a `/32 host LOCAL` line.
pub fn parse_fib_trie(text: &str) -> Vec<IpAddr> {
    let mut out = Vec::new();
    let mut last: Option<Ipv4Addr> = None;
    for line in text.lines() {
        let line = line.trim();
        if let Some(addr) = line.strip_prefix("|-- ") {
            last = addr.trim().parse().ok();
        } else if line.starts_with("/32 host LOCAL") {
            if let Some(ip) = last.take().map(IpAddr::V4) {
                if !out.contains(&ip) {
                    out.push(ip);
                }
            }
        }
    }
    out
}

/// The IPv6 addresses in the text of `/proc/net/if_inet6` (32 hex digits first on a line).
pub fn parse_if_inet6(text: &str) -> Vec<IpAddr> {
    text.lines()
        .filter_map(|line| {
            let hex = line.split_whitespace().next()?;
            let bits = (hex.len() == 32).then(|| u128::from_str_radix(hex, 16).ok())??;
            Some(IpAddr::V6(Ipv6Addr::from(bits)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(allow: Option<&str>, deny: &str, block: bool) -> Policy {
        let list = |s: &str| vec![PatternList::parse(s).unwrap()];
        let mut p = Policy::new(
            allow.map(list).unwrap_or_default(),
            list(deny),
            block,
            &["203.0.113.7:3128".parse().unwrap()],
        );
        p.add_own(["198.51.100.9".parse().unwrap()]);
        p
    }

    #[test]
    fn host_addresses_are_replaced_and_listen_addresses_kept() {
        let mut p = policy(None, "", true);
        let own = |p: &Policy, ip: &str| p.check_address(ip, 80, ip.parse().unwrap()).is_err();
        assert!(own(&p, "198.51.100.9") && own(&p, "203.0.113.7"));
        // SIGHUP: this host now has another address; the old one is no longer its.
        p.set_host_addresses(vec!["192.0.2.44".parse().unwrap()]);
        assert!(own(&p, "192.0.2.44") && own(&p, "203.0.113.7"));
        assert!(!own(&p, "198.51.100.9"));
    }

    /// One line per case: --allow, --deny, --block-private, host, port => Ok(reason) or
    /// Err(rule), the name-stage verdict (IP literals get every rule here).
    macro_rules! names {
        ($($allow:expr, $deny:expr, $block:expr, $host:expr, $port:expr => $want:expr;)*) => {$(
            let allow: Option<&str> = $allow;
            let got = policy(allow, $deny, $block).check($host, $port).map(|v| v.reason);
            let want: Result<&str, &str> = $want;
            assert_eq!(got.as_deref().map_err(String::as_str), want,
                "--allow {:?} --deny {:?} block {} -> {}:{}", allow, $deny, $block, $host, $port);
        )*};
    }

    #[test]
    fn evaluation_order() {
        names! {
            // Nothing configured: everything goes.
            None, "", false, "example.com", 80 => Ok("allowed (no egress policy configured)");
            // Deny alone.
            None, "*.bad.test", false, "x.bad.test", 80 => Err("denied by --deny *.bad.test");
            None, "*.bad.test", false, "good.test", 80 => Ok("allowed (no rule denies it)");
            // Once --allow is given, what it does not name is denied.
            Some("example.com"), "", false, "api.example.com", 443 =>
                Ok("allowed by --allow example.com");
            Some("example.com"), "", false, "example.org", 443 =>
                Err("denied: example.org:443 is not in --allow");
            // Deny wins over allow, whatever the order of the flags or the entries.
            Some("example.com"), "admin.example.com", false, "admin.example.com", 80 =>
                Err("denied by --deny admin.example.com");
            Some("*"), "example.com:25", false, "mail.example.com", 25 =>
                Err("denied by --deny example.com:25");
            Some("*"), "example.com:25", false, "mail.example.com", 587 =>
                Ok("allowed by --allow *");
            // Ports limit entries on either side.
            Some("example.com:443"), "", false, "example.com", 80 =>
                Err("denied: example.com:80 is not in --allow");
            // IP literals meet every rule at once, v4 and v6, mapped forms included.
            Some("10.0.0.0/8"), "", false, "10.1.2.3", 80 => Ok("allowed by --allow 10.0.0.0/8");
            Some("10.0.0.0/8"), "", false, "11.1.2.3", 80 =>
                Err("denied: 11.1.2.3:80 is not in --allow");
            None, "10.0.0.0/8", false, "::ffff:10.9.9.9", 80 =>
                Err("denied by --deny 10.0.0.0/8 (10.9.9.9)");
            Some("10.0.0.0/8"), "10.66.0.0/16", false, "10.66.1.1", 80 =>
                Err("denied by --deny 10.66.0.0/16 (10.66.1.1)");
            None, "", true, "127.0.0.1", 80 =>
                Err("denied by --block-private (127.0.0.1: loopback)");
            None, "", true, "[::1]", 80 => Err("denied by --block-private (::1: loopback)");
            None, "", true, "8.8.8.8", 53 => Ok("allowed (no rule denies it)");
            // --block-private is a deny: an --allow entry does not lift it.
            Some("192.168.0.0/16"), "", true, "192.168.1.1", 80 =>
                Err("denied by --block-private (192.168.1.1: private (RFC 1918))");
            // Name globs written for literals apply to literals (and only to them).
            None, "10.*", false, "10.1.2.3", 80 => Err("denied by --deny 10.*");
            Some("10.*"), "", false, "10.1.2.3", 80 => Ok("allowed by --allow 10.*");
            Some("10.*"), "", false, "11.1.2.3", 80 => Err("denied: 11.1.2.3:80 is not in --allow");
            // A name with address rules pending: judged again after DNS.
            Some("10.0.0.0/8"), "", false, "intranet.test", 80 =>
                Ok("allowed only if intranet.test resolves into an --allow network");
            None, "", true, "localhost", 80 => Ok("allowed (no rule denies it)");
            // Name entries never match addresses, address entries never match names.
            None, "localhost", false, "127.0.0.1", 80 => Ok("allowed (no rule denies it)");
            None, "127.0.0.0/8", false, "localhost", 80 => Ok("allowed (no rule denies it)");
        }
    }

    /// One line per case: --allow, --deny, --block-private, host, address => the verdict on
    /// connecting to that address for that host (port 80).
    macro_rules! addresses {
        ($($allow:expr, $deny:expr, $block:expr, $host:expr, $ip:expr => $want:expr;)*) => {$(
            let allow: Option<&str> = $allow;
            let got = policy(allow, $deny, $block).check_address($host, 80, $ip.parse().unwrap());
            let want: Result<(), &str> = $want;
            assert_eq!(got.as_ref().map_err(String::as_str), want.as_ref().map_err(|e| *e),
                "--allow {:?} --deny {:?} block {} -> {} at {}", allow, $deny, $block, $host, $ip);
        )*};
    }

    #[test]
    fn after_dns() {
        addresses! {
            None, "127.0.0.0/8", false, "localhost", "127.0.0.1" =>
                Err("denied by --deny 127.0.0.0/8 (localhost resolves to 127.0.0.1)");
            None, "", true, "localhost", "127.0.0.1" =>
                Err("denied by --block-private (localhost resolves to 127.0.0.1: loopback)");
            None, "", true, "localhost", "::1" =>
                Err("denied by --block-private (localhost resolves to ::1: loopback)");
            None, "", true, "r.test", "::ffff:169.254.169.254" =>
                Err("denied by --block-private (r.test resolves to 169.254.169.254: link-local)");
            None, "", true, "public.test", "93.184.216.34" => Ok(());
            // This host's own addresses: listen addresses and interfaces.
            None, "", true, "me", "203.0.113.7" =>
                Err(concat!("denied by --block-private (me resolves to 203.0.113.7: ",
                    "an address of this host)"));
            None, "", true, "me", "198.51.100.9" =>
                Err(concat!("denied by --block-private (me resolves to 198.51.100.9: ",
                    "an address of this host)"));
            // Allowed by name: the name decides, wherever it points (unless a deny says no).
            Some("a.test"), "", false, "a.test", "10.0.0.1" => Ok(());
            Some("a.test"), "", true, "a.test", "10.0.0.1" =>
                Err("denied by --block-private (a.test resolves to 10.0.0.1: private (RFC 1918))");
            // Allowed by network: the address decides.
            Some("10.0.0.0/8"), "", false, "intranet.test", "10.2.3.4" => Ok(());
            Some("10.0.0.0/8"), "", false, "intranet.test", "192.0.2.1" =>
                Err("denied: intranet.test resolves to 192.0.2.1, which is not in --allow");
            // `<local>` denies loopback addresses however they were named.
            None, "<local>", false, "sneaky.test", "127.0.0.2" =>
                Err("denied by --deny <local> (sneaky.test resolves to 127.0.0.2)");
        }
    }

    #[test]
    fn address_classes() {
        for (ip, want) in [
            // IPv4.
            ("0.0.0.0", Some("unspecified (\"this host\")")),
            ("127.0.0.1", Some("loopback")),
            ("127.255.255.254", Some("loopback")),
            ("10.0.0.1", Some("private (RFC 1918)")),
            ("172.16.0.1", Some("private (RFC 1918)")),
            ("172.31.255.255", Some("private (RFC 1918)")),
            ("172.32.0.1", None),
            ("192.168.100.1", Some("private (RFC 1918)")),
            ("100.64.0.1", Some("shared address space (CGNAT, RFC 6598)")),
            (
                "100.127.255.255",
                Some("shared address space (CGNAT, RFC 6598)"),
            ),
            ("100.128.0.1", None),
            ("169.254.169.254", Some("link-local")),
            ("224.0.0.251", Some("multicast")),
            ("239.255.255.250", Some("multicast")),
            ("255.255.255.255", Some("broadcast")),
            ("240.0.0.1", Some("reserved")),
            ("8.8.8.8", None),
            ("93.184.216.34", None),
            ("11.0.0.1", None),
            // IPv6.
            ("::", Some("unspecified")),
            ("::1", Some("loopback")),
            ("fc00::1", Some("unique-local")),
            ("fd12:3456::1", Some("unique-local")),
            ("fe80::1", Some("link-local")),
            ("febf::1", Some("link-local")),
            ("fec0::1", Some("site-local (deprecated)")),
            ("ff02::1", Some("multicast")),
            ("2001:4860:4860::8888", None),
            ("2606:4700::1111", None),
            // IPv4-mapped and NAT64 forms carry their IPv4 address's class.
            ("::ffff:127.0.0.1", Some("loopback")),
            ("::ffff:10.1.2.3", Some("private (RFC 1918)")),
            ("::ffff:169.254.169.254", Some("link-local")),
            ("::ffff:0.0.0.0", Some("unspecified (\"this host\")")),
            ("::ffff:8.8.8.8", None),
            ("64:ff9b::7f00:1", Some("loopback")),
            ("64:ff9b::a00:1", Some("private (RFC 1918)")),
            ("64:ff9b::808:808", None),
        ] {
            assert_eq!(class(ip.parse().unwrap()), want, "{ip}");
        }
    }

    #[test]
    fn pending_rules_are_listed() {
        let p = policy(
            Some("example.com,10.0.0.0/8"),
            "192.168.0.0/16,*.bad.test",
            true,
        );
        assert!(p.has_address_rules());
        let v = p.check("other.test", 80).unwrap();
        assert_eq!(
            v.after_dns,
            [
                "--deny 192.168.0.0/16",
                "--block-private",
                "--allow 10.0.0.0/8"
            ]
        );
        let p = policy(Some("example.com,10.0.0.0/8"), "", false);
        assert!(p.check("10.1.1.1", 80).unwrap().after_dns.is_empty());
        let names_only = policy(Some("example.com"), "*.bad.test", false);
        assert!(!names_only.has_address_rules());
        assert!(names_only
            .check("example.com", 80)
            .unwrap()
            .after_dns
            .is_empty());
        for (entry, address) in [
            ("10.0.0.0/8", true),
            ("[fd00::/8]:22", true),
            ("fd00::/8", true),
            ("1.2.3.4:80", true),
            ("*", true),
            ("<local>:3000", true),
            ("10.*", false),
            ("example.com:443", false),
            ("*.example.com", false),
        ] {
            let p = Pattern::parse(entry).unwrap();
            assert_eq!(p.matches_addresses(), address, "{entry}");
        }
    }

    #[test]
    fn host_addresses() {
        let trie = "Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 0.0.0.0\n        /0 universe UNICAST\n\
                    \x20    +-- 127.0.0.0/8 2 0 2\n           |-- 127.0.0.0\n\
                    \x20             /8 host LOCAL\n\
                    \x20          |-- 127.0.0.1\n              /32 host LOCAL\n\
                    \x20       |-- 127.255.255.255\n           /32 link BROADCAST\n\
                    \x20          |-- 192.0.2.2\n              /32 host LOCAL\n\
                    Local:\n           |-- 192.0.2.2\n              /32 host LOCAL\n";
        let want: Vec<IpAddr> = vec!["127.0.0.1".parse().unwrap(), "192.0.2.2".parse().unwrap()];
        assert_eq!(parse_fib_trie(trie), want);
        let inet6 = "00000000000000000000000000000001 01 80 10 80       lo\n\
                     fd000000000000000000000000000002 04 40 00 82     eth0\n\
                     garbage\n";
        let want: Vec<IpAddr> = vec!["::1".parse().unwrap(), "fd00::2".parse().unwrap()];
        assert_eq!(parse_if_inet6(inet6), want);
    }
}

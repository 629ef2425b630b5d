//! IP networks (CIDR blocks) for client access rules and destination patterns.
//!
//! Pure parsing and matching. `10.0.0.0/8`, `fd00::/8`, or a bare address (a /32 or /128).
//! IPv4-mapped IPv6 addresses (`::ffff:10.1.2.3`) match IPv4 networks, because a dual-stack
//! listener reports IPv4 clients that way.

use std::fmt;
use std::net::IpAddr;

/// One IP network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    /// The network address with host bits cleared.
    addr: IpAddr,
    /// Prefix length in bits.
    prefix: u8,
}

impl Cidr {
    /// Parses `ADDR/LEN` or a bare address; IPv6 may be written in brackets.
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let bad = || {
            format!("expected an IP address or CIDR block like 10.0.0.0/8 or fd00::/8, got '{s}'")
        };
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let addr = addr
            .strip_prefix('[')
            .and_then(|a| a.strip_suffix(']'))
            .unwrap_or(addr);
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match len {
            None => max,
            Some(l) if !l.is_empty() && l.len() <= 3 && l.bytes().all(|b| b.is_ascii_digit()) => {
                l.parse::<u8>().ok().filter(|&p| p <= max).ok_or_else(bad)?
            }
            Some(_) => return Err(bad()),
        };
        Ok(Cidr {
            addr: mask(addr, prefix),
            prefix,
        })
    }

    /// Whether `ip` is inside this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_ipv4() == self.addr.is_ipv4() && mask(ip, self.prefix) == self.addr
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Clears every bit after the first `prefix` bits.
fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let m = if prefix == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(prefix))
            };
            IpAddr::V4((bits & m).into())
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let m = if prefix == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(prefix))
            };
            IpAddr::V6((bits & m).into())
        }
    }
}

/// Parses a comma-separated list of networks (a flag value).
pub fn parse_list(s: &str) -> Result<Vec<Cidr>, String> {
    s.split(',').map(|item| Cidr::parse(item.trim())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    macro_rules! cases {
        ($($net:expr, $ip:expr => $inside:expr;)*) => {$(
            let net = Cidr::parse($net).unwrap();
            assert_eq!(net.contains($ip.parse().unwrap()), $inside, "{} in {}", $ip, $net);
        )*};
    }

    #[test]
    fn membership() {
        cases! {
            "10.0.0.0/8", "10.255.1.2" => true;
            "10.0.0.0/8", "11.0.0.1" => false;
            "10.1.2.3/8", "10.9.9.9" => true;
            "127.0.0.1", "127.0.0.1" => true;
            "127.0.0.1", "127.0.0.2" => false;
            "0.0.0.0/0", "8.8.8.8" => true;
            "0.0.0.0/0", "::1" => false;
            "::/0", "::1" => true;
            "fd00::/8", "fd12:3456::1" => true;
            "fd00::/8", "fe80::1" => false;
            "[::1]", "::1" => true;
            "127.0.0.0/8", "::ffff:127.0.0.5" => true;
            "::1/128", "127.0.0.1" => false;
        }
    }

    #[test]
    fn rejects() {
        for bad in [
            "",
            "10.0.0.0/33",
            "::/129",
            "10.0.0/8",
            "10.0.0.0/",
            "10.0.0.0/-1",
            "host",
            "1.2.3.4/8/8",
        ] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_list("10.0.0.0/8, ::1").unwrap().len(), 2);
    }
}

//! Which hosts a plugin may reach.
//!
//! A capability needs both halves: the plugin's manifest declares the hosts
//! it may ask for, and the operator grants hosts to it. A request passes only
//! when its host matches a declared pattern *and* a granted one, so neither a
//! greedy manifest nor a careless grant opens the network alone.
//!
//! Names are not enough: whatever a request's host is called, the address
//! it reaches is checked too ([`AddressRange::is_internal`]). Loopback,
//! link-local (cloud metadata at 169.254.169.254), private, unique-local,
//! shared (CGNAT), multicast and reserved addresses are refused for every
//! plugin, built-ins included, unless the operator allows them: by range
//! (`[plugins] allow-private-addresses`), or by granting the plugin that
//! address itself (a grant of `127.0.0.1:8080` allows 127.0.0.1).

use std::net::IpAddr;

/// An address range, `10.0.0.0/8`, `::1/128`, or one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressRange {
    network: IpAddr,
    prefix: u8,
}

impl AddressRange {
    pub fn parse(text: &str) -> Result<AddressRange, String> {
        let bad = |why: &str| format!("address range {text:?}: {why}");
        let trimmed = text.trim();
        let (addr, prefix) = match trimmed.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (trimmed, None),
        };
        let addr = addr.trim_start_matches('[').trim_end_matches(']');
        let network: IpAddr = addr.parse().map_err(|_| bad("not an IP address"))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| bad("the prefix length is out of range"))?,
        };
        Ok(AddressRange { network, prefix })
    }

    const fn v4(a: u8, b: u8, c: u8, d: u8, prefix: u8) -> AddressRange {
        AddressRange {
            network: IpAddr::V4(std::net::Ipv4Addr::new(a, b, c, d)),
            prefix,
        }
    }

    const fn v6(segments: [u16; 8], prefix: u8) -> AddressRange {
        let [a, b, c, d, e, f, g, h] = segments;
        AddressRange {
            network: IpAddr::V6(std::net::Ipv6Addr::new(a, b, c, d, e, f, g, h)),
            prefix,
        }
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }

    /// Whether `ip` is in a range no plugin reaches unless the operator
    /// allows it: the machine itself, its links, private networks.
    pub fn is_internal(ip: IpAddr) -> bool {
        INTERNAL.iter().any(|range| range.contains(ip))
    }
}

/// An IPv4 address written as IPv6 (`::ffff:a.b.c.d`) is that IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The ranges refused by default.
const INTERNAL: &[AddressRange] = &[
    AddressRange::v4(0, 0, 0, 0, 8),                 // "this network"
    AddressRange::v4(10, 0, 0, 0, 8),                // private
    AddressRange::v4(100, 64, 0, 0, 10),             // shared address space (CGNAT)
    AddressRange::v4(127, 0, 0, 0, 8),               // loopback
    AddressRange::v4(169, 254, 0, 0, 16),            // link-local, cloud metadata
    AddressRange::v4(172, 16, 0, 0, 12),             // private
    AddressRange::v4(192, 0, 0, 0, 24),              // IETF protocol assignments
    AddressRange::v4(192, 168, 0, 0, 16),            // private
    AddressRange::v4(198, 18, 0, 0, 15),             // benchmarking
    AddressRange::v4(224, 0, 0, 0, 4),               // multicast
    AddressRange::v4(240, 0, 0, 0, 4),               // reserved, broadcast
    AddressRange::v6([0, 0, 0, 0, 0, 0, 0, 0], 128), // unspecified
    AddressRange::v6([0, 0, 0, 0, 0, 0, 0, 1], 128), // loopback
    AddressRange::v6([0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96), // NAT64 (embeds IPv4)
    AddressRange::v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7), // unique-local
    AddressRange::v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10), // link-local
    AddressRange::v6([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10), // site-local (deprecated)
    AddressRange::v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8), // multicast
];

/// Which internal addresses the operator allows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddressPolicy {
    allowed: Vec<AddressRange>,
}

impl AddressPolicy {
    pub fn new(allowed: &[String]) -> Result<AddressPolicy, String> {
        Ok(AddressPolicy {
            allowed: allowed
                .iter()
                .map(|r| AddressRange::parse(r))
                .collect::<Result<_, _>>()?,
        })
    }

    /// Whether a request may connect to `ip`.
    pub fn allows(&self, ip: IpAddr) -> bool {
        !AddressRange::is_internal(ip) || self.allowed.iter().any(|r| r.contains(ip))
    }
}

/// One pattern: `*`, `example.com`, `*.example.com` (sub-domains only),
/// `127.0.0.1`, `[::1]`, each optionally with `:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    host: HostMatch,
    port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostMatch {
    Any,
    Exact(String),
    /// `*.example.com` is stored as `.example.com`.
    Suffix(String),
}

impl HostPattern {
    pub fn parse(pattern: &str) -> Result<HostPattern, String> {
        let bad = |why: &str| format!("host pattern {pattern:?}: {why}");
        let text = pattern.trim().to_ascii_lowercase();
        if text.is_empty() {
            return Err(bad("empty"));
        }
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let (inside, after) = rest.split_once(']').ok_or_else(|| bad("unclosed '['"))?;
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':').ok_or_else(|| bad("junk after ']'"))?),
            };
            (format!("[{inside}]"), port.map(str::to_string))
        } else {
            match text.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p.to_string())),
                None => (text.clone(), None),
            }
        };
        let port = match port {
            None => None,
            Some(p) => Some(
                p.parse::<u16>()
                    .map_err(|_| bad("the port is not a number"))?,
            ),
        };
        let valid = |h: &str| {
            !h.is_empty()
                && h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-.[]:".contains(c))
        };
        let host = if host == "*" {
            HostMatch::Any
        } else if let Some(domain) = host.strip_prefix("*.") {
            if !valid(domain) {
                return Err(bad("invalid domain"));
            }
            HostMatch::Suffix(format!(".{domain}"))
        } else {
            if !valid(&host) {
                return Err(bad("invalid host"));
            }
            HostMatch::Exact(host)
        };
        Ok(HostPattern { host, port })
    }

    /// `host` as it appears in a URL (IPv6 in brackets), lower case.
    pub fn matches(&self, host: &str, port: u16) -> bool {
        if self.port.is_some_and(|p| p != port) {
            return false;
        }
        let host = host.to_ascii_lowercase();
        match &self.host {
            HostMatch::Any => true,
            HostMatch::Exact(h) => *h == host,
            HostMatch::Suffix(suffix) => host.ends_with(suffix.as_str()),
        }
    }
}

/// What one plugin may reach: its declaration and the operator's grant.
#[derive(Debug, Clone, Default)]
pub struct HostPolicy {
    declared: Vec<HostPattern>,
    granted: Vec<HostPattern>,
    /// Internal addresses this plugin was granted by address.
    granted_addresses: Vec<AddressRange>,
}

impl HostPolicy {
    pub fn new(declared: &[String], granted: &[String]) -> Result<HostPolicy, String> {
        let parse = |list: &[String]| {
            list.iter()
                .map(|p| HostPattern::parse(p))
                .collect::<Result<Vec<_>, _>>()
        };
        let granted = parse(granted)?;
        let granted_addresses = granted
            .iter()
            .filter_map(|p| match &p.host {
                HostMatch::Exact(h) => AddressRange::parse(h).ok(),
                _ => None,
            })
            .collect();
        Ok(HostPolicy {
            declared: parse(declared)?,
            granted,
            granted_addresses,
        })
    }

    /// Whether the operator granted this plugin the address `ip` itself.
    pub fn grants_address(&self, ip: IpAddr) -> bool {
        self.granted_addresses.iter().any(|r| r.contains(ip))
    }

    pub fn allows(&self, host: &str, port: u16) -> bool {
        self.declared.iter().any(|p| p.matches(host, port))
            && self.granted.iter().any(|p| p.matches(host, port))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(declared: &[&str], granted: &[&str]) -> HostPolicy {
        let own = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        HostPolicy::new(&own(declared), &own(granted)).unwrap()
    }

    #[test]
    fn needs_both_declaration_and_grant() {
        let p = policy(&["*"], &["127.0.0.1"]);
        assert!(p.allows("127.0.0.1", 8080));
        assert!(!p.allows("127.0.0.2", 8080));
        let p = policy(&["example.com"], &["*"]);
        assert!(p.allows("example.com", 443));
        assert!(!p.allows("evil.com", 443));
        assert!(!policy(&[], &["*"]).allows("a", 1));
        assert!(!policy(&["*"], &[]).allows("a", 1));
    }

    #[test]
    fn internal_addresses_are_refused_unless_allowed() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let none = AddressPolicy::default();
        for internal in [
            "127.0.0.1",
            "127.8.9.10",
            "169.254.169.254",
            "10.1.2.3",
            "172.31.0.1",
            "192.168.1.1",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "224.0.0.1",
            "255.255.255.255",
        ] {
            assert!(!none.allows(ip(internal)), "{internal}");
        }
        for public in [
            "93.184.216.34",
            "2606:2800:220:1::1",
            "172.32.0.1",
            "8.8.8.8",
        ] {
            assert!(none.allows(ip(public)), "{public}");
        }
        let loopback = AddressPolicy::new(&["127.0.0.0/8".to_string(), "::1".to_string()]).unwrap();
        assert!(loopback.allows(ip("127.0.0.1")));
        assert!(loopback.allows(ip("::ffff:127.0.0.1")));
        assert!(loopback.allows(ip("::1")));
        assert!(!loopback.allows(ip("169.254.169.254")));
        assert!(AddressRange::parse("10.0.0.0/33").is_err());
        assert!(AddressRange::parse("example.com").is_err());
        let granted = policy(&["*"], &["127.0.0.1:8080", "*"]);
        assert!(granted.grants_address(ip("127.0.0.1")));
        assert!(!granted.grants_address(ip("127.0.0.2")));
        assert!(policy(&["*"], &["[::1]"]).grants_address(ip("::1")));
    }

    #[test]
    fn patterns_match_hosts_ports_and_subdomains() {
        let p = HostPattern::parse("*.Example.com:8443").unwrap();
        assert!(p.matches("dl.example.com", 8443));
        assert!(!p.matches("example.com", 8443));
        assert!(!p.matches("dl.example.com", 443));
        assert!(!p.matches("badexample.com", 8443));
        let v6 = HostPattern::parse("[::1]:80").unwrap();
        assert!(v6.matches("[::1]", 80));
        assert!(HostPattern::parse("a b").is_err());
        assert!(HostPattern::parse("host:port").is_err());
        assert!(HostPattern::parse("").is_err());
    }
}

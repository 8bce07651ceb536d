//! Which hosts a plugin may reach.
//!
//! A capability needs both halves: the plugin's manifest declares the hosts
//! it may ask for, and the operator grants hosts to it. A request passes only
//! when its host matches a declared pattern *and* a granted one, so neither a
//! greedy manifest nor a careless grant opens the network alone.

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
}

impl HostPolicy {
    pub fn new(declared: &[String], granted: &[String]) -> Result<HostPolicy, String> {
        let parse = |list: &[String]| {
            list.iter()
                .map(|p| HostPattern::parse(p))
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(HostPolicy {
            declared: parse(declared)?,
            granted: parse(granted)?,
        })
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

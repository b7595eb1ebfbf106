//! The SSRF guard: which IP addresses the fetcher refuses to connect to, and
//! the DNS resolver that enforces it on the address actually connected to.
//!
//! Two paths lead to a socket and both are guarded: host names go through
//! [`GuardedResolver`] (installed with `ClientBuilder::dns_resolver`, so DNS
//! rebinding and redirects to internal names are caught at connect time), and
//! IP-literal hosts, which reqwest never hands to a resolver, are checked by
//! [`check_url`] for the first URL and for every redirect hop.

use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::{Host, Url};

/// Why an address is refused, or `None` if it is publicly routable.
///
/// The class names are what users see in `FetchError::Blocked`.
pub fn classify_ip(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let a = u32::from(ip);
    // Order matters only where ranges nest (broadcast inside 240/4).
    const TABLE: &[([u8; 4], u8, &str)] = &[
        ([255, 255, 255, 255], 32, "broadcast"),
        ([0, 0, 0, 0], 32, "unspecified"),
        ([0, 0, 0, 0], 8, "this-network (0.0.0.0/8)"),
        ([10, 0, 0, 0], 8, "private"),
        ([100, 64, 0, 0], 10, "shared address space (cgnat)"),
        ([127, 0, 0, 0], 8, "loopback"),
        ([169, 254, 0, 0], 16, "link-local"),
        ([172, 16, 0, 0], 12, "private"),
        ([192, 0, 0, 0], 24, "reserved (ietf protocol assignments)"),
        ([192, 0, 2, 0], 24, "documentation"),
        ([192, 88, 99, 0], 24, "reserved (6to4 relay anycast)"),
        ([192, 168, 0, 0], 16, "private"),
        ([198, 18, 0, 0], 15, "reserved (benchmarking)"),
        ([198, 51, 100, 0], 24, "documentation"),
        ([203, 0, 113, 0], 24, "documentation"),
        ([224, 0, 0, 0], 4, "multicast"),
        ([240, 0, 0, 0], 4, "reserved"),
    ];
    TABLE
        .iter()
        .find(|(net, len, _)| in_v4(a, *net, *len))
        .map(|(_, _, why)| *why)
}

fn in_v4(addr: u32, net: [u8; 4], len: u8) -> bool {
    let mask = if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len))
    };
    addr & mask == u32::from_be_bytes(net) & mask
}

fn in_v6(addr: u128, net: u128, len: u8) -> bool {
    let mask = if len == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(len))
    };
    addr & mask == net & mask
}

fn classify_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let a = u128::from(ip);
    if ip.is_unspecified() {
        return Some("unspecified");
    }
    if ip.is_loopback() {
        return Some("loopback");
    }
    // Forms that embed an IPv4 address: the embedded address decides, so
    // `::ffff:127.0.0.1`, `64:ff9b::10.0.0.1` and `2002:7f00:1::` are loopback/private.
    let low32 = Ipv4Addr::from((a & 0xffff_ffff) as u32);
    if in_v6(a, 0xffff_0000_0000, 96) {
        return classify_v4(low32); // IPv4-mapped ::ffff:a.b.c.d
    }
    if in_v6(a, 0, 96) {
        // IPv4-compatible ::a.b.c.d (deprecated, never routable).
        return Some(classify_v4(low32).unwrap_or("reserved (ipv4-compatible ipv6)"));
    }
    if in_v6(a, 0x0064_ff9b_u128 << 96, 96) {
        return classify_v4(low32); // NAT64 well-known prefix
    }
    if in_v6(a, 0x0064_ff9b_0001_u128 << 80, 48) {
        return Some("private (local-use nat64)");
    }
    if in_v6(a, 0x2002_u128 << 112, 16) {
        // 6to4: 2002:AABB:CCDD::/48 carries the IPv4 address AA.BB.CC.DD.
        let embedded = Ipv4Addr::from(((a >> 80) & 0xffff_ffff) as u32);
        return classify_v4(embedded);
    }
    const TABLE: &[(u128, u8, &str)] = &[
        (0x0100_u128 << 112, 64, "reserved (discard-only)"),
        (0x2001_0db8_u128 << 96, 32, "documentation"),
        (
            0x2001_u128 << 112,
            23,
            "reserved (ietf protocol assignments, teredo)",
        ),
        (0x3fff_u128 << 112, 20, "documentation"),
        (0xfc00_u128 << 112, 7, "private (unique local)"),
        (0xfe80_u128 << 112, 10, "link-local"),
        (0xfec0_u128 << 112, 10, "private (site-local)"),
        (0xff00_u128 << 112, 8, "multicast"),
    ];
    if let Some((_, _, why)) = TABLE.iter().find(|(net, len, _)| in_v6(a, *net, *len)) {
        return Some(why);
    }
    // Everything outside global unicast 2000::/3 is unassigned or special.
    if !in_v6(a, 0x2000_u128 << 112, 3) {
        return Some("reserved");
    }
    None
}

/// The SSRF guard's refusal, carried through reqwest's error chain so the
/// fetcher can turn it into `FetchError::Blocked`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("refused to connect to {addr}: {why}")]
pub(crate) struct Refused {
    pub(crate) addr: String,
    pub(crate) why: &'static str,
}

/// A failed DNS lookup, carried through reqwest's error chain so the fetcher
/// can turn it into `FetchError::Dns`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("cannot resolve {host}: {reason}")]
pub(crate) struct LookupFailed {
    pub(crate) host: String,
    pub(crate) reason: String,
}

/// The guard's policy: which addresses to refuse.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Guard {
    /// `fetch.allow_private_networks`: refuse nothing.
    pub(crate) allow_private: bool,
    /// One address let through although its class is refused. Never set
    /// from configuration: it exists so unit tests can run a local server
    /// on 127.0.0.1 and still see the guard refuse every other address.
    pub(crate) exempt: Option<IpAddr>,
}

impl Guard {
    /// The guard for `fetch.allow_private_networks`.
    pub(crate) fn new(allow_private: bool) -> Self {
        Self {
            allow_private,
            exempt: None,
        }
    }

    /// Why `ip` is refused, if it is.
    pub(crate) fn refuses(&self, ip: IpAddr) -> Option<&'static str> {
        if self.allow_private || self.exempt == Some(ip) {
            return None;
        }
        classify_ip(ip)
    }
}

/// Why a URL cannot be fetched before any socket is opened.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum UrlRefused {
    /// Not http/https, or no host.
    #[error("unsupported URL {0}")]
    BadUrl(String),
    /// An IP-literal host in a refused class.
    #[error(transparent)]
    Blocked(#[from] Refused),
}

/// Checks scheme, host and (for IP-literal hosts) the address class.
///
/// Host names are left to [`GuardedResolver`], which sees the resolved addresses.
pub(crate) fn check_url(url: &Url, guard: &Guard) -> Result<(), UrlRefused> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(UrlRefused::BadUrl(format!(
            "{} (only http and https are fetched)",
            super::redact_url(url)
        )));
    }
    let ip = match url.host() {
        None => {
            return Err(UrlRefused::BadUrl(format!(
                "{} (no host)",
                super::redact_url(url)
            )))
        }
        Some(Host::Domain(_)) => return Ok(()),
        Some(Host::Ipv4(v4)) => IpAddr::V4(v4),
        Some(Host::Ipv6(v6)) => IpAddr::V6(v6),
    };
    match guard.refuses(ip) {
        Some(why) => Err(UrlRefused::Blocked(Refused {
            addr: ip.to_string(),
            why,
        })),
        None => Ok(()),
    }
}

/// Turns a host name into addresses. A seam so unit tests can simulate DNS
/// answers (rebinding, failures) without a network.
pub(crate) trait Lookup: Send + Sync + 'static {
    fn lookup(&self, host: String)
        -> Pin<Box<dyn Future<Output = io::Result<Vec<IpAddr>>> + Send>>;
}

/// The system resolver, via tokio (getaddrinfo on a blocking thread).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct SystemLookup;

impl Lookup for SystemLookup {
    fn lookup(
        &self,
        host: String,
    ) -> Pin<Box<dyn Future<Output = io::Result<Vec<IpAddr>>> + Send>> {
        Box::pin(async move {
            let addrs = tokio::net::lookup_host((host.as_str(), 0)).await?;
            Ok(addrs.map(|sa| sa.ip()).collect())
        })
    }
}

/// reqwest resolver that drops refused addresses and fails when none remain.
///
/// Filtering (rather than refusing the whole name when one address is
/// private) keeps dual-homed public hosts working while guaranteeing that the
/// connector only ever sees allowed addresses.
pub(crate) struct GuardedResolver {
    lookup: Arc<dyn Lookup>,
    guard: Guard,
}

impl GuardedResolver {
    pub(crate) fn new(lookup: Arc<dyn Lookup>, guard: Guard) -> Self {
        Self { lookup, guard }
    }

    /// Resolves `host` and applies the guard.
    pub(crate) async fn resolve_host(&self, host: String) -> Result<Vec<IpAddr>, ResolveError> {
        let ips = if is_localhost_name(&host) {
            // RFC 6761: `localhost` names are loopback whatever DNS says, so
            // `localhost.` and `app.localhost` are refused as loopback (not
            // a confusing lookup failure on resolvers that do not know
            // them) and reach loopback when private networks are allowed.
            vec![
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(Ipv6Addr::LOCALHOST),
            ]
        } else {
            self.lookup.lookup(host.clone()).await.map_err(|e| {
                ResolveError::Lookup(LookupFailed {
                    host: host.clone(),
                    reason: e.to_string(),
                })
            })?
        };
        if ips.is_empty() {
            return Err(ResolveError::Lookup(LookupFailed {
                host,
                reason: "no addresses".into(),
            }));
        }
        let mut first_refused = None;
        let allowed: Vec<IpAddr> = ips
            .into_iter()
            .filter(|ip| match self.guard.refuses(*ip) {
                None => true,
                Some(why) => {
                    first_refused.get_or_insert(Refused {
                        addr: format!("{host} ({ip})"),
                        why,
                    });
                    false
                }
            })
            .collect();
        match (allowed.is_empty(), first_refused) {
            (true, Some(refused)) => Err(ResolveError::Blocked(refused)),
            _ => Ok(allowed),
        }
    }
}

/// Whether `host` is `localhost` or a name under it (RFC 6761 §6.3), in
/// any case and with or without the trailing root dot.
fn is_localhost_name(host: &str) -> bool {
    let name = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    name == "localhost" || name.ends_with(".localhost")
}

/// What the guarded resolver reports.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ResolveError {
    #[error(transparent)]
    Lookup(LookupFailed),
    #[error(transparent)]
    Blocked(Refused),
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let this = Self {
            lookup: Arc::clone(&self.lookup),
            guard: self.guard,
        };
        let host = name.as_str().to_owned();
        Box::pin(async move {
            // Box the concrete leaf error (not the enum) so `downcast_ref`
            // on the error chain finds `Refused` / `LookupFailed` directly.
            match this.resolve_host(host).await {
                Ok(ips) => {
                    let addrs: Addrs = Box::new(ips.into_iter().map(|ip| SocketAddr::new(ip, 0)));
                    Ok(addrs)
                }
                Err(ResolveError::Lookup(e)) => {
                    Err(Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
                }
                Err(ResolveError::Blocked(e)) => {
                    Err(Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
                }
            }
        })
    }
}

/// Fixed DNS answers, to simulate rebinding and failures offline.
#[cfg(test)]
pub(crate) struct FakeDns(pub(crate) std::collections::HashMap<&'static str, Vec<IpAddr>>);

#[cfg(test)]
impl Lookup for FakeDns {
    fn lookup(
        &self,
        host: String,
    ) -> Pin<Box<dyn Future<Output = io::Result<Vec<IpAddr>>> + Send>> {
        let answer = self
            .0
            .get(host.as_str())
            .cloned()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such host"));
        Box::pin(async move { answer })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn class(s: &str) -> Option<&'static str> {
        let ip: IpAddr = s
            .parse()
            .unwrap_or_else(|e| panic!("bad test address {s}: {e}"));
        classify_ip(ip)
    }

    #[test]
    fn refuses_internal_ipv4() {
        let cases = [
            ("127.0.0.1", "loopback"),
            ("127.255.255.254", "loopback"),
            ("10.0.0.1", "private"),
            ("10.255.255.255", "private"),
            ("172.16.0.1", "private"),
            ("172.31.255.255", "private"),
            ("192.168.1.1", "private"),
            ("169.254.169.254", "link-local"),
            ("100.64.0.1", "shared address space (cgnat)"),
            ("100.127.255.255", "shared address space (cgnat)"),
            ("0.0.0.0", "unspecified"),
            ("0.1.2.3", "this-network (0.0.0.0/8)"),
            ("255.255.255.255", "broadcast"),
            ("224.0.0.1", "multicast"),
            ("239.255.255.250", "multicast"),
            ("240.0.0.1", "reserved"),
            ("192.0.2.5", "documentation"),
            ("198.51.100.7", "documentation"),
            ("203.0.113.9", "documentation"),
            ("198.18.0.1", "reserved (benchmarking)"),
            ("198.19.255.255", "reserved (benchmarking)"),
            ("192.0.0.8", "reserved (ietf protocol assignments)"),
            ("192.88.99.1", "reserved (6to4 relay anycast)"),
        ];
        for (ip, want) in cases {
            assert_eq!(class(ip), Some(want), "{ip}");
        }
    }

    #[test]
    fn allows_public_ipv4_including_range_neighbours() {
        for ip in [
            "8.8.8.8",
            "1.1.1.1",
            "93.184.216.34",
            "9.255.255.255",
            "11.0.0.0",
            "100.63.255.255",
            "100.128.0.0",
            "126.255.255.255",
            "128.0.0.0",
            "169.253.255.255",
            "172.15.255.255",
            "172.32.0.0",
            "192.167.255.255",
            "192.169.0.0",
            "198.17.255.255",
            "198.20.0.0",
            "223.255.255.255",
        ] {
            assert_eq!(class(ip), None, "{ip}");
        }
    }

    #[test]
    fn refuses_internal_ipv6_and_embedded_ipv4_forms() {
        let cases = [
            ("::1", "loopback"),
            ("::", "unspecified"),
            ("fc00::1", "private (unique local)"),
            ("fd12:3456:789a::1", "private (unique local)"),
            ("fe80::1", "link-local"),
            ("febf::1", "link-local"),
            ("fec0::1", "private (site-local)"),
            ("ff02::1", "multicast"),
            ("2001:db8::1", "documentation"),
            ("3fff::1", "documentation"),
            ("100::1", "reserved (discard-only)"),
            ("2001::1", "reserved (ietf protocol assignments, teredo)"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:10.1.2.3", "private"),
            ("::ffff:169.254.169.254", "link-local"),
            ("::127.0.0.1", "loopback"),
            ("::8.8.8.8", "reserved (ipv4-compatible ipv6)"),
            ("64:ff9b::127.0.0.1", "loopback"),
            ("64:ff9b::192.168.0.1", "private"),
            ("64:ff9b:1::1", "private (local-use nat64)"),
            ("2002:7f00:1::1", "loopback"),
            ("2002:a00:1::", "private"),
            ("2002:c0a8:101::1", "private"),
            ("4000::1", "reserved"),
            ("1::1", "reserved"),
        ];
        for (ip, want) in cases {
            assert_eq!(class(ip), Some(want), "{ip}");
        }
    }

    #[test]
    fn allows_public_ipv6_and_public_embedded_forms() {
        for ip in [
            "2606:4700:4700::1111",
            "2a00:1450:4001:82a::200e",
            "::ffff:8.8.8.8",
            "64:ff9b::8.8.8.8",
            "2002:808:808::1",
        ] {
            assert_eq!(class(ip), None, "{ip}");
        }
    }

    #[test]
    fn check_url_handles_literals_schemes_and_odd_ipv4_spellings() {
        let refused = |u: &str| {
            let url = Url::parse(u).unwrap_or_else(|e| panic!("{u}: {e}"));
            check_url(&url, &Guard::new(false))
        };
        assert!(matches!(
            refused("http://127.0.0.1:8080/"),
            Err(UrlRefused::Blocked(Refused {
                why: "loopback",
                ..
            }))
        ));
        assert!(matches!(
            refused("http://[::1]/"),
            Err(UrlRefused::Blocked(Refused {
                why: "loopback",
                ..
            }))
        ));
        assert!(matches!(
            refused("http://[::ffff:7f00:1]/"),
            Err(UrlRefused::Blocked(Refused {
                why: "loopback",
                ..
            }))
        ));
        // WHATWG URL parsing turns decimal/hex/short IPv4 spellings into the address.
        assert!(matches!(
            refused("http://2130706433/"),
            Err(UrlRefused::Blocked(Refused {
                why: "loopback",
                ..
            }))
        ));
        assert!(matches!(
            refused("http://0x7f.1/"),
            Err(UrlRefused::Blocked(Refused {
                why: "loopback",
                ..
            }))
        ));
        assert!(matches!(
            refused("http://169.254.169.254/latest/meta-data"),
            Err(UrlRefused::Blocked(_))
        ));
        assert!(matches!(
            refused("file:///etc/passwd"),
            Err(UrlRefused::BadUrl(_))
        ));
        assert!(matches!(
            refused("ftp://example.com/"),
            Err(UrlRefused::BadUrl(_))
        ));
        assert!(refused("https://example.com/feed").is_ok());
        assert!(refused("http://8.8.8.8/").is_ok());
        let url = Url::parse("http://127.0.0.1/").unwrap_or_else(|e| panic!("{e}"));
        assert!(check_url(&url, &Guard::new(true)).is_ok());
        let exempt = Guard {
            allow_private: false,
            exempt: Some(IpAddr::from([127, 0, 0, 1])),
        };
        assert!(check_url(&url, &exempt).is_ok());
        let other = Url::parse("http://127.0.0.2/").unwrap_or_else(|e| panic!("{e}"));
        assert!(check_url(&other, &exempt).is_err());
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn fake() -> Arc<dyn Lookup> {
        Arc::new(FakeDns(HashMap::from([
            ("rebind.test", vec![ip("127.0.0.1")]),
            ("metadata.test", vec![ip("169.254.169.254"), ip("fd00::1")]),
            ("mixed.test", vec![ip("10.0.0.1"), ip("93.184.216.34")]),
            ("public.test", vec![ip("93.184.216.34")]),
            ("empty.test", vec![]),
        ])))
    }

    #[tokio::test]
    async fn resolver_refuses_names_resolving_to_internal_addresses() {
        let r = GuardedResolver::new(fake(), Guard::new(false));
        match r.resolve_host("rebind.test".into()).await {
            Err(ResolveError::Blocked(Refused { why, addr })) => {
                assert_eq!(why, "loopback");
                assert!(
                    addr.contains("rebind.test") && addr.contains("127.0.0.1"),
                    "{addr}"
                );
            }
            other => panic!("expected blocked, got {other:?}"),
        }
        assert!(matches!(
            r.resolve_host("metadata.test".into()).await,
            Err(ResolveError::Blocked(Refused {
                why: "link-local",
                ..
            }))
        ));
        let mixed = r
            .resolve_host("mixed.test".into())
            .await
            .map_err(|e| e.to_string());
        assert_eq!(
            mixed,
            Ok(vec![ip("93.184.216.34")]),
            "private answers are filtered out"
        );
        assert_eq!(
            r.resolve_host("public.test".into())
                .await
                .map_err(|e| e.to_string()),
            Ok(vec![ip("93.184.216.34")])
        );
        assert!(matches!(
            r.resolve_host("nowhere.test".into()).await,
            Err(ResolveError::Lookup(LookupFailed { .. }))
        ));
        assert!(matches!(
            r.resolve_host("empty.test".into()).await,
            Err(ResolveError::Lookup(LookupFailed { .. }))
        ));
    }

    #[tokio::test]
    async fn resolver_allows_everything_when_private_networks_allowed() {
        let r = GuardedResolver::new(fake(), Guard::new(true));
        assert_eq!(
            r.resolve_host("rebind.test".into())
                .await
                .map_err(|e| e.to_string()),
            Ok(vec![ip("127.0.0.1")])
        );
        assert_eq!(
            r.resolve_host("mixed.test".into())
                .await
                .map_err(|e| e.to_string())
                .map(|v| v.len()),
            Ok(2)
        );
    }
}

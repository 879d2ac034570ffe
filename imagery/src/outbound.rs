//! The outbound-request policy: which URLs and local files a server or worker may read when a user
//! names them (STAC catalogues, their asset hrefs, token endpoints, model downloads).
//!
//! - Only `http` and `https` URLs are fetched. After DNS resolution, loopback, private, shared
//!   (carrier-grade NAT), link-local (`169.254.169.254` included), multicast, unspecified and reserved
//!   addresses are refused unless an administrator allowed the host with `--allow-host HOST[:PORT]`
//!   (`GROUNDWORK_ALLOW_HOSTS`, comma-separated) or the URL lies under a prefix the installation serves
//!   itself (the demo catalogue under `/demo/stac/`).
//! - Clients built by [`OutboundPolicy::client_builder`] check again at connection time: their DNS
//!   resolver drops refused addresses (so a name that changes its answer after the check still cannot
//!   reach them), and every redirect is checked like the first URL.
//! - A local path or `file://` URL is read only under a directory an administrator named with
//!   `--catalog-root DIR` (`GROUNDWORK_CATALOG_ROOTS`), compared after resolving symbolic links and
//!   `..`. The trusted local command line ([`OutboundPolicy::trusted`]) reads any file and address.
//! - Asset hrefs are accepted as `http(s)` URLs only (or, for a catalogue under a catalogue root, as
//!   files under that root); `/vsi…` paths and other schemes are never handed to GDAL.
//!
//! The decisions are pure functions of the URL, the resolved addresses and the policy, so they are
//! tested without sending traffic anywhere ([`classify`], [`OutboundPolicy::check_syntax`],
//! [`OutboundPolicy::check_addresses`]).

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use reqwest::Url;

/// Where an IP address points, as far as the policy cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressClass {
    /// A global unicast address.
    Public,
    /// `127.0.0.0/8`, `::1`.
    Loopback,
    /// RFC 1918, `100.64.0.0/10` (shared), `fc00::/7` (unique local), `fec0::/10` (site-local).
    Private,
    /// `169.254.0.0/16` (cloud metadata services live here), `fe80::/10`.
    LinkLocal,
    /// `224.0.0.0/4`, `ff00::/8`.
    Multicast,
    /// `0.0.0.0/8`, `::`.
    Unspecified,
    /// Broadcast, documentation, benchmarking, IETF and future-use ranges, discard and Teredo
    /// prefixes: nothing a catalogue legitimately lives on.
    Reserved,
}

impl AddressClass {
    /// The class in words, for refusal messages.
    #[must_use]
    pub fn describe(self) -> &'static str {
        match self {
            AddressClass::Public => "a public address",
            AddressClass::Loopback => "a loopback address",
            AddressClass::Private => "a private address",
            AddressClass::LinkLocal => "a link-local address",
            AddressClass::Multicast => "a multicast address",
            AddressClass::Unspecified => "an unspecified address",
            AddressClass::Reserved => "a reserved address",
        }
    }
}

/// Classifies an address. IPv4 addresses embedded in IPv6 (mapped `::ffff:a.b.c.d`, NAT64
/// `64:ff9b::/96`, 6to4 `2002::/16`) are classified as the IPv4 address they carry.
#[must_use]
pub fn classify(ip: IpAddr) -> AddressClass {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> AddressClass {
    let [a, b, c, _] = ip.octets();
    match (a, b, c) {
        (0, _, _) => AddressClass::Unspecified,
        (127, _, _) => AddressClass::Loopback,
        (10, _, _) | (192, 168, _) => AddressClass::Private,
        (172, b, _) if (16..32).contains(&b) => AddressClass::Private,
        (100, b, _) if (64..128).contains(&b) => AddressClass::Private,
        (169, 254, _) => AddressClass::LinkLocal,
        (224..=239, _, _) => AddressClass::Multicast,
        (240..=255, _, _)
        | (192, 0, 0 | 2)
        | (198, 51, 100)
        | (203, 0, 113)
        | (192, 88, 99)
        | (198, 18 | 19, _) => AddressClass::Reserved,
        _ => AddressClass::Public,
    }
}

fn classify_v6(ip: Ipv6Addr) -> AddressClass {
    if ip.is_unspecified() {
        return AddressClass::Unspecified;
    }
    if ip.is_loopback() {
        return AddressClass::Loopback;
    }
    if let Some(v4) = ip.to_ipv4_mapped() {
        return classify_v4(v4);
    }
    let s = ip.segments();
    let embedded = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    match s[0] {
        // NAT64 well-known prefix: the last 32 bits are an IPv4 address.
        0x0064 if s[1] == 0xff9b && s[2..6] == [0; 4] => classify_v4(embedded(s[6], s[7])),
        // 6to4: bits 16–48 are an IPv4 address.
        0x2002 => classify_v4(embedded(s[1], s[2])),
        // IPv4-compatible (deprecated) and the rest of ::/8.
        0x0000 => AddressClass::Reserved,
        // Discard prefix 100::/64.
        0x0100 if s[1..4] == [0; 3] => AddressClass::Reserved,
        // Teredo 2001::/32 and documentation 2001:db8::/32.
        0x2001 if s[1] == 0 || s[1] == 0x0db8 => AddressClass::Reserved,
        x if x & 0xfe00 == 0xfc00 => AddressClass::Private,
        x if x & 0xffc0 == 0xfe80 => AddressClass::LinkLocal,
        x if x & 0xffc0 == 0xfec0 => AddressClass::Private,
        x if x & 0xff00 == 0xff00 => AddressClass::Multicast,
        _ => AddressClass::Public,
    }
}

/// A host an administrator allowed, with or without a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedHost {
    /// Lower-case host name or IP address (IPv6 without brackets).
    host: String,
    /// The only port allowed; any port when `None`.
    port: Option<u16>,
}

impl FromStr for AllowedHost {
    type Err = String;

    /// `HOST`, `HOST:PORT`, `[IPV6]`, `[IPV6]:PORT` or a bare IPv6 address.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let bad = || format!("{s:?} is not HOST or HOST:PORT");
        if s.is_empty() || s.contains(['/', '@', '?', '#', ' ']) || s.contains("://") {
            return Err(bad());
        }
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (h, after) = rest.split_once(']').ok_or_else(bad)?;
            match after {
                "" => (h, None),
                p => (h, Some(p.strip_prefix(':').ok_or_else(bad)?)),
            }
        } else if s.parse::<Ipv6Addr>().is_ok() {
            (s, None)
        } else {
            match s.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (s, None),
            }
        };
        let port = port
            .map(|p| p.parse::<u16>().map_err(|_| bad()))
            .transpose()?;
        let host = normalise_host(host);
        if host.is_empty() || (host.contains(':') && host.parse::<Ipv6Addr>().is_err()) {
            return Err(bad());
        }
        Ok(AllowedHost { host, port })
    }
}

impl fmt::Display for AllowedHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        match self.port {
            Some(p) => write!(f, "{host}:{p}"),
            None => f.write_str(&host),
        }
    }
}

fn normalise_host(h: &str) -> String {
    h.trim_start_matches('[')
        .trim_end_matches(']')
        .trim_end_matches('.')
        .to_ascii_lowercase()
}

/// How every refusal starts (the same words reach a window's or step's reason).
pub const REFUSED: &str = "refused by the outbound-request policy";

/// Why a request or file was refused, or why a name could not be checked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OutboundError {
    /// The policy forbids it; retrying will not help.
    #[error("refused by the outbound-request policy: {0}")]
    Refused(String),
    /// The host name could not be resolved (possibly transient).
    #[error("cannot resolve {host}: {reason}")]
    Resolve {
        /// The host name.
        host: String,
        /// What the resolver said.
        reason: String,
    },
}

/// What [`OutboundPolicy::check_syntax`] leaves to be decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// Allowed whatever the host resolves to (an allowed host, or the trusted command line).
    AnyAddress,
    /// Allowed if every address the host resolves to is public.
    PublicOnly,
}

/// The policy. [`Default`] is the strictest: public `http(s)` only, no local files.
#[derive(Debug, Clone, Default)]
pub struct OutboundPolicy {
    allow_hosts: Vec<AllowedHost>,
    allow_prefixes: Vec<String>,
    catalog_roots: Vec<PathBuf>,
    trusted: bool,
}

/// The number of redirects a policy client follows.
pub const MAX_REDIRECTS: usize = 10;

impl OutboundPolicy {
    /// The policy of the trusted local command line: any address, any local file.
    #[must_use]
    pub fn trusted() -> Self {
        OutboundPolicy {
            trusted: true,
            ..OutboundPolicy::default()
        }
    }

    /// A policy from the administrator's lists (`--allow-host`, `--catalog-root`). Catalogue roots
    /// must exist; they are kept canonical.
    pub fn configured(allow_hosts: &[String], catalog_roots: &[PathBuf]) -> Result<Self, String> {
        let mut p = OutboundPolicy::default();
        for h in allow_hosts.iter().filter(|h| !h.trim().is_empty()) {
            p.allow_hosts.push(h.parse()?);
        }
        for r in catalog_roots {
            p = p.with_catalog_root(r)?;
        }
        Ok(p)
    }

    /// Also allows `host` (any address it resolves to).
    #[must_use]
    pub fn with_allowed_host(mut self, host: AllowedHost) -> Self {
        self.allow_hosts.push(host);
        self
    }

    /// Also allows every URL that starts with `prefix` (e.g. the server's own
    /// `http://127.0.0.1:8080/demo/stac/`); the prefix should end with `/`.
    #[must_use]
    pub fn with_allowed_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.allow_prefixes.push(prefix.into());
        self
    }

    /// Also reads local catalogues under `dir` (which must exist).
    pub fn with_catalog_root(mut self, dir: &Path) -> Result<Self, String> {
        let canonical = std::fs::canonicalize(dir)
            .map_err(|e| format!("catalogue root {}: {e}", dir.display()))?;
        if !canonical.is_dir() {
            return Err(format!(
                "catalogue root {} is not a directory",
                dir.display()
            ));
        }
        self.catalog_roots.push(canonical);
        Ok(self)
    }

    /// Whether this is the trusted command line's policy.
    #[must_use]
    pub fn is_trusted(&self) -> bool {
        self.trusted
    }

    /// The decisions that need no DNS: the scheme, an allowed host or prefix, an address literal.
    pub fn check_syntax(&self, url: &Url) -> Result<Reach, OutboundError> {
        let refuse = |why: String| Err(OutboundError::Refused(why));
        if !matches!(url.scheme(), "http" | "https") {
            return refuse(format!(
                "only http and https URLs are fetched, not {}:",
                url.scheme()
            ));
        }
        if self.trusted {
            return Ok(Reach::AnyAddress);
        }
        let Some(host) = url.host_str() else {
            return refuse("the URL names no host".into());
        };
        let host = normalise_host(host);
        let port = url.port_or_known_default();
        if self
            .allow_prefixes
            .iter()
            .any(|p| under_prefix(url.as_str(), p))
        {
            return Ok(Reach::AnyAddress);
        }
        let named: Vec<&AllowedHost> = self.allow_hosts.iter().filter(|a| a.host == host).collect();
        if named.iter().any(|a| a.port.is_none() || a.port == port) {
            return Ok(Reach::AnyAddress);
        }
        if !named.is_empty() {
            let ports: Vec<String> = named
                .iter()
                .filter_map(|a| a.port.map(|p| p.to_string()))
                .collect();
            return refuse(format!(
                "{host} is allowed on port {} only",
                ports.join(", ")
            ));
        }
        if let Ok(ip) = host.parse::<IpAddr>() {
            let class = classify(ip);
            if class != AddressClass::Public {
                return refuse(not_public(&host, ip, class));
            }
        } else if host == "localhost" || host.ends_with(".localhost") {
            return refuse(not_public(
                &host,
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                AddressClass::Loopback,
            ));
        }
        Ok(Reach::PublicOnly)
    }

    /// Parses `url` and makes the decisions [`OutboundPolicy::check_syntax`] makes; a host name is
    /// resolved and judged only when the URL is fetched.
    pub fn check_url_syntax(&self, url: &str) -> Result<Url, OutboundError> {
        let parsed = parse_url(url)?;
        self.check_syntax(&parsed)?;
        Ok(parsed)
    }

    /// The decision on the addresses `host` resolved to, when its URL needs public addresses: every
    /// one must be public.
    pub fn check_addresses(&self, host: &str, addrs: &[IpAddr]) -> Result<(), OutboundError> {
        if addrs.is_empty() {
            return Err(OutboundError::Resolve {
                host: host.to_owned(),
                reason: "no addresses".into(),
            });
        }
        for &ip in addrs {
            let class = classify(ip);
            if class != AddressClass::Public {
                return Err(OutboundError::Refused(not_public(host, ip, class)));
            }
        }
        Ok(())
    }

    /// Checks a URL completely: its syntax, then (for a host that must be public) what it resolves to.
    pub async fn check_url(&self, url: &str) -> Result<Url, OutboundError> {
        let parsed = parse_url(url)?;
        if self.check_syntax(&parsed)? == Reach::PublicOnly {
            self.addresses(&parsed, Reach::PublicOnly).await?;
        }
        Ok(parsed)
    }

    /// The addresses a connection to `url` may use: its host resolved (an address literal as is), all
    /// of them for an allowed host, else only if every one is public. For callers that connect
    /// themselves to what was checked (the GDAL proxy).
    pub async fn checked_addresses(&self, url: &str) -> Result<Vec<SocketAddr>, OutboundError> {
        let parsed = parse_url(url)?;
        let reach = self.check_syntax(&parsed)?;
        let port = parsed.port_or_known_default().unwrap_or(443);
        Ok(self
            .addresses(&parsed, reach)
            .await?
            .into_iter()
            .map(|ip| SocketAddr::new(ip, port))
            .collect())
    }

    /// The addresses `parsed`'s host stands for (an address literal as is, a name resolved), judged
    /// by [`OutboundPolicy::check_addresses`] when `reach` asks for public ones.
    async fn addresses(&self, parsed: &Url, reach: Reach) -> Result<Vec<IpAddr>, OutboundError> {
        let host = parsed
            .host_str()
            .ok_or_else(|| OutboundError::Refused("the URL names no host".into()))?;
        let addrs = match normalise_host(host).parse::<IpAddr>() {
            Ok(ip) => vec![ip],
            Err(_) => resolve(host, parsed.port_or_known_default().unwrap_or(443)).await?,
        };
        if reach == Reach::PublicOnly {
            self.check_addresses(host, &addrs)?;
        }
        Ok(addrs)
    }

    /// Checks a local path or `file://` URL and returns the canonical path it names. Refused unless
    /// it lies under a catalogue root (or the policy is trusted). The refusal does not say whether
    /// the file exists.
    pub fn check_local(&self, path: &str) -> Result<PathBuf, OutboundError> {
        let raw = match path.strip_prefix("file://") {
            Some(rest) => rest.strip_prefix("localhost").unwrap_or(rest),
            None => path,
        };
        if raw.starts_with("/vsi") {
            return Err(OutboundError::Refused(
                "GDAL virtual file systems (/vsi…) are not accepted; give an http(s) URL".into(),
            ));
        }
        if self.trusted {
            return Ok(PathBuf::from(raw));
        }
        let refused = || {
            OutboundError::Refused(
                "local files are read only under a directory an administrator allowed with \
                 --catalog-root"
                    .into(),
            )
        };
        if self.catalog_roots.is_empty() || raw.contains('\0') {
            return Err(refused());
        }
        let canonical = std::fs::canonicalize(raw).map_err(|_| refused())?;
        if self.catalog_roots.iter().any(|r| canonical.starts_with(r)) {
            Ok(canonical)
        } else {
            Err(refused())
        }
    }

    /// Whether `s` is a local path or `file://` URL rather than a URL with a scheme.
    #[must_use]
    pub fn is_local(s: &str) -> bool {
        s.starts_with("file://") || s.starts_with('/') || !s.contains("://")
    }

    /// A `reqwest` client builder whose resolver and redirect policy enforce this policy at
    /// connection time. Requests go direct (no proxy from the environment), since a proxy would
    /// resolve and reach hosts outside the policy's view.
    pub fn client_builder(&self) -> reqwest::ClientBuilder {
        let policy = Arc::new(self.clone());
        let redirect_policy = policy.clone();
        let any_address: Vec<String> = policy
            .allow_hosts
            .iter()
            .map(|a| a.host.clone())
            .chain(
                policy
                    .allow_prefixes
                    .iter()
                    .filter_map(|p| Url::parse(p).ok())
                    .filter_map(|u| u.host_str().map(normalise_host)),
            )
            .collect();
        reqwest::Client::builder()
            .no_proxy()
            .dns_resolver(Arc::new(PolicyResolver {
                policy: policy.clone(),
                any_address: Arc::new(any_address),
            }))
            .redirect(reqwest::redirect::Policy::custom(move |attempt| {
                if attempt.previous().len() >= MAX_REDIRECTS {
                    return attempt.error(format!("more than {MAX_REDIRECTS} redirects"));
                }
                match redirect_policy.check_syntax(attempt.url()) {
                    Ok(_) => attempt.follow(),
                    Err(e) => attempt.error(e),
                }
            }))
    }
}

fn parse_url(url: &str) -> Result<Url, OutboundError> {
    Url::parse(url.trim()).map_err(|e| OutboundError::Refused(format!("not a valid URL ({e})")))
}

/// Whether `url` lies under an allowed prefix: it starts with it, or is the prefix without its
/// trailing `/` (`…/demo/stac` under `…/demo/stac/`).
fn under_prefix(url: &str, prefix: &str) -> bool {
    url.starts_with(prefix) || (prefix.ends_with('/') && url == prefix.trim_end_matches('/'))
}

fn not_public(host: &str, ip: IpAddr, class: AddressClass) -> String {
    let named = if host == ip.to_string() {
        format!("{host} is {}", class.describe())
    } else {
        format!("{host} resolves to {ip}, {}", class.describe())
    };
    format!(
        "{named}; an administrator can allow the host with --allow-host (GROUNDWORK_ALLOW_HOSTS)"
    )
}

async fn resolve(host: &str, port: u16) -> Result<Vec<IpAddr>, OutboundError> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let found =
        tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| OutboundError::Resolve {
                host: host.to_owned(),
                reason: e.to_string(),
            })?;
    Ok(found.map(|a| a.ip()).collect())
}

/// A DNS resolver that returns only the addresses the policy lets a name reach: all of them for an
/// allowed host, the public ones otherwise.
struct PolicyResolver {
    policy: Arc<OutboundPolicy>,
    /// The host names that may resolve to any address (allowed hosts, allowed prefixes' hosts).
    any_address: Arc<Vec<String>>,
}

impl reqwest::dns::Resolve for PolicyResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let (policy, any_address) = (self.policy.clone(), self.any_address.clone());
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs = resolve(&host, 0).await?;
            let normal = normalise_host(&host);
            let any = policy.trusted || any_address.contains(&normal);
            let kept: Vec<SocketAddr> = addrs
                .iter()
                .filter(|ip| any || classify(**ip) == AddressClass::Public)
                .map(|ip| SocketAddr::new(*ip, 0))
                .collect();
            if kept.is_empty() {
                let refusal = policy
                    .check_addresses(&host, &addrs)
                    .err()
                    .unwrap_or_else(|| OutboundError::Refused(format!("{host}: no address")));
                return Err(Box::new(refusal) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(kept.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Per-host results of [`OutboundPolicy::check_url`] for one acquisition, so each host is resolved
/// and judged once rather than for every asset.
#[derive(Debug, Default)]
pub struct CheckCache {
    hosts: Mutex<HashMap<String, Result<(), OutboundError>>>,
}

impl CheckCache {
    /// Checks an asset href: an `http(s)` URL under the policy (cached by scheme, host and port), or
    /// a local file under a catalogue root. Returns the href GDAL may open.
    pub async fn check_href(
        &self,
        policy: &OutboundPolicy,
        href: &str,
    ) -> Result<String, OutboundError> {
        if href.starts_with("/vsi") {
            return Err(OutboundError::Refused(
                "the asset href is a GDAL virtual file system path (/vsi…); only http(s) asset \
                 hrefs are read"
                    .into(),
            ));
        }
        if OutboundPolicy::is_local(href) {
            if policy.trusted || !policy.catalog_roots.is_empty() {
                return policy
                    .check_local(href)
                    .map(|p| p.to_string_lossy().into_owned());
            }
            return Err(OutboundError::Refused(
                "the asset href is a local path; only http(s) asset hrefs are read".into(),
            ));
        }
        let url = parse_url(href)?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(OutboundError::Refused(format!(
                "asset hrefs are read over http(s) only, not {}:",
                url.scheme()
            )));
        }
        let key = format!(
            "{}://{}:{}",
            url.scheme(),
            url.host_str().unwrap_or_default(),
            url.port_or_known_default().unwrap_or_default()
        );
        let prefixed = policy.allow_prefixes.iter().any(|p| under_prefix(href, p));
        if !prefixed && let Some(known) = self.hosts.lock().ok().and_then(|c| c.get(&key).cloned())
        {
            return known.map(|()| href.to_owned());
        }
        let result = policy.check_url(href).await.map(|_| ());
        if !prefixed
            && !matches!(result, Err(OutboundError::Resolve { .. }))
            && let Ok(mut c) = self.hosts.lock()
        {
            c.insert(key, result.clone());
        }
        result.map(|()| href.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn addresses_are_classified() {
        use AddressClass::*;
        for (a, class) in [
            ("8.8.8.8", Public),
            ("1.1.1.1", Public),
            ("172.32.0.1", Public),
            ("100.128.0.1", Public),
            ("127.0.0.1", Loopback),
            ("127.255.255.254", Loopback),
            ("10.1.2.3", Private),
            ("172.16.0.1", Private),
            ("172.31.255.255", Private),
            ("192.168.1.1", Private),
            ("100.64.0.1", Private),
            ("169.254.169.254", LinkLocal),
            ("224.0.0.1", Multicast),
            ("239.255.255.250", Multicast),
            ("0.0.0.0", Unspecified),
            ("0.1.2.3", Unspecified),
            ("255.255.255.255", Reserved),
            ("240.0.0.1", Reserved),
            ("192.0.2.10", Reserved),
            ("198.18.0.1", Reserved),
            ("203.0.113.5", Reserved),
            ("2606:4700:4700::1111", Public),
            ("::1", Loopback),
            ("::", Unspecified),
            ("::ffff:127.0.0.1", Loopback),
            ("::ffff:169.254.169.254", LinkLocal),
            ("::ffff:8.8.8.8", Public),
            ("64:ff9b::a9fe:a9fe", LinkLocal),
            ("2002:7f00:1::", Loopback),
            ("2002:0808:0808::", Public),
            ("::127.0.0.1", Reserved),
            ("fc00::1", Private),
            ("fd12:3456::1", Private),
            ("fe80::1", LinkLocal),
            ("fec0::1", Private),
            ("ff02::1", Multicast),
            ("2001:db8::1", Reserved),
            ("2001:0:4136:e378::1", Reserved),
            ("100::1", Reserved),
        ] {
            assert_eq!(classify(ip(a)), class, "{a}");
        }
    }

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    fn refused(r: Result<Reach, OutboundError>) -> String {
        match r {
            Err(OutboundError::Refused(why)) => why,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn the_default_policy_refuses_schemes_and_internal_literals() {
        let p = OutboundPolicy::default();
        assert_eq!(
            p.check_syntax(&url("https://earth-search.example/v1")),
            Ok(Reach::PublicOnly)
        );
        for bad in [
            "file:///etc/passwd",
            "ftp://example.org/x",
            "gopher://example.org/",
        ] {
            assert!(
                refused(p.check_syntax(&url(bad))).contains("only http and https"),
                "{bad}"
            );
        }
        for (bad, class) in [
            ("http://127.0.0.1:5432/", "loopback"),
            ("http://169.254.169.254/latest/meta-data/", "link-local"),
            ("http://10.0.0.7/stac", "private"),
            ("http://[::1]:8080/", "loopback"),
            ("http://[::ffff:7f00:1]/", "loopback"),
            ("http://[fd00::1]/", "private"),
            ("http://0.0.0.0:8080/", "unspecified"),
            ("http://224.0.0.1/", "multicast"),
            ("http://localhost:8080/", "loopback"),
            ("http://api.localhost/", "loopback"),
            // Other spellings of 127.0.0.1 are normalised by the URL parser before the check.
            ("http://2130706433/", "loopback"),
            ("http://0x7f.1/", "loopback"),
            ("http://127.1/", "loopback"),
        ] {
            let why = refused(p.check_syntax(&url(bad)));
            assert!(why.contains(class), "{bad}: {why}");
            assert!(why.contains("--allow-host"), "{bad}: {why}");
        }
    }

    #[test]
    fn allowed_hosts_and_prefixes_admit_internal_addresses() {
        let p = OutboundPolicy::configured(
            &[
                "127.0.0.1:9000".into(),
                "MinIO.internal".into(),
                "[::1]".into(),
            ],
            &[],
        )
        .unwrap()
        .with_allowed_prefix("http://127.0.0.1:8080/demo/stac/");
        assert_eq!(
            p.check_syntax(&url("http://127.0.0.1:9000/bucket/a.tif")),
            Ok(Reach::AnyAddress)
        );
        assert_eq!(
            p.check_syntax(&url("http://minio.internal:1234/x")),
            Ok(Reach::AnyAddress)
        );
        assert_eq!(
            p.check_syntax(&url("http://[::1]:5/x")),
            Ok(Reach::AnyAddress)
        );
        assert!(refused(p.check_syntax(&url("http://127.0.0.1:5432/"))).contains("port 9000 only"));
        for under in [
            "http://127.0.0.1:8080/demo/stac/search",
            "http://127.0.0.1:8080/demo/stac",
        ] {
            assert_eq!(
                p.check_syntax(&url(under)),
                Ok(Reach::AnyAddress),
                "{under}"
            );
        }
        assert!(
            refused(p.check_syntax(&url("http://127.0.0.1:8080/demo/stacked"))).contains("port")
        );
        // The prefix does not open the rest of that server.
        assert!(
            refused(p.check_syntax(&url("http://127.0.0.1:8080/api/v1/me"))).contains("port 9000")
        );
        assert!(refused(p.check_syntax(&url("http://127.0.0.2/"))).contains("loopback"));
        // Still no other schemes.
        assert!(
            refused(p.check_syntax(&url("ftp://127.0.0.1:9000/"))).contains("only http and https")
        );
        assert_eq!(
            OutboundPolicy::trusted().check_syntax(&url("http://127.0.0.1:1/")),
            Ok(Reach::AnyAddress)
        );
    }

    #[test]
    fn allowed_hosts_parse_strictly() {
        for (s, shown) in [
            ("127.0.0.1", "127.0.0.1"),
            ("127.0.0.1:8080", "127.0.0.1:8080"),
            ("Stac.Example.", "stac.example"),
            ("[::1]:9000", "[::1]:9000"),
            ("::1", "[::1]"),
        ] {
            assert_eq!(s.parse::<AllowedHost>().unwrap().to_string(), shown);
        }
        for bad in [
            "", "http://h", "h/path", "h:port", "h:99999", "user@h", "[::1", "[::1]x",
        ] {
            assert!(bad.parse::<AllowedHost>().is_err(), "{bad}");
        }
    }

    #[test]
    fn resolved_addresses_must_all_be_public() {
        let p = OutboundPolicy::default();
        assert!(
            p.check_addresses("stac.example", &[ip("8.8.8.8"), ip("2606:4700::1")])
                .is_ok()
        );
        let e = p
            .check_addresses("rebind.example", &[ip("8.8.8.8"), ip("169.254.169.254")])
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "refused by the outbound-request policy: rebind.example resolves to 169.254.169.254, a \
             link-local address; an administrator can allow the host with --allow-host \
             (GROUNDWORK_ALLOW_HOSTS)"
        );
        assert!(matches!(
            p.check_addresses("x.example", &[]),
            Err(OutboundError::Resolve { .. })
        ));
    }

    #[test]
    fn local_files_only_under_catalogue_roots() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let inside = root.path().join("catalog.json");
        std::fs::write(&inside, "{}").unwrap();
        std::fs::write(outside.path().join("secret.json"), "{}").unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink(outside.path(), root.path().join("link")).unwrap();
        let strict = OutboundPolicy::default();
        assert!(strict.check_local(inside.to_str().unwrap()).is_err());
        let p = OutboundPolicy::default()
            .with_catalog_root(root.path())
            .unwrap();
        let canonical = std::fs::canonicalize(&inside).unwrap();
        assert_eq!(
            p.check_local(inside.to_str().unwrap()),
            Ok(canonical.clone())
        );
        assert_eq!(
            p.check_local(&format!("file://{}", inside.display())),
            Ok(canonical)
        );
        let escape = format!(
            "{}/../{}/secret.json",
            root.path().display(),
            outside.path().display()
        );
        let missing = format!("{}/nothing.json", root.path().display());
        let through_link = format!("{}/link/secret.json", root.path().display());
        let elsewhere = format!("{}/secret.json", outside.path().display());
        // Outside, missing, escaping and linked-out paths get the same answer.
        let answers: Vec<String> = [
            &elsewhere,
            &escape,
            &through_link,
            &missing,
            &"/etc/passwd".to_owned(),
        ]
        .iter()
        .map(|s| p.check_local(s).unwrap_err().to_string())
        .collect();
        assert!(answers.iter().all(|a| a == &answers[0]), "{answers:?}");
        assert!(answers[0].contains("--catalog-root"));
        assert!(p.check_local("/vsicurl/http://127.0.0.1/x.tif").is_err());
        assert!(
            OutboundPolicy::trusted()
                .check_local("/anything/catalog.json")
                .is_ok()
        );
    }

    #[tokio::test]
    async fn asset_hrefs_are_http_only() {
        let cache = CheckCache::default();
        let p = OutboundPolicy::default().with_allowed_host("127.0.0.1".parse().unwrap());
        for (href, says) in [
            ("/vsicurl/http://example.org/a.tif", "/vsi"),
            ("/etc/passwd", "local path"),
            ("../../secret.tif", "local path"),
            ("file:///etc/passwd", "local path"),
            ("s3://bucket/a.tif", "http(s) only"),
            ("ftp://example.org/a.tif", "http(s) only"),
            ("http://169.254.169.254/latest", "link-local"),
            ("http://[::1]/a.tif", "loopback"),
        ] {
            let why = cache.check_href(&p, href).await.unwrap_err().to_string();
            assert!(why.contains(says), "{href}: {why}");
        }
        assert_eq!(
            cache
                .check_href(&p, "http://127.0.0.1:1/a.tif")
                .await
                .unwrap(),
            "http://127.0.0.1:1/a.tif"
        );
    }
}

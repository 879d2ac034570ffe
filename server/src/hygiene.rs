//! HTTP hygiene: the security headers every response carries, the cache rules of authenticated
//! downloads and of pages that show a secret, the check of sign-in `next=` targets and the default of
//! the session cookie's `Secure` flag.
//!
//! - Every response: `X-Content-Type-Options: nosniff`.
//! - Every HTML page ([`security_headers`]): a `Content-Security-Policy` ([`content_security_policy`]) and
//!   `Referrer-Policy: same-origin`.
//! - Tiles, downloads and STAC documents ([`private_cache`]): `Cache-Control: private` and
//!   `Vary: Authorization, Cookie`, so shared caches never keep them.
//! - Pages that show a secret once ([`no_store`]): `Cache-Control: no-store`.

use crate::api::AppState;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;
use std::net::IpAddr;

/// A CORS origin as an administrator gives it (`https://viewer.example.org`, `http://127.0.0.1:8000`):
/// an `http(s)` scheme and a host with an optional port, nothing else; `None` for anything else.
#[must_use]
pub fn cors_origin(origin: &str) -> Option<String> {
    let o = origin.trim().trim_end_matches('/');
    let (scheme, authority) = o.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']');
    ((scheme == "http" || scheme == "https")
        && !authority.is_empty()
        && authority.chars().all(plain))
    .then(|| format!("{scheme}://{}", authority.to_ascii_lowercase()))
}

/// The origin (`scheme://host[:port]`) of an XYZ tile template, as a CSP source; none when the template
/// is not an absolute `http(s)` URL. A `{…}` placeholder in the host (e.g. `{s}.tile.example`) becomes a
/// `*` wildcard label.
#[must_use]
pub fn basemap_origin(template: &str) -> Option<String> {
    let (scheme, rest) = template.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return None;
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    // Credentials before `@` are no part of an origin.
    let host_port = authority.rsplit('@').next().unwrap_or_default();
    let mut labels = Vec::new();
    let (host, port) = match host_port.rsplit_once(':') {
        Some((h, p)) if !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()) => (h, Some(p)),
        Some(_) => return None,
        None => (host_port, None),
    };
    for label in host.split('.') {
        if label.starts_with('{') && label.ends_with('}') {
            labels.push("*".to_owned());
        } else if !label.is_empty() && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            labels.push(label.to_ascii_lowercase());
        } else {
            return None;
        }
    }
    // A wildcard stands only for the leftmost label.
    if labels.iter().skip(1).any(|l| l == "*")
        || labels.len() < 2 && labels.first().is_some_and(|l| l == "*")
    {
        return None;
    }
    let port = port.map(|p| format!(":{p}")).unwrap_or_default();
    Some(format!("{scheme}://{}{port}", labels.join(".")))
}

/// The `Content-Security-Policy` of the web pages. Scripts, styles, workers and fetches come from this
/// site only (the map module and MapLibre's worker are served under `/static/`); `style-src` allows
/// inline styles because the templates colour swatches and bars with `style` attributes; `img-src`
/// allows `data:` and `blob:` (MapLibre's control icons and decoded tiles). A basemap's origin joins
/// `img-src` and `connect-src`.
#[must_use]
pub fn content_security_policy(basemap_url: Option<&str>) -> String {
    let extra = basemap_url
        .and_then(basemap_origin)
        .map(|o| format!(" {o}"))
        .unwrap_or_default();
    format!(
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
         img-src 'self' data: blob:{extra}; connect-src 'self'{extra}; worker-src 'self' blob:; \
         font-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
    )
}

fn is_html(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("text/html"))
}

/// Middleware of the whole application: `X-Content-Type-Options: nosniff` on every response, and the
/// content security and referrer policies on every HTML page.
pub async fn security_headers(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if is_html(h) {
        let csp = content_security_policy(state.basemap_url.as_deref());
        // The policy is ASCII: a basemap origin is letters, digits, `.`, `-`, `*` and `:` only.
        if let Ok(v) = HeaderValue::from_str(&csp) {
            h.insert(header::CONTENT_SECURITY_POLICY, v);
        }
        h.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("same-origin"),
        );
    }
    resp
}

/// Middleware of the routes that serve data behind authentication (tiles, downloads, STAC): the answer
/// may be kept by the browser that asked (`Cache-Control: private`, keeping a `max-age` and the
/// validators the handler set) but never by a shared cache, and it varies with the credentials.
pub async fn private_cache(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    let kept: Vec<String> = h
        .get(header::CACHE_CONTROL)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|d| {
                    !d.is_empty()
                        && !d.eq_ignore_ascii_case("public")
                        && !d.eq_ignore_ascii_case("private")
                })
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let value = std::iter::once("private".to_owned())
        .chain(kept)
        .collect::<Vec<_>>()
        .join(", ");
    if let Ok(v) = HeaderValue::from_str(&value) {
        h.insert(header::CACHE_CONTROL, v);
    }
    h.insert(
        header::VARY,
        HeaderValue::from_static("Authorization, Cookie"),
    );
    resp
}

/// Marks a response that shows a secret (a new token, an invitation link) as never to be stored.
#[must_use]
pub fn no_store(mut resp: Response) -> Response {
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// Middleware of pages whose address holds a secret (`/invite/{token}`): every answer is `no-store`.
pub async fn never_store(req: Request, next: Next) -> Response {
    no_store(next.run(req).await)
}

/// Where to go after signing in: `next` when it is a path on this site (one leading `/` followed by
/// anything but `/` or `\`, or `/` alone, with no control characters or whitespace anywhere), else `/`.
#[must_use]
pub fn same_site_path(next: &str) -> &str {
    let mut chars = next.chars();
    let ok = chars.next() == Some('/')
        && !matches!(chars.next(), Some('/' | '\\'))
        && !next
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || c == '\\');
    if ok { next } else { "/" }
}

/// Whether the session cookie carries `Secure`: `forced` when given, else whenever the server listens
/// on an address other than loopback (where users arrive through HTTPS); plain `http://127.0.0.1`
/// keeps working without it.
#[must_use]
pub fn secure_cookies(forced: Option<bool>, listening_on: IpAddr) -> bool {
    forced.unwrap_or_else(|| !listening_on.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_same_site_paths_are_followed_after_sign_in() {
        for good in ["/", "/projects", "/projects/1?tab=runs#x", "/a/b//c"] {
            assert_eq!(same_site_path(good), good, "{good}");
        }
        for bad in [
            "",
            "//evil.example",
            "/\\evil",
            "/\t/evil.example",
            "/\n/evil.example",
            "https://evil.example",
            "evil.example",
            "/ /evil.example",
            "/projects\\..\\x",
            "/a\u{7f}b",
            "/a\u{85}b",
            "\\/evil.example",
        ] {
            assert_eq!(same_site_path(bad), "/", "{bad:?}");
        }
    }

    #[test]
    fn cookies_are_secure_off_loopback_unless_forced() {
        let v4: IpAddr = "127.0.0.1".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let v6: IpAddr = "::1".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let any = IpAddr::from([0, 0, 0, 0]);
        let lan = IpAddr::from([192, 168, 1, 10]);
        assert!(!secure_cookies(None, v4));
        assert!(!secure_cookies(None, v6));
        assert!(secure_cookies(None, any));
        assert!(secure_cookies(None, lan));
        assert!(secure_cookies(Some(true), v4));
        assert!(!secure_cookies(Some(false), any));
    }

    #[test]
    fn basemap_origins_are_scheme_host_and_port() {
        assert_eq!(
            basemap_origin("https://tile.example.org/{z}/{x}/{y}.png").as_deref(),
            Some("https://tile.example.org")
        );
        assert_eq!(
            basemap_origin("http://127.0.0.1:9000/t/{z}/{x}/{y}.png?key=1").as_deref(),
            Some("http://127.0.0.1:9000")
        );
        assert_eq!(
            basemap_origin("https://{s}.tile.example.org/{z}/{x}/{y}.png").as_deref(),
            Some("https://*.tile.example.org")
        );
        assert_eq!(basemap_origin("/tiles/{z}/{x}/{y}.png"), None);
        assert_eq!(basemap_origin("javascript://x"), None);
        assert_eq!(basemap_origin("https://a.example; script-src *"), None);
        let csp = content_security_policy(Some("https://tile.example.org/{z}/{x}/{y}.png"));
        assert!(csp.contains("img-src 'self' data: blob: https://tile.example.org;"));
        assert!(csp.contains("connect-src 'self' https://tile.example.org;"));
    }
}

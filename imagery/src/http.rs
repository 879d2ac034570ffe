//! Polite HTTP: retries with exponential backoff and jitter, a per-host concurrency limit and rate limit.
//!
//! Every remote read (STAC pages, token requests, COG range reads through GDAL) goes through
//! [`HttpContext`], so one throttling host slows its own requests down without failing the run.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;
use serde::{Deserialize, Serialize};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::{Error, Result, redact};
use crate::outbound::{CheckCache, OutboundError, OutboundPolicy, REFUSED};

/// Retry policy for transient failures (HTTP 429, 5xx, timeouts, connection errors).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Attempts in total, including the first (default 4).
    pub max_attempts: u32,
    /// Delay before the first retry; doubles each attempt (default 250 ms).
    pub base_delay: Duration,
    /// Upper bound of one delay (default 10 s).
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 4,
            base_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// The delay before retry number `attempt` (1-based): exponential, capped, with ±50 % jitter.
    pub fn delay(&self, attempt: u32) -> Duration {
        let exp = self
            .base_delay
            .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)))
            .min(self.max_delay);
        let jitter: f64 = rand::rng().random_range(0.5..1.5);
        exp.mul_f64(jitter).min(self.max_delay)
    }
}

/// Limits and retries for remote reads.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HttpOptions {
    /// Requests in flight per host (default 16).
    pub per_host_concurrency: usize,
    /// Request starts per second per host; `None` for no rate limit (default `None`).
    pub per_host_rate: Option<f64>,
    /// Retry policy.
    pub retry: RetryPolicy,
    /// Timeout of one HTTP request (default 30 s).
    pub timeout: Duration,
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            per_host_concurrency: 16,
            per_host_rate: None,
            retry: RetryPolicy::default(),
            timeout: Duration::from_secs(30),
        }
    }
}

/// The outcome of one failed attempt.
#[derive(Debug)]
pub(crate) enum Attempt {
    /// Worth retrying (throttled, server error, timeout).
    Transient(String),
    /// Throttled with a `Retry-After` the server named: retried no sooner than that.
    Throttled(String, Duration),
    /// Retrying will not help (404, corrupt file, bad JSON).
    Permanent(String),
}

struct HostSlot {
    permits: Arc<Semaphore>,
    next_start: tokio::sync::Mutex<Instant>,
}

/// Shared HTTP state of one acquisition: client, host limits, token cache.
pub struct HttpContext {
    pub(crate) opts: HttpOptions,
    pub(crate) client: reqwest::Client,
    /// What may be fetched: every request and every asset href is checked against it.
    pub(crate) policy: OutboundPolicy,
    /// Per-host outcomes of asset href checks.
    pub(crate) checks: CheckCache,
    /// Where each asset URL ends up after its redirects (see [`HttpContext::asset_location`]).
    locations: tokio::sync::Mutex<HashMap<String, String>>,
    /// Hosts found to ignore range requests, with the refusal their assets get without a request.
    no_ranges: Mutex<HashMap<String, String>>,
    hosts: Mutex<HashMap<String, Arc<HostSlot>>>,
    pub(crate) tokens: tokio::sync::Mutex<HashMap<String, (String, Instant)>>,
    /// Hrefs signed with a SAS token, with what is needed to sign them again when the token expires.
    pub(crate) signed: tokio::sync::Mutex<HashMap<String, Signature>>,
    /// Cuts a wait between retries short when the work is cancelled.
    cancel: Option<tokio_util::sync::CancellationToken>,
}

impl std::fmt::Debug for HttpContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpContext")
            .field("opts", &self.opts)
            .finish()
    }
}

impl HttpContext {
    /// A context with the given limits, fetching only what `policy` allows.
    pub fn new(opts: HttpOptions, policy: OutboundPolicy) -> Result<HttpContext> {
        let client = policy
            .client_builder()
            .timeout(opts.timeout)
            .user_agent(concat!("groundwork-imagery/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Http {
                url: String::new(),
                reason: format!("building the HTTP client: {e}"),
            })?;
        Ok(HttpContext {
            opts,
            client,
            policy,
            checks: CheckCache::default(),
            locations: tokio::sync::Mutex::new(HashMap::new()),
            no_ranges: Mutex::new(HashMap::new()),
            hosts: Mutex::new(HashMap::new()),
            tokens: tokio::sync::Mutex::new(HashMap::new()),
            signed: tokio::sync::Mutex::new(HashMap::new()),
            cancel: None,
        })
    }

    /// Waits for a free slot on the href's host (concurrency and rate limits); the permit frees it on drop.
    pub(crate) async fn host_permit(&self, href: &str) -> Result<OwnedSemaphorePermit> {
        let host = host_of(href);
        let slot = {
            let mut hosts = self.hosts.lock().map_err(|_| Error::Http {
                url: host.clone(),
                reason: "host table poisoned".into(),
            })?;
            hosts
                .entry(host.clone())
                .or_insert_with(|| {
                    Arc::new(HostSlot {
                        permits: Arc::new(Semaphore::new(self.opts.per_host_concurrency.max(1))),
                        next_start: tokio::sync::Mutex::new(Instant::now()),
                    })
                })
                .clone()
        };
        let permit = slot
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Error::Http {
                url: host.clone(),
                reason: "host limiter closed".into(),
            })?;
        if let Some(rate) = self.opts.per_host_rate.filter(|r| *r > 0.0) {
            let wait = {
                let mut next = slot.next_start.lock().await;
                let now = Instant::now();
                let start = (*next).max(now);
                *next = start + Duration::from_secs_f64(1.0 / rate);
                start - now
            };
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
        }
        Ok(permit)
    }

    /// The same context whose waits between retries end when `cancel` is cancelled (a `Retry-After`
    /// can ask for up to [`MAX_RETRY_AFTER`]).
    #[must_use]
    pub fn with_cancel(mut self, cancel: tokio_util::sync::CancellationToken) -> Self {
        self.cancel = Some(cancel);
        self
    }

    /// Runs `f` under the host limits, retrying transient failures with backoff and jitter.
    pub(crate) async fn with_retry<T, F, Fut>(&self, href: &str, mut f: F) -> Result<T, String>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Attempt>>,
    {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let outcome = {
                let _permit = self.host_permit(href).await.map_err(|e| e.to_string())?;
                f().await
            };
            match outcome {
                Ok(v) => return Ok(v),
                Err(Attempt::Permanent(reason)) => return Err(reason),
                Err(e @ (Attempt::Transient(_) | Attempt::Throttled(..))) => {
                    let (reason, after) = match e {
                        Attempt::Throttled(reason, after) => (reason, Some(after)),
                        Attempt::Transient(reason) | Attempt::Permanent(reason) => (reason, None),
                    };
                    if attempt >= self.opts.retry.max_attempts {
                        return Err(format!("{reason} (gave up after {attempt} attempts)"));
                    }
                    // The server's `Retry-After` wins over a shorter backoff, up to a bound: a
                    // server asking for more than that is given up on with its reason.
                    let delay = match after {
                        Some(after) if after > MAX_RETRY_AFTER => {
                            return Err(format!(
                                "{reason}: the server asks to wait {} s (Retry-After), longer than {} s",
                                after.as_secs(),
                                MAX_RETRY_AFTER.as_secs()
                            ));
                        }
                        Some(after) => after.max(self.opts.retry.delay(attempt)),
                        None => self.opts.retry.delay(attempt),
                    };
                    tracing::debug!(href = %redact(href), attempt, ?delay, %reason, "retrying");
                    match &self.cancel {
                        Some(cancel) => tokio::select! {
                            () = cancel.cancelled() => return Err(format!("{reason} (cancelled while waiting to retry)")),
                            () = tokio::time::sleep(delay) => {}
                        },
                        None => tokio::time::sleep(delay).await,
                    }
                }
            }
        }
    }

    /// The URL GDAL should open for an asset URL the policy passed: the asset's own, or where its
    /// redirects lead. GDAL follows redirects itself, unseen by the policy; so each asset URL is first
    /// requested here (its first byte) through the policy's client, which checks every redirect, and
    /// GDAL is given the final URL. Cached per URL for the acquisition. A refusal is final; other
    /// failures are transient and keep the URL from GDAL until a retry gets through.
    pub(crate) async fn asset_location(&self, href: &str) -> Result<String, Attempt> {
        if self.policy.is_trusted() || !crate::source::is_url(href) {
            return Ok(href.to_owned());
        }
        if let Some(known) = self.locations.lock().await.get(href) {
            return Ok(known.clone());
        }
        let refused = self
            .no_ranges
            .lock()
            .ok()
            .and_then(|m| m.get(&host_of(href)).cloned());
        if let Some(reason) = refused {
            return Err(Attempt::Permanent(reason));
        }
        let resp = self
            .client
            .get(href)
            .header(reqwest::header::RANGE, "bytes=0-0")
            .send()
            .await
            .map_err(|e| classify_reqwest(&e))?;
        if !resp.status().is_success() {
            return Err(classify_response(&resp));
        }
        // A host that ignores range requests answers the one-byte probe with the whole file: every
        // read of it would download whole files, so it is refused at once, naming the host.
        if resp.status() == reqwest::StatusCode::OK && resp.content_length().is_none_or(|n| n > 1) {
            let host = host_of(resp.url().as_str());
            let reason = format!(
                "{host} ignores HTTP range requests (it answered `Range: bytes=0-0` with the whole file); \
                 COGs are read by ranges: serve them from a host that supports range requests"
            );
            if let Ok(mut m) = self.no_ranges.lock() {
                m.insert(host_of(href), reason.clone());
            }
            return Err(Attempt::Permanent(reason));
        }
        let location = resp.url().to_string();
        drop(resp);
        self.locations
            .lock()
            .await
            .insert(href.to_owned(), location.clone());
        Ok(location)
    }

    /// The href signed again with a new token, when `href` was signed with a SAS token (which the
    /// host refused: it expired). `None` for an href that was never signed. Concurrent reads that hit
    /// the same expired token share one renewal.
    pub(crate) async fn resign(&self, href: &str) -> Result<Option<String>> {
        let Some(sig) = self.signed.lock().await.get(href).cloned() else {
            return Ok(None);
        };
        let token =
            crate::source::token_other_than(&sig.endpoint, &sig.collection, Some(&sig.token), self)
                .await?;
        let renewed = crate::source::sign_href(&sig.unsigned, &token);
        tracing::info!(href = %redact(&sig.unsigned), collection = %sig.collection, "SAS token renewed");
        self.signed
            .lock()
            .await
            .insert(renewed.clone(), Signature { token, ..sig });
        Ok(Some(renewed))
    }

    /// GETs a URL and parses JSON, with retries.
    pub(crate) async fn get_json(&self, url: &str) -> Result<serde_json::Value> {
        self.request_json(reqwest::Method::GET, url, None).await
    }

    /// Sends a request (with an optional JSON body) to a URL the policy allows and parses the JSON
    /// response, reading at most [`MAX_JSON_BYTES`]; transient failures are retried. A refusal by
    /// the policy is not retried.
    pub(crate) async fn request_json(
        &self,
        method: reqwest::Method,
        url: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<serde_json::Value> {
        let failed = |reason: String| Error::Http {
            url: redact(url),
            reason,
        };
        match self.policy.check_url(url).await {
            Ok(_) => {}
            Err(e @ OutboundError::Refused(_)) => return Err(failed(e.to_string())),
            // Resolution failures may pass: the request below retries them.
            Err(OutboundError::Resolve { .. }) => {}
        }
        self.with_retry(url, || async {
            let mut req = self.client.request(method.clone(), url);
            if let Some(b) = body {
                req = req.json(b);
            }
            let mut resp = req.send().await.map_err(|e| classify_reqwest(&e))?;
            if !resp.status().is_success() {
                return Err(classify_response(&resp));
            }
            if resp
                .content_length()
                .is_some_and(|n| n > MAX_JSON_BYTES as u64)
            {
                return Err(Attempt::Permanent(too_large()));
            }
            let mut bytes = Vec::new();
            while let Some(chunk) = resp.chunk().await.map_err(|e| classify_reqwest(&e))? {
                if bytes.len() + chunk.len() > MAX_JSON_BYTES {
                    return Err(Attempt::Permanent(too_large()));
                }
                bytes.extend_from_slice(&chunk);
            }
            serde_json::from_slice::<serde_json::Value>(&bytes)
                .map_err(|e| Attempt::Permanent(format!("invalid JSON: {e}")))
        })
        .await
        .map_err(failed)
    }
}

/// How an href was signed: the href without the token, and where its token came from.
#[derive(Debug, Clone)]
pub(crate) struct Signature {
    /// The href as the catalogue gave it.
    pub unsigned: String,
    /// The token service.
    pub endpoint: String,
    /// The collection the token is for.
    pub collection: String,
    /// The token it was signed with.
    pub token: String,
}

/// The largest JSON document read from a catalogue or token endpoint.
pub const MAX_JSON_BYTES: usize = 32 << 20;

fn too_large() -> String {
    format!("the response is larger than {} MiB", MAX_JSON_BYTES >> 20)
}

/// The longest `Retry-After` waited for; a server asking for more fails the request with its reason.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(120);

/// A failed response: [`classify_status`], with a 429's or 503's `Retry-After` (seconds or an HTTP date).
pub(crate) fn classify_response(resp: &reqwest::Response) -> Attempt {
    let code = resp.status().as_u16();
    let after = (code == 429 || code == 503)
        .then(|| resp.headers().get(reqwest::header::RETRY_AFTER))
        .flatten()
        .and_then(|v| v.to_str().ok())
        .and_then(retry_after);
    match (classify_status(code), after) {
        (Attempt::Transient(reason), Some(after)) => Attempt::Throttled(reason, after),
        (other, _) => other,
    }
}

/// A `Retry-After` value: delay seconds, or an HTTP date (a date in the past is no wait).
pub(crate) fn retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let wait = at.with_timezone(&chrono::Utc) - chrono::Utc::now();
    Some(wait.to_std().unwrap_or(Duration::ZERO))
}

pub(crate) fn classify_status(code: u16) -> Attempt {
    if code == 429 || code == 408 || code >= 500 {
        Attempt::Transient(format!("HTTP {code}"))
    } else {
        Attempt::Permanent(format!("HTTP {code}"))
    }
}

pub(crate) fn classify_reqwest(e: &reqwest::Error) -> Attempt {
    // A refusal by the policy's resolver or redirect check is final.
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(refusal @ OutboundError::Refused(_)) = err.downcast_ref::<OutboundError>() {
            return Attempt::Permanent(refusal.to_string());
        }
        let text = err.to_string();
        if let Some(at) = text.find(REFUSED) {
            return Attempt::Permanent(text[at..].to_owned());
        }
        source = err.source();
    }
    if e.is_timeout() || e.is_connect() || e.is_request() || e.is_body() {
        Attempt::Transient(e.to_string())
    } else if let Some(s) = e.status() {
        classify_status(s.as_u16())
    } else {
        Attempt::Transient(e.to_string())
    }
}

/// The host (with port) of a URL, or `local` for file paths.
pub(crate) fn host_of(href: &str) -> String {
    match href.split_once("://") {
        Some((_, rest)) => rest
            .split(['/', '?'])
            .next()
            .unwrap_or_default()
            .to_string(),
        None => "local".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy {
            max_attempts: 10,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
        };
        assert!(p.delay(1) <= Duration::from_millis(150));
        assert!(p.delay(3) >= Duration::from_millis(200));
        assert!(p.delay(9) <= Duration::from_secs(1));
        assert_eq!(
            host_of("http://127.0.0.1:8080/a/b.tif?x=1"),
            "127.0.0.1:8080"
        );
        assert_eq!(host_of("/tmp/a.tif"), "local");
    }

    #[tokio::test]
    async fn hosts_are_limited_in_concurrency_and_rate() {
        let http = std::sync::Arc::new(
            HttpContext::new(
                HttpOptions {
                    per_host_concurrency: 2,
                    per_host_rate: Some(40.0),
                    ..HttpOptions::default()
                },
                OutboundPolicy::default(),
            )
            .unwrap(),
        );
        let in_flight = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let peak = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let start = Instant::now();
        let tasks: Vec<_> = (0..10)
            .map(|_| {
                let (http, in_flight, peak) = (http.clone(), in_flight.clone(), peak.clone());
                tokio::spawn(async move {
                    let _p = http.host_permit("http://h:1/a.tif").await.unwrap();
                    let n = in_flight.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                    peak.fetch_max(n, std::sync::atomic::Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    in_flight.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        // 10 starts at 40/s: the last starts at least 9/40 s after the first.
        assert!(
            start.elapsed() >= Duration::from_millis(220),
            "{:?}",
            start.elapsed()
        );
        assert!(peak.load(std::sync::atomic::Ordering::SeqCst) <= 2);
        // Another host is not slowed by this one.
        let t = Instant::now();
        let _p = http.host_permit("http://other:1/b.tif").await.unwrap();
        assert!(t.elapsed() < Duration::from_millis(20));
    }

    /// A catalogue that answers 429 with `Retry-After` until `after` has passed since its first call.
    async fn throttling_server(
        retry_after: &'static str,
    ) -> (String, std::sync::Arc<std::sync::Mutex<Vec<Instant>>>) {
        use axum::http::{HeaderValue, StatusCode, header};
        use axum::response::IntoResponse;
        let calls = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Instant>::new()));
        let seen = calls.clone();
        let app = axum::Router::new().route(
            "/search",
            axum::routing::get(move || {
                let seen = seen.clone();
                async move {
                    let n = {
                        let mut c = seen.lock().unwrap();
                        c.push(Instant::now());
                        c.len()
                    };
                    if n == 1 {
                        let mut r = (StatusCode::TOO_MANY_REQUESTS, "slow down").into_response();
                        r.headers_mut()
                            .insert(header::RETRY_AFTER, HeaderValue::from_static(retry_after));
                        r
                    } else {
                        axum::Json(serde_json::json!({"ok": true})).into_response()
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (format!("http://{addr}/search"), calls)
    }

    fn quick_retries() -> HttpContext {
        HttpContext::new(
            HttpOptions {
                retry: RetryPolicy {
                    max_attempts: 3,
                    base_delay: Duration::from_millis(10),
                    max_delay: Duration::from_millis(20),
                },
                ..HttpOptions::default()
            },
            OutboundPolicy::default().with_allowed_host("127.0.0.1".parse().unwrap()),
        )
        .unwrap()
    }

    #[tokio::test]
    async fn a_throttled_request_waits_as_long_as_retry_after_says() {
        let (url, calls) = throttling_server("1").await;
        let http = quick_retries();
        let body = http.get_json(&url).await.unwrap();
        assert_eq!(body["ok"], true);
        let calls = calls.lock().unwrap().clone();
        assert_eq!(calls.len(), 2);
        // The backoff alone would have waited 10–20 ms.
        let waited = calls[1] - calls[0];
        assert!(waited >= Duration::from_millis(950), "{waited:?}");
    }

    #[tokio::test]
    async fn a_retry_after_beyond_the_bound_fails_at_once_with_the_reason() {
        let (url, calls) = throttling_server("3600").await;
        let http = quick_retries();
        let err = http.get_json(&url).await.unwrap_err().to_string();
        assert!(err.contains("HTTP 429"), "{err}");
        assert!(err.contains("asks to wait 3600 s (Retry-After)"), "{err}");
        assert_eq!(calls.lock().unwrap().len(), 1);
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        assert_eq!(retry_after("7"), Some(Duration::from_secs(7)));
        assert_eq!(
            retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO),
            "a date in the past is no wait"
        );
        let later = (chrono::Utc::now() + chrono::Duration::seconds(30)).to_rfc2822();
        let wait = retry_after(&later).unwrap();
        assert!(
            wait > Duration::from_secs(25) && wait <= Duration::from_secs(30),
            "{wait:?}"
        );
        assert_eq!(retry_after("soon"), None);
    }

    #[tokio::test]
    async fn cancelling_ends_a_wait_for_retry_after_at_once() {
        let (url, calls) = throttling_server("60").await;
        let cancel = tokio_util::sync::CancellationToken::new();
        let http = quick_retries().with_cancel(cancel.clone());
        let c = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            c.cancel();
        });
        let start = Instant::now();
        let err = http.get_json(&url).await.unwrap_err().to_string();
        assert!(err.contains("cancelled while waiting to retry"), "{err}");
        // Well before the minute the server asked for.
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{:?}",
            start.elapsed()
        );
        assert_eq!(calls.lock().unwrap().len(), 1);
    }
}

//! Sends the webhook deliveries of finished runs: a POST of the JSON body, signed with HMAC-SHA256
//! under the webhook's secret (`X-Groundwork-Signature: sha256=<hex>`), through the outbound-request
//! policy (a user's URL never reaches a private or link-local address the policy does not allow). A
//! 2xx answer delivers; anything else is retried with backoff ([`groundwork_store::webhooks::record`]).

use crate::api::AppState;
use hmac::{KeyInit, Mac};
use std::time::Duration;

/// How often it looks for due deliveries.
pub const INTERVAL: Duration = Duration::from_secs(2);

/// How long one delivery may take.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// `sha256=<hex>` of HMAC-SHA256(`secret`, `body`).
#[must_use]
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// One pass: sends every due delivery; returns how many were delivered.
pub async fn run_once(state: &AppState) -> anyhow::Result<u64> {
    let due = groundwork_store::webhooks::due(&state.pool, 20).await?;
    if due.is_empty() {
        return Ok(0);
    }
    let client = state
        .outbound
        .client_builder()
        .timeout(TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let mut delivered = 0;
    for d in due {
        let body = serde_json::to_vec(&d.body)?;
        let outcome = match state.outbound.check_url_syntax(&d.url) {
            Err(e) => Err((None, e.to_string())),
            Ok(url) => {
                let sent = client
                    .post(url)
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .header("X-Groundwork-Event", d.event.as_str())
                    .header("X-Groundwork-Delivery", d.id.to_string())
                    .header("X-Groundwork-Signature", signature(&d.secret, &body))
                    .body(body)
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status().is_success() => Ok(i32::from(r.status().as_u16())),
                    Ok(r) => Err((
                        Some(i32::from(r.status().as_u16())),
                        format!("the endpoint answered {}", r.status()),
                    )),
                    // The error's text may repeat the URL, whose query can hold a token: say what
                    // kind of failure it was only.
                    Err(e) => Err((None, failure_kind(&e).into())),
                }
            }
        };
        if outcome.is_ok() {
            delivered += 1;
        }
        groundwork_store::webhooks::record(&state.pool, d.id, outcome).await?;
    }
    Ok(delivered)
}

fn failure_kind(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "the endpoint did not answer in time"
    } else if e.is_connect() {
        "no connection to the endpoint (refused, unreachable, or not allowed by the outbound policy)"
    } else {
        "the request failed"
    }
}

#[cfg(test)]
mod tests {
    use super::signature;

    #[test]
    fn signatures_are_rfc_4231_hmac_sha256() {
        // RFC 4231, test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}

//! Accounts: users (Argon2id password hashes), organisations, memberships with roles, sessions,
//! invitations, API tokens, worker tokens and the sign-in rate limit.
//!
//! Secrets handed out (session cookies, invitation links, API and worker tokens) are 256-bit random
//! values; only their SHA-256 digests are stored. Every change writes its audit row
//! ([`crate::audit`]) in the same transaction.

use crate::audit::{self, Entry, Who};
use crate::{Error, Result};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use std::time::Duration;
use uuid::Uuid;

/// How long a session lasts after sign-in.
pub const SESSION_TTL: Duration = Duration::from_secs(14 * 24 * 3600);
/// How long an invitation link stays valid.
pub const INVITATION_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// The sign-in rate-limit window.
pub const LOGIN_WINDOW: Duration = Duration::from_secs(15 * 60);
/// Failed sign-ins per account within [`LOGIN_WINDOW`] before further tries are refused.
pub const MAX_FAILURES_PER_ACCOUNT: i64 = 5;
/// Failed sign-ins per client address within [`LOGIN_WINDOW`] before further tries are refused.
pub const MAX_FAILURES_PER_IP: i64 = 20;
/// Prefix of API tokens.
pub const API_TOKEN_PREFIX: &str = "gw_";
/// Prefix of worker tokens.
pub const WORKER_TOKEN_PREFIX: &str = "gwk_";
/// Shortest password accepted.
pub const MIN_PASSWORD_LEN: usize = 8;

mod invitations;
mod roles;
mod secrets;
mod sessions;
mod tokens;
mod users;

pub use invitations::*;
pub use roles::*;
pub use secrets::*;
pub use sessions::*;
pub use tokens::*;
pub use users::*;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_order_from_viewer_to_owner() {
        assert!(
            Role::Viewer < Role::Member && Role::Member < Role::Admin && Role::Admin < Role::Owner
        );
        assert_eq!("admin".parse::<Role>(), Ok(Role::Admin));
        assert!("root".parse::<Role>().is_err());
    }

    #[test]
    fn emails_and_passwords_are_checked() {
        assert_eq!(validate_email(" a@b.org ").as_deref(), Ok("a@b.org"));
        for bad in ["", "a", "a@b", "@b.org", "a b@c.org", "a@.org", "a@b.org."] {
            assert!(validate_email(bad).is_err(), "{bad}");
        }
        assert!(validate_password("short").is_err());
        assert!(validate_password("long enough").is_ok());
    }

    #[test]
    fn secrets_are_random_and_digests_fixed_length() {
        let a = new_secret(API_TOKEN_PREFIX);
        let b = new_secret(API_TOKEN_PREFIX);
        assert_ne!(a, b);
        assert!(a.starts_with("gw_") && a.len() == 3 + 64);
        assert_eq!(digest(&a).len(), 32);
        assert!(same_secret(&a, &a.clone()) && !same_secret(&a, &b));
    }

    #[tokio::test]
    async fn passwords_verify_and_the_dummy_hash_matches_nothing() {
        let h = hash_password("correct horse").await.unwrap();
        assert!(verify_password("correct horse", &h).await);
        assert!(!verify_password("wrong horse", &h).await);
        assert!(!verify_password("correct horse", DUMMY_HASH).await);
        // A well-formed hash, so checking it costs as much as checking a real one.
        assert!(argon2::password_hash::phc::PasswordHash::new(DUMMY_HASH).is_ok());
    }
}

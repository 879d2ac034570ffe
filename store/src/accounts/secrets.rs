//! Secrets (random, stored as SHA-256 digests), Argon2id password hashes, and input validation.

use super::*;

/// A fresh 256-bit secret as 64 hex characters behind `prefix`.
#[must_use]
pub fn new_secret(prefix: &str) -> String {
    let bytes: [u8; 32] = rand::random();
    format!("{prefix}{}", hex::encode(bytes))
}

/// SHA-256 of a secret, as stored.
#[must_use]
pub fn digest(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

pub(super) fn display_prefix(secret: &str) -> String {
    secret.chars().take(10).collect()
}

/// Constant-time comparison of two short strings (CSRF tokens).
#[must_use]
pub fn same_secret(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Password hashes computed at once in this process. Each takes about 19 MiB and tens of milliseconds
/// of one core: the bound keeps a burst of sign-ins from exhausting memory or the blocking pool; the
/// rest wait their turn.
pub const MAX_CONCURRENT_HASHES: usize = 4;

static HASH_SLOTS: std::sync::LazyLock<tokio::sync::Semaphore> =
    std::sync::LazyLock::new(|| tokio::sync::Semaphore::new(MAX_CONCURRENT_HASHES));

/// Argon2id hash (PHC string) of `password`; CPU-heavy, so it runs on the blocking pool, at most
/// [`MAX_CONCURRENT_HASHES`] at once.
pub async fn hash_password(password: &str) -> Result<String> {
    use argon2::password_hash::PasswordHasher;
    let password = password.to_owned();
    let _slot = HASH_SLOTS
        .acquire()
        .await
        .map_err(|e| Error::Conflict(format!("password hashing stopped: {e}")))?;
    tokio::task::spawn_blocking(move || {
        argon2::Argon2::default()
            .hash_password(password.as_bytes())
            .map(|h| h.to_string())
            .map_err(|e| Error::Conflict(format!("cannot hash the password: {e}")))
    })
    .await
    .map_err(|e| Error::Conflict(format!("password hashing stopped: {e}")))?
}

/// Whether `password` matches the PHC string `hash` (false for a malformed hash).
pub async fn verify_password(password: &str, hash: &str) -> bool {
    use argon2::password_hash::PasswordVerifier;
    let (password, hash) = (password.to_owned(), hash.to_owned());
    let Ok(_slot) = HASH_SLOTS.acquire().await else {
        return false;
    };
    tokio::task::spawn_blocking(move || {
        argon2::Argon2::default()
            .verify_password(password.as_bytes(), hash.as_str())
            .is_ok()
    })
    .await
    .unwrap_or(false)
}

/// A hash nobody's password matches, verified for unknown accounts so that a sign-in takes as long
/// whether or not the account exists.
pub(super) const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$Vq9nqvY0n0qLZ3y3rVvnq4m6iP8x5wXJfYwR8l0N1zs";

/// The normalised email, or why it is not one.
pub fn validate_email(email: &str) -> Result<String, String> {
    let email = email.trim();
    let valid = email.len() <= 254
        && !email.chars().any(char::is_whitespace)
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !domain.contains('@')
        });
    if valid {
        Ok(email.to_owned())
    } else {
        Err(format!("{email:?} is not an email address"))
    }
}

/// Why `password` is not acceptable, if it is not.
pub fn validate_password(password: &str) -> Result<(), String> {
    let n = password.chars().count();
    if n < MIN_PASSWORD_LEN {
        Err(format!(
            "a password needs at least {MIN_PASSWORD_LEN} characters"
        ))
    } else if n > 1024 {
        Err("a password may have at most 1024 characters".into())
    } else {
        Ok(())
    }
}

/// Why `name` is not an acceptable organisation name, if it is not.
pub fn validate_org_name(name: &str) -> Result<String, String> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        Err("an organisation name must have 1–100 characters".into())
    } else {
        Ok(name.to_owned())
    }
}

pub(super) fn is_unique_violation(e: &sqlx::Error, constraint: &str) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.constraint() == Some(constraint))
}

pub(super) fn expiry(ttl: Duration) -> DateTime<Utc> {
    Utc::now() + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::days(1))
}

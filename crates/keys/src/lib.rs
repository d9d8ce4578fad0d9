//! API keys: minting them, keeping only their SHA-256 hashes in SQLite, and
//! checking a presented key against them in constant time.
//!
//! This crate knows nothing of HTTP, dialects or rate-limit clocks: the
//! server asks [`Verifier::check`] who a key belongs to and decides the rest.
//! The secret itself is never stored: a grep of the database finds no part
//! of it.

mod glob;
mod store;

use std::fmt;

pub use glob::glob_match;
pub use store::{KeyStore, Verifier};

/// What a key may be used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// Generation: chat, completions, messages, responses, generate.
    Chat,
    /// Embeddings.
    Embed,
    /// Pulling, copying and deleting models, and `/metrics`.
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 3] = [Scope::Chat, Scope::Embed, Scope::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Chat => "chat",
            Scope::Embed => "embed",
            Scope::Admin => "admin",
        }
    }

    pub fn parse(text: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A key to create.
#[derive(Debug, Clone)]
pub struct NewKey {
    pub name: String,
    /// Empty means chat and embed: admin is only ever given on purpose.
    pub scopes: Vec<Scope>,
    /// Model-name globs (`*`, `?`); empty allows every model.
    pub models: Vec<String>,
    pub rpm: Option<u32>,
    pub tpm: Option<u32>,
    /// Unix seconds after which the key stops working.
    pub expires_at: Option<i64>,
}

/// A stored key, without its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    pub id: i64,
    pub name: String,
    pub scopes: Vec<Scope>,
    pub models: Vec<String>,
    pub rpm: Option<u32>,
    pub tpm: Option<u32>,
    /// Unix seconds.
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

impl KeyInfo {
    pub fn allows(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }

    /// Whether the key may use `model` (always, with no globs).
    pub fn allows_model(&self, model: &str) -> bool {
        self.models.is_empty() || self.models.iter().any(|g| glob_match(g, model))
    }

    /// `active`, `expired` or `revoked` at `now`.
    pub fn status(&self, now: i64) -> &'static str {
        if self.revoked_at.is_some() {
            "revoked"
        } else if self.expires_at.is_some_and(|at| at <= now) {
            "expired"
        } else {
            "active"
        }
    }
}

/// Why a request's key was refused (all are 401s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Missing,
    Invalid,
    Expired,
    Revoked,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Missing => "missing",
            Refusal::Invalid => "invalid",
            Refusal::Expired => "expired",
            Refusal::Revoked => "revoked",
        }
    }
}

/// The outcome of checking a request's key.
#[derive(Debug, Clone)]
pub enum Check {
    /// No key has ever been created: the server is open.
    Open,
    Granted(std::sync::Arc<KeyInfo>),
    Refused(Refusal),
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("key database: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("cannot prepare the key database's folder: {0}")]
    Io(#[from] std::io::Error),
    #[error("a key named '{0}' already exists; revoke it first or pick another name")]
    NameTaken(String),
    #[error("a key name must be 1 to 64 letters, digits, '-', '_' or '.'")]
    BadName,
    #[error("no random numbers from the operating system: {0}")]
    Random(String),
    #[error("the key database was written by a newer shelf (schema {0})")]
    Schema(i64),
}

/// The prefix every secret starts with, so scanners can spot leaked keys.
pub const SECRET_PREFIX: &str = "shelf_";
const SECRET_CHARS: usize = 43;
const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// A fresh secret: `shelf_` and 43 base-62 characters (256 bits).
fn new_secret() -> Result<String, KeyError> {
    let mut secret = String::from(SECRET_PREFIX);
    let mut buf = [0u8; 64];
    while secret.len() < SECRET_PREFIX.len() + SECRET_CHARS {
        getrandom::fill(&mut buf).map_err(|e| KeyError::Random(e.to_string()))?;
        // 248 = 4 × 62: rejecting the rest keeps every character equally likely.
        for b in buf.iter().filter(|b| **b < 248) {
            if secret.len() == SECRET_PREFIX.len() + SECRET_CHARS {
                break;
            }
            secret.push(char::from(ALPHABET[usize::from(*b % 62)]));
        }
    }
    Ok(secret)
}

fn hash(secret: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(secret.as_bytes()).into()
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_prefixed_base62_of_full_length_and_differ() {
        let a = new_secret().unwrap();
        let b = new_secret().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), SECRET_PREFIX.len() + SECRET_CHARS);
        assert!(a.starts_with(SECRET_PREFIX));
        assert!(a[SECRET_PREFIX.len()..]
            .bytes()
            .all(|c| c.is_ascii_alphanumeric()));
    }

    #[test]
    fn names_are_plain() {
        assert!(valid_name("ci-bot.1"));
        assert!(!valid_name(""));
        assert!(!valid_name("a b"));
        assert!(!valid_name("x\u{1b}[31m"));
        assert!(!valid_name(&"a".repeat(65)));
    }

    #[test]
    fn status_reads_revocation_before_expiry() {
        let mut key = KeyInfo {
            id: 1,
            name: "k".into(),
            scopes: vec![Scope::Chat],
            models: vec![],
            rpm: None,
            tpm: None,
            created_at: 0,
            expires_at: Some(10),
            last_used_at: None,
            revoked_at: None,
        };
        assert_eq!(key.status(5), "active");
        assert_eq!(key.status(10), "expired");
        key.revoked_at = Some(3);
        assert_eq!(key.status(5), "revoked");
    }
}

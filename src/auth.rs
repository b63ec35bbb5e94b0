//! API tokens (DESIGN §9): who may call the HTTP API, and with which scope.
//!
//! Tokens come from `WARREN_API_TOKENS` and/or the file named by `auth.tokens_file` in
//! queues.toml. Each entry is `[SCOPE:]TOKEN`: the scope is `jobs` (the default: submit jobs,
//! read their status, list queues) or `admin` (everything, including the DLQ endpoints and
//! cancelling a job). In the variable, entries are separated by commas or whitespace; in the
//! file, one entry per line, with blank lines and `#` comments ignored. A token is at least
//! [`MIN_TOKEN_LEN`] characters long.
//!
//! Clients send `Authorization: Bearer TOKEN` (RFC 6750). Only SHA-256 digests of the tokens
//! are kept in memory, and a presented token is compared with every known digest in constant
//! time (`subtle`), so neither its content nor its length leaks through timing.

use std::path::Path;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::{Error, Result};

/// Shortest accepted token, in characters: 128 bits of entropy as hex, or more as base64.
pub const MIN_TOKEN_LEN: usize = 32;

/// What a token allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    /// Submit jobs, read job status, list queues.
    Jobs,
    /// Everything `Jobs` may, plus the DLQ endpoints, `POST /v1/jobs/{id}/cancel` and pausing
    /// or resuming a queue.
    Admin,
}

impl Scope {
    /// The scope's name as written in token entries and in 403 answers.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Jobs => "jobs",
            Scope::Admin => "admin",
        }
    }
}

/// The configured tokens, as digests. Empty means authentication is off (allowed only on a
/// loopback bind, or with `--insecure-no-auth`).
#[derive(Clone, Default)]
pub struct Tokens {
    digests: Vec<([u8; 32], Scope)>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the tokens, nor their digests.
        f.debug_struct("Tokens")
            .field("count", &self.digests.len())
            .finish()
    }
}

impl Tokens {
    /// Parses entries (`[SCOPE:]TOKEN`) separated by commas, whitespace or newlines; `#`
    /// starts a comment that runs to the end of its line. `source` names where they came
    /// from, for error messages (which never contain a token).
    ///
    /// # Errors
    /// [`crate::ErrorKind::Config`] for an unknown scope or a token shorter than
    /// [`MIN_TOKEN_LEN`], naming the entry by its position and `source`.
    pub fn parse(text: &str, source: &str) -> Result<Self> {
        let mut tokens = Self::default();
        tokens.add(text, source)?;
        Ok(tokens)
    }

    /// Adds the entries in `text` (as in [`Tokens::parse`]).
    ///
    /// # Errors
    /// As [`Tokens::parse`].
    pub fn add(&mut self, text: &str, source: &str) -> Result<()> {
        let entries = text
            .lines()
            .map(|line| line.split('#').next().unwrap_or_default())
            .flat_map(|line| line.split(|c: char| c == ',' || c.is_whitespace()))
            .filter(|e| !e.is_empty());
        for (i, entry) in entries.enumerate() {
            let (scope, token) = match entry.split_once(':') {
                Some(("admin", t)) => (Scope::Admin, t),
                Some(("jobs", t)) => (Scope::Jobs, t),
                Some((other, _)) if other.chars().all(|c| c.is_ascii_alphabetic()) => {
                    return Err(Error::config(format!(
                        "{source}: entry {}: unknown scope `{other}`; expected `admin:` or `jobs:` (or none, meaning jobs)",
                        i + 1
                    )));
                }
                _ => (Scope::Jobs, entry),
            };
            if token.chars().count() < MIN_TOKEN_LEN {
                return Err(Error::config(format!(
                    "{source}: entry {}: a token needs at least {MIN_TOKEN_LEN} characters (e.g. `openssl rand -hex 32`)",
                    i + 1
                )));
            }
            self.digests.push((digest(token), scope));
        }
        Ok(())
    }

    /// Reads entries from `path`, one per line.
    ///
    /// # Errors
    /// An unreadable file, or as [`Tokens::parse`].
    pub fn add_file(&mut self, path: &Path) -> Result<()> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::config(format!("cannot read tokens file {}: {e}", path.display()))
        })?;
        self.add(&text, &format!("tokens file {}", path.display()))
    }

    /// True when no token is configured (authentication off).
    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }

    /// The scope of `presented`, or `None` when it matches no token. Every configured
    /// token is compared, in constant time, whatever matches.
    pub fn scope_of(&self, presented: &str) -> Option<Scope> {
        let d = digest(presented);
        let mut found: Option<Scope> = None;
        for (known, scope) in &self.digests {
            if bool::from(known.ct_eq(&d)) {
                found = found.max(Some(*scope));
            }
        }
        found
    }
}

impl Tokens {
    /// For each configured token, its scope and a 32-byte key derived from it for `purpose`
    /// (HMAC-SHA256 keyed by the token's SHA-256 digest, over `purpose`). The dashboard binds
    /// its session cookies to the token they were opened with this way (`intake::ui`): the
    /// cookie never holds the token, sessions survive a restart and work on every intake that
    /// has the same tokens, and removing a token ends its sessions.
    pub(crate) fn derived_keys(&self, purpose: &[u8]) -> Vec<([u8; 32], Scope)> {
        self.digests
            .iter()
            .map(|(d, scope)| (derive(d, purpose), *scope))
            .collect()
    }

    /// The key [`Tokens::derived_keys`] gives for the token `presented`, with its scope, or
    /// `None` when it matches no configured token (compared as in [`Tokens::scope_of`]).
    pub(crate) fn derived_key(&self, presented: &str, purpose: &[u8]) -> Option<([u8; 32], Scope)> {
        let scope = self.scope_of(presented)?;
        Some((derive(&digest(presented), purpose), scope))
    }
}

/// HMAC-SHA256 keyed by `key`, over `purpose`.
fn derive(key: &[u8; 32], purpose: &[u8]) -> [u8; 32] {
    use hmac::Mac as _;
    let mut mac = <hmac::Hmac<Sha256> as hmac::Mac>::new_from_slice(key)
        .expect("HMAC takes a key of any length");
    mac.update(purpose);
    mac.finalize().into_bytes().into()
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "0123456789abcdef0123456789abcdef";
    const B: &str = "fedcba9876543210fedcba9876543210";

    #[test]
    fn entries_carry_their_scope_and_unknown_tokens_have_none() {
        let t = Tokens::parse(&format!("admin:{A}, {B}\n# comment {A}x"), "test")
            .expect("valid entries");
        assert_eq!(t.scope_of(A), Some(Scope::Admin));
        assert_eq!(t.scope_of(B), Some(Scope::Jobs));
        assert_eq!(t.scope_of(&format!("{A}x")), None);
        assert_eq!(t.scope_of(""), None);
    }

    #[test]
    fn short_tokens_and_unknown_scopes_are_refused_without_echoing_them() {
        let e = Tokens::parse("admin:tiny123", "WARREN_API_TOKENS")
            .expect_err("too short")
            .to_string();
        assert!(
            e.contains("WARREN_API_TOKENS: entry 1") && !e.contains("tiny123"),
            "{e}"
        );
        let e = Tokens::parse(&format!("root:{A}"), "x")
            .expect_err("unknown scope")
            .to_string();
        assert!(e.contains("unknown scope `root`") && !e.contains(A), "{e}");
    }

    #[test]
    fn debug_shows_no_secret() {
        let t = Tokens::parse(A, "test").expect("valid");
        assert_eq!(format!("{t:?}"), "Tokens { count: 1 }");
    }
}

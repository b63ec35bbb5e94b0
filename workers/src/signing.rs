//! Webhook signatures as the Standard Webhooks specification defines them.
//!
//! Specification: <https://github.com/standard-webhooks/standard-webhooks/blob/main/spec/standard-webhooks.md>,
//! "Signature scheme", "Webhook headers" and "Verifying signatures". In short:
//!
//! - A secret is `whsec_` followed by the base64 (standard alphabet) of 24 to 64 random
//!   bytes; the key is those bytes.
//! - The signed content is `{webhook-id}.{webhook-timestamp}.{body}`: the message id, the
//!   attempt's time in unix seconds (decimal) and the request body byte for byte, joined by
//!   full stops.
//! - A signature is `v1,` followed by the base64 of the HMAC-SHA256 (RFC 2104, FIPS 180-4) of
//!   that content under the key. The `webhook-signature` header holds one per secret,
//!   separated by spaces, so that a receiver keeps verifying while a secret is rotated.
//! - `webhook-id` stays the same across retries of one message (receivers deduplicate on it)
//!   and must not contain a `.`; `webhook-timestamp` is the time of each attempt, which a
//!   receiver checks against its clock (the reference libraries allow 5 minutes either way).

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use sha2::Sha256;

/// `webhook-id`: the message id, the same on every attempt (here: the job id).
pub const WEBHOOK_ID: HeaderName = HeaderName::from_static("webhook-id");
/// `webhook-timestamp`: the attempt's time, integer seconds since the unix epoch.
pub const WEBHOOK_TIMESTAMP: HeaderName = HeaderName::from_static("webhook-timestamp");
/// `webhook-signature`: space-separated `v1,<base64>` signatures, one per secret.
pub const WEBHOOK_SIGNATURE: HeaderName = HeaderName::from_static("webhook-signature");

/// The prefix of a symmetric Standard Webhooks secret.
pub const SECRET_PREFIX: &str = "whsec_";
/// The fewest bytes a secret's key may have (the specification: 24 to 64 random bytes).
pub const MIN_KEY_BYTES: usize = 24;
/// The most bytes a secret's key may have.
pub const MAX_KEY_BYTES: usize = 64;

/// The signature scheme identifier of HMAC-SHA256 signatures.
const VERSION: &str = "v1";

/// Why a text of secrets was refused. The texts name a secret by its position only: they
/// never quote any part of it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// The text holds no secret (empty, blank or only comment lines).
    #[error("holds no secret (expected one or more `whsec_…` secrets)")]
    Empty,
    /// A secret does not start with `whsec_`.
    #[error("secret {index} of {count} does not start with `whsec_`")]
    MissingPrefix {
        /// 1-based position of the secret.
        index: usize,
        /// How many secrets the text holds.
        count: usize,
    },
    /// What follows `whsec_` is not standard base64.
    #[error("secret {index} of {count} is not `whsec_` followed by standard base64")]
    NotBase64 {
        /// 1-based position of the secret.
        index: usize,
        /// How many secrets the text holds.
        count: usize,
    },
    /// The key is shorter or longer than the specification allows.
    #[error(
        "secret {index} of {count} decodes to {bytes} bytes; a secret is {MIN_KEY_BYTES} to {MAX_KEY_BYTES} random bytes"
    )]
    BadLength {
        /// 1-based position of the secret.
        index: usize,
        /// How many secrets the text holds.
        count: usize,
        /// The key's length in bytes.
        bytes: usize,
    },
}

/// Signs webhook requests with one or more secrets (several while a secret is rotated).
///
/// Its `Debug` output shows how many secrets it holds and nothing of them.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSigner {
    /// The decoded keys, in the order the secrets were given.
    keys: Vec<Box<[u8]>>,
}

impl WebhookSigner {
    /// Parses `text`: one or more `whsec_<base64>` secrets separated by spaces or newlines.
    /// Lines whose first non-blank character is `#` are comments.
    ///
    /// # Errors
    /// [`SecretError`] when the text holds no secret, or a secret lacks the `whsec_` prefix,
    /// is not base64, or decodes to fewer than [`MIN_KEY_BYTES`] or more than
    /// [`MAX_KEY_BYTES`] bytes.
    pub fn from_secrets(text: &str) -> Result<Self, SecretError> {
        let secrets: Vec<&str> = text
            .lines()
            .filter(|line| !line.trim_start().starts_with('#'))
            .flat_map(str::split_whitespace)
            .collect();
        let count = secrets.len();
        if count == 0 {
            return Err(SecretError::Empty);
        }
        let mut keys = Vec::with_capacity(count);
        for (i, secret) in secrets.into_iter().enumerate() {
            let index = i + 1;
            let encoded = secret
                .strip_prefix(SECRET_PREFIX)
                .ok_or(SecretError::MissingPrefix { index, count })?;
            let key = BASE64
                .decode(encoded)
                .map_err(|_| SecretError::NotBase64 { index, count })?;
            if !(MIN_KEY_BYTES..=MAX_KEY_BYTES).contains(&key.len()) {
                return Err(SecretError::BadLength {
                    index,
                    count,
                    bytes: key.len(),
                });
            }
            keys.push(key.into_boxed_slice());
        }
        Ok(Self { keys })
    }

    /// How many secrets it signs with.
    pub fn secrets(&self) -> usize {
        self.keys.len()
    }

    /// The `webhook-signature` value for message `id` sent at `timestamp` (unix seconds) with
    /// `body`: `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">` for each secret, in the
    /// order given, separated by single spaces.
    pub fn sign(&self, id: &str, timestamp: u64, body: &[u8]) -> String {
        let prefix = format!("{id}.{timestamp}.");
        let mut header = String::new();
        for key in &self.keys {
            let mut mac = Hmac::<Sha256>::new_from_slice(key)
                .expect("HMAC takes a key of any length (RFC 2104 §2)");
            mac.update(prefix.as_bytes());
            mac.update(body);
            if !header.is_empty() {
                header.push(' ');
            }
            header.push_str(VERSION);
            header.push(',');
            BASE64.encode_string(mac.finalize().into_bytes(), &mut header);
        }
        header
    }

    /// Adds `webhook-id`, `webhook-timestamp` and `webhook-signature` for message `id` sent at
    /// `timestamp` (unix seconds) with `body` to `headers`.
    ///
    /// # Errors
    /// A text saying why, when `id` contains a `.` (the specification forbids it: the signed
    /// content is split on full stops) or is not a valid header value.
    pub fn add_headers(
        &self,
        headers: &mut HeaderMap,
        id: &str,
        timestamp: u64,
        body: &[u8],
    ) -> Result<(), String> {
        if id.contains('.') {
            return Err(format!(
                "the webhook id `{id}` contains a `.`, which the Standard Webhooks specification forbids"
            ));
        }
        let id_value = HeaderValue::from_str(id)
            .map_err(|_| "the webhook id is not a valid HTTP header value".to_owned())?;
        let signature = HeaderValue::from_str(&self.sign(id, timestamp, body))
            .map_err(|_| "the webhook signature is not a valid HTTP header value".to_owned())?;
        headers.insert(WEBHOOK_ID, id_value);
        headers.insert(WEBHOOK_TIMESTAMP, HeaderValue::from(timestamp));
        headers.insert(WEBHOOK_SIGNATURE, signature);
        Ok(())
    }
}

impl fmt::Debug for WebhookSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookSigner")
            .field("secrets", &self.keys.len())
            .field("keys", &"[redacted]")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The specification's published test vectors: libraries/rust/src/lib.rs (`test_sign`),
    // and libraries/python/tests/test_webhooks.py, libraries/javascript/src/webhook.test.ts
    // and libraries/go/webhook_test.go (`test_sign_function`, "sign function works") in
    // github.com/standard-webhooks/standard-webhooks.
    const VECTORS: [(&str, &str, u64, &str, &str); 2] = [
        (
            "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
            "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
            1649367553,
            r#"{"email":"test@example.com","username":"test_user"}"#,
            "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=",
        ),
        (
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            r#"{"test": 2432232314}"#,
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
        ),
    ];

    #[test]
    fn signs_the_specifications_test_vectors() {
        for (secret, id, ts, body, expected) in VECTORS {
            let signer = WebhookSigner::from_secrets(secret).expect("valid secret");
            assert_eq!(signer.sign(id, ts, body.as_bytes()), expected, "{id}");
        }
    }

    #[test]
    fn several_secrets_give_one_signature_each_in_order() {
        let (a, b) = (VECTORS[0], VECTORS[1]);
        let signer =
            WebhookSigner::from_secrets(&format!("# old, then new\n{}\n\n  {} ", a.0, b.0))
                .expect("two secrets");
        assert_eq!(signer.secrets(), 2);
        let header = signer.sign(a.1, a.2, a.3.as_bytes());
        let sigs: Vec<&str> = header.split(' ').collect();
        assert_eq!(sigs.len(), 2, "{header}");
        assert_eq!(sigs[0], a.4);
        let only_b = WebhookSigner::from_secrets(b.0).expect("valid");
        assert_eq!(sigs[1], only_b.sign(a.1, a.2, a.3.as_bytes()));
    }

    #[test]
    fn headers_carry_id_timestamp_and_signature() {
        let (secret, id, ts, body, expected) = VECTORS[0];
        let signer = WebhookSigner::from_secrets(secret).expect("valid");
        let mut headers = HeaderMap::new();
        signer
            .add_headers(&mut headers, id, ts, body.as_bytes())
            .expect("headers");
        assert_eq!(headers["webhook-id"], id);
        assert_eq!(headers["webhook-timestamp"], "1649367553");
        assert_eq!(headers["webhook-signature"], expected);
        let err = signer
            .add_headers(&mut HeaderMap::new(), "a.b", ts, b"{}")
            .expect_err("a dot in the id");
        assert!(err.contains("`.`"), "{err}");
    }

    #[test]
    fn bad_secrets_are_refused_without_quoting_them() {
        let good = VECTORS[0].0;
        for (text, want) in [
            ("", SecretError::Empty),
            (" \n# only a comment\n", SecretError::Empty),
            (
                "C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
                SecretError::MissingPrefix { index: 1, count: 1 },
            ),
            (
                "whsec_",
                SecretError::BadLength {
                    index: 1,
                    count: 1,
                    bytes: 0,
                },
            ),
            (
                "whsec_not*base64!",
                SecretError::NotBase64 { index: 1, count: 1 },
            ),
            (
                "whsec_c2hvcnQ=",
                SecretError::BadLength {
                    index: 1,
                    count: 1,
                    bytes: 5,
                },
            ),
        ] {
            let got = WebhookSigner::from_secrets(text).expect_err(text);
            assert_eq!(got, want, "{text:?}");
            let shown = got.to_string();
            assert!(
                !shown.contains("base64!") && !shown.contains("c2hv"),
                "{shown}"
            );
        }
        let got = WebhookSigner::from_secrets(&format!("{good} whsec_c2hvcnQ=")).expect_err("2nd");
        assert_eq!(
            got,
            SecretError::BadLength {
                index: 2,
                count: 2,
                bytes: 5
            }
        );
    }

    #[test]
    fn debug_shows_no_key() {
        let signer = WebhookSigner::from_secrets(VECTORS[0].0).expect("valid");
        let shown = format!("{signer:?}");
        assert!(!shown.contains("C2FV"), "{shown}");
        assert!(shown.contains("secrets: 1"), "{shown}");
    }
}

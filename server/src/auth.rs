//! Tokens and tickets: HMAC-SHA256 signed claims, verified in constant time.
//!
//! Format (the contract, so app backends can mint tokens):
//! `base64url(claims_json) + "." + base64url(HMAC-SHA256(secret, base64url(claims_json)))`, no
//! padding; claims `{"sub", "ws", "role": "read"|"write", "exp": unix seconds, "docs": [id]?}`.
//!
//! A **ticket** has the same format with one more claim, `"tkt"` (a random ticket id), is minted only
//! by the server (`POST /v1/tickets`) and lives a few minutes. Only tickets are accepted in a URL; a
//! claim set without `tkt` (a token) in a URL is refused, and a ticket is refused as a bearer token.
//!
//! Must not: log or display a secret, a token or a ticket (their types redact `Debug`).

use std::collections::HashSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use driftless_client_protocol::DocumentId;
use driftless_client_protocol::engine::{Access, Role};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The shortest secret accepted (bytes).
pub const MIN_SECRET_BYTES: usize = 32;

/// A signing secret. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Self(bytes.into())
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// The signing keys: the current secret signs and verifies; the previous one (during a rotation)
/// only verifies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    pub current: Secret,
    pub previous: Option<Secret>,
}

/// The role claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClaimRole {
    Read,
    Write,
}

impl From<ClaimRole> for Role {
    fn from(r: ClaimRole) -> Self {
        match r {
            ClaimRole::Read => Role::Read,
            ClaimRole::Write => Role::Write,
        }
    }
}

/// What a token (or ticket) says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub ws: String,
    pub role: ClaimRole,
    /// Expiry, unix seconds.
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docs: Option<Vec<String>>,
    /// Present only on tickets: the ticket id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tkt: Option<String>,
}

/// Why credentials were refused. The `Display` text is safe to return to clients and to log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error(
        "no credentials: send `Authorization: Bearer <token>`, or `?ticket=` from POST /v1/tickets"
    )]
    Missing,
    #[error("malformed token")]
    Malformed,
    #[error("token signature does not verify")]
    BadSignature,
    #[error("token expired")]
    Expired,
    #[error("invalid token claims: {0}")]
    InvalidClaims(String),
    #[error(
        "long-lived tokens are not accepted in a URL; exchange it for a ticket with POST /v1/tickets"
    )]
    TokenInUrl,
    #[error("a ticket is only accepted as `?ticket=` on the WebSocket URL")]
    TicketAsBearer,
}

impl AuthError {
    /// The stable error code of the HTTP body and the metric label.
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing_credentials",
            AuthError::Malformed | AuthError::InvalidClaims(_) => "invalid_token",
            AuthError::BadSignature => "bad_signature",
            AuthError::Expired => "token_expired",
            AuthError::TokenInUrl => "token_in_url",
            AuthError::TicketAsBearer => "ticket_as_bearer",
        }
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn mac(secret: &Secret) -> HmacSha256 {
    // HMAC accepts keys of any length; this cannot fail.
    match HmacSha256::new_from_slice(&secret.0) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    }
}

impl Keys {
    /// Signs `claims` with the current secret.
    pub fn sign(&self, claims: &Claims) -> String {
        let json = serde_json::to_vec(claims).unwrap_or_default();
        let payload = URL_SAFE_NO_PAD.encode(json);
        let mut m = mac(&self.current);
        m.update(payload.as_bytes());
        let sig = URL_SAFE_NO_PAD.encode(m.finalize().into_bytes());
        format!("{payload}.{sig}")
    }

    /// Verifies signature (current or previous secret, constant-time) and expiry; returns the claims.
    pub fn verify(&self, token: &str, now: u64) -> Result<Claims, AuthError> {
        let (payload, sig) = token.split_once('.').ok_or(AuthError::Malformed)?;
        let sig = URL_SAFE_NO_PAD
            .decode(sig)
            .map_err(|_| AuthError::Malformed)?;
        let verifies = |secret: &Secret| {
            let mut m = mac(secret);
            m.update(payload.as_bytes());
            m.verify_slice(&sig).is_ok()
        };
        if !verifies(&self.current) && !self.previous.as_ref().is_some_and(verifies) {
            return Err(AuthError::BadSignature);
        }
        let json = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| AuthError::Malformed)?;
        let claims: Claims =
            serde_json::from_slice(&json).map_err(|e| AuthError::InvalidClaims(e.to_string()))?;
        if claims.exp <= now {
            return Err(AuthError::Expired);
        }
        if claims.ws.is_empty() {
            return Err(AuthError::InvalidClaims("empty workspace".into()));
        }
        if let Some(docs) = &claims.docs {
            for d in docs {
                d.parse::<DocumentId>()
                    .map_err(|e| AuthError::InvalidClaims(format!("docs: {e}")))?;
            }
        }
        Ok(claims)
    }

    /// A bearer token (never a ticket).
    pub fn verify_token(&self, token: &str, now: u64) -> Result<Claims, AuthError> {
        let claims = self.verify(token, now)?;
        if claims.tkt.is_some() {
            return Err(AuthError::TicketAsBearer);
        }
        Ok(claims)
    }

    /// A ticket from a URL (never a long-lived token).
    pub fn verify_ticket(&self, ticket: &str, now: u64) -> Result<Claims, AuthError> {
        let claims = self.verify(ticket, now)?;
        if claims.tkt.is_none() {
            return Err(AuthError::TokenInUrl);
        }
        Ok(claims)
    }

    /// A ticket for the holder of `token`'s claims: same subject, workspace, role and documents,
    /// expiring after `ttl` (or with the token, if sooner).
    pub fn issue_ticket(&self, token: &Claims, ttl: Duration, now: u64) -> Claims {
        let id: [u8; 16] = rand::random();
        Claims {
            tkt: Some(URL_SAFE_NO_PAD.encode(id)),
            exp: token.exp.min(now.saturating_add(ttl.as_secs())),
            ..token.clone()
        }
    }
}

impl Claims {
    /// The engine's view of these claims (the ticket binding is added by the caller).
    pub fn access(&self) -> Access {
        let docs = self.docs.as_ref().map(|docs| {
            docs.iter()
                .filter_map(|d| d.parse::<DocumentId>().ok())
                .collect::<HashSet<_>>()
        });
        Access {
            docs,
            ..Access::new(self.ws.clone(), self.role.into())
        }
    }

    /// Whether these claims may see `doc` (workspace checked separately).
    pub fn in_scope(&self, doc: &DocumentId) -> bool {
        self.access().in_scope(doc)
    }
}

/// Formats unix seconds as RFC 3339 UTC (`2026-01-02T03:04:05Z`).
pub fn rfc3339(unix: u64) -> String {
    let days = (unix / 86_400) as i64;
    let secs = unix % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Keys {
        Keys {
            current: Secret::new(b"current-secret-current-secret-32".to_vec()),
            previous: None,
        }
    }

    fn claims(exp: u64) -> Claims {
        Claims {
            sub: "alice".into(),
            ws: "acme".into(),
            role: ClaimRole::Write,
            exp,
            docs: None,
            tkt: None,
        }
    }

    #[test]
    fn round_trip_and_format() {
        let k = keys();
        let token = k.sign(&claims(2_000));
        let (payload, sig) = token.split_once('.').unwrap();
        assert!(!token.contains('='));
        let json: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"sub": "alice", "ws": "acme", "role": "write", "exp": 2000})
        );
        let mut m = mac(&k.current);
        m.update(payload.as_bytes());
        assert_eq!(
            URL_SAFE_NO_PAD.decode(sig).unwrap(),
            m.finalize().into_bytes().to_vec()
        );
        assert_eq!(k.verify_token(&token, 1_000).unwrap(), claims(2_000));
    }

    #[test]
    fn expiry_is_exact_to_the_second() {
        let k = keys();
        let token = k.sign(&claims(1_000));
        assert!(k.verify(&token, 999).is_ok());
        assert_eq!(k.verify(&token, 1_000), Err(AuthError::Expired));
        assert_eq!(k.verify(&token, 1_001), Err(AuthError::Expired));
    }

    #[test]
    fn signatures_and_rotation() {
        let old = keys();
        let token = old.sign(&claims(2_000));
        let other = Keys {
            current: Secret::new(b"another-secret-another-secret-32".to_vec()),
            previous: None,
        };
        assert_eq!(other.verify(&token, 0), Err(AuthError::BadSignature));
        let rotated = Keys {
            previous: Some(old.current.clone()),
            ..other.clone()
        };
        assert!(
            rotated.verify(&token, 0).is_ok(),
            "previous secret still works"
        );
        // Tampering with the claims breaks the signature.
        let (payload, sig) = token.split_once('.').unwrap();
        let mut forged = claims(2_000);
        forged.ws = "other".into();
        let forged_payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).unwrap());
        assert_ne!(payload, forged_payload);
        assert_eq!(
            old.verify(&format!("{forged_payload}.{sig}"), 0),
            Err(AuthError::BadSignature)
        );
        for bad in ["", "abc", "a.b.c", "!!.!!"] {
            assert!(old.verify(bad, 0).is_err(), "{bad}");
        }
    }

    #[test]
    fn tickets_and_tokens_do_not_mix() {
        let k = keys();
        let token_claims = claims(10_000);
        let token = k.sign(&token_claims);
        let ticket_claims = k.issue_ticket(&token_claims, Duration::from_secs(300), 1_000);
        assert_eq!(ticket_claims.exp, 1_300);
        let ticket = k.sign(&ticket_claims);
        assert_eq!(k.verify_ticket(&token, 1_000), Err(AuthError::TokenInUrl));
        assert_eq!(
            k.verify_token(&ticket, 1_000),
            Err(AuthError::TicketAsBearer)
        );
        assert!(k.verify_ticket(&ticket, 1_000).is_ok());
        // A ticket never outlives its token.
        let short = k.issue_ticket(&claims(1_100), Duration::from_secs(300), 1_000);
        assert_eq!(short.exp, 1_100);
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let text = format!("{:?}", keys());
        assert!(!text.contains("current-secret"), "{text}");
    }

    #[test]
    fn rfc3339_formats() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_767_225_600 + 3_723), "2026-01-01T01:02:03Z");
    }
}

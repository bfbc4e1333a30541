//! The OAuth 2.0 refresh-token grant (RFC 6749 section 6) shared by provider clients: an access
//! token minted from a long-lived refresh token at a configurable `token_url`, cached until shortly
//! before it expires, forgotten when the provider answers 401 so the next request refreshes it.
//!
//! Used by the Salesforce client (whose token answers carry no `expires_in`: a session lasts until
//! the org's timeout, and a 401 is the only signal). The Google, Graph and HubSpot clients predate
//! it and still carry their own copies of this flow.
//!
//! Must not: print a secret (`Debug` is redacted, errors name the URL and status only) or retry on
//! its own (the caller decides what a failed refresh means).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use reqwest::Url;
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderValue};
use serde::Deserialize;

use crate::secret::Secret;

/// Refresh this long before a stated expiry, so a token never lapses mid-request.
const EXPIRY_MARGIN: Duration = Duration::from_secs(60);
/// How much of a refused token answer is kept in an error.
const BODY_SNIPPET: usize = 300;

/// The parameters of a refresh-token grant.
#[derive(Debug, Clone)]
pub struct RefreshGrant {
    pub token_url: String,
    pub client_id: String,
    /// `None` for a public client (some providers let a connected app skip the secret).
    pub client_secret: Option<Secret>,
    pub refresh_token: Secret,
    /// How long a token without `expires_in` is believed to last (`None`: until a 401).
    pub default_lifetime: Option<Duration>,
}

/// The token endpoint's answer (the fields every provider sends, plus Salesforce's
/// `instance_url`).
#[derive(Clone, Deserialize)]
pub struct TokenAnswer {
    pub access_token: String,
    #[serde(default)]
    pub expires_in: Option<u64>,
    /// Salesforce: the org's API host the token is valid for.
    #[serde(default)]
    pub instance_url: Option<String>,
}

impl std::fmt::Debug for TokenAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenAnswer")
            .field("access_token", &"<redacted>")
            .field("expires_in", &self.expires_in)
            .field("instance_url", &self.instance_url)
            .finish()
    }
}

/// Why no access token could be had.
#[derive(Debug, thiserror::Error)]
pub enum OAuthError {
    #[error("token_url {url:?} is not a usable URL")]
    BadUrl { url: String },
    #[error("token refresh at {url}: {source}")]
    Transport { url: String, source: reqwest::Error },
    #[error("token refresh at {url}: status {status}: {body}")]
    Refused {
        url: String,
        status: u16,
        body: String,
    },
    #[error("token refresh at {url}: malformed answer: {reason}")]
    Malformed { url: String, reason: String },
}

impl OAuthError {
    /// The token endpoint refused the grant itself (revoked or wrong credentials): retrying will
    /// not help until an operator acts. Transport failures and 5xx are worth a retry.
    pub fn is_permanent(&self) -> bool {
        matches!(self, OAuthError::Refused { status, .. } if (400..500).contains(status))
            || matches!(self, OAuthError::BadUrl { .. })
    }
}

struct Cached {
    token: Secret,
    /// `None`: valid until the provider says otherwise (a 401).
    refresh_at: Option<Instant>,
}

/// A cached access token and the grant that renews it. Cheap to clone; clones share the cache.
#[derive(Clone)]
pub struct TokenSource {
    http: reqwest::Client,
    grant: RefreshGrant,
    token_url: Url,
    cache: Arc<Mutex<Option<Cached>>>,
    refreshes: Arc<AtomicU64>,
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSource")
            .field("token_url", &self.token_url.as_str())
            .field("client_id", &self.grant.client_id)
            .finish_non_exhaustive()
    }
}

fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    match text.char_indices().nth(BODY_SNIPPET) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.into_owned(),
    }
}

impl TokenSource {
    pub fn new(http: reqwest::Client, grant: RefreshGrant) -> Result<Self, OAuthError> {
        let token_url = Url::parse(&grant.token_url).map_err(|_| OAuthError::BadUrl {
            url: grant.token_url.clone(),
        })?;
        Ok(TokenSource {
            http,
            grant,
            token_url,
            cache: Arc::new(Mutex::new(None)),
            refreshes: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Refresh-token grants sent so far.
    pub fn refresh_count(&self) -> u64 {
        self.refreshes.load(Ordering::Relaxed)
    }

    /// The cached token while it is fresh, else a new one.
    pub async fn access_token(&self) -> Result<Secret, OAuthError> {
        let cached = {
            let guard = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
            guard
                .as_ref()
                .filter(|c| c.refresh_at.is_none_or(|at| Instant::now() < at))
                .map(|c| c.token.clone())
        };
        match cached {
            Some(token) => Ok(token),
            None => self.refresh().await,
        }
    }

    /// Drops the cached token (the provider answered 401 with it).
    pub fn forget(&self) {
        *self.cache.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// Runs the refresh-token grant and caches the new access token.
    pub async fn refresh(&self) -> Result<Secret, OAuthError> {
        // The serializer is not `Send`; it must be gone before the first await.
        let body = {
            let mut form = url::form_urlencoded::Serializer::new(String::new());
            form.append_pair("grant_type", "refresh_token")
                .append_pair("refresh_token", self.grant.refresh_token.expose())
                .append_pair("client_id", &self.grant.client_id);
            if let Some(secret) = &self.grant.client_secret {
                form.append_pair("client_secret", secret.expose());
            }
            form.finish()
        };
        self.refreshes.fetch_add(1, Ordering::Relaxed);
        let url = self.token_url.to_string();
        let transport = |source| OAuthError::Transport {
            url: url.clone(),
            source,
        };
        let resp = self
            .http
            .post(self.token_url.clone())
            .header(
                CONTENT_TYPE,
                HeaderValue::from_static("application/x-www-form-urlencoded"),
            )
            .header(ACCEPT, HeaderValue::from_static("application/json"))
            .body(body)
            .send()
            .await
            .map_err(transport)?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.map_err(transport)?;
        if !(200..300).contains(&status) {
            return Err(OAuthError::Refused {
                url,
                status,
                body: snippet(&bytes),
            });
        }
        let answer: TokenAnswer =
            serde_json::from_slice(&bytes).map_err(|e| OAuthError::Malformed {
                url: url.clone(),
                reason: e.to_string(),
            })?;
        if answer.access_token.is_empty() {
            return Err(OAuthError::Malformed {
                url,
                reason: "empty access_token".into(),
            });
        }
        let lifetime = answer
            .expires_in
            .map(|s| Duration::from_secs(s.min(crate::sync::MAX_TOKEN_LIFETIME_S)))
            .or(self.grant.default_lifetime);
        let token = Secret::new(answer.access_token);
        *self.cache.lock().unwrap_or_else(PoisonError::into_inner) = Some(Cached {
            token: token.clone(),
            refresh_at: lifetime.map(|l| Instant::now() + l.saturating_sub(EXPIRY_MARGIN)),
        });
        Ok(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_stay_out_of_debug_and_errors_classify() {
        let source = TokenSource::new(
            reqwest::Client::new(),
            RefreshGrant {
                token_url: "http://127.0.0.1:9/token".into(),
                client_id: "client".into(),
                client_secret: Some(Secret::new("s3cr3t-client")),
                refresh_token: Secret::new("s3cr3t-refresh"),
                default_lifetime: None,
            },
        )
        .unwrap();
        let shown = format!("{source:?}");
        assert!(!shown.contains("s3cr3t"), "{shown}");
        let answer: TokenAnswer =
            serde_json::from_str(r#"{"access_token":"00Dxx!secret","instance_url":"https://x"}"#)
                .unwrap();
        assert!(!format!("{answer:?}").contains("secret"));
        let refused = OAuthError::Refused {
            url: "u".into(),
            status: 400,
            body: "invalid_grant".into(),
        };
        assert!(refused.is_permanent());
        let busy = OAuthError::Refused {
            url: "u".into(),
            status: 503,
            body: String::new(),
        };
        assert!(!busy.is_permanent());
        assert!(
            TokenSource::new(
                reqwest::Client::new(),
                RefreshGrant {
                    token_url: "not a url".into(),
                    client_id: String::new(),
                    client_secret: None,
                    refresh_token: Secret::new("r"),
                    default_lifetime: None,
                }
            )
            .is_err()
        );
    }
}

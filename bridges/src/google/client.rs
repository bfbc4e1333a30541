//! A thin async HTTP client for one Google calendar: it sends the [`Request`]s the sync state
//! machines ask for and hands back the raw [`Response`]s; it decides nothing about sync.
//!
//! It owns authentication: an OAuth2 refresh-token grant against a configurable `token_url`,
//! the access token cached until shortly before it expires and refreshed once when Google
//! answers 401. Secrets (client secret, refresh token, access token) never appear in `Debug`
//! output, errors or logs.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue, IF_MATCH};
use reqwest::{Method, Url};

use super::sync::{Request, Response};
use super::wire::TokenResponse;
use crate::dav::client::retry_after;

/// Google's API base.
pub const DEFAULT_API_BASE: &str = "https://www.googleapis.com/calendar/v3/";
/// Google's OAuth2 token endpoint.
pub const DEFAULT_TOKEN_URL: &str = "https://oauth2.googleapis.com/token";
/// Refresh this long before the access token's stated expiry.
const EXPIRY_MARGIN: Duration = Duration::from_secs(60);
/// How much of an unexpected response body to keep in an error.
const BODY_SNIPPET: usize = 300;

pub use crate::secret::Secret;

/// Settings of a [`GoogleClient`] (the `[[bridges]]` keys of `kind = "google_calendar"`).
#[derive(Debug, Clone)]
pub struct GoogleConfig {
    /// `https://www.googleapis.com/calendar/v3/` unless tests point it at a fake.
    pub api_base: String,
    /// `primary` or a calendar's id (an email-like string).
    pub calendar_id: String,
    pub token_url: String,
    pub client_id: String,
    pub client_secret: Secret,
    pub refresh_token: Secret,
    /// Per-request timeout.
    pub timeout: Duration,
}

impl GoogleConfig {
    pub fn new(
        calendar_id: impl Into<String>,
        client_id: impl Into<String>,
        client_secret: Secret,
        refresh_token: Secret,
    ) -> Self {
        GoogleConfig {
            api_base: DEFAULT_API_BASE.to_owned(),
            calendar_id: calendar_id.into(),
            token_url: DEFAULT_TOKEN_URL.to_owned(),
            client_id: client_id.into(),
            client_secret,
            refresh_token,
            timeout: Duration::from_secs(30),
        }
    }
}

/// Why a client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientBuildError {
    #[error("{what} {url:?} is not a usable URL")]
    BadUrl { what: &'static str, url: String },
    #[error(transparent)]
    MissingEnv(#[from] crate::secret::MissingEnv),
    #[error("building the HTTP client: {0}")]
    Http(#[from] reqwest::Error),
}

/// Why a request got no HTTP answer to interpret.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{method} {url}: {source}")]
    Transport {
        method: Method,
        url: String,
        source: reqwest::Error,
    },
    #[error("token refresh at {url}: {status}: {body}")]
    Token {
        url: String,
        status: u16,
        body: String,
    },
    #[error("token refresh at {url}: malformed answer: {reason}")]
    TokenMalformed { url: String, reason: String },
    #[error("event id {id:?} cannot be used in a URL")]
    BadEventId { id: String },
    #[error("etag {etag:?} cannot be sent as a header value")]
    BadEtag { etag: String },
}

#[derive(Clone)]
struct CachedToken {
    access_token: Secret,
    refresh_at: Instant,
}

/// Client for one calendar. Cheap to clone; clones share the token cache and the counters.
#[derive(Clone)]
pub struct GoogleClient {
    http: reqwest::Client,
    events_url: Url,
    stop_url: Url,
    token_url: Url,
    client_id: String,
    client_secret: Secret,
    refresh_token: Secret,
    token: Arc<Mutex<Option<CachedToken>>>,
    requests: Arc<AtomicU64>,
    writes: Arc<AtomicU64>,
    refreshes: Arc<AtomicU64>,
}

impl fmt::Debug for GoogleClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GoogleClient")
            .field("events_url", &self.events_url.as_str())
            .field("token_url", &self.token_url.as_str())
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

fn snippet(body: &[u8]) -> String {
    let mut text = String::from_utf8_lossy(body).into_owned();
    if text.len() > BODY_SNIPPET {
        let mut cut = BODY_SNIPPET;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    text
}

impl GoogleClient {
    pub fn new(config: GoogleConfig) -> Result<Self, ClientBuildError> {
        let bad = |what, url: &str| ClientBuildError::BadUrl {
            what,
            url: url.to_owned(),
        };
        let root = Url::parse(&config.api_base).map_err(|_| bad("api_base", &config.api_base))?;
        let mut stop_url = root.clone();
        stop_url
            .path_segments_mut()
            .map_err(|_| bad("api_base", &config.api_base))?
            .pop_if_empty()
            .extend(["channels", "stop"]);
        let mut base = root;
        base.path_segments_mut()
            .map_err(|_| bad("api_base", &config.api_base))?
            .pop_if_empty()
            .extend(["calendars", config.calendar_id.as_str(), "events"]);
        let token_url =
            Url::parse(&config.token_url).map_err(|_| bad("token_url", &config.token_url))?;
        let http = reqwest::Client::builder().timeout(config.timeout).build()?;
        Ok(GoogleClient {
            http,
            events_url: base,
            stop_url,
            token_url,
            client_id: config.client_id,
            client_secret: config.client_secret,
            refresh_token: config.refresh_token,
            token: Arc::new(Mutex::new(None)),
            requests: Arc::new(AtomicU64::new(0)),
            writes: Arc::new(AtomicU64::new(0)),
            refreshes: Arc::new(AtomicU64::new(0)),
        })
    }

    /// `…/calendars/{calendarId}/events`
    pub fn events_url(&self) -> &Url {
        &self.events_url
    }

    /// Calendar API requests sent (token refreshes not included).
    pub fn request_count(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Insert / patch / delete requests sent.
    pub fn write_count(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }

    /// Token refreshes done.
    pub fn refresh_count(&self) -> u64 {
        self.refreshes.load(Ordering::Relaxed)
    }

    fn cached_token(&self) -> Option<Secret> {
        let guard = self
            .token
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        guard
            .as_ref()
            .filter(|t| Instant::now() < t.refresh_at)
            .map(|t| t.access_token.clone())
    }

    fn forget_token(&self) {
        *self
            .token
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
    }

    /// Runs the refresh-token grant and caches the access token.
    async fn refresh(&self) -> Result<Secret, ClientError> {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "refresh_token")
            .append_pair("refresh_token", self.refresh_token.expose())
            .append_pair("client_id", &self.client_id)
            .append_pair("client_secret", self.client_secret.expose())
            .finish();
        self.refreshes.fetch_add(1, Ordering::Relaxed);
        let url = self.token_url.to_string();
        let transport = |source| ClientError::Transport {
            method: Method::POST,
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
            .body(body)
            .send()
            .await
            .map_err(transport)?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.map_err(transport)?;
        if !(200..300).contains(&status) {
            return Err(ClientError::Token {
                url,
                status,
                body: snippet(&bytes),
            });
        }
        let token: TokenResponse =
            serde_json::from_slice(&bytes).map_err(|e| ClientError::TokenMalformed {
                url: url.clone(),
                reason: e.to_string(),
            })?;
        let lifetime = Duration::from_secs(
            token
                .expires_in
                .unwrap_or(3600)
                .min(crate::sync::MAX_TOKEN_LIFETIME_S),
        );
        let secret = Secret::new(token.access_token);
        *self
            .token
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(CachedToken {
            access_token: secret.clone(),
            refresh_at: Instant::now() + lifetime.saturating_sub(EXPIRY_MARGIN),
        });
        Ok(secret)
    }

    async fn access_token(&self) -> Result<Secret, ClientError> {
        match self.cached_token() {
            Some(t) => Ok(t),
            None => self.refresh().await,
        }
    }

    fn event_url(&self, id: &str) -> Result<Url, ClientError> {
        let mut url = self.events_url.clone();
        url.path_segments_mut()
            .map_err(|_| ClientError::BadEventId { id: id.to_owned() })?
            .push(id);
        Ok(url)
    }

    fn build(
        &self,
        req: &Request,
    ) -> Result<(Method, Url, Option<String>, Option<String>), ClientError> {
        Ok(match req {
            Request::List(q) => {
                let mut url = self.events_url.clone();
                url.query_pairs_mut().extend_pairs(q.params());
                (Method::GET, url, None, None)
            }
            Request::Get { event_id } => (Method::GET, self.event_url(event_id)?, None, None),
            Request::Insert { body } => (
                Method::POST,
                self.events_url.clone(),
                None,
                Some(body.to_string()),
            ),
            Request::Patch {
                event_id,
                if_match,
                body,
            } => (
                Method::PATCH,
                self.event_url(event_id)?,
                if_match.clone(),
                Some(body.to_string()),
            ),
            Request::Delete { event_id, if_match } => (
                Method::DELETE,
                self.event_url(event_id)?,
                if_match.clone(),
                None,
            ),
            Request::Watch { body } => (
                Method::POST,
                self.event_url("watch")?,
                None,
                Some(body.to_string()),
            ),
            Request::StopChannel { body } => (
                Method::POST,
                self.stop_url.clone(),
                None,
                Some(body.to_string()),
            ),
        })
    }

    /// Sends `req` and returns Google's answer, whatever its status (the state machines
    /// interpret it). A 401 refreshes the access token and sends the request once more.
    pub async fn execute(&self, req: &Request) -> Result<Response, ClientError> {
        let (method, url, if_match, body) = self.build(req)?;
        let if_match = if_match
            .map(|etag| {
                HeaderValue::from_str(&etag)
                    .map_err(|_| ClientError::BadEtag { etag: etag.clone() })
            })
            .transpose()?;
        let mut refreshed = false;
        loop {
            let token = if refreshed {
                self.refresh().await?
            } else {
                self.access_token().await?
            };
            let mut builder = self.http.request(method.clone(), url.clone());
            if let Ok(mut auth) = HeaderValue::from_str(&format!("Bearer {}", token.expose())) {
                auth.set_sensitive(true);
                builder = builder.header(AUTHORIZATION, auth);
            }
            if let Some(etag) = &if_match {
                builder = builder.header(IF_MATCH, etag.clone());
            }
            if let Some(body) = &body {
                builder = builder
                    .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
                    .body(body.clone());
            }
            self.requests.fetch_add(1, Ordering::Relaxed);
            if req.is_write() {
                self.writes.fetch_add(1, Ordering::Relaxed);
            }
            let transport = |source| ClientError::Transport {
                method: method.clone(),
                url: url.to_string(),
                source,
            };
            let resp = builder.send().await.map_err(transport)?;
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            let bytes = resp.bytes().await.map_err(transport)?.to_vec();
            if status == 401 && !refreshed {
                self.forget_token();
                refreshed = true;
                continue;
            }
            return Ok(Response {
                status,
                retry_after: retry_after(&headers, SystemTime::now()),
                body: bytes,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> GoogleConfig {
        let mut c = GoogleConfig::new(
            "team@group.calendar.google.com",
            "client-1",
            Secret::new("very-secret"),
            Secret::new("refresh-me"),
        );
        c.api_base = "http://127.0.0.1:9/calendar/v3".into();
        c
    }

    #[test]
    fn urls_are_built_from_the_api_base() {
        let c = GoogleClient::new(config()).unwrap();
        assert_eq!(
            c.events_url().as_str(),
            "http://127.0.0.1:9/calendar/v3/calendars/team@group.calendar.google.com/events"
        );
        assert_eq!(
            c.event_url("a b/c").unwrap().as_str(),
            "http://127.0.0.1:9/calendar/v3/calendars/team@group.calendar.google.com/events/a%20b%2Fc"
        );
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let c = config();
        let printed = format!("{c:?} {:?}", GoogleClient::new(c.clone()).unwrap());
        assert!(!printed.contains("very-secret") && !printed.contains("refresh-me"));
    }
}

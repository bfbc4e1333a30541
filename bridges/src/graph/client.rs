//! A thin async HTTP client for one Microsoft Graph mailbox: it makes the requests the sync
//! machines ask for ([`GraphClient::execute`]), classifies the answers into [`Reply`]s, and keeps
//! an OAuth2 access token obtained with the refresh-token grant (cached, refreshed before expiry
//! and once on a 401).
//!
//! It keeps no sync state (links and delta links belong to the caller) and never logs or puts in
//! an error a secret (client secret, refresh or access token). `api_base` and `token_url` are
//! configurable so tests point them at a fake.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue, IF_MATCH, RETRY_AFTER};
use reqwest::{Method, StatusCode, Url};
use serde_json::Value;

use super::sync::{
    CalendarChanges, CalendarPull, ContactChanges, ContactPull, ItemKind, Outgoing, Reply, Request,
    Step, SyncError, WriteJob, WriteOp, WriteOutcome, WriteStep,
};
use super::wire::{self, DeltaPage, Failure, Subscription, TokenResponse};

pub const DEFAULT_API_BASE: &str = "https://graph.microsoft.com/v1.0";
pub const DEFAULT_TOKEN_URL: &str = "https://login.microsoftonline.com/common/oauth2/v2.0/token";
pub const DEFAULT_SCOPE: &str = "offline_access https://graph.microsoft.com/Calendars.ReadWrite https://graph.microsoft.com/Contacts.ReadWrite";

/// How much of an unexpected response body to keep in an error.
const BODY_SNIPPET: usize = 512;
/// Refresh this long before the token says it expires.
const EXPIRY_MARGIN: Duration = Duration::from_secs(60);

/// Settings of a [`GraphClient`]. `Debug` never shows the secrets.
#[derive(Clone)]
pub struct GraphConfig {
    pub api_base: String,
    pub token_url: String,
    pub client_id: String,
    pub client_secret: Option<String>,
    pub refresh_token: String,
    pub scope: String,
    /// Sent as `Prefer: odata.maxpagesize=N` on delta requests.
    pub max_page_size: Option<u32>,
    /// Per-request timeout.
    pub timeout: Duration,
}

impl GraphConfig {
    pub fn new(client_id: impl Into<String>, refresh_token: impl Into<String>) -> Self {
        Self {
            api_base: DEFAULT_API_BASE.into(),
            token_url: DEFAULT_TOKEN_URL.into(),
            client_id: client_id.into(),
            client_secret: None,
            refresh_token: refresh_token.into(),
            scope: DEFAULT_SCOPE.into(),
            max_page_size: Some(100),
            timeout: Duration::from_secs(30),
        }
    }
}

impl std::fmt::Debug for GraphConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GraphConfig")
            .field("api_base", &self.api_base)
            .field("token_url", &self.token_url)
            .field("client_id", &self.client_id)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("refresh_token", &"<redacted>")
            .field("max_page_size", &self.max_page_size)
            .finish()
    }
}

/// Failures of a request (never carrying a secret).
#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    #[error("api_base {url:?} is not a URL: {source}")]
    BadBase {
        url: String,
        source: url::ParseError,
    },
    #[error("building the HTTP client: {0}")]
    Build(reqwest::Error),
    #[error("{what}: {source}")]
    Transport {
        what: String,
        source: reqwest::Error,
    },
    /// The token endpoint refused the refresh token or answered garbage.
    #[error("token refresh at {token_url}: {status}: {code}")]
    Token {
        token_url: String,
        status: u16,
        code: String,
    },
    /// Still 401 with a freshly refreshed token.
    #[error("{what}: unauthorized even with a fresh access token")]
    Unauthorized { what: String },
    #[error("{what}: unexpected status {status} ({code}): {message}")]
    Status {
        what: String,
        status: u16,
        code: String,
        message: String,
    },
    #[error("{what}: answer is not the expected JSON: {reason}")]
    Body { what: String, reason: String },
}

/// Failures of a driven round or write.
#[derive(Debug, thiserror::Error)]
pub enum DriveError {
    #[error(transparent)]
    Http(#[from] GraphError),
    #[error(transparent)]
    Sync(#[from] SyncError),
}

struct AccessToken {
    value: String,
    expires_at: Instant,
}

#[derive(Default)]
struct TokenState {
    access: Option<AccessToken>,
    /// A refresh token the server rotated to (replaces the configured one).
    rotated_refresh: Option<String>,
}

/// Says whether tokens are held, never what they are.
impl std::fmt::Debug for TokenState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenState")
            .field(
                "access",
                &self.access.as_ref().map(|t| ("<redacted>", t.expires_at)),
            )
            .field(
                "rotated_refresh",
                &self.rotated_refresh.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// Client for one mailbox. Cheap to clone; clones share the token and the counters.
#[derive(Debug, Clone)]
pub struct GraphClient {
    http: reqwest::Client,
    config: Arc<GraphConfig>,
    base: Url,
    token: Arc<tokio::sync::Mutex<TokenState>>,
    requests: Arc<AtomicU64>,
    writes: Arc<AtomicU64>,
}

struct Answer {
    status: StatusCode,
    retry_after: Option<String>,
    body: String,
}

impl GraphClient {
    pub fn new(config: GraphConfig) -> Result<Self, GraphError> {
        let mut base = config.api_base.trim_end_matches('/').to_owned();
        base.push('/');
        let base = Url::parse(&base).map_err(|source| GraphError::BadBase {
            url: config.api_base.clone(),
            source,
        })?;
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .build()
            .map_err(GraphError::Build)?;
        Ok(Self {
            http,
            config: Arc::new(config),
            base,
            token: Arc::default(),
            requests: Arc::default(),
            writes: Arc::default(),
        })
    }

    pub fn config(&self) -> &GraphConfig {
        &self.config
    }

    /// Requests made to `api_base` so far (token requests not counted).
    pub fn request_count(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// PATCH / POST / DELETE requests made so far.
    pub fn write_count(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }

    /// `{api_base}/me/{events|contacts}[/{id}]`, the id as one escaped path segment.
    fn item_url(&self, kind: ItemKind, id: Option<&str>) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.pop_if_empty().push("me").push(match kind {
                ItemKind::Event => "events",
                ItemKind::Contact => "contacts",
            });
            if let Some(id) = id {
                segments.push(id);
            }
        }
        url
    }

    async fn refresh(&self, state: &mut TokenState) -> Result<String, GraphError> {
        let refresh = state
            .rotated_refresh
            .clone()
            .unwrap_or_else(|| self.config.refresh_token.clone());
        // Built before the first await: the serializer is not `Send`, and the server runs
        // this future on a multi-threaded runtime.
        let form = {
            let mut form = url::form_urlencoded::Serializer::new(String::new());
            form.append_pair("grant_type", "refresh_token")
                .append_pair("refresh_token", &refresh)
                .append_pair("client_id", &self.config.client_id)
                .append_pair("scope", &self.config.scope);
            if let Some(secret) = &self.config.client_secret {
                form.append_pair("client_secret", secret);
            }
            form.finish()
        };
        let token_url = self.config.token_url.clone();
        let response = self
            .http
            .post(&token_url)
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(form)
            .send()
            .await
            .map_err(|source| GraphError::Transport {
                what: format!("POST {token_url}"),
                source,
            })?;
        let status = response.status();
        let body = response
            .text()
            .await
            .map_err(|source| GraphError::Transport {
                what: format!("reading the answer of POST {token_url}"),
                source,
            })?;
        if !status.is_success() {
            // OAuth errors are `{"error": "invalid_grant", ...}`; keep only the code.
            let code = serde_json::from_str::<Value>(&body)
                .ok()
                .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_owned))
                .unwrap_or_else(|| "unreadable error".into());
            return Err(GraphError::Token {
                token_url,
                status: status.as_u16(),
                code,
            });
        }
        let token: TokenResponse = serde_json::from_str(&body).map_err(|e| GraphError::Token {
            token_url: token_url.clone(),
            status: status.as_u16(),
            // The message could quote the token itself; keep only the category.
            code: format!("unreadable token answer ({:?})", e.classify()),
        })?;
        let lifetime = Duration::from_secs(
            token
                .expires_in
                .unwrap_or(3600)
                .min(crate::sync::MAX_TOKEN_LIFETIME_S),
        );
        state.access = Some(AccessToken {
            value: token.access_token.clone(),
            expires_at: Instant::now() + lifetime.saturating_sub(EXPIRY_MARGIN),
        });
        if let Some(rotated) = token.refresh_token {
            state.rotated_refresh = Some(rotated);
        }
        Ok(token.access_token)
    }

    /// A valid access token; `stale` is one the server just refused.
    async fn access_token(&self, stale: Option<&str>) -> Result<String, GraphError> {
        // An async mutex: one refresh at a time, and callers wait for it instead of racing.
        let mut state = self.token.lock().await;
        if let Some(t) = &state.access
            && Instant::now() < t.expires_at
            && Some(t.value.as_str()) != stale
        {
            return Ok(t.value.clone());
        }
        self.refresh(&mut state).await
    }

    async fn send_once(
        &self,
        method: &Method,
        url: &str,
        token: &str,
        if_match: Option<&str>,
        body: Option<&Value>,
        page: bool,
    ) -> Result<Answer, GraphError> {
        let what = format!("{method} {url}");
        let mut req = self
            .http
            .request(method.clone(), url)
            .header(AUTHORIZATION, format!("Bearer {token}"));
        if page && let Some(n) = self.config.max_page_size {
            req = req.header("Prefer", format!("odata.maxpagesize={n}"));
        }
        if let Some(etag) = if_match {
            let value = HeaderValue::from_str(etag).map_err(|_| GraphError::Body {
                what: what.clone(),
                reason: format!("etag {etag:?} cannot be sent as a header"),
            })?;
            req = req.header(IF_MATCH, value);
        }
        if let Some(body) = body {
            req = req
                .header(CONTENT_TYPE, "application/json")
                .body(serde_json::to_vec(body).unwrap_or_default());
        }
        self.requests.fetch_add(1, Ordering::Relaxed);
        if *method != Method::GET {
            self.writes.fetch_add(1, Ordering::Relaxed);
        }
        let response = req.send().await.map_err(|source| GraphError::Transport {
            what: what.clone(),
            source,
        })?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = response
            .text()
            .await
            .map_err(|source| GraphError::Transport { what, source })?;
        Ok(Answer {
            status,
            retry_after,
            body,
        })
    }

    /// Sends with the cached token; on 401 refreshes once and resends.
    async fn send(
        &self,
        method: Method,
        url: &str,
        if_match: Option<&str>,
        body: Option<&Value>,
        page: bool,
    ) -> Result<Answer, GraphError> {
        let token = self.access_token(None).await?;
        let answer = self
            .send_once(&method, url, &token, if_match, body, page)
            .await?;
        if answer.status != StatusCode::UNAUTHORIZED {
            return Ok(answer);
        }
        let fresh = self.access_token(Some(&token)).await?;
        let answer = self
            .send_once(&method, url, &fresh, if_match, body, page)
            .await?;
        if answer.status == StatusCode::UNAUTHORIZED {
            return Err(GraphError::Unauthorized {
                what: format!("{method} {url}"),
            });
        }
        Ok(answer)
    }

    /// Makes one request a sync machine asked for and classifies the answer.
    pub async fn execute(&self, request: &Request) -> Result<Reply, GraphError> {
        let (method, url, if_match, body, page) = match request {
            Request::Page { url } => (Method::GET, url.clone(), None, None, true),
            Request::Item { kind, id } => (
                Method::GET,
                self.item_url(*kind, Some(id)).to_string(),
                None,
                None,
                false,
            ),
            Request::Write { kind, op } => match op {
                WriteOp::Patch { id, etag, body } => (
                    Method::PATCH,
                    self.item_url(*kind, Some(id)).to_string(),
                    etag.clone(),
                    Some(Value::Object(body.clone())),
                    false,
                ),
                WriteOp::Delete { id, etag } => (
                    Method::DELETE,
                    self.item_url(*kind, Some(id)).to_string(),
                    etag.clone(),
                    None,
                    false,
                ),
                WriteOp::Create { body } => (
                    Method::POST,
                    self.item_url(*kind, None).to_string(),
                    None,
                    Some(body.clone()),
                    false,
                ),
                WriteOp::Action { id, action, body } => {
                    let mut url = self.item_url(*kind, Some(id));
                    if let Ok(mut segments) = url.path_segments_mut() {
                        segments.push(action);
                    }
                    (
                        Method::POST,
                        url.to_string(),
                        None,
                        Some(body.clone()),
                        false,
                    )
                }
            },
        };
        let what = format!("{method} {url}");
        let answer = self
            .send(method, &url, if_match.as_deref(), body.as_ref(), page)
            .await?;
        if answer.status.is_success() {
            if answer.status == StatusCode::NO_CONTENT || answer.body.trim().is_empty() {
                return Ok(
                    if matches!(
                        request,
                        Request::Write {
                            op: WriteOp::Delete { .. },
                            ..
                        }
                    ) {
                        Reply::Deleted
                    } else {
                        Reply::Accepted
                    },
                );
            }
            let json = |reason: serde_json::Error| GraphError::Body {
                what: what.clone(),
                reason: reason.to_string(),
            };
            return Ok(match request {
                Request::Page { .. } => {
                    Reply::Page(serde_json::from_str::<DeltaPage>(&answer.body).map_err(json)?)
                }
                _ => Reply::Item(serde_json::from_str::<Value>(&answer.body).map_err(json)?),
            });
        }
        let failure = wire::classify(
            answer.status.as_u16(),
            &answer.body,
            answer.retry_after.as_deref(),
        );
        Ok(match failure {
            Failure::SyncStateNotFound => Reply::SyncStateNotFound,
            Failure::Conflict => Reply::Conflict,
            Failure::Throttled { retry_after } => Reply::Throttled { retry_after },
            Failure::NotFound => Reply::NotFound,
            Failure::Unauthorized => return Err(GraphError::Unauthorized { what }),
            Failure::Other {
                status,
                code,
                message,
            } => {
                return Err(GraphError::Status {
                    what,
                    status,
                    code,
                    message: message.chars().take(BODY_SNIPPET).collect(),
                });
            }
        })
    }

    /// A subscription call: JSON in, the subscription (or nothing, for 204) out.
    async fn subscription_call(
        &self,
        method: Method,
        path: Option<&str>,
        body: Option<&Value>,
    ) -> Result<Option<Subscription>, GraphError> {
        let mut url = self.base.clone();
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.pop_if_empty().push("subscriptions");
            if let Some(id) = path {
                segments.push(id);
            }
        }
        let what = format!("{method} {url}");
        let answer = self.send(method, url.as_str(), None, body, false).await?;
        if answer.status == StatusCode::NO_CONTENT {
            return Ok(None);
        }
        if !answer.status.is_success() {
            let detail = serde_json::from_str::<wire::ErrorBody>(&answer.body)
                .map(|b| b.error)
                .unwrap_or_default();
            return Err(GraphError::Status {
                what,
                status: answer.status.as_u16(),
                code: detail.code,
                message: detail.message.chars().take(BODY_SNIPPET).collect(),
            });
        }
        serde_json::from_str(&answer.body)
            .map(Some)
            .map_err(|e| GraphError::Body {
                what,
                reason: e.to_string(),
            })
    }

    /// `POST /subscriptions` (Graph validates the notification URL before answering 201); `body`
    /// from [`super::webhook::subscription_body`].
    pub async fn create_subscription(&self, body: &Value) -> Result<Subscription, GraphError> {
        self.subscription_call(Method::POST, None, Some(body))
            .await?
            .ok_or_else(|| GraphError::Body {
                what: "POST subscriptions".into(),
                reason: "no subscription in the answer".into(),
            })
    }

    /// `PATCH /subscriptions/{id}` with a new `expirationDateTime`.
    pub async fn renew_subscription(
        &self,
        id: &str,
        expiration: &str,
    ) -> Result<Option<Subscription>, GraphError> {
        let body = serde_json::json!({"expirationDateTime": expiration});
        self.subscription_call(Method::PATCH, Some(id), Some(&body))
            .await
    }

    /// `DELETE /subscriptions/{id}`.
    pub async fn delete_subscription(&self, id: &str) -> Result<(), GraphError> {
        self.subscription_call(Method::DELETE, Some(id), None)
            .await
            .map(|_| ())
    }

    /// The mailbox's address (`GET /me`: `mail`, else `userPrincipalName`), which keys its own
    /// entry in `attendees`.
    pub async fn mailbox_address(&self) -> Result<String, GraphError> {
        let url = format!("{}me", self.base);
        let what = format!("GET {url}");
        let answer = self.send(Method::GET, &url, None, None, false).await?;
        if !answer.status.is_success() {
            return Err(GraphError::Status {
                what,
                status: answer.status.as_u16(),
                code: String::new(),
                message: answer.body.chars().take(BODY_SNIPPET).collect(),
            });
        }
        let me: Value = serde_json::from_str(&answer.body).map_err(|e| GraphError::Body {
            what: what.clone(),
            reason: e.to_string(),
        })?;
        ["mail", "userPrincipalName"]
            .iter()
            .find_map(|k| me.get(*k).and_then(Value::as_str).filter(|s| !s.is_empty()))
            .map(str::to_owned)
            .ok_or(GraphError::Body {
                what,
                reason: "neither mail nor userPrincipalName".into(),
            })
    }

    async fn exchange(&self, out: &Outgoing) -> Result<Reply, GraphError> {
        if !out.after.is_zero() {
            tokio::time::sleep(out.after).await;
        }
        self.execute(&out.request).await
    }

    /// Runs a calendar round to the end.
    pub async fn run_calendar_pull(
        &self,
        mut pull: CalendarPull,
    ) -> Result<CalendarChanges, DriveError> {
        let mut step = pull.start();
        loop {
            match step {
                Step::Done(changes) => return Ok(changes),
                Step::Send(out) => {
                    let reply = self.exchange(&out).await?;
                    step = pull.handle(reply)?;
                }
            }
        }
    }

    /// Runs a contacts round to the end.
    pub async fn run_contact_pull(
        &self,
        mut pull: ContactPull,
    ) -> Result<ContactChanges, DriveError> {
        let mut step = pull.start();
        loop {
            match step {
                Step::Done(changes) => return Ok(changes),
                Step::Send(out) => {
                    let reply = self.exchange(&out).await?;
                    step = pull.handle(reply)?;
                }
            }
        }
    }

    /// Runs one write to the end. On 412, `merge` gets Graph's current copy, merges it (as a pull
    /// would) and returns the re-rendered write, or `None` when nothing is left to write.
    pub async fn run_write(
        &self,
        mut job: WriteJob,
        mut merge: impl FnMut(Value) -> Option<WriteOp>,
    ) -> Result<WriteOutcome, DriveError> {
        let mut step = job.start();
        loop {
            match step {
                WriteStep::Done(outcome) => return Ok(outcome),
                WriteStep::Merge { current } => step = job.rebase(merge(current)),
                WriteStep::Send(out) => {
                    let reply = self.exchange(&out).await?;
                    step = job.handle(reply)?;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_secrets() {
        let mut config = GraphConfig::new("client-1", "refresh-SECRET-1");
        config.client_secret = Some("client-SECRET-2".into());
        let client = GraphClient::new(config).unwrap();
        if let Ok(mut state) = client.token.try_lock() {
            state.access = Some(AccessToken {
                value: "access-SECRET-3".into(),
                expires_at: Instant::now(),
            });
            state.rotated_refresh = Some("refresh-SECRET-4".into());
        }
        let shown = format!("{client:?} {:?}", client.config());
        assert!(shown.contains("client-1"), "{shown}");
        assert!(!shown.contains("SECRET"), "{shown}");
    }

    #[test]
    fn item_urls_escape_the_id_as_one_segment() {
        let mut config = GraphConfig::new("c", "r");
        config.api_base = "http://fake:1/v1.0/".into();
        let client = GraphClient::new(config).unwrap();
        assert_eq!(
            client.item_url(ItemKind::Event, Some("AAMk/x?y=")).as_str(),
            "http://fake:1/v1.0/me/events/AAMk%2Fx%3Fy="
        );
        assert_eq!(
            client.item_url(ItemKind::Contact, None).as_str(),
            "http://fake:1/v1.0/me/contacts"
        );
    }
}

//! A thin async HTTP client for one Salesforce org: it sends the [`Request`]s the sync state
//! machine asks for, under `{instance_url}/services/data/{api_version}/`, and hands back the raw
//! [`Response`]s; it decides nothing about sync.
//!
//! Authentication is the shared refresh-token grant ([`crate::oauth`]): Salesforce's token answer
//! has no `expires_in` (a session lasts until the org's timeout), so a 401 (`INVALID_SESSION_ID`)
//! drops the token, refreshes it and sends the request once more. Secrets never reach `Debug`
//! output, errors or logs.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use reqwest::{Method, Url};

use super::sync::{
    CollectionCall, CollectionOutcome, Request, Response, Round, RoundError, RoundOutcome,
    Throttle, busy_wait, match_results,
};
use super::wire::format_param_ms;
use crate::dav::client::retry_after;
use crate::oauth::{OAuthError, RefreshGrant, TokenSource};
use crate::secret::Secret;

/// Salesforce's login host for production orgs (sandboxes use `test.salesforce.com`).
pub const DEFAULT_TOKEN_URL: &str = "https://login.salesforce.com/services/oauth2/token";

/// Settings of a [`SalesforceClient`].
#[derive(Debug, Clone)]
pub struct SalesforceConfig {
    /// `https://MyDomain.my.salesforce.com` (tests: a fake's address).
    pub instance_url: String,
    /// `v62.0`.
    pub api_version: String,
    pub token_url: String,
    pub client_id: String,
    pub client_secret: Option<Secret>,
    pub refresh_token: Secret,
    pub timeout: Duration,
}

/// Why a client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientBuildError {
    #[error("{what} {url:?} is not a usable URL")]
    BadUrl { what: &'static str, url: String },
    #[error("api_version {0:?} is not of the form v62.0")]
    BadVersion(String),
    #[error("building the HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    #[error(transparent)]
    OAuth(#[from] OAuthError),
}

/// Why a request got no HTTP answer to interpret.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{method} {path}: {source}")]
    Transport {
        method: Method,
        path: String,
        source: reqwest::Error,
    },
    #[error(transparent)]
    Token(#[from] OAuthError),
    #[error("{what}: {message}")]
    Request { what: String, message: String },
}

impl ClientError {
    /// Whether the request may have been applied although no answer arrived.
    pub fn outcome_unknown(&self) -> bool {
        matches!(self, ClientError::Transport { .. })
    }
}

/// `v62.0` (also accepts `62.0`); None when it is not that shape.
pub fn normalize_api_version(v: &str) -> Option<String> {
    let digits = v.trim().strip_prefix('v').unwrap_or(v.trim());
    let (major, minor) = digits.split_once('.')?;
    let ok = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    (ok(major) && ok(minor)).then(|| format!("v{major}.{minor}"))
}

/// Client for one org. Cheap to clone; clones share the token and the counters.
#[derive(Clone)]
pub struct SalesforceClient {
    http: reqwest::Client,
    instance: Url,
    data: Url,
    tokens: TokenSource,
    requests: Arc<AtomicU64>,
    writes: Arc<AtomicU64>,
}

impl fmt::Debug for SalesforceClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SalesforceClient")
            .field("data", &self.data.as_str())
            .field("tokens", &self.tokens)
            .finish_non_exhaustive()
    }
}

impl SalesforceClient {
    pub fn new(config: SalesforceConfig) -> Result<Self, ClientBuildError> {
        let bad = |what, url: &str| ClientBuildError::BadUrl {
            what,
            url: url.to_owned(),
        };
        let mut root = config.instance_url.trim_end_matches('/').to_owned();
        root.push('/');
        let instance = Url::parse(&root).map_err(|_| bad("instance_url", &config.instance_url))?;
        if instance.cannot_be_a_base() {
            return Err(bad("instance_url", &config.instance_url));
        }
        let version = normalize_api_version(&config.api_version)
            .ok_or_else(|| ClientBuildError::BadVersion(config.api_version.clone()))?;
        let data = instance
            .join(&format!("services/data/{version}/"))
            .map_err(|_| bad("instance_url", &config.instance_url))?;
        let http = reqwest::Client::builder().timeout(config.timeout).build()?;
        let tokens = TokenSource::new(
            http.clone(),
            RefreshGrant {
                token_url: config.token_url,
                client_id: config.client_id,
                client_secret: config.client_secret,
                refresh_token: config.refresh_token,
                default_lifetime: None,
            },
        )?;
        Ok(SalesforceClient {
            http,
            instance,
            data,
            tokens,
            requests: Arc::new(AtomicU64::new(0)),
            writes: Arc::new(AtomicU64::new(0)),
        })
    }

    /// API requests sent (token refreshes not included).
    pub fn request_count(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Collection writes sent.
    pub fn write_count(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }

    /// Token refreshes done.
    pub fn refresh_count(&self) -> u64 {
        self.tokens.refresh_count()
    }

    /// The URL, method and JSON body of `req`.
    pub fn build(&self, req: &Request) -> Result<(Method, Url, Option<Vec<u8>>), ClientError> {
        let what = req.describe();
        let bad = |message: String| ClientError::Request {
            what: what.clone(),
            message,
        };
        let join = |path: &str| self.data.join(path).map_err(|e| bad(e.to_string()));
        let json = |v: &super::wire::CollectionRequest| {
            serde_json::to_vec(v).map_err(|e| bad(e.to_string()))
        };
        Ok(match req {
            Request::Updated {
                object,
                start_ms,
                end_ms,
            }
            | Request::Deleted {
                object,
                start_ms,
                end_ms,
            } => {
                let kind = if matches!(req, Request::Updated { .. }) {
                    "updated"
                } else {
                    "deleted"
                };
                let mut url = join(&format!("sobjects/{}/{kind}/", object.name()))?;
                url.query_pairs_mut()
                    .append_pair("start", &format_param_ms(*start_ms))
                    .append_pair("end", &format_param_ms(*end_ms));
                (Method::GET, url, None)
            }
            Request::Query { soql } => {
                let mut url = join("query")?;
                url.query_pairs_mut().append_pair("q", soql);
                (Method::GET, url, None)
            }
            Request::QueryMore { url: next } => {
                // A path from the instance root; never another host.
                if !next.starts_with("/services/data/") {
                    return Err(bad(format!("nextRecordsUrl {next:?} is not a data path")));
                }
                let url = self
                    .instance
                    .join(next.trim_start_matches('/'))
                    .map_err(|e| bad(e.to_string()))?;
                (Method::GET, url, None)
            }
            Request::Create { body } => {
                (Method::POST, join("composite/sobjects")?, Some(json(body)?))
            }
            Request::Upsert {
                object,
                field,
                body,
            } => (
                Method::PATCH,
                join(&format!("composite/sobjects/{}/{field}", object.name()))?,
                Some(json(body)?),
            ),
            Request::Update { body } => (
                Method::PATCH,
                join("composite/sobjects")?,
                Some(json(body)?),
            ),
            Request::Delete { ids } => {
                let mut url = join("composite/sobjects")?;
                url.query_pairs_mut()
                    .append_pair("ids", &ids.join(","))
                    .append_pair("allOrNone", "false");
                (Method::DELETE, url, None)
            }
        })
    }

    /// Sends `req` and returns Salesforce's answer, whatever its status (the state machine
    /// interprets it). A 401 refreshes the access token and sends the request once more.
    pub async fn execute(&self, req: &Request) -> Result<Response, ClientError> {
        let (method, url, body) = self.build(req)?;
        let mut refreshed = false;
        loop {
            let token = if refreshed {
                self.tokens.refresh().await?
            } else {
                self.tokens.access_token().await?
            };
            let mut builder = self
                .http
                .request(method.clone(), url.clone())
                .header(ACCEPT, HeaderValue::from_static("application/json"));
            if let Ok(mut auth) = HeaderValue::from_str(&format!("Bearer {}", token.expose())) {
                auth.set_sensitive(true);
                builder = builder.header(AUTHORIZATION, auth);
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
                path: url.path().to_owned(),
                source,
            };
            let resp = builder.send().await.map_err(transport)?;
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            let bytes = resp.bytes().await.map_err(transport)?.to_vec();
            if status == 401 && !refreshed {
                self.tokens.forget();
                refreshed = true;
                continue;
            }
            let date_ms = headers
                .get(reqwest::header::DATE)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| httpdate::parse_http_date(v).ok())
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .and_then(|d| i64::try_from(d.as_millis()).ok());
            return Ok(Response {
                status,
                retry_after: retry_after(&headers, SystemTime::now()),
                date_ms,
                body: bytes,
            });
        }
    }
}

/// Why driving a round or a write through the client failed.
#[derive(Debug, thiserror::Error)]
pub enum DriveError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Round(#[from] RoundError),
}

impl DriveError {
    /// The throttle that ended it, if any.
    pub fn throttle(&self) -> Option<Throttle> {
        match self {
            DriveError::Round(RoundError::Throttled { throttle, .. }) => Some(*throttle),
            _ => None,
        }
    }
}

impl SalesforceClient {
    /// Sends `req`, retrying 429/503 up to `max_busy_retries` times after [`busy_wait`] (at
    /// least `Retry-After`). `REQUEST_LIMIT_EXCEEDED` is returned at once: retrying would only
    /// spend more of the org's allowance.
    pub async fn execute_patiently(
        &self,
        req: &Request,
        max_busy_retries: u32,
        jitter: &mut (dyn FnMut() -> f64 + Send),
    ) -> Result<Response, ClientError> {
        let mut attempt = 0;
        loop {
            let response = self.execute(req).await?;
            match super::sync::throttle(&response) {
                Some(Throttle::Busy { retry_after }) if attempt < max_busy_retries => {
                    tokio::time::sleep(busy_wait(attempt, retry_after, jitter())).await;
                    attempt += 1;
                }
                _ => return Ok(response),
            }
        }
    }

    /// Drives a pull `round` to its end (see [`Round`]).
    pub async fn run_round(
        &self,
        mut round: Round,
        max_busy_retries: u32,
        jitter: &mut (dyn FnMut() -> f64 + Send),
    ) -> Result<RoundOutcome, DriveError> {
        while let Some(request) = round.next_request() {
            let response = self
                .execute_patiently(&request, max_busy_retries, jitter)
                .await?;
            round.on_response(&response)?;
        }
        Ok(round.finish())
    }

    /// Sends one collection call and matches its SaveResults to its records.
    pub async fn send_collection(
        &self,
        call: &CollectionCall,
        max_busy_retries: u32,
        jitter: &mut (dyn FnMut() -> f64 + Send),
    ) -> Result<CollectionOutcome, DriveError> {
        let response = self
            .execute_patiently(&call.request, max_busy_retries, jitter)
            .await?;
        Ok(match_results(call, &response)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::salesforce::wire::SObjectType;

    fn client(instance: &str) -> SalesforceClient {
        SalesforceClient::new(SalesforceConfig {
            instance_url: instance.into(),
            api_version: "62.0".into(),
            token_url: "http://127.0.0.1:9/services/oauth2/token".into(),
            client_id: "id".into(),
            client_secret: Some(Secret::new("s3cr3t-client")),
            refresh_token: Secret::new("s3cr3t-refresh"),
            timeout: Duration::from_secs(5),
        })
        .unwrap()
    }

    #[test]
    fn urls_live_under_the_data_path() {
        let c = client("http://127.0.0.1:9/");
        let (m, url, _) = c
            .build(&Request::Updated {
                object: SObjectType::Contact,
                start_ms: 1_795_082_400_000,
                end_ms: 1_795_082_460_000,
            })
            .unwrap();
        assert_eq!(m, Method::GET);
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:9/services/data/v62.0/sobjects/Contact/updated/?start=2026-11-19T10%3A00%3A00%2B00%3A00&end=2026-11-19T10%3A01%3A00%2B00%3A00"
        );
        let (_, url, _) = c
            .build(&Request::QueryMore {
                url: "/services/data/v62.0/query/01g-2000".into(),
            })
            .unwrap();
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:9/services/data/v62.0/query/01g-2000"
        );
        assert!(
            c.build(&Request::QueryMore {
                url: "https://evil.example/services/data/x".into()
            })
            .is_err()
        );
        let (m, url, body) = c
            .build(&Request::Delete {
                ids: vec!["a".into(), "b".into()],
            })
            .unwrap();
        assert_eq!(m, Method::DELETE);
        assert!(
            url.as_str()
                .ends_with("composite/sobjects?ids=a%2Cb&allOrNone=false")
        );
        assert!(body.is_none());
    }

    #[test]
    fn secrets_stay_out_of_debug_and_versions_are_checked() {
        let c = client("http://127.0.0.1:9");
        assert!(!format!("{c:?}").contains("s3cr3t"));
        assert_eq!(normalize_api_version("v62.0").as_deref(), Some("v62.0"));
        assert_eq!(normalize_api_version("62.0").as_deref(), Some("v62.0"));
        assert_eq!(normalize_api_version("latest"), None);
        assert_eq!(normalize_api_version("v62"), None);
    }
}

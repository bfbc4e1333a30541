//! A thin async HTTP client for HubSpot's CRM API: builds URLs under a configurable `api_base`,
//! authenticates (a private-app access token, or OAuth with a refresh token), sends the
//! [`super::wire`] bodies and maps statuses to typed outcomes. 429s become
//! [`ApiError::RateLimited`] with their policy; the caller decides the wait with
//! [`super::sync::rate_limit_wait`].
//!
//! Keeps no sync state and never retries on its own. Secrets never reach `Debug` output or error
//! messages ([`Secret`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode, Url};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::sync::ListRequest;
use super::webhook::ObjectType;
use super::wire::{
    AssociationPage, AssociationType, BatchInput, BatchResult, CreateInput, CrmObject, ErrorBody,
    ListPage, MergeInput, PatchBody, RateLimitPolicy, SearchRequest, SearchResponse, UpdateInput,
    WriteProperties,
};

/// HubSpot's API.
pub const DEFAULT_API_BASE: &str = "https://api.hubapi.com";
/// HubSpot's OAuth token endpoint.
pub const DEFAULT_TOKEN_URL: &str = "https://api.hubapi.com/oauth/v1/token";

pub use crate::secret::Secret;

/// How the client authenticates.
#[derive(Debug, Clone)]
pub enum Auth {
    /// A private app's access token (`access_token_env`).
    AccessToken(Secret),
    /// OAuth: access tokens minted from a refresh token at `token_url`.
    OAuth {
        client_id: String,
        client_secret: Secret,
        refresh_token: Secret,
        token_url: String,
    },
}

/// Settings of a [`HubSpotClient`].
#[derive(Debug, Clone)]
pub struct HubSpotConfig {
    /// `https://api.hubapi.com` unless a test points it at a fake.
    pub api_base: String,
    pub auth: Auth,
    pub timeout: Duration,
}

impl HubSpotConfig {
    pub fn new(api_base: impl Into<String>, auth: Auth) -> Self {
        HubSpotConfig {
            api_base: api_base.into(),
            auth,
            timeout: Duration::from_secs(30),
        }
    }
}

/// Why a client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientBuildError {
    #[error("api_base {url:?} is invalid: {source}")]
    BadUrl {
        url: String,
        source: url::ParseError,
    },
    #[error(transparent)]
    MissingSecret(#[from] crate::secret::MissingEnv),
    #[error("building the HTTP client: {0}")]
    Http(#[from] reqwest::Error),
}

/// Failures of a HubSpot call. Messages name the method and path, never a secret.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{method} {path}: {source}")]
    Transport {
        method: Method,
        path: String,
        source: reqwest::Error,
    },
    /// 429: `policy` decides the wait (a `DAILY` limit waits for the reset).
    #[error("{method} {path}: rate limited ({policy:?}), retry after {retry_after:?}")]
    RateLimited {
        method: Method,
        path: String,
        policy: RateLimitPolicy,
        retry_after: Option<Duration>,
        body: Box<ErrorBody>,
    },
    #[error("{method} {path}: status {status}: {}", .body.summary())]
    Status {
        method: Method,
        path: String,
        status: u16,
        body: Box<ErrorBody>,
    },
    #[error("{method} {path}: unreadable answer: {message}")]
    Decode {
        method: Method,
        path: String,
        message: String,
    },
    #[error("OAuth token refresh at {token_url}: {message}")]
    Auth { token_url: String, message: String },
}

impl ApiError {
    /// The HTTP status, when HubSpot answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            ApiError::Status { status, .. } => Some(*status),
            ApiError::RateLimited { .. } => Some(429),
            _ => None,
        }
    }

    /// The error body, when HubSpot sent one.
    pub fn body(&self) -> Option<&ErrorBody> {
        match self {
            ApiError::Status { body, .. } | ApiError::RateLimited { body, .. } => Some(body),
            _ => None,
        }
    }

    /// Whether the request may have been applied although no answer arrived (a lost response):
    /// transport failures and 5xx. Creates after such an error are looked up before retrying.
    pub fn outcome_unknown(&self) -> bool {
        matches!(self, ApiError::Transport { .. })
            || matches!(self, ApiError::Status { status, .. } if *status >= 500)
    }
}

#[derive(Debug)]
struct CachedToken {
    token: Secret,
    expires: Instant,
}

/// Client for one HubSpot account. Cheap to clone; clones share the request counter and token.
#[derive(Debug, Clone)]
pub struct HubSpotClient {
    http: reqwest::Client,
    base: Url,
    auth: Auth,
    token: Arc<Mutex<Option<CachedToken>>>,
    requests: Arc<AtomicU64>,
}

impl HubSpotClient {
    pub fn new(config: HubSpotConfig) -> Result<Self, ClientBuildError> {
        let mut base = config.api_base.trim_end_matches('/').to_owned();
        base.push('/');
        let base = Url::parse(&base).map_err(|source| ClientBuildError::BadUrl {
            url: config.api_base.clone(),
            source,
        })?;
        let http = reqwest::Client::builder().timeout(config.timeout).build()?;
        Ok(HubSpotClient {
            http,
            base,
            auth: config.auth,
            token: Arc::new(Mutex::new(None)),
            requests: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Requests sent so far by this client and its clones (token refreshes included).
    pub fn request_count(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    fn url(&self, path: &str) -> Result<Url, ApiError> {
        self.base
            .join(path.trim_start_matches('/'))
            .map_err(|e| ApiError::Decode {
                method: Method::GET,
                path: path.to_owned(),
                message: format!("path does not resolve against api_base: {e}"),
            })
    }

    async fn bearer(&self) -> Result<Secret, ApiError> {
        let (client_id, client_secret, refresh_token, token_url) = match &self.auth {
            Auth::AccessToken(t) => return Ok(t.clone()),
            Auth::OAuth {
                client_id,
                client_secret,
                refresh_token,
                token_url,
            } => (client_id, client_secret, refresh_token, token_url),
        };
        if let Ok(guard) = self.token.lock()
            && let Some(cached) = guard.as_ref()
            && cached.expires > Instant::now()
        {
            return Ok(cached.token.clone());
        }
        let auth_error = |message: String| ApiError::Auth {
            token_url: token_url.clone(),
            message,
        };
        let body = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "refresh_token")
            .append_pair("client_id", client_id)
            .append_pair("client_secret", client_secret.expose())
            .append_pair("refresh_token", refresh_token.expose())
            .finish();
        self.requests.fetch_add(1, Ordering::Relaxed);
        let resp = self
            .http
            .post(token_url.as_str())
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .map_err(|e| auth_error(format!("transport: {e}")))?;
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| auth_error(format!("reading the answer: {e}")))?;
        if !status.is_success() {
            return Err(auth_error(format!(
                "status {status}: {}",
                ErrorBody::parse(&bytes).summary()
            )));
        }
        #[derive(serde::Deserialize)]
        struct TokenAnswer {
            access_token: String,
            #[serde(default)]
            expires_in: Option<u64>,
        }
        let answer: TokenAnswer = serde_json::from_slice(&bytes)
            .map_err(|e| auth_error(format!("unreadable token answer: {e}")))?;
        // Refresh a minute early so a token never expires mid-request.
        let lifetime = Duration::from_secs(
            answer
                .expires_in
                .unwrap_or(1800)
                .min(crate::sync::MAX_TOKEN_LIFETIME_S)
                .saturating_sub(60),
        );
        let token = Secret::new(answer.access_token);
        if let Ok(mut guard) = self.token.lock() {
            *guard = Some(CachedToken {
                token: token.clone(),
                expires: Instant::now() + lifetime,
            });
        }
        Ok(token)
    }

    /// Sends one request; 429 becomes [`ApiError::RateLimited`], other statuses are returned.
    async fn send(
        &self,
        method: Method,
        url: Url,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, HeaderMap, Vec<u8>), ApiError> {
        let path = url.path().to_owned();
        let token = self.bearer().await?;
        let mut bearer =
            HeaderValue::from_str(&format!("Bearer {}", token.expose())).map_err(|_| {
                ApiError::Auth {
                    token_url: String::new(),
                    message: "the access token is not a valid header value".into(),
                }
            })?;
        bearer.set_sensitive(true);
        let mut req = self
            .http
            .request(method.clone(), url)
            .header(AUTHORIZATION, bearer);
        if let Some(body) = body {
            req = req.header(CONTENT_TYPE, "application/json").body(body);
        }
        self.requests.fetch_add(1, Ordering::Relaxed);
        let transport = |source| ApiError::Transport {
            method: method.clone(),
            path: path.clone(),
            source,
        };
        let resp = req.send().await.map_err(transport)?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.map_err(transport)?.to_vec();
        if status == StatusCode::TOO_MANY_REQUESTS {
            let body = ErrorBody::parse(&bytes);
            return Err(ApiError::RateLimited {
                method,
                path,
                policy: body.rate_limit_policy(),
                retry_after: retry_after(&headers, SystemTime::now()),
                body: Box::new(body),
            });
        }
        Ok((status, headers, bytes))
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        url: Url,
        body: Option<&(impl Serialize + ?Sized)>,
        ok: &[u16],
    ) -> Result<T, ApiError> {
        let path = url.path().to_owned();
        let bytes = body
            .map(serde_json::to_vec)
            .transpose()
            .map_err(|e| ApiError::Decode {
                method: method.clone(),
                path: path.clone(),
                message: format!("encoding the request: {e}"),
            })?;
        let (status, _, resp) = self.send(method.clone(), url, bytes).await?;
        if !ok.contains(&status.as_u16()) {
            return Err(ApiError::Status {
                method,
                path,
                status: status.as_u16(),
                body: Box::new(ErrorBody::parse(&resp)),
            });
        }
        serde_json::from_slice(&resp).map_err(|e| ApiError::Decode {
            method,
            path,
            message: e.to_string(),
        })
    }

    fn objects(&self, object: ObjectType, rest: &str) -> Result<Url, ApiError> {
        self.url(&format!("crm/v3/objects/{}{rest}", object.path()))
    }

    /// `POST /crm/v3/objects/{o}/search`.
    pub async fn search(
        &self,
        object: ObjectType,
        request: &SearchRequest,
    ) -> Result<SearchResponse, ApiError> {
        let url = self.objects(object, "/search")?;
        self.call(Method::POST, url, Some(request), &[200]).await
    }

    /// `GET /crm/v3/objects/{o}?limit&after&properties&archived`.
    pub async fn list(
        &self,
        object: ObjectType,
        request: &ListRequest,
    ) -> Result<ListPage, ApiError> {
        let mut url = self.objects(object, "")?;
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("limit", &request.limit.to_string());
            if let Some(after) = &request.after {
                q.append_pair("after", after);
            }
            if !request.properties.is_empty() {
                q.append_pair("properties", &request.properties.join(","));
            }
            q.append_pair("archived", if request.archived { "true" } else { "false" });
        }
        self.call(Method::GET, url, None::<&()>, &[200]).await
    }

    /// `GET /crm/v3/objects/{o}/{id}` (`id_property`: look up by that unique property instead).
    /// None when it does not exist (or is archived). A merged-away id answers with the survivor.
    pub async fn get(
        &self,
        object: ObjectType,
        id: &str,
        properties: &[String],
        id_property: Option<&str>,
    ) -> Result<Option<CrmObject>, ApiError> {
        let mut url = self.objects(object, "/")?;
        url.path_segments_mut()
            .map_err(|_| ApiError::Decode {
                method: Method::GET,
                path: id.to_owned(),
                message: "api_base cannot take path segments".into(),
            })?
            .pop_if_empty()
            .push(id);
        {
            let mut q = url.query_pairs_mut();
            if !properties.is_empty() {
                q.append_pair("properties", &properties.join(","));
            }
            if let Some(p) = id_property {
                q.append_pair("idProperty", p);
            }
        }
        match self.call(Method::GET, url, None::<&()>, &[200]).await {
            Ok(o) => Ok(Some(o)),
            Err(ApiError::Status { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `POST /crm/v3/objects/{o}`. A duplicate contact email is a 409 whose body names the
    /// existing id ([`ErrorBody::existing_id`]).
    pub async fn create(
        &self,
        object: ObjectType,
        input: &CreateInput,
    ) -> Result<CrmObject, ApiError> {
        let url = self.objects(object, "")?;
        self.call(Method::POST, url, Some(input), &[200, 201]).await
    }

    /// `PATCH /crm/v3/objects/{o}/{id}` with only the changed properties.
    pub async fn update(
        &self,
        object: ObjectType,
        id: &str,
        properties: &WriteProperties,
    ) -> Result<CrmObject, ApiError> {
        let url = self.objects(object, &format!("/{id}"))?;
        let body = PatchBody {
            properties: properties.clone(),
        };
        self.call(Method::PATCH, url, Some(&body), &[200]).await
    }

    /// `DELETE /crm/v3/objects/{o}/{id}` (archives); false when it was already gone.
    pub async fn archive(&self, object: ObjectType, id: &str) -> Result<bool, ApiError> {
        let url = self.objects(object, &format!("/{id}"))?;
        let (status, _, body) = self.send(Method::DELETE, url.clone(), None).await?;
        match status.as_u16() {
            200..=299 => Ok(true),
            404 => Ok(false),
            s => Err(ApiError::Status {
                method: Method::DELETE,
                path: url.path().to_owned(),
                status: s,
                body: Box::new(ErrorBody::parse(&body)),
            }),
        }
    }

    /// `POST .../batch/create`: 201 all created, 207 partial (errors keyed by trace id).
    pub async fn batch_create(
        &self,
        object: ObjectType,
        body: &BatchInput<CreateInput>,
    ) -> Result<BatchResult, ApiError> {
        let url = self.objects(object, "/batch/create")?;
        self.call(Method::POST, url, Some(body), &[200, 201, 207])
            .await
    }

    /// `POST .../batch/update`: 200 all updated, 207 partial.
    pub async fn batch_update(
        &self,
        object: ObjectType,
        body: &BatchInput<UpdateInput>,
    ) -> Result<BatchResult, ApiError> {
        let url = self.objects(object, "/batch/update")?;
        self.call(Method::POST, url, Some(body), &[200, 207]).await
    }

    /// `POST .../merge`: the survivor (possibly a new id).
    pub async fn merge(
        &self,
        object: ObjectType,
        primary: &str,
        to_merge: &str,
    ) -> Result<CrmObject, ApiError> {
        let url = self.objects(object, "/merge")?;
        let body = MergeInput {
            primary_object_id: primary.to_owned(),
            object_id_to_merge: to_merge.to_owned(),
        };
        self.call(Method::POST, url, Some(&body), &[200]).await
    }

    /// `PUT /crm/v4/objects/{from}/{id}/associations/{to}/{to_id}` with `types`.
    pub async fn associate(
        &self,
        from: ObjectType,
        from_id: &str,
        to: ObjectType,
        to_id: &str,
        types: &[AssociationType],
    ) -> Result<(), ApiError> {
        let url = self.url(&format!(
            "crm/v4/objects/{}/{from_id}/associations/{}/{to_id}",
            from.path(),
            to.path()
        ))?;
        let _: serde_json::Value = self
            .call(Method::PUT, url, Some(types), &[200, 201])
            .await?;
        Ok(())
    }

    /// `GET /crm/v4/objects/{from}/{id}/associations/{to}` (one page).
    pub async fn associations(
        &self,
        from: ObjectType,
        from_id: &str,
        to: ObjectType,
        after: Option<&str>,
    ) -> Result<AssociationPage, ApiError> {
        let mut url = self.url(&format!(
            "crm/v4/objects/{}/{from_id}/associations/{}",
            from.path(),
            to.path()
        ))?;
        if let Some(after) = after {
            url.query_pairs_mut().append_pair("after", after);
        }
        self.call(Method::GET, url, None::<&()>, &[200]).await
    }
}

/// `Retry-After` as delay-seconds or an HTTP date (relative to `now`).
pub fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    crate::dav::client::retry_after(headers, now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_show_in_debug() {
        let config = HubSpotConfig::new(
            "http://127.0.0.1:9",
            Auth::OAuth {
                client_id: "id".into(),
                client_secret: Secret::new("s3cr3t-client"),
                refresh_token: Secret::new("s3cr3t-refresh"),
                token_url: "http://127.0.0.1:9/token".into(),
            },
        );
        let shown = format!("{config:?}");
        assert!(!shown.contains("s3cr3t"), "{shown}");
        let client = HubSpotClient::new(config).unwrap();
        assert!(!format!("{client:?}").contains("s3cr3t"));
        let token = HubSpotConfig::new("http://x", Auth::AccessToken(Secret::new("pat-na1-xyz")));
        assert!(!format!("{token:?}").contains("pat-na1"));
    }

    #[test]
    fn a_missing_env_secret_names_the_variable() {
        let err = Secret::from_env("DRIFTLESS_TEST_SURELY_UNSET_HUBSPOT").unwrap_err();
        assert!(
            err.to_string()
                .contains("DRIFTLESS_TEST_SURELY_UNSET_HUBSPOT")
        );
    }

    #[test]
    fn paths_resolve_under_api_base() {
        let c = HubSpotClient::new(HubSpotConfig::new(
            "http://127.0.0.1:9/prefix/",
            Auth::AccessToken(Secret::new("t")),
        ))
        .unwrap();
        assert_eq!(
            c.objects(ObjectType::Deal, "/batch/update")
                .unwrap()
                .as_str(),
            "http://127.0.0.1:9/prefix/crm/v3/objects/deals/batch/update"
        );
    }
}

//! A thin async HTTP client for one CalDAV calendar or CardDAV address book.
//!
//! It sends the requests built by [`super::wire`], maps statuses to typed outcomes and
//! errors, and counts requests (tests assert that quiet rounds write nothing). It keeps no
//! sync state: tokens and etags belong to the caller.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use reqwest::header::{CONTENT_TYPE, ETAG, HeaderMap, IF_MATCH, IF_NONE_MATCH, RETRY_AFTER};
use reqwest::{Method, StatusCode, Url};

use super::wire::{self, CollectionKind, Fetched, SyncPage, XmlError, is_valid_sync_token_error};

/// How much of an unexpected response body to keep in an error.
const BODY_SNIPPET: usize = 512;

/// Settings of a [`DavClient`].
#[derive(Debug, Clone)]
pub struct DavClientConfig {
    /// The collection URL (a trailing slash is added when missing).
    pub collection_url: String,
    pub kind: CollectionKind,
    pub username: Option<String>,
    pub password: Option<String>,
    /// `D:limit` sent with sync-collection. Keep `None` for Xandikos, which truncates without
    /// the 507 marker and so silently drops changes.
    pub sync_limit: Option<u32>,
    /// Per-request timeout.
    pub timeout: Duration,
}

impl DavClientConfig {
    pub fn new(collection_url: impl Into<String>, kind: CollectionKind) -> Self {
        Self {
            collection_url: collection_url.into(),
            kind,
            username: None,
            password: None,
            sync_limit: None,
            timeout: Duration::from_secs(30),
        }
    }

    pub fn basic_auth(mut self, username: impl Into<String>, password: impl Into<String>) -> Self {
        self.username = Some(username.into());
        self.password = Some(password.into());
        self
    }
}

/// Why a client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientBuildError {
    #[error("collection URL {url:?} is invalid: {source}")]
    BadUrl {
        url: String,
        source: url::ParseError,
    },
    #[error("building the HTTP client: {0}")]
    Http(#[from] reqwest::Error),
}

/// Failures any request can have.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("{method} {url}: {source}")]
    Transport {
        method: Method,
        url: String,
        source: reqwest::Error,
    },
    /// 429 or 503: back off for `retry_after` (from the `Retry-After` header) when given.
    #[error("{method} {url}: rate limited ({status}), retry after {retry_after:?}")]
    RateLimited {
        method: Method,
        url: String,
        status: StatusCode,
        retry_after: Option<Duration>,
    },
    #[error("{method} {url}: unexpected status {status}: {body}")]
    Status {
        method: Method,
        url: String,
        status: StatusCode,
        body: String,
        /// The response's `Retry-After`, when it had one.
        retry_after: Option<Duration>,
    },
    #[error("etag {etag:?} cannot be sent as a header value")]
    BadEtag { etag: String },
    #[error("href {href:?} does not resolve against the collection: {source}")]
    BadHref {
        href: String,
        source: url::ParseError,
    },
}

/// Failures of [`DavClient::sync_collection`].
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error("sync-collection answer is malformed: {0}")]
    Parse(#[from] XmlError),
}

/// Failures of [`DavClient::multiget`] and [`DavClient::get`].
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error("multiget answer is malformed: {0}")]
    Parse(#[from] XmlError),
}

/// Failures of [`DavClient::put`] and [`DavClient::delete`].
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error(transparent)]
    Http(#[from] HttpError),
}

/// Failures of [`DavClient::create_collection`].
#[derive(Debug, thiserror::Error)]
pub enum CreateCollectionError {
    #[error(transparent)]
    Http(#[from] HttpError),
}

/// What a sync-collection REPORT returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncOutcome {
    Page(SyncPage),
    /// The server rejected the token (`DAV:valid-sync-token`, as 403, 409 or 412): start a
    /// full resync without a token.
    TokenInvalid,
}

/// The condition a write is made under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition<'a> {
    /// `If-Match: <etag>`: only replace the version we know.
    IfMatch(&'a str),
    /// `If-None-Match: *`: only create.
    IfNoneMatch,
    /// No condition (tests only; bridges always write conditionally).
    None,
}

/// Result of a PUT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutOutcome {
    /// Stored; `etag` is `None` when the server did not return one (it changed the body, so
    /// fetch it to learn the stored version).
    Written { etag: Option<String> },
    /// 412: the resource exists (If-None-Match) or changed (If-Match).
    PreconditionFailed,
}

/// Result of a DELETE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteOutcome {
    Deleted,
    /// 404: already gone.
    NotFound,
    /// 412: the resource changed since the etag we sent.
    PreconditionFailed,
}

/// A single resource from [`DavClient::get`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    pub etag: Option<String>,
    pub body: String,
}

/// Client for one collection. Cheap to clone; clones share the request counter.
#[derive(Debug, Clone)]
pub struct DavClient {
    http: reqwest::Client,
    collection: Url,
    kind: CollectionKind,
    auth: Option<(String, Option<String>)>,
    sync_limit: Option<u32>,
    requests: Arc<AtomicU64>,
}

impl DavClient {
    pub fn new(config: DavClientConfig) -> Result<Self, ClientBuildError> {
        let mut url = config.collection_url.clone();
        if !url.ends_with('/') {
            url.push('/');
        }
        let collection = Url::parse(&url).map_err(|source| ClientBuildError::BadUrl {
            url: config.collection_url.clone(),
            source,
        })?;
        let http = reqwest::Client::builder().timeout(config.timeout).build()?;
        Ok(Self {
            http,
            collection,
            kind: config.kind,
            auth: config.username.map(|u| (u, config.password)),
            sync_limit: config.sync_limit,
            requests: Arc::new(AtomicU64::new(0)),
        })
    }

    /// The collection URL (with a trailing slash).
    pub fn collection_url(&self) -> &Url {
        &self.collection
    }

    pub fn kind(&self) -> CollectionKind {
        self.kind
    }

    /// Requests sent so far by this client and its clones.
    pub fn request_count(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Resolves an href (absolute path, full URL, or a name relative to the collection).
    pub fn resolve(&self, href: &str) -> Result<Url, HttpError> {
        self.collection
            .join(href)
            .map_err(|source| HttpError::BadHref {
                href: href.to_string(),
                source,
            })
    }

    async fn send(
        &self,
        method: Method,
        url: Url,
        headers: HeaderMap,
        body: Option<String>,
    ) -> Result<(StatusCode, HeaderMap, Vec<u8>), HttpError> {
        let mut req = self
            .http
            .request(method.clone(), url.clone())
            .headers(headers);
        if let Some((user, password)) = &self.auth {
            req = req.basic_auth(user, password.as_ref());
        }
        if let Some(body) = body {
            req = req.body(body);
        }
        self.requests.fetch_add(1, Ordering::Relaxed);
        let transport = |source| HttpError::Transport {
            method: method.clone(),
            url: url.to_string(),
            source,
        };
        let resp = req.send().await.map_err(transport)?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.bytes().await.map_err(transport)?.to_vec();
        if status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE {
            return Err(HttpError::RateLimited {
                method,
                url: url.to_string(),
                status,
                retry_after: retry_after(&headers, SystemTime::now()),
            });
        }
        Ok((status, headers, body))
    }

    fn unexpected(
        method: Method,
        url: &Url,
        status: StatusCode,
        headers: &HeaderMap,
        body: &[u8],
    ) -> HttpError {
        let mut text = String::from_utf8_lossy(body).into_owned();
        if text.len() > BODY_SNIPPET {
            let mut cut = BODY_SNIPPET;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
            text.push('…');
        }
        HttpError::Status {
            method,
            url: url.to_string(),
            status,
            body: text,
            retry_after: retry_after(headers, SystemTime::now()),
        }
    }

    fn xml_headers(depth: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            CONTENT_TYPE,
            reqwest::header::HeaderValue::from_static("application/xml; charset=utf-8"),
        );
        if let Some(depth) = depth
            && let Ok(v) = reqwest::header::HeaderValue::from_str(depth)
        {
            h.insert("Depth", v);
        }
        h
    }

    /// RFC 6578 sync-collection REPORT: changes since `token` (`None`: everything).
    pub async fn sync_collection(&self, token: Option<&str>) -> Result<SyncOutcome, SyncError> {
        let method = report_method();
        let url = self.collection.clone();
        let body = wire::sync_collection_body(token, self.sync_limit);
        let (status, resp_headers, resp) = self
            .send(
                method.clone(),
                url.clone(),
                Self::xml_headers(Some("0")),
                Some(body),
            )
            .await?;
        match status.as_u16() {
            207 => Ok(SyncOutcome::Page(wire::parse_sync_collection(
                &resp,
                url.path(),
            )?)),
            403 | 409 | 412 if is_valid_sync_token_error(&resp) => Ok(SyncOutcome::TokenInvalid),
            _ => Err(Self::unexpected(method, &url, status, &resp_headers, &resp).into()),
        }
    }

    /// calendar-multiget / addressbook-multiget for `hrefs` (bodies and etags).
    pub async fn multiget(&self, hrefs: &[impl AsRef<str>]) -> Result<Vec<Fetched>, FetchError> {
        if hrefs.is_empty() {
            return Ok(Vec::new());
        }
        let method = report_method();
        let url = self.collection.clone();
        let body = wire::multiget_body(self.kind, hrefs);
        let (status, resp_headers, resp) = self
            .send(
                method.clone(),
                url.clone(),
                Self::xml_headers(Some("1")),
                Some(body),
            )
            .await?;
        if status.as_u16() != 207 {
            return Err(Self::unexpected(method, &url, status, &resp_headers, &resp).into());
        }
        Ok(wire::parse_multiget(&resp, self.kind)?)
    }

    /// GET one member; `None` when it does not exist.
    pub async fn get(&self, href: &str) -> Result<Option<Resource>, FetchError> {
        let url = self.resolve(href)?;
        let (status, resp_headers, resp) = self
            .send(Method::GET, url.clone(), HeaderMap::new(), None)
            .await?;
        match status.as_u16() {
            200 => Ok(Some(Resource {
                etag: header_string(&resp_headers, ETAG),
                body: String::from_utf8_lossy(&resp).into_owned(),
            })),
            404 | 410 => Ok(None),
            _ => Err(Self::unexpected(Method::GET, &url, status, &resp_headers, &resp).into()),
        }
    }

    /// PUT a member under a precondition.
    pub async fn put(
        &self,
        href: &str,
        body: &str,
        precondition: Precondition<'_>,
    ) -> Result<PutOutcome, WriteError> {
        let url = self.resolve(href)?;
        let mut headers = HeaderMap::new();
        headers.insert(
            CONTENT_TYPE,
            reqwest::header::HeaderValue::from_static(self.kind.content_type()),
        );
        set_precondition(&mut headers, precondition)?;
        let (status, resp_headers, resp) = self
            .send(Method::PUT, url.clone(), headers, Some(body.to_string()))
            .await?;
        match status.as_u16() {
            200..=299 => Ok(PutOutcome::Written {
                etag: header_string(&resp_headers, ETAG),
            }),
            412 => Ok(PutOutcome::PreconditionFailed),
            _ => Err(Self::unexpected(Method::PUT, &url, status, &resp_headers, &resp).into()),
        }
    }

    /// DELETE a member, only if it still has `if_match` when given.
    pub async fn delete(
        &self,
        href: &str,
        if_match: Option<&str>,
    ) -> Result<DeleteOutcome, WriteError> {
        let url = self.resolve(href)?;
        let mut headers = HeaderMap::new();
        if let Some(etag) = if_match {
            set_precondition(&mut headers, Precondition::IfMatch(etag))?;
        }
        let (status, resp_headers, resp) = self
            .send(Method::DELETE, url.clone(), headers, None)
            .await?;
        match status.as_u16() {
            200..=299 => Ok(DeleteOutcome::Deleted),
            404 | 410 => Ok(DeleteOutcome::NotFound),
            412 => Ok(DeleteOutcome::PreconditionFailed),
            _ => Err(Self::unexpected(Method::DELETE, &url, status, &resp_headers, &resp).into()),
        }
    }

    /// Creates this client's collection: MKCALENDAR for a calendar, extended MKCOL for an
    /// address book. For test setup; providers' collections normally exist already.
    pub async fn create_collection(&self, display_name: &str) -> Result<(), CreateCollectionError> {
        let (method, body) = match self.kind {
            CollectionKind::Calendar => (
                Method::from_bytes(b"MKCALENDAR").unwrap_or(Method::POST),
                wire::mkcalendar_body(display_name),
            ),
            CollectionKind::AddressBook => (
                Method::from_bytes(b"MKCOL").unwrap_or(Method::POST),
                wire::mkcol_addressbook_body(display_name),
            ),
        };
        let url = self.collection.clone();
        let (status, resp_headers, resp) = self
            .send(
                method.clone(),
                url.clone(),
                Self::xml_headers(None),
                Some(body),
            )
            .await?;
        if status.is_success() {
            Ok(())
        } else {
            Err(Self::unexpected(method, &url, status, &resp_headers, &resp).into())
        }
    }
}

fn report_method() -> Method {
    // A valid token, so this never falls back; avoids an unwrap.
    Method::from_bytes(b"REPORT").unwrap_or(Method::POST)
}

fn set_precondition(
    headers: &mut HeaderMap,
    precondition: Precondition<'_>,
) -> Result<(), HttpError> {
    match precondition {
        Precondition::IfMatch(etag) => {
            let v =
                reqwest::header::HeaderValue::from_str(etag).map_err(|_| HttpError::BadEtag {
                    etag: etag.to_string(),
                })?;
            headers.insert(IF_MATCH, v);
        }
        Precondition::IfNoneMatch => {
            headers.insert(
                IF_NONE_MATCH,
                reqwest::header::HeaderValue::from_static("*"),
            );
        }
        Precondition::None => {}
    }
    Ok(())
}

fn header_string(headers: &HeaderMap, name: reqwest::header::HeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// `Retry-After` as delay-seconds or an HTTP date (relative to `now`).
pub fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    crate::sync::parse_retry_after(headers.get(RETRY_AFTER)?.to_str().ok()?, now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_forms() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h, now), None);
        h.insert(RETRY_AFTER, "120".parse().unwrap());
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(120)));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        h.insert(RETRY_AFTER, later.parse().unwrap());
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(30)));
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(30));
        h.insert(RETRY_AFTER, earlier.parse().unwrap());
        assert_eq!(retry_after(&h, now), Some(Duration::ZERO));
        h.insert(RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&h, now), None);
    }

    #[test]
    fn hrefs_resolve_against_the_collection() {
        let c = DavClient::new(DavClientConfig::new(
            "http://127.0.0.1:9/alice/cal",
            CollectionKind::Calendar,
        ))
        .unwrap();
        assert_eq!(c.collection_url().as_str(), "http://127.0.0.1:9/alice/cal/");
        assert_eq!(
            c.resolve("x.ics").unwrap().as_str(),
            "http://127.0.0.1:9/alice/cal/x.ics"
        );
        assert_eq!(
            c.resolve("/alice/cal/y.ics").unwrap().as_str(),
            "http://127.0.0.1:9/alice/cal/y.ics"
        );
    }
}

//! HTTP routes and the one place that maps failures to HTTP statuses and JSON error bodies.
//! Any path that is not a route accepts a WebSocket upgrade (automerge-repo clients pick the path).
//!
//! Authentication happens here, before anything else: a WebSocket upgrade without valid credentials
//! (`Authorization: Bearer <token>` or `?ticket=`) is answered 401 and no WebSocket ever exists; an
//! upgrade over the connection caps is answered 429. `/v1/*` needs a bearer token; `/healthz` and
//! `/metrics` are open and say nothing about documents. Must not: log a token or a ticket.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{ConnectInfo, Path, State, WebSocketUpgrade};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use driftless_client_protocol::DocumentId;
use driftless_client_protocol::engine::{Access, DEFAULT_WORKSPACE, TicketGrant};
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

use crate::auth::{self, AuthError, ClaimRole, Claims};
use crate::config::AuthConfig;
use crate::host::HostInput;
use crate::limits::Admission;
use crate::loader::DocJson;
use crate::metrics::Metrics;
use crate::ws::{self, WsContext};

/// Stands in for an expiry too far away to represent as an `Instant`.
const FAR_FUTURE: std::time::Duration = std::time::Duration::from_secs(10 * 365 * 86_400);

#[derive(Clone)]
pub struct AppState {
    pub net_tx: mpsc::Sender<HostInput>,
    pub metrics: Arc<Metrics>,
    pub ws: WsContext,
    /// `None`: open development mode.
    pub auth: Option<Arc<AuthConfig>>,
    pub admission: Arc<Admission>,
    /// The provider bridges (`/v1/bridges`).
    pub bridges: Arc<crate::bridge::Bridges>,
    /// Durable documents, for the record listings (every change there is acknowledged only once
    /// stored, so storage is the durable truth).
    pub storage: crate::storage::Storage,
    /// `default_phone_region`, for identity matching.
    pub phone_region: driftless_crdt_model::identity::PhoneRegion,
    /// What `GET /v1/records` lists from.
    pub records: crate::records::RecordIndex,
    /// `public_url`: how providers reach this server (signed webhook URIs are built from it).
    pub public_url: Option<String>,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(metrics))
        .route("/v1/docs/{document_id}", get(get_doc))
        .route("/v1/tickets", post(post_ticket))
        .route("/v1/bridges", get(get_bridges))
        .route("/v1/bridges/{id}/sync", post(post_bridge_sync))
        .route("/v1/records", get(get_records))
        .route("/v1/records/{document_id}/conflicts", get(get_conflicts))
        .route("/v1/identity/suggestions", get(get_identity_suggestions))
        .route("/v1/identity/merge", post(post_identity_merge))
        .route("/v1/calendar/occurrences", get(get_occurrences))
        .route("/webhooks/google/{bridge}", post(post_google_webhook))
        .route("/webhooks/hubspot/{id}", post(post_hubspot_webhook))
        .route("/webhooks/graph/{id}", post(post_graph_webhook))
        .fallback(fallback)
        .with_state(state)
}

/// An HTTP error: `{"error": {"code": "...", "message": "..."}}` with a fitting status.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    fn shutting_down() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the server is shutting down",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"error": {"code": self.code, "message": self.message}});
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED
            && let Ok(value) = header::HeaderValue::from_str("Bearer realm=\"driftless\"")
        {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, value);
        }
        response
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        ApiError::new(StatusCode::UNAUTHORIZED, e.code(), e.to_string())
    }
}

/// The bearer token of `Authorization`, if any.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// The value of `key` in a query string (tokens and tickets are URL-safe: no decoding needed).
fn query_param<'q>(query: Option<&'q str>, key: &str) -> Option<&'q str> {
    query?
        .split('&')
        .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

/// Claims anyone has in open mode.
fn open_claims() -> Claims {
    Claims {
        sub: "anonymous".into(),
        ws: DEFAULT_WORKSPACE.into(),
        role: ClaimRole::Write,
        exp: u64::MAX,
        docs: None,
        tkt: None,
    }
}

impl AppState {
    fn auth_failed(&self, what: &str, peer: Option<SocketAddr>, e: AuthError) -> ApiError {
        self.metrics.auth_failures.inc(e.code());
        info!(peer = ?peer, reason = e.code(), "{what} refused: {e}");
        e.into()
    }

    /// The claims of the request's bearer token (`/v1/*`).
    fn api_claims(&self, headers: &HeaderMap) -> Result<Claims, ApiError> {
        let Some(auth) = &self.auth else {
            return Ok(open_claims());
        };
        let token = bearer(headers).ok_or(AuthError::Missing);
        token
            .and_then(|t| auth.keys.verify_token(t, auth::unix_now()))
            .map_err(|e| self.auth_failed("API request", None, e))
    }

    /// The access of a WebSocket upgrade: a bearer token, or a ticket in the URL.
    fn upgrade_access(
        &self,
        peer: SocketAddr,
        uri: &Uri,
        headers: &HeaderMap,
    ) -> Result<Access, ApiError> {
        let Some(auth) = &self.auth else {
            return Ok(Access::open());
        };
        let now = auth::unix_now();
        let query = uri.query();
        let result = if query_param(query, "token").is_some()
            || query_param(query, "access_token").is_some()
        {
            Err(AuthError::TokenInUrl)
        } else if let Some(ticket) = query_param(query, "ticket") {
            auth.keys.verify_ticket(ticket, now).map(|claims| {
                let left = std::time::Duration::from_secs(claims.exp.saturating_sub(now));
                let mut access = claims.access();
                access.ticket = claims.tkt.clone().map(|id| TicketGrant {
                    id,
                    // A ticket valid "forever" must not overflow the instant.
                    expires: std::time::Instant::now()
                        .checked_add(left)
                        .unwrap_or_else(|| std::time::Instant::now() + FAR_FUTURE),
                });
                access
            })
        } else if let Some(token) = bearer(headers) {
            auth.keys.verify_token(token, now).map(|c| c.access())
        } else {
            Err(AuthError::Missing)
        };
        result.map_err(|e| self.auth_failed("WebSocket upgrade", Some(peer), e))
    }
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
}

/// `POST /v1/tickets`: a short-lived ticket for the bearer token, for `?ticket=` on the WebSocket URL.
async fn post_ticket(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Some(auth) = state.auth.clone() else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "auth_disabled",
            "the server runs in open development mode (no [auth]); connect without a ticket",
        ));
    };
    let claims = state.api_claims(&headers)?;
    let now = auth::unix_now();
    let ticket = auth.keys.issue_ticket(&claims, auth.ticket_ttl, now);
    info!(sub = %ticket.sub, workspace = %ticket.ws, expires_at = ticket.exp, "ticket issued");
    Ok(Json(serde_json::json!({
        "ticket": auth.keys.sign(&ticket),
        "expires_at": auth::rfc3339(ticket.exp),
    })))
}

async fn get_doc(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(document_id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let claims = state.api_claims(&headers)?;
    let doc: DocumentId =
        document_id
            .parse()
            .map_err(|e: driftless_client_protocol::DocumentIdError| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_document_id",
                    e.to_string(),
                )
            })?;
    let not_found = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "document_not_found",
            format!("document {doc} not found"),
        )
    };
    // Out of the token's scope: exactly like a document that does not exist.
    if !claims.in_scope(&doc) {
        return Err(not_found());
    }
    // Through the engine thread, so a resident document answers with its current state.
    let (reply, answer) = oneshot::channel();
    let lookup = HostInput::GetDocJson {
        doc: doc.clone(),
        workspace: claims.ws.clone(),
        reply,
    };
    state
        .net_tx
        .send(lookup)
        .await
        .map_err(|_| ApiError::shutting_down())?;
    match answer.await.map_err(|_| ApiError::shutting_down())? {
        DocJson::Found(value) => Ok(Json(value)),
        DocJson::NotFound => Err(not_found()),
        DocJson::Failed(_) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "document_unreadable",
            format!("document {doc} could not be read; see the server log"),
        )),
    }
}

/// `GET /v1/bridges`: the bridges of the token's workspace.
async fn get_bridges(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    let claims = state.api_claims(&headers)?;
    let bridges = state.bridges.clone();
    let statuses = tokio::task::spawn_blocking(move || bridges.statuses(&claims.ws))
        .await
        .map_err(|_| ApiError::shutting_down())?;
    Ok(Json(serde_json::json!({ "bridges": statuses })))
}

/// `POST /v1/bridges/{id}/sync[?confirm_deletes=true]`: one complete round, started after the
/// request; answers its counts.
/// `POST /webhooks/google/{bridge}`: a Google Calendar push notification. Authenticated by its
/// channel id and token (not a bearer token); a genuine `exists` asks the bridge for a round
/// soon (bursts coalesce into one) and is answered at once, without waiting for the pull.
async fn post_google_webhook(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(bridge): Path<String>,
) -> Result<StatusCode, ApiError> {
    use crate::bridge::google_watch::Refusal;
    use driftless_bridges::google::channel::Verdict;
    let Some(watch) = state.bridges.google_watch(&bridge) else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "webhook_not_found",
            format!("bridge {bridge} has no Google push channels"),
        ));
    };
    // Recording the message number is a database write: off the async runtime.
    let checked = tokio::task::spawn_blocking(move || {
        watch.on_notification(|name| headers.get(name).and_then(|v| v.to_str().ok()))
    })
    .await
    .map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "webhook_failed",
            format!("bridge {bridge}: checking the notification failed: {e}"),
        )
    })?;
    match checked {
        Ok(Verdict::PullWanted) => {
            state.bridges.pull_soon(&bridge);
            Ok(StatusCode::OK)
        }
        Ok(Verdict::Opened | Verdict::Duplicate) => Ok(StatusCode::OK),
        Err(Refusal::Malformed(e)) => {
            warn!(%bridge, error = %e, "malformed Google notification refused");
            Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_notification",
                e.to_string(),
            ))
        }
        Err(Refusal::NotGenuine(e)) => {
            // The error names the channel, never the token.
            warn!(%bridge, error = %e, "Google notification refused");
            Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unknown_channel",
                "not a channel of this bridge, or a wrong channel token",
            ))
        }
    }
}

async fn post_bridge_sync(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    uri: Uri,
) -> Result<Json<serde_json::Value>, ApiError> {
    let claims = state.api_claims(&headers)?;
    let not_found = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "bridge_not_found",
            format!("no bridge {id}"),
        )
    };
    match state.bridges.workspace(&id) {
        Some(ws) if ws == claims.ws => {}
        _ => return Err(not_found()),
    }
    if claims.role != ClaimRole::Write {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "read_only_token",
            "running a bridge round needs a write token",
        ));
    }
    let confirm = query_param(uri.query(), "confirm_deletes") == Some("true");
    match state.bridges.sync(&id, confirm).await {
        Ok(report) => Ok(Json(serde_json::to_value(report).unwrap_or_default())),
        Err(message) => Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            "bridge_sync_failed",
            message,
        )),
    }
}

/// `POST /webhooks/hubspot/{bridge}`: a signed HubSpot delivery (no bearer token: the v3
/// signature authenticates it). See `bridge::hubspot_webhook` for the order of checks.
async fn post_hubspot_webhook(
    State(state): State<AppState>,
    Path(id): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    use crate::bridge::hubspot_webhook::WebhookOutcome;
    let path_and_query = uri
        .path_and_query()
        .map_or_else(|| uri.path().to_owned(), |p| p.as_str().to_owned());
    match state
        .bridges
        .hubspot_webhook(
            &id,
            state.public_url.as_deref(),
            &path_and_query,
            &headers,
            &body,
        )
        .await
    {
        WebhookOutcome::Accepted(report) => {
            Ok(Json(serde_json::to_value(report).unwrap_or_default()))
        }
        WebhookOutcome::NotFound(m) => {
            Err(ApiError::new(StatusCode::NOT_FOUND, "bridge_not_found", m))
        }
        WebhookOutcome::Unauthorized(m) => {
            Err(ApiError::new(StatusCode::UNAUTHORIZED, "bad_signature", m))
        }
        WebhookOutcome::BadRequest(m) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed_delivery",
            m,
        )),
        WebhookOutcome::Unavailable(m) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "webhook_unavailable",
            m,
        )),
    }
}

/// `GET /v1/records?type=T[&include_deleted=true][&limit=N][&after=CURSOR]`.
async fn get_records(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Json<serde_json::Value>, ApiError> {
    let claims = state.api_claims(&headers)?;
    let query = uri.query();
    let record_type = query_param(query, "type").map(str::to_owned);
    let include_deleted = query_param(query, "include_deleted") == Some("true");
    let limit = match query_param(query, "limit") {
        None => 1000,
        Some(n) => n
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=10_000).contains(n))
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_limit",
                    "limit must be 1..=10000",
                )
            })?,
    };
    let after: Option<DocumentId> = match query_param(query, "after") {
        None => None,
        Some(a) => Some(a.parse().map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_cursor",
                "after is not a cursor from `next`",
            )
        })?),
    };
    let storage = state.storage.clone();
    let index = state.records.clone();
    let result = tokio::task::spawn_blocking(move || -> Result<serde_json::Value, String> {
        let after = after.map(|a| a.to_string());
        // One more than the page: its presence says there is a next page.
        let ids = index
            .list(
                &crate::records::Listing {
                    workspace: &claims.ws,
                    record_type: record_type.as_deref(),
                    include_deleted,
                    after: after.as_deref(),
                },
                limit.saturating_add(1),
                |id| claims.in_scope(id),
            )
            .map_err(|e| e.to_string())?;
        let more = ids.len() > limit;
        let mut records = Vec::new();
        for id in ids.into_iter().take(limit) {
            // A document that does not load is left out (and logged), not a failed listing.
            let json = match storage.load_document(&id).map(|d| d.map(|d| driftless_crdt_model::to_json(&d))) {
                Ok(Some(Ok(json))) => json,
                Ok(None) => continue,
                Ok(Some(Err(e))) => {
                    warn!(doc = %id, error = %e, "record listing: document not readable; left out");
                    continue;
                }
                Err(e) => {
                    warn!(doc = %id, error = %e, "record listing: document does not load; left out");
                    continue;
                }
            };
            records.push((id, json));
        }
        let next = if more {
            records.last().map(|(d, _)| d.to_string())
        } else {
            None
        };
        let records: Vec<serde_json::Value> = records
            .into_iter()
            .map(|(id, record)| serde_json::json!({"url": format!("automerge:{id}"), "record": record}))
            .collect();
        Ok(serde_json::json!({"records": records, "next": next}))
    })
    .await
    .map_err(|_| ApiError::shutting_down())?;
    result
        .map(Json)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "storage_failed", e))
}

/// `GET /v1/records/{documentId}/conflicts`: fields with concurrent values, and who wrote each.
async fn get_conflicts(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(document_id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let claims = state.api_claims(&headers)?;
    let doc: DocumentId =
        document_id
            .parse()
            .map_err(|e: driftless_client_protocol::DocumentIdError| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_document_id",
                    e.to_string(),
                )
            })?;
    let not_found = {
        let doc = doc.clone();
        move || {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "document_not_found",
                format!("document {doc} not found"),
            )
        }
    };
    if !claims.in_scope(&doc) {
        return Err(not_found());
    }
    let storage = state.storage.clone();
    let bridges = state.bridges.clone();
    let ws = claims.ws.clone();
    let id = doc.clone();
    let answer =
        tokio::task::spawn_blocking(move || -> Result<Option<serde_json::Value>, String> {
            let Some(stored) = storage.load_stored(&id).map_err(|e| e.to_string())? else {
                return Ok(None);
            };
            if stored.workspace != ws {
                return Ok(None);
            }
            let sources = bridges.actor_sources();
            let mut conflicts = driftless_crdt_model::field_conflicts(&stored.document, |actor| {
                sources
                    .get(actor.to_bytes())
                    .cloned()
                    .unwrap_or_else(|| "app".to_owned())
            })
            .map_err(|e| e.to_string())?;
            // A meeting copy's divergent shared fields (the organizer's value wins).
            crate::bridge::meetings::add_copy_conflicts(&stored.document, &mut conflicts);
            // A field with a `[[policies]]` authority: that bridge's value is the winner.
            if let Some(record_type) = driftless_crdt_model::record_type(&stored.document) {
                bridges
                    .policies()
                    .apply_winners(&record_type, &mut conflicts);
            }
            Ok(Some(serde_json::json!({ "conflicts": conflicts })))
        })
        .await
        .map_err(|_| ApiError::shutting_down())?
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "document_unreadable",
                format!("document {doc}: {e}"),
            )
        })?;
    answer.map(Json).ok_or_else(not_found)
}

/// `GET /v1/identity/suggestions`: contacts that may be one person.
async fn get_identity_suggestions(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    let claims = state.api_claims(&headers)?;
    let storage = state.storage.clone();
    let region = state.phone_region;
    let index = state.records.clone();
    tokio::task::spawn_blocking(move || {
        crate::identity::suggestions(&storage, &index, &claims, region)
    })
    .await
    .map_err(|_| ApiError::shutting_down())?
    .map(Json)
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "storage_failed", e))
}

/// `POST /v1/identity/merge` `{"survivor": url, "absorbed": url}`: see [`crate::identity::merge`].
async fn post_identity_merge(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    use crate::identity::MergeError;
    let claims = state.api_claims(&headers)?;
    let request: crate::identity::MergeRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            format!("expected {{\"survivor\": url, \"absorbed\": url}}: {e}"),
        )
    })?;
    crate::identity::merge(
        &state.net_tx,
        &state.storage,
        &claims,
        state.phone_region,
        request,
    )
    .await
    .map(Json)
    .map_err(|e| {
        let (status, code) = match &e {
            MergeError::BadRequest(_) => (StatusCode::BAD_REQUEST, "invalid_merge"),
            MergeError::NotFound(_) => (StatusCode::NOT_FOUND, "document_not_found"),
            MergeError::Conflict(_) => (StatusCode::CONFLICT, "merge_conflict"),
            MergeError::Forbidden(_) => (StatusCode::FORBIDDEN, "read_only"),
            MergeError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "merge_failed"),
        };
        ApiError::new(status, code, e.to_string())
    })
}

/// `GET /v1/calendar/occurrences?from=&to=[&tz=]`: see [`crate::occurrences`].
async fn get_occurrences(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Json<serde_json::Value>, ApiError> {
    use crate::occurrences::{self, OccurrenceQuery, OccurrencesError};
    let claims = state.api_claims(&headers)?;
    let query = OccurrenceQuery::parse(uri.query());
    let storage = state.storage.clone();
    let index = state.records.clone();
    let answer = match query {
        Ok(query) => tokio::task::spawn_blocking(move || {
            occurrences::list(&storage, &index, &claims, &query)
        })
        .await
        .map_err(|_| ApiError::shutting_down())?,
        Err(e) => Err(e),
    };
    answer.map(Json).map_err(|e| match e {
        OccurrencesError::BadQuery { code, message } => {
            ApiError::new(StatusCode::BAD_REQUEST, code, message)
        }
        OccurrencesError::TooMany => ApiError::new(
            StatusCode::BAD_REQUEST,
            "too_many_occurrences",
            e.to_string(),
        ),
        OccurrencesError::Storage(_) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "storage_failed",
            e.to_string(),
        ),
    })
}

/// `POST /webhooks/graph/{bridge}`: Graph's change notifications (no bearer token: each
/// notification carries the subscription's `clientState`, checked by the bridge). Answers at once;
/// a notification only asks the bridge task for a round (`Bridges::pull_soon`).
async fn post_graph_webhook(
    State(state): State<AppState>,
    Path(id): Path<String>,
    uri: Uri,
    body: axum::body::Bytes,
) -> Response {
    use crate::bridge::graph::WebhookAnswer;
    match state.bridges.graph_webhook(&id, uri.query(), &body) {
        WebhookAnswer::Echo(token) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            token,
        )
            .into_response(),
        WebhookAnswer::Accepted { .. } => StatusCode::ACCEPTED.into_response(),
        WebhookAnswer::Forbidden => ApiError::new(
            StatusCode::FORBIDDEN,
            "bad_client_state",
            format!("bridge {id}: no notification carried this bridge's clientState"),
        )
        .into_response(),
        WebhookAnswer::NotFound => ApiError::new(
            StatusCode::NOT_FOUND,
            "bridge_not_found",
            format!("no microsoft_graph bridge {id}"),
        )
        .into_response(),
        WebhookAnswer::BadRequest(message) => {
            ApiError::new(StatusCode::BAD_REQUEST, "bad_notification", message).into_response()
        }
    }
}

/// tungstenite's read buffer per connection (see `fallback`); idle connections cost this much each.
pub const WS_READ_BUFFER_BYTES: usize = 2 * 1024;

/// Upgrades to a WebSocket on any unrouted path; anything else is a JSON 404.
async fn fallback(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    match upgrade {
        Ok(upgrade) => {
            // Credentials and caps are checked before the WebSocket exists.
            let access = match state.upgrade_access(peer, &uri, &headers) {
                Ok(access) => access,
                Err(e) => return e.into_response(),
            };
            let admission = match state.admission.admit(peer.ip(), &access.workspace) {
                Ok(guard) => guard,
                Err(limit) => {
                    state.metrics.limit_hits.inc(limit);
                    warn!(%peer, workspace = %access.workspace, limit, "limit hit: WebSocket upgrade refused");
                    return ApiError::new(
                        StatusCode::TOO_MANY_REQUESTS,
                        "too_many_connections",
                        format!("connection limit `{limit}` reached; try again later"),
                    )
                    .into_response();
                }
            };
            let limit = state.ws.max_message_bytes;
            let ctx = state.ws.clone();
            upgrade
                .max_message_size(limit)
                .max_frame_size(limit)
                // tungstenite zero-fills its whole read buffer (default 128 KiB) before every read,
                // and the buffer stays allocated (and touched) for the connection's life: 2 KiB
                // holds a small document's sync message; larger frames grow it to their length.
                .read_buffer_size(WS_READ_BUFFER_BYTES)
                .on_upgrade(move |socket| ws::serve(socket, peer, ctx, access, admission))
        }
        // A broken upgrade attempt deserves the upgrade error, not a 404.
        Err(rejection) if headers.contains_key(header::UPGRADE) => rejection.into_response(),
        Err(_) => ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no route for {method} {}", uri.path()),
        )
        .into_response(),
    }
}

//! HTTP routes and the one place that maps failures to HTTP statuses and JSON error bodies.
//! Any path that is not a route accepts a WebSocket upgrade (automerge-repo clients pick the path).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{ConnectInfo, Path, State, WebSocketUpgrade};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use driftless_client_protocol::DocumentId;
use tokio::sync::{mpsc, oneshot};

use crate::host::HostInput;
use crate::loader::DocJson;
use crate::metrics::Metrics;
use crate::ws::{self, WsContext};

#[derive(Clone)]
pub struct AppState {
    pub net_tx: mpsc::Sender<HostInput>,
    pub metrics: Arc<Metrics>,
    pub ws: WsContext,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(metrics))
        .route("/v1/docs/{document_id}", get(get_doc))
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
        (self.status, Json(body)).into_response()
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

async fn get_doc(
    State(state): State<AppState>,
    Path(document_id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
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
    // Through the engine thread, so a resident document answers with its current state.
    let (reply, answer) = oneshot::channel();
    let lookup = HostInput::GetDocJson {
        doc: doc.clone(),
        reply,
    };
    state
        .net_tx
        .send(lookup)
        .await
        .map_err(|_| ApiError::shutting_down())?;
    match answer.await.map_err(|_| ApiError::shutting_down())? {
        DocJson::Found(value) => Ok(Json(value)),
        DocJson::NotFound => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "document_not_found",
            format!("document {doc} not found"),
        )),
        DocJson::Failed(_) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "document_unreadable",
            format!("document {doc} could not be read; see the server log"),
        )),
    }
}

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
            let limit = state.ws.max_message_bytes;
            let ctx = state.ws.clone();
            upgrade
                .max_message_size(limit)
                .max_frame_size(limit)
                // tungstenite zero-fills its whole read buffer (default 128 KiB) before every read.
                .read_buffer_size(16 * 1024)
                .on_upgrade(move |socket| ws::serve(socket, peer, ctx))
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

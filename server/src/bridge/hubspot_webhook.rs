//! `POST /webhooks/hubspot/{bridge}`: HubSpot's signed webhook deliveries for a `hubspot` bridge.
//!
//! Order of checks, so a refused request changes nothing: the bridge must be a `hubspot` bridge
//! with a `client_secret_env` (else 404); the v3 signature is verified over the raw body and the
//! URI built from `public_url` plus the request's path and query (a proxy in front may have
//! rewritten scheme and host), within the 5-minute timestamp window, before anything is parsed
//! (else 401); then the body must be a delivery (else 400). A valid delivery goes through the
//! bridge's [`Inbox`], read, updated and written back in one redb write transaction (table
//! `bridge_hubspot_inbox`, bridge id -> inbox JSON), so duplicated and reordered deliveries
//! (HubSpot retries for 24 h, the inbox remembers 48 h) yield their hints once. Hints only ask for
//! a round: it re-reads HubSpot (search and archived listing) and the modification times decide,
//! so the effect of a delivery is the same however often and in whatever order it arrives.
//! Pokes while a round is pending coalesce into one; polling continues regardless.
//!
//! Must not: log the body or a secret, or apply anything a delivery says without re-reading.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::HeaderMap;
use driftless_bridges::hubspot::signature::{
    SIGNATURE_HEADER, SignedRequest, TIMESTAMP_HEADER, verify_v3,
};
use driftless_bridges::hubspot::webhook::{Accepted, Inbox, parse_delivery};
use redb::{ReadableTable, TableDefinition};
use serde::Serialize;
use tracing::{info, warn};

use super::Bridges;
use crate::config::BridgeKind;

const INBOX: TableDefinition<&str, &[u8]> = TableDefinition::new("bridge_hubspot_inbox");

/// How a delivery ended (the HTTP layer maps it to a status).
#[derive(Debug)]
pub enum WebhookOutcome {
    /// Taken: counts of what it amounted to.
    Accepted(DeliveryReport),
    /// No such `hubspot` bridge, or it has no client secret to verify with.
    NotFound(String),
    /// Bad or missing signature, or a timestamp outside the window.
    Unauthorized(String),
    /// Signed correctly but not a delivery.
    BadRequest(String),
    /// The server cannot take it now (HubSpot retries).
    Unavailable(String),
}

/// The answer to an accepted delivery.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DeliveryReport {
    /// Hints it produced (objects to re-read); a round was asked for when non-zero.
    pub hints: usize,
    /// Events seen before.
    pub duplicates: usize,
    /// Events older than something already applied to the same object or property.
    pub stale: usize,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

impl Bridges {
    /// Takes one delivery for bridge `id`. `path_and_query` is the request's as received.
    pub async fn hubspot_webhook(
        &self,
        id: &str,
        public_url: Option<&str>,
        path_and_query: &str,
        headers: &HeaderMap,
        body: &[u8],
    ) -> WebhookOutcome {
        let Some(handle) = self
            .handles
            .get(id)
            .filter(|h| h.config.kind == BridgeKind::HubSpot)
        else {
            return WebhookOutcome::NotFound(format!("no hubspot bridge {id}"));
        };
        let Some(secret) = handle
            .config
            .hubspot
            .as_ref()
            .and_then(|h| h.client_secret.as_ref())
        else {
            return WebhookOutcome::NotFound(format!(
                "bridge {id} takes no webhooks: it has no client_secret_env"
            ));
        };
        let Some(public_url) = public_url else {
            warn!(bridge = %id, "HubSpot webhook refused: public_url is not configured, so the signed URI cannot be rebuilt");
            return WebhookOutcome::Unavailable(
                "public_url is not configured: HubSpot signatures cannot be verified".into(),
            );
        };
        let uri = format!("{}{path_and_query}", public_url.trim_end_matches('/'));
        let signed = SignedRequest {
            method: "POST",
            uri: &uri,
            body,
            timestamp: header(headers, TIMESTAMP_HEADER),
            signature: header(headers, SIGNATURE_HEADER),
        };
        if let Err(e) = verify_v3(secret.expose().as_bytes(), &signed, now_ms()) {
            info!(bridge = %id, error = %e, "HubSpot webhook refused");
            return WebhookOutcome::Unauthorized(format!("bridge {id}: {e}"));
        }
        let events = match parse_delivery(body) {
            Ok(events) => events,
            Err(e) => {
                info!(bridge = %id, error = %e, "HubSpot webhook delivery not understood");
                return WebhookOutcome::BadRequest(format!("bridge {id}: {e}"));
            }
        };
        let Some(store) = self.store.clone() else {
            return WebhookOutcome::Unavailable("bridges are not running".into());
        };
        let bridge = id.to_owned();
        let accepted = tokio::task::spawn_blocking(move || {
            accept_durably(store.storage().database(), &bridge, events)
        })
        .await;
        let accepted = match accepted {
            Ok(Ok(a)) => a,
            Ok(Err(e)) => {
                warn!(bridge = %id, error = %e, "HubSpot webhook inbox");
                return WebhookOutcome::Unavailable(format!("bridge {id}: inbox: {e}"));
            }
            Err(e) => {
                return WebhookOutcome::Unavailable(format!("bridge {id}: inbox task: {e}"));
            }
        };
        let report = DeliveryReport {
            hints: accepted.hints.len(),
            duplicates: accepted.duplicates,
            stale: accepted.stale,
        };
        if report.hints > 0 {
            self.pull_soon(id);
        }
        info!(bridge = %id, hints = report.hints, duplicates = report.duplicates, stale = report.stale, "HubSpot webhook delivery taken");
        WebhookOutcome::Accepted(report)
    }
}

/// Runs `events` through the bridge's inbox in one write transaction.
fn accept_durably(
    db: &redb::Database,
    bridge: &str,
    events: Vec<driftless_bridges::hubspot::webhook::WebhookEvent>,
) -> Result<Accepted, String> {
    let txn = db.begin_write().map_err(|e| e.to_string())?;
    let accepted = {
        let mut table = txn.open_table(INBOX).map_err(|e| e.to_string())?;
        let mut inbox: Inbox = match table.get(bridge).map_err(|e| e.to_string())? {
            Some(bytes) => serde_json::from_slice(bytes.value())
                .map_err(|e| format!("stored inbox is unreadable: {e}"))?,
            None => Inbox::default(),
        };
        let now = now_ms();
        let accepted = inbox.accept(events, now);
        inbox.expire(now);
        let bytes = serde_json::to_vec(&inbox).map_err(|e| e.to_string())?;
        table
            .insert(bridge, bytes.as_slice())
            .map_err(|e| e.to_string())?;
        accepted
    };
    txn.commit().map_err(|e| e.to_string())?;
    Ok(accepted)
}

//! Graph change notifications, as pure decisions for the server's `POST /webhooks/graph/{bridge}`:
//! the validation handshake, `clientState` checks, and what a batch asks the bridge to do.
//!
//! Notifications are hints (at-least-once, unordered, lossy): every useful one becomes "pull now",
//! and lifecycle events `missed` / `subscriptionRemoved` become "resync" (recreate the
//! subscription and run a delta round); `reauthorizationRequired` becomes "reauthorize". Polling
//! continues regardless. Must not: do I/O or keep state (the subscriptions belong to the runner).

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::wire::{Notification, NotificationBatch};

/// The most minutes Graph lets an Outlook event/contact subscription live (`providers.md` 2.5).
pub const MAX_SUBSCRIPTION_MINUTES: i64 = 10_080;

/// The token of a validation request (`?validationToken=...`), URL-decoded: answer it with 200,
/// `Content-Type: text/plain` and exactly this body within 10 s.
pub fn validation_token(query: &str) -> Option<String> {
    url::form_urlencoded::parse(query.trim_start_matches('?').as_bytes())
        .find(|(k, _)| k == "validationToken")
        .map(|(_, v)| v.into_owned())
}

/// What a notification batch asks of one subscription's bridge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Hint {
    /// Something changed: run an incremental round soon (bursts coalesce into one).
    Pull,
    /// Notifications were lost or the subscription is gone: recreate it if needed and resync.
    Resync,
    /// The subscription needs `POST /subscriptions/{id}/reauthorize` (or a renewal).
    Reauthorize,
}

/// A triaged batch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Triage {
    /// Per subscription id, the strongest hints (deduplicated).
    pub hints: BTreeMap<String, Vec<Hint>>,
    /// Entries dropped: unknown subscription or wrong `clientState`.
    pub rejected: usize,
}

/// Why a body is not a notification batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("graph webhook body is not a notification batch: {0}")]
pub struct WebhookError(pub String);

/// Compares without an early exit, so the time taken does not reveal how much of a guess matched.
fn same_secret(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn hint_of(n: &Notification) -> Option<Hint> {
    match n.lifecycle_event.as_deref() {
        Some("missed") | Some("subscriptionRemoved") => Some(Hint::Resync),
        Some("reauthorizationRequired") => Some(Hint::Reauthorize),
        Some(_) => None,
        None => Some(Hint::Pull),
    }
}

/// Triages a batch. `client_state_of` gives the `clientState` a subscription id was created with
/// (`None`: not ours). Entries whose `clientState` does not match are dropped and counted.
pub fn triage(
    body: &[u8],
    client_state_of: &dyn Fn(&str) -> Option<String>,
) -> Result<Triage, WebhookError> {
    let batch: NotificationBatch =
        serde_json::from_slice(body).map_err(|e| WebhookError(e.to_string()))?;
    let mut out = Triage::default();
    for n in &batch.value {
        let expected = client_state_of(&n.subscription_id);
        let ok = match (&expected, &n.client_state) {
            (Some(want), Some(got)) => same_secret(want, got),
            _ => false,
        };
        if !ok {
            out.rejected += 1;
            continue;
        }
        if let Some(hint) = hint_of(n) {
            let hints = out.hints.entry(n.subscription_id.clone()).or_default();
            if !hints.contains(&hint) {
                hints.push(hint);
                hints.sort();
            }
        }
    }
    Ok(out)
}

/// The body of `POST /subscriptions`.
pub fn subscription_body(
    resource: &str,
    notification_url: &str,
    lifecycle_url: Option<&str>,
    client_state: &str,
    expiration: &str,
) -> Value {
    let mut body = json!({
        "changeType": "created,updated,deleted",
        "notificationUrl": notification_url,
        "resource": resource,
        "expirationDateTime": expiration,
        "clientState": client_state,
    });
    if let (Some(url), Some(obj)) = (lifecycle_url, body.as_object_mut()) {
        obj.insert("lifecycleNotificationUrl".into(), json!(url));
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_validation_token_is_url_decoded() {
        assert_eq!(
            validation_token("validationToken=Validation%3A+Testing+client+application+reachability+for+subscription+Request-Id%3A+abc").as_deref(),
            Some("Validation: Testing client application reachability for subscription Request-Id: abc")
        );
        assert_eq!(validation_token("?a=1"), None);
    }

    #[test]
    fn batches_are_checked_deduplicated_and_classified() {
        let body = json!({"value": [
            {"subscriptionId": "s1", "clientState": "secret-1", "changeType": "updated", "resource": "Users/u/Events/e1"},
            {"subscriptionId": "s1", "clientState": "secret-1", "changeType": "created", "resource": "Users/u/Events/e2"},
            {"subscriptionId": "s1", "clientState": "guess", "changeType": "deleted"},
            {"subscriptionId": "s2", "clientState": "secret-2", "lifecycleEvent": "missed"},
            {"subscriptionId": "s2", "clientState": "secret-2", "lifecycleEvent": "reauthorizationRequired"},
            {"subscriptionId": "other", "clientState": "x", "changeType": "updated"},
            {"subscriptionId": "s2", "changeType": "updated"}
        ]});
        let states = |id: &str| match id {
            "s1" => Some("secret-1".to_owned()),
            "s2" => Some("secret-2".to_owned()),
            _ => None,
        };
        let t = triage(body.to_string().as_bytes(), &states).unwrap();
        assert_eq!(t.rejected, 3);
        assert_eq!(t.hints["s1"], vec![Hint::Pull]);
        assert_eq!(t.hints["s2"], vec![Hint::Resync, Hint::Reauthorize]);
        assert!(triage(b"not json", &states).is_err());
    }

    #[test]
    fn subscription_bodies() {
        let b = subscription_body(
            "/me/events",
            "https://h/webhooks/graph/b",
            None,
            "cs",
            "2026-11-20T00:00:00Z",
        );
        assert_eq!(b["changeType"], "created,updated,deleted");
        assert!(b.get("lifecycleNotificationUrl").is_none());
        let b = subscription_body("/me/events", "https://h/n", Some("https://h/l"), "cs", "t");
        assert_eq!(b["lifecycleNotificationUrl"], "https://h/l");
    }
}

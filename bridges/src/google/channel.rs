//! Push notification channels (`events.watch`), sans-IO: the watch request body, reading a
//! notification's headers, and the rules a webhook endpoint applies before it asks for a pull.
//!
//! Google's notifications are hints, not data: a POST without body saying "something changed"
//! (`exists`), at least once, possibly duplicated, reordered or lost, and a `sync` message when a
//! channel opens. So [`Channels`] only decides whether a notification is genuine (known channel,
//! matching token) and new (a message number above the last one seen on that channel), and
//! coalesces any number of them into one pending pull; polling continues regardless.
//! Channels do not renew themselves: [`Channels::renewal_due`] says when to open a new one before
//! the current one expires; both stay accepted during the overlap until the old one is stopped.
//! Must not: do I/O, or treat a notification as the only source of truth.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Header names of a notification (lower-case, as HTTP libraries hand them out).
pub const HEADER_CHANNEL_ID: &str = "x-goog-channel-id";
pub const HEADER_CHANNEL_TOKEN: &str = "x-goog-channel-token";
pub const HEADER_CHANNEL_EXPIRATION: &str = "x-goog-channel-expiration";
pub const HEADER_MESSAGE_NUMBER: &str = "x-goog-message-number";
pub const HEADER_RESOURCE_ID: &str = "x-goog-resource-id";
pub const HEADER_RESOURCE_STATE: &str = "x-goog-resource-state";
pub const HEADER_RESOURCE_URI: &str = "x-goog-resource-uri";

/// The body of `POST events/watch`. `id` is ours (unique, at most 64 characters), `token` is
/// echoed back on every notification, `expiration_ms` is a Unix time in milliseconds.
pub fn watch_body(id: &str, address: &str, token: &str, expiration_ms: Option<u64>) -> Value {
    let mut body = json!({"id": id, "type": "web_hook", "address": address, "token": token});
    if let Some(ms) = expiration_ms {
        // Google sends and accepts the expiration as a string of milliseconds.
        body["expiration"] = json!(ms.to_string());
    }
    body
}

/// The body of `POST channels/stop`.
pub fn stop_body(channel: &Channel) -> Value {
    json!({"id": channel.id, "resourceId": channel.resource_id})
}

/// An open channel, from the watch answer.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Channel {
    pub id: String,
    pub resource_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Unix milliseconds (Google sends a string).
    #[serde(default, with = "millis", skip_serializing_if = "Option::is_none")]
    pub expiration: Option<u64>,
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel")
            .field("id", &self.id)
            .field("resource_id", &self.resource_id)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("expiration", &self.expiration)
            .finish()
    }
}

mod millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use serde_json::Value;

    pub fn serialize<S: Serializer>(v: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(ms) => s.serialize_str(&ms.to_string()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        Ok(match Option::<Value>::deserialize(d)? {
            Some(Value::String(s)) => s.trim().parse().ok(),
            Some(Value::Number(n)) => n.as_u64(),
            _ => None,
        })
    }
}

impl Channel {
    /// Reads the watch answer (`{kind: "api#channel", id, resourceId, ...}`).
    pub fn from_watch_response(body: &[u8]) -> Result<Channel, serde_json::Error> {
        serde_json::from_slice(body)
    }
}

/// `X-Goog-Resource-State`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResourceState {
    /// The channel opened (message number 1; may arrive before the watch answer).
    Sync,
    /// Something in the calendar changed.
    Exists,
    NotExists,
    Other(String),
}

/// A notification's headers, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub channel_id: String,
    pub token: Option<String>,
    pub state: ResourceState,
    pub message_number: Option<u64>,
    pub resource_id: Option<String>,
}

/// Why a notification is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotificationError {
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    #[error("channel {0:?} is not one of this bridge's open channels")]
    UnknownChannel(String),
    #[error("channel {0:?}: the channel token does not match")]
    BadToken(String),
    #[error("channel {channel:?}: resource id {got:?} is not the watched one")]
    WrongResource { channel: String, got: String },
}

impl Notification {
    /// Reads the headers; `header(name)` looks a header up by its lower-case name.
    pub fn from_headers<'a>(
        header: impl Fn(&str) -> Option<&'a str>,
    ) -> Result<Notification, NotificationError> {
        let channel_id = header(HEADER_CHANNEL_ID)
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .ok_or(NotificationError::MissingHeader(HEADER_CHANNEL_ID))?
            .to_owned();
        let state = match header(HEADER_RESOURCE_STATE)
            .map(str::trim)
            .ok_or(NotificationError::MissingHeader(HEADER_RESOURCE_STATE))?
        {
            "sync" => ResourceState::Sync,
            "exists" => ResourceState::Exists,
            "not_exists" => ResourceState::NotExists,
            other => ResourceState::Other(other.to_owned()),
        };
        Ok(Notification {
            channel_id,
            token: header(HEADER_CHANNEL_TOKEN).map(str::to_owned),
            state,
            message_number: header(HEADER_MESSAGE_NUMBER).and_then(|n| n.trim().parse().ok()),
            resource_id: header(HEADER_RESOURCE_ID).map(str::to_owned),
        })
    }
}

/// What a genuine notification means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The channel is open; nothing changed.
    Opened,
    /// Something changed: a pull is now pending (one, however many notifications arrive).
    PullWanted,
    /// A message number already seen (or older than one seen) on this channel: ignore.
    Duplicate,
}

/// Tokens compared without an early exit, so timing does not tell how much of a guess matched.
fn same_token(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// The open channels of one bridge and the pull they ask for. Serializable, so the channels
/// and the message numbers seen survive a restart (a pending pull does not: polling covers it).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Channels {
    open: Vec<Channel>,
    /// Highest message number seen per channel id.
    last_number: BTreeMap<String, u64>,
    #[serde(skip)]
    pull_pending: bool,
}

impl Channels {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a channel Google confirmed (a renewal keeps the older one open too).
    pub fn opened(&mut self, channel: Channel) {
        self.open.retain(|c| c.id != channel.id);
        self.open.push(channel);
    }

    /// Registers a channel about to be requested, before the watch answer names its resource:
    /// Google may send the `sync` message before it answers the watch request.
    pub fn requested(&mut self, id: &str, token: &str, expiration_ms: Option<u64>) {
        self.opened(Channel {
            id: id.to_owned(),
            resource_id: String::new(),
            token: Some(token.to_owned()),
            expiration: expiration_ms,
        });
    }

    /// Forgets a channel (after `channels/stop`, or when it expired).
    pub fn closed(&mut self, channel_id: &str) {
        self.open.retain(|c| c.id != channel_id);
        self.last_number.remove(channel_id);
    }

    pub fn open(&self) -> &[Channel] {
        &self.open
    }

    /// Whether channel `id` has delivered any message (its `sync` counts): a renewal's old
    /// channel is stopped only once its successor is known to deliver.
    pub fn has_delivered(&self, id: &str) -> bool {
        self.last_number.contains_key(id)
    }

    /// The newest channel (the one renewals replace).
    pub fn current(&self) -> Option<&Channel> {
        self.open
            .iter()
            .max_by_key(|c| c.expiration.unwrap_or(u64::MAX))
    }

    /// Checks and records one notification.
    pub fn on_notification(&mut self, n: &Notification) -> Result<Verdict, NotificationError> {
        let channel = self
            .open
            .iter()
            .find(|c| c.id == n.channel_id)
            .ok_or_else(|| NotificationError::UnknownChannel(n.channel_id.clone()))?;
        if let Some(want) = &channel.token
            && !n.token.as_deref().is_some_and(|got| same_token(got, want))
        {
            return Err(NotificationError::BadToken(n.channel_id.clone()));
        }
        if let Some(got) = &n.resource_id
            && !channel.resource_id.is_empty()
            && *got != channel.resource_id
        {
            return Err(NotificationError::WrongResource {
                channel: n.channel_id.clone(),
                got: got.clone(),
            });
        }
        if let Some(number) = n.message_number {
            let last = self.last_number.entry(n.channel_id.clone()).or_insert(0);
            if number <= *last {
                return Ok(Verdict::Duplicate);
            }
            *last = number;
        }
        Ok(match n.state {
            ResourceState::Sync => Verdict::Opened,
            _ => {
                self.pull_pending = true;
                Verdict::PullWanted
            }
        })
    }

    /// Whether a pull is pending; clears it (call when a pull starts, so changes during the pull
    /// ask for the next one).
    pub fn take_pull(&mut self) -> bool {
        std::mem::take(&mut self.pull_pending)
    }

    /// Whether to open a new channel now: none is open, or the newest expires within `margin_ms`
    /// of `now_ms`.
    pub fn renewal_due(&self, now_ms: u64, margin_ms: u64) -> bool {
        match self.current() {
            None => true,
            Some(c) => c
                .expiration
                .is_some_and(|exp| exp <= now_ms.saturating_add(margin_ms)),
        }
    }

    /// Channels superseded by a newer one (to stop once the newer one has delivered, or now)
    /// and channels already expired at `now_ms` (to forget).
    pub fn superseded(&self, now_ms: u64) -> Vec<Channel> {
        let current = self.current().map(|c| c.id.clone());
        self.open
            .iter()
            .filter(|c| {
                Some(&c.id) != current.as_ref() || c.expiration.is_some_and(|e| e <= now_ms)
            })
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn channel(id: &str, exp: u64) -> Channel {
        Channel {
            id: id.into(),
            resource_id: "res-1".into(),
            token: Some("tok".into()),
            expiration: Some(exp),
        }
    }

    fn note(id: &str, state: &str, number: u64, token: &str) -> Notification {
        let headers: BTreeMap<&str, String> = [
            (HEADER_CHANNEL_ID, id.to_string()),
            (HEADER_RESOURCE_STATE, state.to_string()),
            (HEADER_MESSAGE_NUMBER, number.to_string()),
            (HEADER_CHANNEL_TOKEN, token.to_string()),
            (HEADER_RESOURCE_ID, "res-1".to_string()),
        ]
        .into();
        Notification::from_headers(|h| headers.get(h).map(String::as_str)).unwrap()
    }

    #[test]
    fn the_watch_answer_is_read_and_the_token_never_printed() {
        let c = Channel::from_watch_response(
            br#"{"kind":"api#channel","id":"ch-1","resourceId":"res-1",
                 "resourceUri":"https://x/events","token":"s3cret","expiration":"1763900000000"}"#,
        )
        .unwrap();
        assert_eq!(c.expiration, Some(1_763_900_000_000));
        assert!(!format!("{c:?}").contains("s3cret"));
        assert_eq!(
            watch_body("ch-1", "https://sync/webhooks/google/b", "t", Some(5))["expiration"],
            "5"
        );
    }

    #[test]
    fn bursts_coalesce_and_duplicates_are_ignored() {
        let mut chans = Channels::new();
        chans.opened(channel("ch-1", 10_000));
        assert_eq!(
            chans.on_notification(&note("ch-1", "sync", 1, "tok")),
            Ok(Verdict::Opened)
        );
        assert!(!chans.take_pull());
        // Numbers grow but skip; a repeated or older number is a duplicate or reordered replay.
        let expected = [
            (7, Verdict::PullWanted),
            (19, Verdict::PullWanted),
            (19, Verdict::Duplicate),
            (12, Verdict::Duplicate),
            (40, Verdict::PullWanted),
        ];
        for (n, want) in expected {
            assert_eq!(
                chans.on_notification(&note("ch-1", "exists", n, "tok")),
                Ok(want),
                "message {n}"
            );
        }
        assert!(chans.take_pull(), "one pull for the whole burst");
        assert!(!chans.take_pull());
    }

    #[test]
    fn forged_notifications_are_refused() {
        let mut chans = Channels::new();
        chans.opened(channel("ch-1", 10_000));
        assert_eq!(
            chans.on_notification(&note("ch-1", "exists", 2, "guess")),
            Err(NotificationError::BadToken("ch-1".into()))
        );
        assert!(matches!(
            chans.on_notification(&note("ch-9", "exists", 2, "tok")),
            Err(NotificationError::UnknownChannel(_))
        ));
        assert!(!chans.take_pull());
        assert_eq!(
            Notification::from_headers(|_| None),
            Err(NotificationError::MissingHeader(HEADER_CHANNEL_ID))
        );
    }

    #[test]
    fn a_sync_message_before_the_watch_answer_is_accepted() {
        let mut chans = Channels::new();
        chans.requested("ch-1", "tok", Some(10_000));
        assert_eq!(
            chans.on_notification(&note("ch-1", "sync", 1, "tok")),
            Ok(Verdict::Opened)
        );
        chans.opened(channel("ch-1", 10_000));
        assert_eq!(chans.open().len(), 1);
        assert_eq!(
            chans.on_notification(&note("ch-1", "exists", 3, "tok")),
            Ok(Verdict::PullWanted)
        );
    }

    #[test]
    fn renewal_overlaps_then_stops_the_old_channel() {
        let mut chans = Channels::new();
        assert!(chans.renewal_due(0, 100));
        chans.opened(channel("ch-1", 10_000));
        assert!(!chans.renewal_due(5_000, 1_000));
        assert!(chans.renewal_due(9_500, 1_000));
        chans.opened(channel("ch-2", 20_000));
        // During the overlap both deliver.
        assert!(
            chans
                .on_notification(&note("ch-1", "exists", 5, "tok"))
                .is_ok()
        );
        assert!(
            chans
                .on_notification(&note("ch-2", "exists", 2, "tok"))
                .is_ok()
        );
        let old = chans.superseded(9_600);
        assert_eq!(old.len(), 1);
        assert_eq!(old[0].id, "ch-1");
        chans.closed("ch-1");
        assert!(
            chans
                .on_notification(&note("ch-1", "exists", 9, "tok"))
                .is_err()
        );
        assert_eq!(chans.current().map(|c| c.id.as_str()), Some("ch-2"));
    }
}

//! The push channels (`events.watch`) of one `google_calendar` bridge with `public_url` set:
//! registering one after the first successful round, renewing it before it expires (the old
//! and the new channel both accepted until the old one is stopped, which happens once the new
//! one has delivered), stopping them on shutdown, and checking each notification the webhook
//! endpoint receives with the sans-IO [`Channels`]. Channel ids, tokens, resource ids,
//! expirations and the message numbers seen are persisted in `bridge_state`
//! (`google_channels`), so a restart keeps accepting the open channels and rejecting replays.
//!
//! A notification is only a hint: a genuine one asks the runner for a round soon (coalesced
//! there), polling goes on regardless.
//! Must not: pull or write records, or print a channel token.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use driftless_bridges::google::channel::{Channels, Notification, NotificationError, Verdict};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::google::GoogleProvider;
use super::store::BridgeStore;
use super::{BridgeError, unix_ms};

/// The `bridge_state` key of the channel state.
const STATE_KEY: &str = "google_channels";
/// A channel is renewed `max(2 × poll interval, this)` before it expires, but no earlier than
/// halfway through its life (so a short-lived channel is not renewed at once).
const RENEW_MARGIN_MIN: Duration = Duration::from_secs(600);
/// How long shutdown waits for `channels/stop`.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Default, Serialize, Deserialize)]
struct WatchState {
    channels: Channels,
    /// When each channel was requested (Unix ms), to know its lifetime.
    opened_ms: BTreeMap<String, u64>,
}

/// Why a notification is refused, as the webhook endpoint answers it.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// Headers missing: 400.
    #[error("{0}")]
    Malformed(NotificationError),
    /// Unknown channel, wrong token or resource: 401, nothing triggered.
    #[error("{0}")]
    NotGenuine(NotificationError),
}

pub struct GoogleWatch {
    bridge: String,
    callback: String,
    poll_interval: Duration,
    store: BridgeStore,
    state: Mutex<WatchState>,
}

impl GoogleWatch {
    /// The channel state of `bridge` as stored; notifications are delivered to
    /// `{public_url}/webhooks/google/{bridge}`.
    pub fn load(
        bridge: &str,
        public_url: &str,
        poll_interval: Duration,
        store: BridgeStore,
    ) -> Result<Self, BridgeError> {
        let state = match store
            .provider_state(bridge, STATE_KEY)
            .map_err(|e| BridgeError::local(bridge, e))?
        {
            Some(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                // Losing the channels only costs a new registration; polling covers the gap.
                warn!(%bridge, error = %e, "stored Google channel state is unreadable; starting without channels");
                WatchState::default()
            }),
            None => WatchState::default(),
        };
        let mut state = state;
        // A channel requested but never confirmed (stopped mid-request) has no expiration and
        // would never be renewed; if Google opened it, it expires by itself.
        let unconfirmed: Vec<String> = state
            .channels
            .open()
            .iter()
            .filter(|c| c.resource_id.is_empty())
            .map(|c| c.id.clone())
            .collect();
        for id in unconfirmed {
            state.channels.closed(&id);
            state.opened_ms.remove(&id);
        }
        Ok(Self {
            bridge: bridge.to_owned(),
            callback: format!(
                "{}/webhooks/google/{bridge}",
                public_url.trim_end_matches('/')
            ),
            poll_interval,
            store,
            state: Mutex::new(state),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, WatchState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn save(&self, state: &WatchState) {
        let saved = serde_json::to_vec(state)
            .map_err(|e| e.to_string())
            .and_then(|bytes| {
                self.store
                    .put_provider_state(&self.bridge, STATE_KEY, Some(&bytes))
                    .map_err(|e| e.to_string())
            });
        if let Err(e) = saved {
            warn!(bridge = %self.bridge, error = %e, "cannot store the Google channel state");
        }
    }

    /// Checks one notification (headers by lower-case name) and records its message number.
    pub fn on_notification<'a>(
        &self,
        header: impl Fn(&str) -> Option<&'a str>,
    ) -> Result<Verdict, Refusal> {
        let notification = Notification::from_headers(header).map_err(Refusal::Malformed)?;
        let mut state = self.lock();
        let verdict = state
            .channels
            .on_notification(&notification)
            .map_err(Refusal::NotGenuine)?;
        // The runner's trigger coalesces pulls; this flag is not used.
        state.channels.take_pull();
        if verdict != Verdict::Duplicate {
            self.save(&state);
        }
        Ok(verdict)
    }

    /// How long before its expiration a channel is renewed.
    fn margin_ms(&self, state: &WatchState, id: &str, expiration: u64) -> u64 {
        let wanted = self.poll_interval.saturating_mul(2).max(RENEW_MARGIN_MIN);
        let wanted = u64::try_from(wanted.as_millis()).unwrap_or(u64::MAX);
        match state.opened_ms.get(id) {
            Some(opened) => wanted.min(expiration.saturating_sub(*opened) / 2),
            None => wanted,
        }
    }

    /// When the current channel is due for renewal (Unix ms), if one is open.
    pub fn renewal_at_ms(&self) -> Option<u64> {
        let state = self.lock();
        let current = state.channels.current()?;
        let expiration = current.expiration?;
        Some(expiration.saturating_sub(self.margin_ms(&state, &current.id, expiration)))
    }

    /// After a successful round: forgets expired channels, stops a renewal's predecessor once
    /// the new channel has delivered, and opens a channel when none is open or the current one
    /// is about to expire. Failures are logged; the next round tries again.
    pub async fn maintain(&self, provider: &GoogleProvider) {
        let now = unix_ms();
        let (to_stop, renew) = {
            let mut state = self.lock();
            let expired: Vec<String> = state
                .channels
                .open()
                .iter()
                .filter(|c| c.expiration.is_some_and(|e| e <= now))
                .map(|c| c.id.clone())
                .collect();
            for id in &expired {
                info!(bridge = %self.bridge, channel = %id, "Google channel expired");
                state.channels.closed(id);
                state.opened_ms.remove(id);
            }
            let current = state.channels.current().cloned();
            let to_stop = match &current {
                Some(c) if state.channels.has_delivered(&c.id) => state.channels.superseded(now),
                _ => Vec::new(),
            };
            let renew = match &current {
                None => true,
                Some(c) => c.expiration.is_some_and(|exp| {
                    state
                        .channels
                        .renewal_due(now, self.margin_ms(&state, &c.id, exp))
                }),
            };
            if !expired.is_empty() {
                self.save(&state);
            }
            (to_stop, renew)
        };
        for channel in to_stop {
            match provider.stop_channel(&channel).await {
                Ok(()) => {
                    info!(bridge = %self.bridge, channel = %channel.id, "stopped the Google channel its successor replaces");
                    let mut state = self.lock();
                    state.channels.closed(&channel.id);
                    state.opened_ms.remove(&channel.id);
                    self.save(&state);
                }
                Err(e) => {
                    warn!(bridge = %self.bridge, channel = %channel.id, error = %e, "cannot stop a superseded Google channel; trying again next round");
                }
            }
        }
        if renew {
            self.open_channel(provider, now).await;
        }
    }

    async fn open_channel(&self, provider: &GoogleProvider, now: u64) {
        let id = format!("driftless-{:032x}", rand::random::<u128>());
        let token = format!(
            "{:032x}{:032x}",
            rand::random::<u128>(),
            rand::random::<u128>()
        );
        {
            // Known before the answer: Google may send `sync` before answering the watch.
            let mut state = self.lock();
            state.channels.requested(&id, &token, None);
            state.opened_ms.insert(id.clone(), now);
            self.save(&state);
        }
        let result = provider.watch(&id, &self.callback, &token).await;
        let mut state = self.lock();
        match result {
            Ok(channel) => {
                info!(bridge = %self.bridge, channel = %channel.id, expiration_ms = ?channel.expiration, callback = %self.callback, "Google channel opened");
                state.channels.opened(channel);
            }
            Err(e) => {
                warn!(bridge = %self.bridge, channel = %id, error = %e, "cannot open a Google channel; polling goes on, trying again next round");
                state.channels.closed(&id);
                state.opened_ms.remove(&id);
            }
        }
        self.save(&state);
    }

    /// On shutdown: stops every open channel (best effort) and forgets it, so a restart
    /// registers a fresh one.
    pub async fn stop_all(&self, provider: &GoogleProvider) {
        let open: Vec<_> = self.lock().channels.open().to_vec();
        for channel in open {
            if channel.resource_id.is_empty() {
                continue; // never confirmed: nothing to stop
            }
            match tokio::time::timeout(STOP_TIMEOUT, provider.stop_channel(&channel)).await {
                Ok(Ok(())) => {
                    info!(bridge = %self.bridge, channel = %channel.id, "Google channel stopped on shutdown");
                    let mut state = self.lock();
                    state.channels.closed(&channel.id);
                    state.opened_ms.remove(&channel.id);
                    self.save(&state);
                }
                Ok(Err(e)) => {
                    warn!(bridge = %self.bridge, channel = %channel.id, error = %e, "cannot stop the Google channel on shutdown; it expires by itself");
                }
                Err(_) => {
                    warn!(bridge = %self.bridge, channel = %channel.id, "channels/stop timed out on shutdown; the channel expires by itself");
                }
            }
        }
    }
}

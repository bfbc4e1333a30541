//! HubSpot webhook deliveries: parsing a batch and the inbox that makes at-least-once, unordered
//! delivery apply once, in order, in effect.
//!
//! HubSpot posts a JSON array of events, retries a batch (up to 10 times over 24 h) on any failure,
//! does not promise `eventId` is unique, and does not order events. Webhooks are only hints: the
//! bridge re-reads the object they name (and compares its modification time with the shadow's), so
//! the inbox's job is to drop what was already seen and what is older than something already
//! applied (a creation or property change arriving after the object's deletion must not bring it
//! back), and to turn the rest into a short list of [`Hint`]s in `occurredAt` order.
//!
//! Pure: the caller persists [`Inbox`] (it is serde) in the same transaction as what the hints
//! lead to, and passes the clock in. Must not: fetch, write, or trust any field to be present.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};
use sha2::{Digest as _, Sha256};

/// How long a delivered event is remembered: longer than HubSpot's 24 h retry span.
pub const RETENTION: Duration = Duration::from_secs(48 * 3600);
/// Most events accepted in one delivery (HubSpot sends fewer than 100).
pub const MAX_EVENTS_PER_DELIVERY: usize = 1000;

/// A HubSpot id: numbers in webhooks, strings in the REST API; kept as the decimal string.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct HubSpotId(pub String);

impl<'de> Deserialize<'de> for HubSpotId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum NumberOrString {
            Number(u64),
            String(String),
        }
        match NumberOrString::deserialize(d)? {
            NumberOrString::Number(n) => Ok(Self(n.to_string())),
            NumberOrString::String(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
                Ok(Self(s))
            }
            NumberOrString::String(s) => {
                Err(serde::de::Error::custom(format!("not a HubSpot id: {s:?}")))
            }
        }
    }
}

impl std::fmt::Display for HubSpotId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// One event of a delivery. Every field but the subscription type and time is optional, and
/// unknown fields are kept (they take part in duplicate detection).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookEvent {
    /// `contact.propertyChange`, `deal.deletion`, `object.creation`, ... (older docs: `eventType`).
    #[serde(alias = "eventType")]
    pub subscription_type: String,
    /// Epoch milliseconds.
    pub occurred_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_id: Option<HubSpotId>,
    /// `0-1` contact, `0-2` company, `0-3` deal (generic `object.*` subscriptions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_type_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub property_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub property_value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change_source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<HubSpotId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscription_id: Option<HubSpotId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub portal_id: Option<HubSpotId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_id: Option<HubSpotId>,
    /// 0 on the first delivery; differs between retries, so not part of the identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt_number: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_object_id: Option<HubSpotId>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub merged_object_ids: Vec<HubSpotId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_object_id: Option<HubSpotId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub association_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_object_id: Option<HubSpotId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_object_id: Option<HubSpotId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub association_removed: Option<bool>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// Why a delivery was refused (answered 400; HubSpot retries, nothing was applied).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    #[error("webhook body is not a JSON array of events: {0}")]
    NotAnArray(String),
    #[error("webhook event {index}: {message}")]
    BadEvent { index: usize, message: String },
    #[error("webhook delivery holds {0} events (at most {MAX_EVENTS_PER_DELIVERY})")]
    TooMany(usize),
    #[error("webhook event {index}: unknown subscription type {subscription_type:?}")]
    UnknownType {
        index: usize,
        subscription_type: String,
    },
    #[error("webhook event {index} ({subscription_type}) names no object")]
    NoObject {
        index: usize,
        subscription_type: String,
    },
}

/// The CRM object types driftless syncs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ObjectType {
    Contact,
    Company,
    Deal,
}

/// One object at HubSpot.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ObjectRef {
    pub object_type: ObjectType,
    pub id: HubSpotId,
}

impl std::fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}:{}", self.object_type, self.id)
    }
}

/// What happened, by subscription type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Creation,
    Deletion,
    PrivacyDeletion,
    Restore,
    PropertyChange,
    AssociationChange,
    Merge,
}

/// What the bridge should do about a delivery, in `occurredAt` order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hint {
    /// Re-read the object (created or changed); its modification time decides against the shadow.
    Refetch(ObjectRef),
    /// Archived (or GDPR-deleted) at HubSpot: unlink, tombstone per the delete rules.
    Deleted { object: ObjectRef, privacy: bool },
    /// Restored from the archive: re-read and relink.
    Restored(ObjectRef),
    /// `merged` were merged into `survivor` (a merge may create a new survivor id).
    Merged {
        survivor: ObjectRef,
        merged: Vec<ObjectRef>,
    },
    /// An association was added or removed: re-read both ends' associations.
    AssociationChanged {
        from: ObjectRef,
        to_id: HubSpotId,
        association_type: Option<String>,
        removed: bool,
    },
}

/// What one delivery amounted to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Accepted {
    pub hints: Vec<Hint>,
    /// Events seen before (retries, duplicated deliveries).
    pub duplicates: usize,
    /// Events older than something already applied to the same object or property.
    pub stale: usize,
}

/// Parses a delivery body. Any malformed event refuses the whole delivery (HubSpot retries it);
/// nothing is half-applied.
pub fn parse_delivery(body: &[u8]) -> Result<Vec<WebhookEvent>, WebhookError> {
    let values: Vec<serde_json::Value> =
        serde_json::from_slice(body).map_err(|e| WebhookError::NotAnArray(e.to_string()))?;
    if values.len() > MAX_EVENTS_PER_DELIVERY {
        return Err(WebhookError::TooMany(values.len()));
    }
    let mut events = Vec::with_capacity(values.len());
    for (index, value) in values.into_iter().enumerate() {
        let event: WebhookEvent =
            serde_json::from_value(value).map_err(|e| WebhookError::BadEvent {
                index,
                message: e.to_string(),
            })?;
        let (_, action) = classify(&event).ok_or_else(|| WebhookError::UnknownType {
            index,
            subscription_type: event.subscription_type.clone(),
        })?;
        let names_object = match action {
            Action::Merge => event.primary_object_id.is_some() || event.object_id.is_some(),
            Action::AssociationChange => {
                event.from_object_id.is_some() && event.to_object_id.is_some()
            }
            _ => event.object_id.is_some(),
        };
        if !names_object {
            return Err(WebhookError::NoObject {
                index,
                subscription_type: event.subscription_type.clone(),
            });
        }
        events.push(event);
    }
    Ok(events)
}

/// The object type and action of an event; None for types driftless does not sync.
pub fn classify(event: &WebhookEvent) -> Option<(ObjectType, Action)> {
    let (object, action) = event.subscription_type.split_once('.')?;
    let object_type = match object {
        "contact" => ObjectType::Contact,
        "company" => ObjectType::Company,
        "deal" => ObjectType::Deal,
        "object" => match event.object_type_id.as_deref()? {
            "0-1" => ObjectType::Contact,
            "0-2" => ObjectType::Company,
            "0-3" => ObjectType::Deal,
            _ => return None,
        },
        _ => return None,
    };
    let action = match action {
        "creation" => Action::Creation,
        "deletion" => Action::Deletion,
        "privacyDeletion" => Action::PrivacyDeletion,
        "restore" => Action::Restore,
        "propertyChange" => Action::PropertyChange,
        "associationChange" => Action::AssociationChange,
        "merge" => Action::Merge,
        _ => return None,
    };
    Some((object_type, action))
}

/// The identity of an event: every field except `attemptNumber`, hashed. (`eventId` alone is not
/// unique, and a retry differs from the first attempt only in `attemptNumber`.)
pub fn event_key(event: &WebhookEvent) -> String {
    let mut identity = event.clone();
    identity.attempt_number = None;
    identity.extra.remove("attemptNumber");
    // Struct fields serialize in declaration order and `extra` is a BTreeMap: deterministic.
    let bytes = serde_json::to_vec(&identity).unwrap_or_default();
    Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Remembered deliveries and the newest applied event time per object, property and association.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inbox {
    /// Event key -> occurredAt.
    seen: BTreeMap<String, i64>,
    /// Object -> occurredAt of its newest applied creation/deletion/restore/merge.
    object_clock: BTreeMap<String, i64>,
    /// Object and property -> occurredAt of its newest applied change.
    property_clock: BTreeMap<String, i64>,
}

impl Inbox {
    /// Events remembered (for metrics and tests).
    pub fn remembered(&self) -> usize {
        self.seen.len()
    }

    /// Takes one parsed delivery at `now_ms`: drops duplicates and stale events, returns the hints.
    pub fn accept(&mut self, events: Vec<WebhookEvent>, now_ms: i64) -> Accepted {
        let mut accepted = Accepted::default();
        let mut keyed: Vec<(String, WebhookEvent)> =
            events.into_iter().map(|e| (event_key(&e), e)).collect();
        // Apply in occurrence order; the key breaks ties deterministically.
        keyed.sort_by(|(ka, a), (kb, b)| a.occurred_at.cmp(&b.occurred_at).then(ka.cmp(kb)));
        let oldest_remembered = now_ms.saturating_sub(retention_ms());
        for (key, event) in keyed {
            if self.seen.contains_key(&key) {
                accepted.duplicates += 1;
                continue;
            }
            let Some((object_type, action)) = classify(&event) else {
                continue; // parse_delivery refuses these; tolerate callers that did not use it
            };
            if event.occurred_at < oldest_remembered {
                // Older than anything HubSpot still retries: it could not be remembered, so its
                // duplicates would hint again. Polling has long covered it.
                accepted.stale += 1;
                continue;
            }
            self.seen.insert(key, event.occurred_at);
            match self.hint(object_type, action, &event) {
                Some(hint) => push_coalesced(&mut accepted.hints, hint),
                None => accepted.stale += 1,
            }
        }
        accepted
    }

    /// Forgets events older than [`RETENTION`] (HubSpot no longer retries them).
    pub fn expire(&mut self, now_ms: i64) {
        let oldest = now_ms.saturating_sub(retention_ms());
        self.seen.retain(|_, at| *at >= oldest);
        self.object_clock.retain(|_, at| *at >= oldest);
        self.property_clock.retain(|_, at| *at >= oldest);
    }

    fn hint(&mut self, object_type: ObjectType, action: Action, e: &WebhookEvent) -> Option<Hint> {
        let at = e.occurred_at;
        let object = |id: &HubSpotId| ObjectRef {
            object_type,
            id: id.clone(),
        };
        match action {
            Action::Creation | Action::Deletion | Action::PrivacyDeletion | Action::Restore => {
                let target = object(e.object_id.as_ref()?);
                if !advance(&mut self.object_clock, target.to_string(), at) {
                    return None;
                }
                Some(match action {
                    Action::Creation => Hint::Refetch(target),
                    Action::Restore => Hint::Restored(target),
                    _ => Hint::Deleted {
                        object: target,
                        privacy: action == Action::PrivacyDeletion,
                    },
                })
            }
            Action::PropertyChange => {
                let target = object(e.object_id.as_ref()?);
                let object_at = self.object_clock.get(&target.to_string()).copied();
                if object_at.is_some_and(|t| at < t) {
                    return None; // older than the object's deletion or restore
                }
                let property = e.property_name.as_deref().unwrap_or("");
                if !advance(&mut self.property_clock, format!("{target}:{property}"), at) {
                    return None;
                }
                Some(Hint::Refetch(target))
            }
            Action::Merge => {
                let survivor_id = e
                    .new_object_id
                    .as_ref()
                    .or(e.primary_object_id.as_ref())
                    .or(e.object_id.as_ref())?;
                let survivor = object(survivor_id);
                let mut merged: Vec<ObjectRef> = e
                    .merged_object_ids
                    .iter()
                    .chain(e.primary_object_id.iter())
                    .filter(|id| *id != survivor_id)
                    .map(object)
                    .collect();
                merged.sort();
                merged.dedup();
                if !advance(&mut self.object_clock, survivor.to_string(), at) {
                    return None;
                }
                for m in &merged {
                    advance(&mut self.object_clock, m.to_string(), at);
                }
                Some(Hint::Merged { survivor, merged })
            }
            Action::AssociationChange => {
                let from = object(e.from_object_id.as_ref()?);
                let to_id = e.to_object_id.clone()?;
                let association_type = e.association_type.clone();
                let key = format!(
                    "{from}:assoc:{}:{to_id}",
                    association_type.as_deref().unwrap_or("")
                );
                if !advance(&mut self.property_clock, key, at) {
                    return None;
                }
                Some(Hint::AssociationChanged {
                    from,
                    to_id,
                    association_type,
                    removed: e.association_removed.unwrap_or(false),
                })
            }
        }
    }
}

fn retention_ms() -> i64 {
    i64::try_from(RETENTION.as_millis()).unwrap_or(i64::MAX)
}

/// Moves a clock forward; false when `at` is older than what was already applied.
fn advance(clock: &mut BTreeMap<String, i64>, key: String, at: i64) -> bool {
    match clock.get(&key) {
        Some(&t) if at < t => false,
        _ => {
            clock.insert(key, at);
            true
        }
    }
}

/// Several changes to one object since its last delete/restore need one re-read.
fn push_coalesced(hints: &mut Vec<Hint>, hint: Hint) {
    if let Hint::Refetch(object) = &hint {
        for earlier in hints.iter().rev() {
            match earlier {
                Hint::Refetch(o) if o == object => return,
                Hint::Deleted { object: o, .. } | Hint::Restored(o) if o == object => break,
                _ => {}
            }
        }
    }
    hints.push(hint);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn contact(id: u64) -> ObjectRef {
        ObjectRef {
            object_type: ObjectType::Contact,
            id: HubSpotId(id.to_string()),
        }
    }

    fn event(v: serde_json::Value) -> WebhookEvent {
        serde_json::from_value(v).expect("event")
    }

    fn change(id: u64, at: i64, prop: &str, value: &str, attempt: u32) -> WebhookEvent {
        event(
            json!({"eventId": 7, "subscriptionId": 11, "portalId": 99, "appId": 5,
            "occurredAt": at, "subscriptionType": "contact.propertyChange", "attemptNumber": attempt,
            "objectId": id, "propertyName": prop, "propertyValue": value, "changeSource": "CRM"}),
        )
    }

    fn lifecycle(id: u64, at: i64, kind: &str) -> WebhookEvent {
        event(
            json!({"eventId": 8, "occurredAt": at, "subscriptionType": format!("contact.{kind}"),
            "objectId": id, "portalId": 99}),
        )
    }

    #[test]
    fn parses_a_real_shaped_delivery_and_refuses_malformed_ones() {
        let body = br#"[
          {"eventId":1,"subscriptionId":2,"portalId":3,"appId":4,"occurredAt":1700000000000,
           "subscriptionType":"contact.propertyChange","attemptNumber":0,"objectId":123,
           "changeSource":"CRM","propertyName":"phone","propertyValue":"+1 555","sourceId":"userId:1"},
          {"eventId":5,"occurredAt":1700000000001,"subscriptionType":"contact.merge","objectId":9,
           "primaryObjectId":9,"mergedObjectIds":[10,11],"newObjectId":12,"numberOfPropertiesMoved":3},
          {"eventId":6,"occurredAt":1700000000002,"subscriptionType":"object.associationChange",
           "objectTypeId":"0-3","fromObjectId":"77","toObjectId":78,"associationType":"DEAL_TO_CONTACT",
           "associationRemoved":false}
        ]"#;
        let events = parse_delivery(body).expect("parses");
        assert_eq!(events.len(), 3);
        assert_eq!(events[0].object_id, Some(HubSpotId("123".into())));
        assert_eq!(events[0].extra.get("sourceId"), Some(&json!("userId:1")));
        assert_eq!(
            classify(&events[2]),
            Some((ObjectType::Deal, Action::AssociationChange))
        );

        assert!(matches!(
            parse_delivery(b"{\"a\":1}"),
            Err(WebhookError::NotAnArray(_))
        ));
        assert!(matches!(
            parse_delivery(b"[{\"occurredAt\":1}]"),
            Err(WebhookError::BadEvent { index: 0, .. })
        ));
        assert!(matches!(
            parse_delivery(br#"[{"occurredAt":1,"subscriptionType":"contact.creation","objectId":1},
                                {"occurredAt":"soon","subscriptionType":"contact.creation","objectId":2}]"#),
            Err(WebhookError::BadEvent { index: 1, .. })
        ));
        assert!(matches!(
            parse_delivery(
                br#"[{"occurredAt":1,"subscriptionType":"ticket.creation","objectId":1}]"#
            ),
            Err(WebhookError::UnknownType { index: 0, .. })
        ));
        assert!(matches!(
            parse_delivery(br#"[{"occurredAt":1,"subscriptionType":"contact.deletion"}]"#),
            Err(WebhookError::NoObject { index: 0, .. })
        ));
        assert!(matches!(
            parse_delivery(
                br#"[{"occurredAt":1,"subscriptionType":"contact.creation","objectId":"12a"}]"#
            ),
            Err(WebhookError::BadEvent { index: 0, .. })
        ));
    }

    #[test]
    fn retries_and_duplicates_apply_once() {
        let mut inbox = Inbox::default();
        let first = inbox.accept(vec![change(1, 1000, "phone", "a", 0)], 2000);
        assert_eq!(first.hints, vec![Hint::Refetch(contact(1))]);
        // The same event retried (another attemptNumber), and duplicated within a batch.
        let again = inbox.accept(
            vec![
                change(1, 1000, "phone", "a", 3),
                change(1, 1000, "phone", "a", 3),
            ],
            3000,
        );
        assert_eq!(again.hints, vec![]);
        assert_eq!(again.duplicates, 2);
        // Same eventId, different content: a different event.
        let other = inbox.accept(vec![change(1, 1001, "phone", "b", 0)], 3000);
        assert_eq!(other.hints, vec![Hint::Refetch(contact(1))]);
    }

    #[test]
    fn reordered_deliveries_never_resurrect_a_deleted_object() {
        let mut inbox = Inbox::default();
        // The deletion arrives first; the older creation and change come later.
        let deleted = inbox.accept(vec![lifecycle(1, 2000, "deletion")], 5000);
        assert_eq!(
            deleted.hints,
            vec![Hint::Deleted {
                object: contact(1),
                privacy: false
            }]
        );
        let late = inbox.accept(
            vec![
                change(1, 1500, "phone", "x", 0),
                lifecycle(1, 1000, "creation"),
            ],
            5000,
        );
        assert_eq!(late.hints, vec![]);
        assert_eq!(late.stale, 2);
        // A later restore and change do apply.
        let restored = inbox.accept(
            vec![
                change(1, 3500, "phone", "y", 0),
                lifecycle(1, 3000, "restore"),
            ],
            5000,
        );
        assert_eq!(
            restored.hints,
            vec![Hint::Restored(contact(1)), Hint::Refetch(contact(1))]
        );
        // An older change of the same property after a newer one: stale.
        let older = inbox.accept(vec![change(1, 3400, "phone", "z", 0)], 5000);
        assert_eq!((older.hints.len(), older.stale), (0, 1));
    }

    #[test]
    fn a_batch_is_applied_in_occurrence_order_and_changes_coalesce() {
        let mut inbox = Inbox::default();
        let accepted = inbox.accept(
            vec![
                change(2, 30, "email", "c", 0),
                lifecycle(2, 20, "deletion"),
                change(2, 10, "email", "a", 0),
                change(2, 11, "firstname", "b", 0),
                lifecycle(2, 25, "restore"),
                change(2, 31, "phone", "d", 0),
            ],
            100,
        );
        assert_eq!(
            accepted.hints,
            vec![
                Hint::Refetch(contact(2)),
                Hint::Deleted {
                    object: contact(2),
                    privacy: false
                },
                Hint::Restored(contact(2)),
                Hint::Refetch(contact(2)),
            ]
        );
    }

    #[test]
    fn merges_name_the_survivor_and_the_absorbed() {
        let mut inbox = Inbox::default();
        let e = event(
            json!({"occurredAt": 10, "subscriptionType": "contact.merge", "objectId": 9,
            "primaryObjectId": 9, "mergedObjectIds": [10, 11], "newObjectId": 12}),
        );
        let accepted = inbox.accept(vec![e], 20);
        assert_eq!(
            accepted.hints,
            vec![Hint::Merged {
                survivor: contact(12),
                merged: vec![contact(10), contact(11), contact(9)],
            }]
        );
        // A late change to an absorbed id is stale.
        let late = inbox.accept(vec![change(10, 5, "phone", "x", 0)], 30);
        assert_eq!(late.stale, 1);
    }

    #[test]
    fn the_inbox_forgets_after_the_retention_and_survives_serde() {
        let mut inbox = Inbox::default();
        inbox.accept(vec![change(1, 1_000, "phone", "a", 0)], 1_000);
        let json = serde_json::to_string(&inbox).expect("serializes");
        let mut restored: Inbox = serde_json::from_str(&json).expect("deserializes");
        assert_eq!(restored, inbox);
        assert_eq!(
            restored
                .accept(vec![change(1, 1_000, "phone", "a", 1)], 2_000)
                .duplicates,
            1
        );
        let later = 1_000 + retention_ms() + 1;
        restored.expire(later);
        assert_eq!(restored.remembered(), 0);
        // Events older than the retention are stale: no hint, and nothing to remember.
        let ancient = restored.accept(vec![change(3, 1_000, "phone", "a", 0)], later);
        assert_eq!((ancient.hints.len(), ancient.stale), (0, 1));
        assert_eq!(restored.remembered(), 0);
        let again = restored.accept(vec![change(3, 1_000, "phone", "a", 1)], later);
        assert_eq!((again.hints.len(), again.stale), (0, 1));
    }
}

//! The bridges' durable state, in their own redb tables next to the documents.
//!
//! - `bridge_state` (`(bridge id, key) -> bytes`): `sync_token` (the provider cursor) and
//!   `outbox_cursor` (the last `change_log` seq this bridge has pushed), and provider state
//!   such as `google_channels` (open push channels, their tokens and message numbers seen).
//! - `bridge_links` (`(bridge id, href) -> Shadow as JSON`): the link table (external id ->
//!   document) with the shadow of each linked record as the provider last had it.
//! - `bridge_actors` (`actor id bytes -> bridge id`): which bridge wrote with which actor, so the
//!   conflicts endpoint can name sources.
//! - `bridge_pending_imports` (`(bridge id, href) -> Shadow as JSON`): a provider record whose
//!   document is being created. Stored (with the chosen document id) before the document is sent,
//!   and turned into a link in one transaction once it is durable, so a crash in between is
//!   finished by the next round instead of importing the record twice.
//! - `bridge_failed_jobs` (`(bridge id, document id) -> FailedJob as JSON`): outbound jobs the
//!   provider refused for that record alone; retried with backoff while the outbox cursor moves
//!   on past them.
//! - `bridge_change_times` (`(document id, change hash hex) -> unix ms`): when the edit a bridge
//!   imported was made at the provider (its modification time), for `authority = "latest"`.
//!
//! - `bridge_meetings` (`(workspace, meeting key) -> document id`): the workspace-wide meeting
//!   index (`meetings`): which document holds the meeting of a UID. Claimed in the transaction
//!   that records the pending import, so two bridges never create two documents for one meeting.
//!   Backfilled at start from the Google/Graph link tables (`meetings::backfill_index`) for
//!   documents linked before the index existed or whose claim was lost.
//!
//! Every method is one redb transaction. Callers run them off the async runtime.

use std::collections::BTreeMap;

use automerge::ChangeHash;
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::storage::Storage;

const STATE: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("bridge_state");
const LINKS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("bridge_links");
const ACTORS: TableDefinition<&[u8], &str> = TableDefinition::new("bridge_actors");
const PENDING_IMPORTS: TableDefinition<(&str, &str), &[u8]> =
    TableDefinition::new("bridge_pending_imports");
const FAILED_JOBS: TableDefinition<(&str, &str), &[u8]> =
    TableDefinition::new("bridge_failed_jobs");
const MEETINGS: TableDefinition<(&str, &str), &str> = TableDefinition::new("bridge_meetings");
const CHANGE_TIMES: TableDefinition<(&str, &str), u64> =
    TableDefinition::new("bridge_change_times");

const SYNC_TOKEN: &str = "sync_token";
const OUTBOX_CURSOR: &str = "outbox_cursor";

/// A linked record as the provider last had it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Shadow {
    /// The document id (automerge-repo form).
    pub doc: String,
    pub etag: Option<String>,
    /// The resource body as last read from or written to the provider.
    pub raw: String,
    /// The canonical record translated from `raw`.
    pub canonical: serde_json::Value,
    /// Document heads (hex) at which the document held `canonical`'s values.
    pub heads: Vec<String>,
    /// The resource's UID, to re-match after a resync.
    pub uid: Option<String>,
}

impl Shadow {
    pub fn change_heads(&self) -> Vec<ChangeHash> {
        self.heads.iter().filter_map(|h| h.parse().ok()).collect()
    }
}

/// An outbound job (one document of one bridge) the provider refused for that record alone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedJob {
    /// Failed attempts so far.
    pub attempts: u32,
    /// Unix milliseconds before which it is not retried.
    pub next_attempt_ms: u64,
    /// Unix milliseconds of the last failure.
    pub failed_at_ms: u64,
    /// What went wrong last, naming the document and the href.
    pub last_error: String,
}

/// Failure of a bridge-state read or write.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("bridge state storage: {0}")]
    Db(#[from] redb::Error),
    #[error("bridge state for {bridge} {href}: stored shadow is unreadable: {source}")]
    Corrupt {
        bridge: String,
        href: String,
        source: serde_json::Error,
    },
    #[error("bridge state for {bridge}: failed job of document {doc} is unreadable: {source}")]
    CorruptJob {
        bridge: String,
        doc: String,
        source: serde_json::Error,
    },
}

fn db(e: impl Into<redb::Error>) -> StoreError {
    StoreError::Db(e.into())
}

/// The answer of [`BridgeStore::begin_import_claiming`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The key is this import's document's; the pending import is recorded.
    Claimed,
    /// Another document holds the key; nothing was recorded.
    Taken(String),
}

/// One change to the link table, applied with others in one transaction.
#[derive(Debug, Clone)]
pub enum LinkOp {
    Put { href: String, shadow: Box<Shadow> },
    Remove { href: String },
}

/// Handle on the bridge tables (cheap to clone).
#[derive(Debug, Clone)]
pub struct BridgeStore {
    storage: Storage,
}

impl BridgeStore {
    /// Creates the tables if needed.
    pub fn open(storage: Storage) -> Result<Self, StoreError> {
        let txn = storage.database().begin_write().map_err(db)?;
        txn.open_table(STATE).map_err(db)?;
        txn.open_table(LINKS).map_err(db)?;
        txn.open_table(ACTORS).map_err(db)?;
        txn.open_table(PENDING_IMPORTS).map_err(db)?;
        txn.open_table(FAILED_JOBS).map_err(db)?;
        txn.open_table(MEETINGS).map_err(db)?;
        txn.open_table(CHANGE_TIMES).map_err(db)?;
        txn.commit().map_err(db)?;
        Ok(Self { storage })
    }

    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    fn state(&self, bridge: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.storage.database().begin_read().map_err(db)?;
        let table = txn.open_table(STATE).map_err(db)?;
        Ok(table
            .get((bridge, key))
            .map_err(db)?
            .map(|v| v.value().to_vec()))
    }

    /// A provider's own state value under `key` (e.g. `google_channels`), opaque here.
    pub fn provider_state(&self, bridge: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.state(bridge, key)
    }

    /// Stores (or, with `None`, removes) a provider's own state value under `key`.
    pub fn put_provider_state(
        &self,
        bridge: &str,
        key: &str,
        value: Option<&[u8]>,
    ) -> Result<(), StoreError> {
        let txn = self.storage.database().begin_write().map_err(db)?;
        {
            let mut state = txn.open_table(STATE).map_err(db)?;
            match value {
                Some(bytes) => {
                    state.insert((bridge, key), bytes).map_err(db)?;
                }
                None => {
                    state.remove((bridge, key)).map_err(db)?;
                }
            }
        }
        txn.commit().map_err(db)
    }

    pub fn sync_token(&self, bridge: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .state(bridge, SYNC_TOKEN)?
            .map(|b| String::from_utf8_lossy(&b).into_owned()))
    }

    pub fn outbox_cursor(&self, bridge: &str) -> Result<Option<u64>, StoreError> {
        Ok(self.state(bridge, OUTBOX_CURSOR)?.and_then(|b| {
            let bytes: [u8; 8] = b.as_slice().try_into().ok()?;
            Some(u64::from_be_bytes(bytes))
        }))
    }

    /// Every link of `bridge`, by href.
    pub fn links(&self, bridge: &str) -> Result<BTreeMap<String, Shadow>, StoreError> {
        self.shadows(LINKS, bridge)
    }

    /// The shadow of one link (`None`: not linked here).
    pub fn link(&self, bridge: &str, href: &str) -> Result<Option<Shadow>, StoreError> {
        let txn = self.storage.database().begin_read().map_err(db)?;
        let table = txn.open_table(LINKS).map_err(db)?;
        let Some(value) = table.get((bridge, href)).map_err(db)? else {
            return Ok(None);
        };
        serde_json::from_slice(value.value())
            .map(Some)
            .map_err(|source| StoreError::Corrupt {
                bridge: bridge.to_owned(),
                href: href.to_owned(),
                source,
            })
    }

    /// Imports of `bridge` whose document may not exist yet, by href.
    pub fn pending_imports(&self, bridge: &str) -> Result<BTreeMap<String, Shadow>, StoreError> {
        self.shadows(PENDING_IMPORTS, bridge)
    }

    fn shadows(
        &self,
        definition: TableDefinition<(&str, &str), &[u8]>,
        bridge: &str,
    ) -> Result<BTreeMap<String, Shadow>, StoreError> {
        self.json_rows(definition, bridge, |href, source| StoreError::Corrupt {
            bridge: bridge.to_owned(),
            href: href.to_owned(),
            source,
        })
    }

    /// Every row of `bridge` in a `(bridge, key) -> JSON` table, decoded, by key.
    fn json_rows<T: serde::de::DeserializeOwned>(
        &self,
        definition: TableDefinition<(&str, &str), &[u8]>,
        bridge: &str,
        corrupt: impl Fn(&str, serde_json::Error) -> StoreError,
    ) -> Result<BTreeMap<String, T>, StoreError> {
        let txn = self.storage.database().begin_read().map_err(db)?;
        let table = txn.open_table(definition).map_err(db)?;
        let mut out = BTreeMap::new();
        for entry in table.range((bridge, "")..).map_err(db)? {
            let (key, value) = entry.map_err(db)?;
            let (b, row) = key.value();
            if b != bridge {
                break;
            }
            let decoded = serde_json::from_slice(value.value()).map_err(|e| corrupt(row, e))?;
            out.insert(row.to_owned(), decoded);
        }
        Ok(out)
    }

    /// Applies link changes and optionally moves the sync token and outbox cursor, atomically.
    pub fn commit(
        &self,
        bridge: &str,
        ops: &[LinkOp],
        sync_token: Option<Option<&str>>,
        outbox_cursor: Option<u64>,
    ) -> Result<(), StoreError> {
        let txn = self.storage.database().begin_write().map_err(db)?;
        {
            let mut links = txn.open_table(LINKS).map_err(db)?;
            for op in ops {
                match op {
                    LinkOp::Put { href, shadow } => {
                        let bytes = encode_shadow(bridge, href, shadow)?;
                        links
                            .insert((bridge, href.as_str()), bytes.as_slice())
                            .map_err(db)?;
                    }
                    LinkOp::Remove { href } => {
                        links.remove((bridge, href.as_str())).map_err(db)?;
                    }
                }
            }
            let mut state = txn.open_table(STATE).map_err(db)?;
            match sync_token {
                Some(Some(token)) => {
                    state
                        .insert((bridge, SYNC_TOKEN), token.as_bytes())
                        .map_err(db)?;
                }
                Some(None) => {
                    state.remove((bridge, SYNC_TOKEN)).map_err(db)?;
                }
                None => {}
            }
            if let Some(cursor) = outbox_cursor {
                state
                    .insert((bridge, OUTBOX_CURSOR), cursor.to_be_bytes().as_slice())
                    .map_err(db)?;
            }
        }
        txn.commit().map_err(db)
    }

    /// Records that `href` is being imported as document `shadow.doc`, before the document is sent.
    pub fn begin_import(
        &self,
        bridge: &str,
        href: &str,
        shadow: &Shadow,
    ) -> Result<(), StoreError> {
        let bytes = encode_shadow(bridge, href, shadow)?;
        let txn = self.storage.database().begin_write().map_err(db)?;
        txn.open_table(PENDING_IMPORTS)
            .map_err(db)?
            .insert((bridge, href), bytes.as_slice())
            .map_err(db)?;
        txn.commit().map_err(db)
    }

    /// Claims meeting `key` of `workspace` for `shadow.doc` and records the pending import of
    /// `href`, in one transaction; or, when another document holds the key, records nothing and
    /// names that document. `replacing`: take the key over from that document (a tombstoned one).
    pub fn begin_import_claiming(
        &self,
        bridge: &str,
        href: &str,
        shadow: &Shadow,
        workspace: &str,
        key: &str,
        replacing: Option<&str>,
    ) -> Result<Claim, StoreError> {
        let bytes = encode_shadow(bridge, href, shadow)?;
        let txn = self.storage.database().begin_write().map_err(db)?;
        {
            let mut meetings = txn.open_table(MEETINGS).map_err(db)?;
            let holder = meetings
                .get((workspace, key))
                .map_err(db)?
                .map(|v| v.value().to_owned());
            if let Some(holder) = holder
                && holder != shadow.doc
                && Some(holder.as_str()) != replacing
            {
                return Ok(Claim::Taken(holder));
            }
            meetings
                .insert((workspace, key), shadow.doc.as_str())
                .map_err(db)?;
            txn.open_table(PENDING_IMPORTS)
                .map_err(db)?
                .insert((bridge, href), bytes.as_slice())
                .map_err(db)?;
        }
        txn.commit().map_err(db)?;
        Ok(Claim::Claimed)
    }

    /// Claims meeting `key` of `workspace` for `doc` unless another document holds it (then
    /// names that one).
    pub fn claim_meeting(
        &self,
        workspace: &str,
        key: &str,
        doc: &str,
    ) -> Result<Claim, StoreError> {
        let txn = self.storage.database().begin_write().map_err(db)?;
        {
            let mut meetings = txn.open_table(MEETINGS).map_err(db)?;
            let holder = meetings
                .get((workspace, key))
                .map_err(db)?
                .map(|v| v.value().to_owned());
            if let Some(holder) = holder {
                return Ok(if holder == doc {
                    Claim::Claimed
                } else {
                    Claim::Taken(holder)
                });
            }
            meetings.insert((workspace, key), doc).map_err(db)?;
        }
        txn.commit().map_err(db)?;
        Ok(Claim::Claimed)
    }

    /// Adds `(workspace, key) -> doc` for each entry whose key no document holds yet (one
    /// transaction; existing claims are kept). Returns how many were added.
    pub fn backfill_meetings(
        &self,
        workspace: &str,
        entries: &[(String, String)],
    ) -> Result<usize, StoreError> {
        let txn = self.storage.database().begin_write().map_err(db)?;
        let mut added = 0;
        {
            let mut meetings = txn.open_table(MEETINGS).map_err(db)?;
            for (key, doc) in entries {
                if meetings
                    .get((workspace, key.as_str()))
                    .map_err(db)?
                    .is_none()
                {
                    meetings
                        .insert((workspace, key.as_str()), doc.as_str())
                        .map_err(db)?;
                    added += 1;
                }
            }
        }
        txn.commit().map_err(db)?;
        Ok(added)
    }

    /// The document holding meeting `key` of `workspace`, if claimed.
    pub fn meeting(&self, workspace: &str, key: &str) -> Result<Option<String>, StoreError> {
        let txn = self.storage.database().begin_read().map_err(db)?;
        let table = txn.open_table(MEETINGS).map_err(db)?;
        Ok(table
            .get((workspace, key))
            .map_err(db)?
            .map(|v| v.value().to_owned()))
    }

    /// The imported document is durable: the pending import becomes the link, atomically.
    pub fn finish_import(
        &self,
        bridge: &str,
        href: &str,
        shadow: &Shadow,
    ) -> Result<(), StoreError> {
        let bytes = encode_shadow(bridge, href, shadow)?;
        let txn = self.storage.database().begin_write().map_err(db)?;
        txn.open_table(PENDING_IMPORTS)
            .map_err(db)?
            .remove((bridge, href))
            .map_err(db)?;
        txn.open_table(LINKS)
            .map_err(db)?
            .insert((bridge, href), bytes.as_slice())
            .map_err(db)?;
        txn.commit().map_err(db)
    }

    /// Every failed job of `bridge`, by document id.
    pub fn failed_jobs(&self, bridge: &str) -> Result<BTreeMap<String, FailedJob>, StoreError> {
        self.json_rows(FAILED_JOBS, bridge, |doc, source| StoreError::CorruptJob {
            bridge: bridge.to_owned(),
            doc: doc.to_owned(),
            source,
        })
    }

    /// Stores (or replaces) the failed job of document `doc`.
    pub fn put_failed_job(
        &self,
        bridge: &str,
        doc: &str,
        job: &FailedJob,
    ) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(job).map_err(|source| StoreError::CorruptJob {
            bridge: bridge.to_owned(),
            doc: doc.to_owned(),
            source,
        })?;
        let txn = self.storage.database().begin_write().map_err(db)?;
        txn.open_table(FAILED_JOBS)
            .map_err(db)?
            .insert((bridge, doc), bytes.as_slice())
            .map_err(db)?;
        txn.commit().map_err(db)
    }

    /// Drops the failed job of document `doc` (written, or nothing left to write).
    pub fn remove_failed_job(&self, bridge: &str, doc: &str) -> Result<(), StoreError> {
        let txn = self.storage.database().begin_write().map_err(db)?;
        txn.open_table(FAILED_JOBS)
            .map_err(db)?
            .remove((bridge, doc))
            .map_err(db)?;
        txn.commit().map_err(db)
    }

    /// Records that change `hash` of document `doc` carries an edit made at `ms` (unix ms).
    pub fn put_change_time(&self, doc: &str, hash: &str, ms: u64) -> Result<(), StoreError> {
        let txn = self.storage.database().begin_write().map_err(db)?;
        txn.open_table(CHANGE_TIMES)
            .map_err(db)?
            .insert((doc, hash), ms)
            .map_err(db)?;
        txn.commit().map_err(db)
    }

    /// When the edit in change `hash` of document `doc` was made, if a bridge recorded it.
    pub fn change_time(&self, doc: &str, hash: &str) -> Result<Option<u64>, StoreError> {
        let txn = self.storage.database().begin_read().map_err(db)?;
        let table = txn.open_table(CHANGE_TIMES).map_err(db)?;
        Ok(table.get((doc, hash)).map_err(db)?.map(|v| v.value()))
    }

    pub fn register_actor(&self, actor: &[u8], bridge: &str) -> Result<(), StoreError> {
        let txn = self.storage.database().begin_write().map_err(db)?;
        txn.open_table(ACTORS)
            .map_err(db)?
            .insert(actor, bridge)
            .map_err(db)?;
        txn.commit().map_err(db)
    }

    /// Every actor a bridge wrote with, and the bridge.
    pub fn actor_sources(&self) -> Result<BTreeMap<Vec<u8>, String>, StoreError> {
        let txn = self.storage.database().begin_read().map_err(db)?;
        let table = txn.open_table(ACTORS).map_err(db)?;
        let mut out = BTreeMap::new();
        for entry in table.iter().map_err(db)? {
            let (k, v) = entry.map_err(db)?;
            out.insert(k.value().to_vec(), v.value().to_owned());
        }
        Ok(out)
    }
}

/// The link table as the pure round rules see it.
pub fn known(links: &BTreeMap<String, Shadow>) -> Vec<driftless_bridges::sync::Known> {
    links
        .iter()
        .map(|(href, s)| driftless_bridges::sync::Known {
            href: href.clone(),
            doc: s.doc.clone(),
            etag: s.etag.clone(),
            uid: s.uid.clone(),
        })
        .collect()
}

/// A shadow as stored.
fn encode_shadow(bridge: &str, href: &str, shadow: &Shadow) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(shadow).map_err(|source| StoreError::Corrupt {
        bridge: bridge.to_owned(),
        href: href.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shadow(doc: &str) -> Shadow {
        Shadow {
            doc: doc.into(),
            etag: Some("\"1\"".into()),
            raw: "BEGIN:VCALENDAR".into(),
            canonical: serde_json::json!({"title": "x"}),
            heads: vec![],
            uid: Some("u".into()),
        }
    }

    #[test]
    fn links_token_and_cursor_commit_together_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = BridgeStore::open(Storage::open(dir.path()).unwrap()).unwrap();
            store
                .commit(
                    "cal",
                    &[
                        LinkOp::Put {
                            href: "/c/a.ics".into(),
                            shadow: Box::new(shadow("A")),
                        },
                        LinkOp::Put {
                            href: "/c/b.ics".into(),
                            shadow: Box::new(shadow("B")),
                        },
                    ],
                    Some(Some("tok-1")),
                    Some(7),
                )
                .unwrap();
            store
                .commit(
                    "cal-2",
                    &[LinkOp::Put {
                        href: "/d/a.ics".into(),
                        shadow: Box::new(shadow("A")),
                    }],
                    None,
                    None,
                )
                .unwrap();
            store
                .commit(
                    "cal",
                    &[LinkOp::Remove {
                        href: "/c/a.ics".into(),
                    }],
                    None,
                    None,
                )
                .unwrap();
        }
        let store = BridgeStore::open(Storage::open(dir.path()).unwrap()).unwrap();
        let links = store.links("cal").unwrap();
        assert_eq!(links.keys().collect::<Vec<_>>(), vec!["/c/b.ics"]);
        assert_eq!(store.links("cal-2").unwrap().len(), 1);
        assert_eq!(store.links("ca").unwrap().len(), 0);
        assert_eq!(store.sync_token("cal").unwrap().as_deref(), Some("tok-1"));
        assert_eq!(store.outbox_cursor("cal").unwrap(), Some(7));
        assert_eq!(store.sync_token("cal-2").unwrap(), None);
    }

    #[test]
    fn a_pending_import_becomes_a_link_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let store = BridgeStore::open(Storage::open(dir.path()).unwrap()).unwrap();
        store.begin_import("cal", "/c/a.ics", &shadow("A")).unwrap();
        assert_eq!(store.pending_imports("cal").unwrap().len(), 1);
        assert!(store.links("cal").unwrap().is_empty());
        assert!(store.pending_imports("cal-2").unwrap().is_empty());
        let mut done = shadow("A");
        done.heads = vec!["ab".into()];
        store.finish_import("cal", "/c/a.ics", &done).unwrap();
        assert!(store.pending_imports("cal").unwrap().is_empty());
        assert_eq!(store.links("cal").unwrap()["/c/a.ics"], done);
    }

    #[test]
    fn a_meeting_is_claimed_once_per_workspace_with_its_pending_import() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = BridgeStore::open(Storage::open(dir.path()).unwrap()).unwrap();
            let claim = store
                .begin_import_claiming("google", "g1", &shadow("A"), "ws", "uid-1", None)
                .unwrap();
            assert_eq!(claim, Claim::Claimed);
            assert_eq!(store.pending_imports("google").unwrap().len(), 1);
            // Another mailbox of the workspace: the key is taken, nothing is recorded.
            let claim = store
                .begin_import_claiming("graph", "x1", &shadow("B"), "ws", "uid-1", None)
                .unwrap();
            assert_eq!(claim, Claim::Taken("A".into()));
            assert!(store.pending_imports("graph").unwrap().is_empty());
            // Another workspace is another index.
            let claim = store
                .begin_import_claiming("other", "o1", &shadow("C"), "ws-2", "uid-1", None)
                .unwrap();
            assert_eq!(claim, Claim::Claimed);
        }
        // The claim survives a restart.
        let store = BridgeStore::open(Storage::open(dir.path()).unwrap()).unwrap();
        assert_eq!(store.meeting("ws", "uid-1").unwrap().as_deref(), Some("A"));
        // Taking it over needs to name the holder being replaced.
        let claim = store
            .begin_import_claiming("graph", "x1", &shadow("B"), "ws", "uid-1", Some("Z"))
            .unwrap();
        assert_eq!(claim, Claim::Taken("A".into()));
        let claim = store
            .begin_import_claiming("graph", "x1", &shadow("B"), "ws", "uid-1", Some("A"))
            .unwrap();
        assert_eq!(claim, Claim::Claimed);
        assert_eq!(store.meeting("ws", "uid-1").unwrap().as_deref(), Some("B"));
        // A document the app created claims its meeting once a provider gave it a UID.
        assert_eq!(
            store.claim_meeting("ws", "uid-2", "D").unwrap(),
            Claim::Claimed
        );
        assert_eq!(
            store.claim_meeting("ws", "uid-2", "D").unwrap(),
            Claim::Claimed
        );
        assert_eq!(
            store.claim_meeting("ws", "uid-2", "E").unwrap(),
            Claim::Taken("D".into())
        );
    }

    #[test]
    fn a_backfill_adds_only_missing_meeting_keys() {
        let dir = tempfile::tempdir().unwrap();
        let store = BridgeStore::open(Storage::open(dir.path()).unwrap()).unwrap();
        assert_eq!(
            store.claim_meeting("ws", "uid-1", "A").unwrap(),
            Claim::Claimed
        );
        let entries = [
            ("uid-1".to_owned(), "B".to_owned()),
            ("uid-2".to_owned(), "C".to_owned()),
            ("uid-2".to_owned(), "D".to_owned()),
        ];
        assert_eq!(store.backfill_meetings("ws", &entries).unwrap(), 1);
        assert_eq!(store.meeting("ws", "uid-1").unwrap().as_deref(), Some("A"));
        assert_eq!(store.meeting("ws", "uid-2").unwrap().as_deref(), Some("C"));
        // Idempotent.
        assert_eq!(store.backfill_meetings("ws", &entries).unwrap(), 0);
        assert_eq!(store.meeting("ws-2", "uid-2").unwrap(), None);
    }

    #[test]
    fn failed_jobs_are_per_bridge_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let job = FailedJob {
            attempts: 2,
            next_attempt_ms: 99,
            failed_at_ms: 42,
            last_error: "403".into(),
        };
        {
            let store = BridgeStore::open(Storage::open(dir.path()).unwrap()).unwrap();
            store.put_failed_job("cal", "docA", &job).unwrap();
            store.put_failed_job("cal", "docB", &job).unwrap();
            store.put_failed_job("cal-2", "docA", &job).unwrap();
            store.remove_failed_job("cal", "docB").unwrap();
        }
        let store = BridgeStore::open(Storage::open(dir.path()).unwrap()).unwrap();
        let jobs = store.failed_jobs("cal").unwrap();
        assert_eq!(jobs.keys().collect::<Vec<_>>(), vec!["docA"]);
        assert_eq!(jobs["docA"], job);
        assert_eq!(store.failed_jobs("cal-2").unwrap().len(), 1);
        assert!(store.failed_jobs("ca").unwrap().is_empty());
    }
}

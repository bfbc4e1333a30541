//! The record index behind `GET /v1/records`: which documents of a workspace are records of which
//! `type`, and which are tombstones, so a listing reads only the page it returns instead of every
//! document of the workspace.
//!
//! The index is derived data, kept in its own redb tables and caught up from the storage
//! `change_log` (every committed document change appends there in the same transaction), the way
//! the bridges' outbox is: each changed document is loaded once and re-indexed. It is refreshed
//! before every listing, so a listing sees every acknowledged change. Losing the index costs a
//! re-scan of the log, never data. Must not: write documents.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use automerge::{ObjType, ROOT, ReadDoc, ScalarValue, Value as AmValue};
use driftless_client_protocol::DocumentId;
use redb::{ReadableDatabase, ReadableTable, TableDefinition};

use crate::storage::Storage;

/// (workspace, document id as string) -> (record type, "" for a plain document; deleted).
const BY_DOC: TableDefinition<(&str, &str), (&str, bool)> = TableDefinition::new("record_by_doc");
/// (workspace, record type, document id as string) -> deleted.
const BY_TYPE: TableDefinition<(&str, &str, &str), bool> = TableDefinition::new("record_by_type");
/// "cursor" -> the last change-log position indexed.
const INDEX_META: TableDefinition<&str, u64> = TableDefinition::new("record_index_meta");
const CURSOR_KEY: &str = "cursor";
/// Change-log entries indexed per transaction.
const REFRESH_BATCH: usize = 1000;

/// Why a listing could not be answered.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("record index: {0}")]
    Storage(String),
}

fn err(e: impl std::fmt::Display) -> IndexError {
    IndexError::Storage(e.to_string())
}

/// What to list.
#[derive(Debug, Clone, Default)]
pub struct Listing<'a> {
    pub workspace: &'a str,
    pub record_type: Option<&'a str>,
    pub include_deleted: bool,
    /// Exclusive: ids greater than this one (document id strings sort like the cursor).
    pub after: Option<&'a str>,
}

/// The index; cheap to clone.
#[derive(Clone)]
pub struct RecordIndex {
    storage: Storage,
    /// One refresh at a time (two would index the same entries twice; harmless but wasted).
    refreshing: Arc<Mutex<()>>,
}

impl std::fmt::Debug for RecordIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordIndex").finish_non_exhaustive()
    }
}

impl RecordIndex {
    pub fn new(storage: Storage) -> Self {
        Self {
            storage,
            refreshing: Arc::new(Mutex::new(())),
        }
    }

    /// Indexes every change logged since the last refresh. Returns how many documents it read.
    pub fn refresh(&self) -> Result<usize, IndexError> {
        let _one = self
            .refreshing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let db = self.storage.database();
        let mut cursor = {
            let txn = db.begin_read().map_err(err)?;
            match txn.open_table(INDEX_META) {
                Ok(meta) => meta.get(CURSOR_KEY).map_err(err)?.map(|v| v.value()),
                Err(redb::TableError::TableDoesNotExist(_)) => None,
                Err(e) => return Err(err(e)),
            }
        };
        let mut read = 0;
        loop {
            let entries = self
                .storage
                .changes_after(cursor, REFRESH_BATCH)
                .map_err(err)?;
            let Some(&(last, _)) = entries.last() else {
                return Ok(read);
            };
            let docs: BTreeSet<DocumentId> = entries.into_iter().map(|(_, d)| d).collect();
            let mut rows = Vec::with_capacity(docs.len());
            for doc in docs {
                read += 1;
                match self.storage.load_stored(&doc) {
                    Ok(Some(stored)) => {
                        let (record_type, deleted) = type_and_deleted(&stored.document);
                        rows.push((doc.to_string(), stored.workspace, record_type, deleted));
                    }
                    Ok(None) => {}
                    // A document that does not load is left out of listings (and logged) rather
                    // than blocking every listing of the workspace.
                    Err(e) => {
                        tracing::warn!(doc = %doc, error = %e, "record index: document does not load; not listed");
                    }
                }
            }
            // Derived data: no fsync of its own; the next durable commit of the writer carries
            // it, and a crash before that only means re-indexing these entries.
            let mut txn = db.begin_write().map_err(err)?;
            txn.set_durability(redb::Durability::None).map_err(err)?;
            {
                let mut by_doc = txn.open_table(BY_DOC).map_err(err)?;
                let mut by_type = txn.open_table(BY_TYPE).map_err(err)?;
                for (doc, workspace, record_type, deleted) in &rows {
                    let old = by_doc
                        .get((workspace.as_str(), doc.as_str()))
                        .map_err(err)?
                        .map(|v| v.value().0.to_owned());
                    if let Some(old) = old {
                        by_type
                            .remove((workspace.as_str(), old.as_str(), doc.as_str()))
                            .map_err(err)?;
                    }
                    by_doc
                        .insert(
                            (workspace.as_str(), doc.as_str()),
                            (record_type.as_str(), *deleted),
                        )
                        .map_err(err)?;
                    by_type
                        .insert(
                            (workspace.as_str(), record_type.as_str(), doc.as_str()),
                            *deleted,
                        )
                        .map_err(err)?;
                }
                txn.open_table(INDEX_META)
                    .map_err(err)?
                    .insert(CURSOR_KEY, last)
                    .map_err(err)?;
            }
            txn.commit().map_err(err)?;
            cursor = Some(last);
        }
    }

    /// Up to `limit` document ids in id order, after a refresh. `keep` filters further (access
    /// scope) before the limit counts.
    pub fn list(
        &self,
        listing: &Listing<'_>,
        limit: usize,
        keep: impl Fn(&DocumentId) -> bool,
    ) -> Result<Vec<DocumentId>, IndexError> {
        self.refresh()?;
        let txn = self.storage.database().begin_read().map_err(err)?;
        let ws = listing.workspace;
        let after = listing.after.unwrap_or("");
        let mut out = Vec::new();
        let mut take = |doc: &str, deleted: bool| -> bool {
            if deleted && !listing.include_deleted {
                return true;
            }
            if let Ok(id) = doc.parse::<DocumentId>()
                && keep(&id)
            {
                out.push(id);
            }
            out.len() < limit
        };
        match listing.record_type {
            Some(t) => {
                let table = match txn.open_table(BY_TYPE) {
                    Ok(t) => t,
                    Err(redb::TableError::TableDoesNotExist(_)) => return Ok(out),
                    Err(e) => return Err(err(e)),
                };
                let range = table
                    .range((ws, t, after)..=(ws, t, "\u{10FFFF}"))
                    .map_err(err)?;
                for entry in range {
                    let (key, deleted) = entry.map_err(err)?;
                    let (_, _, doc) = key.value();
                    if doc == after {
                        continue;
                    }
                    if !take(doc, deleted.value()) {
                        break;
                    }
                }
            }
            None => {
                let table = match txn.open_table(BY_DOC) {
                    Ok(t) => t,
                    Err(redb::TableError::TableDoesNotExist(_)) => return Ok(out),
                    Err(e) => return Err(err(e)),
                };
                let range = table.range((ws, after)..=(ws, "\u{10FFFF}")).map_err(err)?;
                for entry in range {
                    let (key, value) = entry.map_err(err)?;
                    let (_, doc) = key.value();
                    if doc == after {
                        continue;
                    }
                    if !take(doc, value.value().1) {
                        break;
                    }
                }
            }
        }
        Ok(out)
    }
}

/// The root `type` string ("" when absent) and the `deleted` flag of a document.
fn type_and_deleted(doc: &automerge::Automerge) -> (String, bool) {
    let record_type = match doc.get(ROOT, "type") {
        Ok(Some((AmValue::Object(ObjType::Text), id))) => doc.text(&id).unwrap_or_default(),
        Ok(Some((AmValue::Scalar(s), _))) => match s.as_ref() {
            ScalarValue::Str(s) => s.to_string(),
            _ => String::new(),
        },
        _ => String::new(),
    };
    let deleted = matches!(
        doc.get(ROOT, "deleted"),
        Ok(Some((AmValue::Scalar(s), _))) if matches!(s.as_ref(), ScalarValue::Boolean(true))
    );
    (record_type, deleted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Durability;
    use crate::storage::PersistRequest;
    use automerge::AutoCommit;
    use automerge::transaction::Transactable;
    use driftless_client_protocol::engine::PersistOp;

    fn id(n: u8) -> DocumentId {
        DocumentId::from_bytes(&[n; 16])
    }

    fn record(record_type: Option<&str>, deleted: bool) -> Vec<u8> {
        let mut d = AutoCommit::new();
        if let Some(t) = record_type {
            let text = d.put_object(ROOT, "type", ObjType::Text).unwrap();
            d.splice_text(&text, 0, 0, t).unwrap();
        }
        d.put(ROOT, "deleted", deleted).unwrap();
        d.save()
    }

    fn store(storage: &Storage, doc: &DocumentId, workspace: &str, bytes: Vec<u8>) {
        storage
            .commit_batch(
                &[PersistRequest {
                    write: 1,
                    doc: doc.clone(),
                    workspace: workspace.into(),
                    op: PersistOp::Snapshot(bytes),
                }],
                Durability::Immediate,
            )
            .unwrap();
    }

    fn list(
        index: &RecordIndex,
        ws: &str,
        t: Option<&str>,
        deleted: bool,
        after: Option<&str>,
        limit: usize,
    ) -> Vec<DocumentId> {
        index
            .list(
                &Listing {
                    workspace: ws,
                    record_type: t,
                    include_deleted: deleted,
                    after,
                },
                limit,
                |_| true,
            )
            .unwrap()
    }

    fn sorted(mut ids: Vec<DocumentId>) -> Vec<DocumentId> {
        ids.sort_by_key(ToString::to_string);
        ids
    }

    #[test]
    fn lists_by_type_workspace_and_tombstone_and_follows_changes() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path()).unwrap();
        let index = RecordIndex::new(storage.clone());
        store(&storage, &id(1), "w", record(Some("contact"), false));
        store(&storage, &id(2), "w", record(Some("contact"), true));
        store(&storage, &id(3), "w", record(Some("calendar_event"), false));
        store(&storage, &id(4), "other", record(Some("contact"), false));
        store(&storage, &id(5), "w", record(None, false));

        assert_eq!(
            list(&index, "w", Some("contact"), false, None, 10),
            vec![id(1)]
        );
        assert_eq!(
            list(&index, "w", Some("contact"), true, None, 10),
            sorted(vec![id(1), id(2)])
        );
        assert_eq!(
            list(&index, "w", None, false, None, 10),
            sorted(vec![id(1), id(3), id(5)])
        );
        assert_eq!(
            list(&index, "other", Some("contact"), false, None, 10),
            vec![id(4)]
        );
        // A record that becomes a tombstone leaves the default listing; the log drives it.
        store(&storage, &id(1), "w", record(Some("contact"), true));
        assert!(list(&index, "w", Some("contact"), false, None, 10).is_empty());
        assert_eq!(index.refresh().unwrap(), 0, "already caught up");
    }

    #[test]
    fn pages_with_the_after_cursor_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let storage = Storage::open(dir.path()).unwrap();
            for n in 1..=5 {
                store(&storage, &id(n), "w", record(Some("deal"), false));
            }
            let index = RecordIndex::new(storage.clone());
            let all = list(&index, "w", Some("deal"), false, None, 10);
            assert_eq!(all.len(), 5);
            let first = list(&index, "w", Some("deal"), false, None, 2);
            assert_eq!(first, all[..2].to_vec());
            let cursor = first[1].to_string();
            let second = list(&index, "w", Some("deal"), false, Some(&cursor), 2);
            assert_eq!(second, all[2..4].to_vec());
            storage.commit_batch(&[], Durability::Immediate).unwrap();
        }
        let storage = Storage::open(dir.path()).unwrap();
        let index = RecordIndex::new(storage.clone());
        store(&storage, &id(6), "w", record(Some("deal"), false));
        assert_eq!(
            index.refresh().unwrap(),
            1,
            "only the new change is read after reopen"
        );
        assert_eq!(list(&index, "w", Some("deal"), false, None, 10).len(), 6);
    }
}

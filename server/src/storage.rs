//! The redb database: document chunks and server metadata.
//!
//! Layout: `meta` (`&str -> &str`) holds the persisted `storage_id`; `doc_chunks`
//! (`(doc id bytes, seq) -> bytes`) holds each document as chunks in seq order. Seqs only grow, so a
//! snapshot (delete all chunks, insert one) and later appends never reuse a key. `doc_workspace`
//! (`doc id bytes -> workspace`) records the workspace a document belongs to, written in the same
//! transaction as the document's chunks (a document stored before workspaces existed belongs to
//! `default`). Writes go through
//! the single group-commit writer ([`crate::writer`]); reads may run on any thread.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use automerge::Automerge;
use driftless_client_protocol::DocumentId;
use driftless_client_protocol::engine::{PersistOp, WriteId};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use crate::config::Durability;

const META: TableDefinition<&str, &str> = TableDefinition::new("meta");
const DOC_CHUNKS: TableDefinition<(&[u8], u64), &[u8]> = TableDefinition::new("doc_chunks");
const DOC_WORKSPACE: TableDefinition<&[u8], &str> = TableDefinition::new("doc_workspace");
/// Transactional outbox feed: every committed batch appends (seq -> document id) for each document
/// it changed, in the same transaction. Provider bridges read it from their cursor, so a change is
/// never lost between being stored and being written to a provider.
const CHANGE_LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("change_log");
const STORAGE_ID_KEY: &str = "storage_id";
/// The database file inside the data directory.
pub const DB_FILE: &str = "driftless.redb";

/// Opening the data directory failed.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot create data directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open database {path}: {source}")]
    Database {
        path: PathBuf,
        source: redb::DatabaseError,
    },
    #[error("cannot initialise database {path}: {source}")]
    Init { path: PathBuf, source: redb::Error },
}

/// Reading or writing document chunks failed.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("storage read failed: {0}")]
    Read(redb::Error),
    #[error("storage write failed: {0}")]
    Write(redb::Error),
    #[error("document {0} has run out of chunk sequence numbers")]
    SeqExhausted(DocumentId),
}

/// Loading a document from its chunks failed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("stored bytes of document {doc} do not load: {source}")]
    Corrupt {
        doc: DocumentId,
        source: Box<automerge::AutomergeError>,
    },
}

fn read_err(e: impl Into<redb::Error>) -> StorageError {
    StorageError::Read(e.into())
}
fn write_err(e: impl Into<redb::Error>) -> StorageError {
    StorageError::Write(e.into())
}

/// One write for the group-commit writer: the engine's [`PersistOp`] with its id.
#[derive(Debug, Clone)]
pub struct PersistRequest {
    pub write: WriteId,
    pub doc: DocumentId,
    /// The document's workspace, recorded with its chunks.
    pub workspace: String,
    pub op: PersistOp,
}

/// A stored document with what the engine needs to know about it.
#[derive(Debug)]
pub struct StoredDocument {
    pub document: Automerge,
    pub workspace: String,
    /// Total bytes of its stored chunks.
    pub stored_bytes: u64,
}

impl PersistRequest {
    pub fn byte_len(&self) -> usize {
        match &self.op {
            PersistOp::Append(b) | PersistOp::Snapshot(b) => b.len(),
        }
    }
}

/// A handle on the open database. Cheap to clone; the file closes when the last clone drops.
#[derive(Clone)]
pub struct Storage {
    db: Arc<Database>,
    storage_id: Arc<str>,
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage")
            .field("storage_id", &self.storage_id)
            .finish_non_exhaustive()
    }
}

impl Storage {
    /// Opens (or creates) `<data_dir>/driftless.redb`, creating the directory and the storage id.
    pub fn open(data_dir: &Path) -> Result<Self, OpenError> {
        std::fs::create_dir_all(data_dir).map_err(|source| OpenError::CreateDir {
            path: data_dir.to_owned(),
            source,
        })?;
        let path = data_dir.join(DB_FILE);
        let db = Database::create(&path).map_err(|source| OpenError::Database {
            path: path.clone(),
            source,
        })?;
        let storage_id = init(&db).map_err(|source| OpenError::Init { path, source })?;
        Ok(Self {
            db: Arc::new(db),
            storage_id: storage_id.into(),
        })
    }

    /// Opens (or creates) the database on a custom redb backend: tests use one that loses unsynced
    /// writes to model power loss.
    pub fn open_backend(backend: impl redb::StorageBackend) -> Result<Self, OpenError> {
        let path = PathBuf::from("<custom backend>");
        let db = Database::builder()
            .create_with_backend(backend)
            .map_err(|source| OpenError::Database {
                path: path.clone(),
                source,
            })?;
        let storage_id = init(&db).map_err(|source| OpenError::Init { path, source })?;
        Ok(Self {
            db: Arc::new(db),
            storage_id: storage_id.into(),
        })
    }

    /// Our stable storage id (a UUID generated on first open).
    pub fn storage_id(&self) -> &str {
        &self.storage_id
    }

    /// Every stored chunk of `doc` in seq order, or `None` if it has none.
    pub fn load(&self, doc: &DocumentId) -> Result<Option<Vec<Vec<u8>>>, StorageError> {
        let txn = self.db.begin_read().map_err(read_err)?;
        let table = txn.open_table(DOC_CHUNKS).map_err(read_err)?;
        let id = doc.as_bytes();
        let mut chunks = Vec::new();
        for entry in table.range((id, 0u64)..=(id, u64::MAX)).map_err(read_err)? {
            let (_, value) = entry.map_err(read_err)?;
            chunks.push(value.value().to_vec());
        }
        Ok((!chunks.is_empty()).then_some(chunks))
    }

    /// The workspace `doc` belongs to, if it has one recorded.
    pub fn workspace(&self, doc: &DocumentId) -> Result<Option<String>, StorageError> {
        let txn = self.db.begin_read().map_err(read_err)?;
        let table = txn.open_table(DOC_WORKSPACE).map_err(read_err)?;
        Ok(table
            .get(doc.as_bytes())
            .map_err(read_err)?
            .map(|v| v.value().to_owned()))
    }

    /// Loads `doc` as an Automerge document: the first chunk, then the rest incrementally.
    pub fn load_document(&self, doc: &DocumentId) -> Result<Option<Automerge>, LoadError> {
        Ok(self.load_stored(doc)?.map(|s| s.document))
    }

    /// Loads `doc` with its workspace and stored size.
    pub fn load_stored(&self, doc: &DocumentId) -> Result<Option<StoredDocument>, LoadError> {
        let Some(chunks) = self.load(doc)? else {
            return Ok(None);
        };
        let workspace = self
            .workspace(doc)?
            .unwrap_or_else(|| driftless_client_protocol::engine::DEFAULT_WORKSPACE.to_owned());
        let stored_bytes = chunks.iter().map(|c| c.len() as u64).sum();
        let corrupt = |source| LoadError::Corrupt {
            doc: doc.clone(),
            source: Box::new(source),
        };
        let mut chunks = chunks.into_iter();
        let first = chunks.next().unwrap_or_default();
        let mut document = Automerge::load(&first).map_err(corrupt)?;
        let rest: Vec<u8> = chunks.flatten().collect();
        if !rest.is_empty() {
            document.load_incremental(&rest).map_err(corrupt)?;
        }
        Ok(Some(StoredDocument {
            document,
            workspace,
            stored_bytes,
        }))
    }

    /// Applies every request in ONE write transaction and commits it with `durability`.
    /// Either all of them are committed or none.
    pub fn commit_batch(
        &self,
        batch: &[PersistRequest],
        durability: Durability,
    ) -> Result<(), StorageError> {
        let mut txn = self.db.begin_write().map_err(write_err)?;
        txn.set_durability(match durability {
            Durability::Immediate => redb::Durability::Immediate,
            Durability::None => redb::Durability::None,
        })
        .map_err(write_err)?;
        {
            let mut log = txn.open_table(CHANGE_LOG).map_err(write_err)?;
            let mut next_log = log
                .last()
                .map_err(write_err)?
                .map_or(0, |(k, _)| k.value().saturating_add(1));
            let mut logged: std::collections::HashSet<&DocumentId> =
                std::collections::HashSet::new();
            for req in batch {
                if logged.insert(&req.doc) {
                    log.insert(next_log, req.doc.as_bytes())
                        .map_err(write_err)?;
                    next_log = next_log.saturating_add(1);
                }
            }
        }
        {
            let mut table = txn.open_table(DOC_CHUNKS).map_err(write_err)?;
            let mut workspaces = txn.open_table(DOC_WORKSPACE).map_err(write_err)?;
            for req in batch {
                let id = req.doc.as_bytes();
                if workspaces.get(id).map_err(write_err)?.is_none() {
                    workspaces
                        .insert(id, req.workspace.as_str())
                        .map_err(write_err)?;
                }
                let last = table
                    .range((id, 0u64)..=(id, u64::MAX))
                    .map_err(write_err)?
                    .next_back()
                    .transpose()
                    .map_err(write_err)?
                    .map(|(key, _)| key.value().1);
                let next = match last {
                    None => 0,
                    Some(seq) => seq
                        .checked_add(1)
                        .ok_or_else(|| StorageError::SeqExhausted(req.doc.clone()))?,
                };
                match &req.op {
                    PersistOp::Append(bytes) => {
                        table
                            .insert((id, next), bytes.as_slice())
                            .map_err(write_err)?;
                    }
                    PersistOp::Snapshot(bytes) => {
                        table
                            .retain_in((id, 0u64)..=(id, u64::MAX), |_, _| false)
                            .map_err(write_err)?;
                        table
                            .insert((id, next), bytes.as_slice())
                            .map_err(write_err)?;
                    }
                }
            }
        }
        txn.commit().map_err(write_err)
    }

    /// Documents changed after log position `after`, oldest first, at most `limit` entries.
    pub fn changes_after(
        &self,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<(u64, DocumentId)>, StorageError> {
        let txn = self.db.begin_read().map_err(read_err)?;
        let log = txn.open_table(CHANGE_LOG).map_err(read_err)?;
        let start = after.map_or(0, |a| a.saturating_add(1));
        let mut out = Vec::new();
        for entry in log.range(start..).map_err(read_err)?.take(limit) {
            let (seq, doc) = entry.map_err(read_err)?;
            out.push((seq.value(), DocumentId::from_bytes(doc.value())));
        }
        Ok(out)
    }

    /// The database, for modules that keep their own tables in it (the provider bridges).
    pub fn database(&self) -> &Database {
        &self.db
    }

    /// The seqs currently stored for `doc` (for tests and diagnostics).
    pub fn chunk_seqs(&self, doc: &DocumentId) -> Result<Vec<u64>, StorageError> {
        let txn = self.db.begin_read().map_err(read_err)?;
        let table = txn.open_table(DOC_CHUNKS).map_err(read_err)?;
        let id = doc.as_bytes();
        let mut seqs = Vec::new();
        for entry in table.range((id, 0u64)..=(id, u64::MAX)).map_err(read_err)? {
            seqs.push(entry.map_err(read_err)?.0.value().1);
        }
        Ok(seqs)
    }
}

/// Creates both tables and returns the storage id, generating and persisting it on first open.
fn init(db: &Database) -> Result<String, redb::Error> {
    let txn = db.begin_write()?;
    let id = {
        let mut meta = txn.open_table(META)?;
        txn.open_table(DOC_CHUNKS)?;
        txn.open_table(DOC_WORKSPACE)?;
        txn.open_table(CHANGE_LOG)?;
        let existing = meta.get(STORAGE_ID_KEY)?.map(|v| v.value().to_owned());
        match existing {
            Some(id) => id,
            None => {
                let id = uuid::Uuid::new_v4().to_string();
                meta.insert(STORAGE_ID_KEY, id.as_str())?;
                id
            }
        }
    };
    txn.commit()?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use automerge::transaction::Transactable;

    fn doc_id(n: u8) -> DocumentId {
        DocumentId::from_bytes(&[n; 16])
    }

    fn append(write: WriteId, doc: &DocumentId, bytes: &[u8]) -> PersistRequest {
        PersistRequest {
            write,
            doc: doc.clone(),
            workspace: "w".into(),
            op: PersistOp::Append(bytes.to_vec()),
        }
    }

    #[test]
    fn the_change_log_lists_each_changed_document_per_commit() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (doc_id(1), doc_id(2));
        let storage = Storage::open(dir.path()).unwrap();
        storage
            .commit_batch(
                &[
                    append(1, &a, b"1"),
                    append(2, &b, b"2"),
                    append(3, &a, b"3"),
                ],
                Durability::Immediate,
            )
            .unwrap();
        let first = storage.changes_after(None, 100).unwrap();
        assert_eq!(first, vec![(0, a.clone()), (1, b.clone())]);
        storage
            .commit_batch(&[append(4, &a, b"4")], Durability::Immediate)
            .unwrap();
        drop(storage);
        let storage = Storage::open(dir.path()).unwrap();
        assert_eq!(
            storage.changes_after(Some(1), 100).unwrap(),
            vec![(2, a.clone())]
        );
        assert_eq!(storage.changes_after(None, 1).unwrap(), vec![(0, a)]);
    }

    #[test]
    fn committed_chunks_survive_reopen_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (doc_id(1), doc_id(2));
        {
            let storage = Storage::open(dir.path()).unwrap();
            storage
                .commit_batch(
                    &[
                        append(1, &a, b"one"),
                        append(2, &b, b"other"),
                        append(3, &a, b"two"),
                    ],
                    Durability::Immediate,
                )
                .unwrap();
            storage
                .commit_batch(&[append(4, &a, b"three")], Durability::Immediate)
                .unwrap();
        }
        let storage = Storage::open(dir.path()).unwrap();
        assert_eq!(
            storage.load(&a).unwrap().unwrap(),
            vec![b"one".to_vec(), b"two".to_vec(), b"three".to_vec()]
        );
        assert_eq!(storage.load(&b).unwrap().unwrap(), vec![b"other".to_vec()]);
        assert_eq!(storage.load(&doc_id(3)).unwrap(), None);
    }

    #[test]
    fn snapshot_replaces_chunks_and_seq_keeps_growing() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path()).unwrap();
        let (a, b) = (doc_id(1), doc_id(2));
        storage
            .commit_batch(
                &[
                    append(1, &a, b"x"),
                    append(2, &a, b"y"),
                    append(3, &b, b"keep"),
                ],
                Durability::Immediate,
            )
            .unwrap();
        let snapshot = PersistRequest {
            write: 4,
            doc: a.clone(),
            workspace: "w".into(),
            op: PersistOp::Snapshot(b"xy".to_vec()),
        };
        storage
            .commit_batch(&[snapshot, append(5, &a, b"z")], Durability::Immediate)
            .unwrap();
        assert_eq!(
            storage.load(&a).unwrap().unwrap(),
            vec![b"xy".to_vec(), b"z".to_vec()]
        );
        assert_eq!(storage.chunk_seqs(&a).unwrap(), vec![2, 3]);
        assert_eq!(storage.load(&b).unwrap().unwrap(), vec![b"keep".to_vec()]);
    }

    #[test]
    fn storage_id_is_stable_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let first = Storage::open(dir.path()).unwrap().storage_id().to_owned();
        let second = Storage::open(dir.path()).unwrap().storage_id().to_owned();
        assert_eq!(first, second);
        assert!(uuid::Uuid::parse_str(&first).is_ok());
        let other = tempfile::tempdir().unwrap();
        assert_ne!(Storage::open(other.path()).unwrap().storage_id(), first);
    }

    #[test]
    fn creates_missing_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("a/b");
        Storage::open(&nested).unwrap();
        assert!(nested.join(DB_FILE).exists());
    }

    #[test]
    fn load_document_applies_snapshot_then_increments() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path()).unwrap();
        let id = doc_id(7);
        let mut doc = automerge::AutoCommit::new();
        doc.put(automerge::ROOT, "a", 1).unwrap();
        let first = doc.save();
        let heads = doc.get_heads();
        doc.put(automerge::ROOT, "b", "two").unwrap();
        let second = doc.save_after(&heads);
        storage
            .commit_batch(
                &[append(1, &id, &first), append(2, &id, &second)],
                Durability::Immediate,
            )
            .unwrap();
        let loaded = storage.load_document(&id).unwrap().unwrap();
        assert_eq!(loaded.get_heads(), doc.get_heads());

        let bad = doc_id(8);
        storage
            .commit_batch(&[append(3, &bad, b"not automerge")], Durability::Immediate)
            .unwrap();
        let err = storage.load_document(&bad).unwrap_err();
        assert!(err.to_string().contains(&bad.to_string()), "{err}");
        assert!(storage.load_document(&doc_id(9)).unwrap().is_none());
    }
}

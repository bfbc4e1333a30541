//! `automerge:` URLs. (Being written: see the codec helper.)

use crate::DocumentId;

/// Why a URL was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UrlError {
    #[error("not an automerge URL: `{0}`")]
    NotAutomerge(String),
    #[error(transparent)]
    DocumentId(#[from] crate::DocumentIdError),
}

/// `automerge:<documentId>[#head|head...]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AutomergeUrl {
    pub document_id: DocumentId,
    /// Each head is a 32-byte change hash.
    pub heads: Option<Vec<[u8; 32]>>,
}

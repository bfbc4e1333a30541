//! `automerge:` URLs: `automerge:<documentId>[/path/segments][#head|head...]`.
//!
//! URLs are an application concept; the wire carries only the bare `documentId`.

use std::fmt;
use std::str::FromStr;

use crate::DocumentId;
use crate::document_id::{decode_check, encode_check};

const PREFIX: &str = "automerge:";

/// Why a URL was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UrlError {
    #[error("not an automerge URL: `{0}`")]
    NotAutomerge(String),
    #[error(transparent)]
    DocumentId(#[from] crate::DocumentIdError),
    #[error("head `{0}` is not a bs58check-encoded 32-byte change hash")]
    BadHead(String),
}

/// `automerge:<documentId>[#head|head...]`
///
/// A `/path/segments` suffix after the id (automerge-repo 2.6 sub-document paths) is accepted on
/// input and dropped: the server only needs the document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AutomergeUrl {
    pub document_id: DocumentId,
    /// Each head is a 32-byte change hash.
    pub heads: Option<Vec<[u8; 32]>>,
}

impl AutomergeUrl {
    /// A URL for the whole document, without heads.
    pub fn new(document_id: DocumentId) -> Self {
        Self {
            document_id,
            heads: None,
        }
    }
}

impl FromStr for AutomergeUrl {
    type Err = UrlError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let rest = s
            .strip_prefix(PREFIX)
            .ok_or_else(|| UrlError::NotAutomerge(s.to_owned()))?;
        let (before_heads, heads_part) = match rest.split_once('#') {
            Some((a, b)) => (a, Some(b)),
            None => (rest, None),
        };
        let id_part = before_heads
            .split_once('/')
            .map_or(before_heads, |(id, _path)| id);
        let document_id = DocumentId::from_str(id_part)?;
        let heads = heads_part.map(parse_heads).transpose()?;
        Ok(Self { document_id, heads })
    }
}

fn parse_heads(part: &str) -> Result<Vec<[u8; 32]>, UrlError> {
    // `automerge:<id>#` (empty heads list) is kept distinct from "no heads".
    if part.is_empty() {
        return Ok(Vec::new());
    }
    part.split('|')
        .map(|h| {
            decode_check(h)
                .ok()
                .and_then(|bytes| <[u8; 32]>::try_from(bytes.as_slice()).ok())
                .ok_or_else(|| UrlError::BadHead(h.to_owned()))
        })
        .collect()
}

impl fmt::Display for AutomergeUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}{}", self.document_id)?;
        if let Some(heads) = &self.heads {
            // Sorted by hash bytes, the order automerge reports heads in.
            let mut sorted: Vec<&[u8; 32]> = heads.iter().collect();
            sorted.sort();
            f.write_str("#")?;
            for (i, head) in sorted.into_iter().enumerate() {
                if i > 0 {
                    f.write_str("|")?;
                }
                f.write_str(&encode_check(head))?;
            }
        }
        Ok(())
    }
}

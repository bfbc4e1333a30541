//! Document ids: random bytes (16 when we generate them), written as bs58check strings.

use std::fmt;
use std::sync::Arc;

/// Why a document id string was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum DocumentIdError {
    #[error("document id `{0}` is not valid base58")]
    InvalidBase58(String),
    #[error("document id `{0}` has a bad checksum")]
    BadChecksum(String),
    #[error("document id is empty")]
    Empty,
}

/// A document id. Cheap to clone; compares and hashes by its bytes.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DocumentId {
    bytes: Arc<[u8]>,
}

impl DocumentId {
    /// Wraps raw id bytes (any length; we generate 16).
    pub fn from_bytes(bytes: &[u8]) -> Self {
        Self {
            bytes: bytes.into(),
        }
    }
    /// The raw id bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }
}

impl fmt::Debug for DocumentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DocumentId({self})")
    }
}

impl fmt::Display for DocumentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&bs58::encode(&self.bytes).with_check().into_string())
    }
}

impl std::str::FromStr for DocumentId {
    type Err = DocumentIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(DocumentIdError::Empty);
        }
        let bytes = bs58::decode(s)
            .with_check(None)
            .into_vec()
            .map_err(|e| match e {
                bs58::decode::Error::InvalidChecksum { .. } => {
                    DocumentIdError::BadChecksum(s.to_owned())
                }
                _ => DocumentIdError::InvalidBase58(s.to_owned()),
            })?;
        if bytes.is_empty() {
            return Err(DocumentIdError::Empty);
        }
        Ok(Self::from_bytes(&bytes))
    }
}

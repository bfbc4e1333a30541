//! Document ids: random bytes (16 when we generate them), written as bs58check strings.
//!
//! bs58check here is the bare form automerge-repo uses: base58 (Bitcoin alphabet) of the id bytes
//! followed by the first 4 bytes of sha256(sha256(id bytes)), with no version byte.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use sha2::{Digest, Sha256};

/// Longest id string we try to decode. Base58 decoding is quadratic in the input length, so an
/// unbounded string from the network would be a cheap way to burn CPU; 16-byte ids are ~28 chars.
pub const MAX_ID_STRING_LEN: usize = 256;

/// Why a document id string was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum DocumentIdError {
    #[error("document id `{0}` is not valid base58")]
    InvalidBase58(String),
    #[error("document id `{0}` has a bad checksum")]
    BadChecksum(String),
    #[error("document id is empty")]
    Empty,
    #[error("document id string is {0} characters long (limit {MAX_ID_STRING_LEN})")]
    TooLong(usize),
}

struct Inner {
    bytes: Box<[u8]>,
    /// The bs58check form, computed once: it is written into every frame we send.
    text: Box<str>,
}

/// A document id. Cheap to clone; compares and hashes by its bytes.
#[derive(Clone)]
pub struct DocumentId {
    inner: Arc<Inner>,
}

impl DocumentId {
    /// Wraps raw id bytes (any length; we generate 16).
    pub fn from_bytes(bytes: &[u8]) -> Self {
        let text = encode_check(bytes);
        Self {
            inner: Arc::new(Inner {
                bytes: bytes.into(),
                text: text.into_boxed_str(),
            }),
        }
    }

    /// A new id from 16 caller-supplied random bytes, stamped as a UUID v4 (version and variant
    /// bits set) like the JS `generateAutomergeUrl`. The caller owns the RNG so this crate stays pure.
    pub fn generate(random: [u8; 16]) -> Self {
        let mut bytes = random;
        bytes[6] = (bytes[6] & 0x0f) | 0x40;
        bytes[8] = (bytes[8] & 0x3f) | 0x80;
        Self::from_bytes(&bytes)
    }

    /// The raw id bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.inner.bytes
    }

    /// The bs58check string (the same as `Display`, without formatting machinery).
    pub fn as_str(&self) -> &str {
        &self.inner.text
    }
}

impl PartialEq for DocumentId {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for DocumentId {}

impl Hash for DocumentId {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state);
    }
}

impl PartialOrd for DocumentId {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for DocumentId {
    fn cmp(&self, other: &Self) -> Ordering {
        self.as_bytes().cmp(other.as_bytes())
    }
}

impl fmt::Debug for DocumentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DocumentId({})", self.as_str())
    }
}

impl fmt::Display for DocumentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for DocumentId {
    type Err = DocumentIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(DocumentIdError::Empty);
        }
        if let Some(bytes) = parse_uuid(s) {
            return Ok(Self::from_bytes(&bytes));
        }
        let bytes = decode_check(s)?;
        if bytes.is_empty() {
            return Err(DocumentIdError::Empty);
        }
        Ok(Self::from_bytes(&bytes))
    }
}

/// bs58check-encodes `payload` (no version byte).
pub(crate) fn encode_check(payload: &[u8]) -> String {
    let mut buf = Vec::with_capacity(payload.len().saturating_add(4));
    buf.extend_from_slice(payload);
    buf.extend_from_slice(&checksum(payload));
    bs58::encode(buf).into_string()
}

/// Decodes a bs58check string (no version byte) into its payload, which may be empty.
pub(crate) fn decode_check(s: &str) -> Result<Vec<u8>, DocumentIdError> {
    if s.len() > MAX_ID_STRING_LEN {
        return Err(DocumentIdError::TooLong(s.len()));
    }
    let raw = bs58::decode(s)
        .into_vec()
        .map_err(|_| DocumentIdError::InvalidBase58(s.to_owned()))?;
    let Some(split) = raw.len().checked_sub(4) else {
        // Too short to even hold a checksum.
        return Err(DocumentIdError::BadChecksum(s.to_owned()));
    };
    let (payload, sum) = raw.split_at(split);
    if sum != checksum(payload) {
        return Err(DocumentIdError::BadChecksum(s.to_owned()));
    }
    Ok(payload.to_vec())
}

fn checksum(payload: &[u8]) -> [u8; 4] {
    let digest = Sha256::digest(Sha256::digest(payload));
    let mut out = [0u8; 4];
    out.copy_from_slice(&digest[..4]);
    out
}

/// Parses a legacy hyphenated UUID (`8-4-4-4-12` hex digits). `-` is not in the base58 alphabet,
/// so this never shadows a bs58check id.
fn parse_uuid(s: &str) -> Option<[u8; 16]> {
    let b = s.as_bytes();
    if b.len() != 36 {
        return None;
    }
    let mut out = [0u8; 16];
    let mut digits = b
        .iter()
        .enumerate()
        .filter(|(i, _)| !matches!(i, 8 | 13 | 18 | 23));
    for &i in &[8usize, 13, 18, 23] {
        if b.get(i) != Some(&b'-') {
            return None;
        }
    }
    for byte in out.iter_mut() {
        let (_, hi) = digits.next()?;
        let (_, lo) = digits.next()?;
        *byte = (hex_digit(*hi)? << 4) | hex_digit(*lo)?;
    }
    Some(out)
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

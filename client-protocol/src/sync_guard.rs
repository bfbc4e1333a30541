//! Checks a decoded Automerge sync message before Automerge acts on it.
//!
//! Automerge 0.12 trusts the `have` section of a received message: a bloom filter that claims
//! entries but has zero bits per entry makes `receive_sync_message` divide by zero (a panic that
//! would take the engine thread, and so the server, down), and a filter's probe count sizes an
//! allocation and a loop per change (`u32::MAX` probes is 16 GiB). Every `have` also costs a pass
//! over the document's recent changes. Real peers send one `have` with 7 probes; we refuse anything
//! far outside that, as an invalid payload. Found by the `receive_sync` fuzz target.

use automerge::sync;

/// Most `have` entries accepted in one message (Automerge and automerge-repo send one).
pub const MAX_HAVES: usize = 8;
/// Most bloom filter probes accepted (Automerge uses 7).
pub const MAX_BLOOM_PROBES: u32 = 32;

/// Why a sync message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SyncGuardError {
    #[error("{0} `have` entries (at most {MAX_HAVES})")]
    TooManyHaves(usize),
    #[error("a bloom filter with entries but no bits")]
    BloomWithoutBits,
    #[error("a bloom filter with {0} probes (at most {MAX_BLOOM_PROBES})")]
    TooManyProbes(u32),
    #[error("a malformed bloom filter")]
    MalformedBloom,
}

/// Accepts a message only if Automerge can process it safely and in bounded time.
pub fn check(message: &sync::Message) -> Result<(), SyncGuardError> {
    if message.have.len() > MAX_HAVES {
        return Err(SyncGuardError::TooManyHaves(message.have.len()));
    }
    for have in &message.have {
        // The filter's fields are private; its wire form is three LEB128 numbers and the bits.
        let bytes = have.bloom.to_bytes();
        if bytes.is_empty() {
            continue; // an empty filter (no entries)
        }
        let mut rest = bytes.as_slice();
        let entries = leb128_u32(&mut rest)?;
        let bits_per_entry = leb128_u32(&mut rest)?;
        let probes = leb128_u32(&mut rest)?;
        if entries > 0 && (bits_per_entry == 0 || rest.is_empty()) {
            return Err(SyncGuardError::BloomWithoutBits);
        }
        if probes > MAX_BLOOM_PROBES {
            return Err(SyncGuardError::TooManyProbes(probes));
        }
    }
    Ok(())
}

fn leb128_u32(input: &mut &[u8]) -> Result<u32, SyncGuardError> {
    let mut value: u64 = 0;
    for (i, byte) in input.iter().enumerate().take(5) {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            *input = &input[i + 1..];
            return u32::try_from(value).map_err(|_| SyncGuardError::MalformedBloom);
        }
    }
    Err(SyncGuardError::MalformedBloom)
}

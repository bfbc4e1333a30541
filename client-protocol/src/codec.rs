//! CBOR codec for [`Message`]. (Being written: see the codec helper.)

use crate::Message;

/// Why a frame could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("invalid CBOR: {0}")]
    Cbor(String),
    #[error("frame is not a CBOR map")]
    NotAMap,
    #[error("missing field `{0}`")]
    MissingField(&'static str),
    #[error("field `{field}` has the wrong type: {detail}")]
    WrongType { field: &'static str, detail: String },
    #[error("field `documentId`: {0}")]
    DocumentId(#[from] crate::DocumentIdError),
    #[error("{0} trailing bytes after the message")]
    TrailingBytes(usize),
}

/// Decodes one frame (one CBOR map) into a message.
pub fn decode(_frame: &[u8]) -> Result<Message, DecodeError> {
    Err(DecodeError::NotAMap)
}

/// Encodes a message as one CBOR map with definite lengths.
pub fn encode(_message: &Message) -> Vec<u8> {
    Vec::new()
}

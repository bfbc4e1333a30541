//! The automerge-repo protocol messages, as plain data. The CBOR mapping lives in [`crate::codec`].

use std::collections::BTreeMap;

use crate::DocumentId;

/// `peerMetadata` of `join` and `peer`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PeerMetadata {
    /// `storageId`; `undefined`/`null`/absent all decode to `None`.
    pub storage_id: Option<String>,
    /// `isEphemeral`; absent decodes to `false`.
    pub is_ephemeral: bool,
}

/// One entry of `remote-heads-changed.newHeads`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeadsInfo {
    /// bs58check-encoded change hashes (2.x form), kept as the strings the peer sent.
    pub heads: Vec<String>,
    /// Milliseconds since the epoch; arrives as a float64 from JS, truncated here.
    pub timestamp: u64,
}

/// Every message of protocol version "1". `sender_id`/`target_id` are PeerIds (opaque strings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Join {
        sender_id: String,
        /// `None` when the key is absent (old JS servers treat that as version "1").
        supported_protocol_versions: Option<Vec<String>>,
        /// Accepts `peerMetadata` or the README's `metadata` on input.
        peer_metadata: Option<PeerMetadata>,
    },
    Peer {
        sender_id: String,
        target_id: String,
        selected_protocol_version: String,
        peer_metadata: Option<PeerMetadata>,
    },
    /// JS sends sender/target too; samod sends only `message`.
    Error {
        message: String,
        sender_id: Option<String>,
        target_id: Option<String>,
    },
    /// Like `Sync`, from a peer that does not have the document and wants `doc-unavailable` if we lack it too.
    Request {
        sender_id: String,
        target_id: String,
        document_id: DocumentId,
        data: Vec<u8>,
    },
    Sync {
        sender_id: String,
        target_id: String,
        document_id: DocumentId,
        data: Vec<u8>,
    },
    DocUnavailable {
        sender_id: String,
        target_id: String,
        document_id: DocumentId,
    },
    Ephemeral {
        sender_id: String,
        target_id: String,
        document_id: DocumentId,
        count: u64,
        session_id: String,
        data: Vec<u8>,
    },
    RemoteSubscriptionChange {
        sender_id: String,
        target_id: String,
        add: Vec<String>,
        remove: Vec<String>,
    },
    RemoteHeadsChanged {
        sender_id: String,
        target_id: String,
        document_id: DocumentId,
        new_heads: BTreeMap<String, HeadsInfo>,
    },
    /// Legacy 1.x; treated as a disconnect.
    Leave { sender_id: String },
    /// A well-formed map whose `type` we do not know: ignored by the engine, never an error.
    Unknown { message_type: String },
}

impl Message {
    /// The wire `type` string.
    pub fn type_name(&self) -> &str {
        match self {
            Message::Join { .. } => "join",
            Message::Peer { .. } => "peer",
            Message::Error { .. } => "error",
            Message::Request { .. } => "request",
            Message::Sync { .. } => "sync",
            Message::DocUnavailable { .. } => "doc-unavailable",
            Message::Ephemeral { .. } => "ephemeral",
            Message::RemoteSubscriptionChange { .. } => "remote-subscription-change",
            Message::RemoteHeadsChanged { .. } => "remote-heads-changed",
            Message::Leave { .. } => "leave",
            Message::Unknown { message_type } => message_type,
        }
    }
}

//! CBOR codec for [`Message`].
//!
//! Decoding is lenient the way cbor-x output and other peers need (non-minimal and indefinite
//! lengths, `undefined`/`null` optionals, floats for integers, unknown keys in any order); encoding
//! is strict and minimal (definite lengths, text keys, ids as text).
//!
//! Safety against hostile frames: the decoder never recurses on input structure (the message shape
//! is fixed and unknown values go through minicbor's iterative `skip`), never pre-allocates from a
//! length header (every length is checked against the remaining input before use), and every
//! position it revisits was recorded while walking the frame, so work and memory stay linear in the
//! frame size.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::str::FromStr;

use minicbor::data::Type;
use minicbor::{Decoder, Encoder};

use crate::{DocumentId, HeadsInfo, Message, PeerMetadata};

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
    /// `count`/`timestamp` was negative, NaN, infinite or beyond `u64`.
    #[error("field `{field}` is not a valid unsigned integer: {reason}")]
    InvalidNumber {
        field: &'static str,
        reason: &'static str,
    },
}

impl From<minicbor::decode::Error> for DecodeError {
    fn from(e: minicbor::decode::Error) -> Self {
        DecodeError::Cbor(e.to_string())
    }
}

fn wrong_type(field: &'static str, expected: &str, found: Type) -> DecodeError {
    DecodeError::WrongType {
        field,
        detail: format!("expected {expected}, found {found}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Decoding

/// Every top-level key we read; anything else is skipped.
const TOP_KEYS: [&str; 15] = [
    "type",
    "senderId",
    "targetId",
    "documentId",
    "data",
    "count",
    "sessionId",
    "message",
    "selectedProtocolVersion",
    "supportedProtocolVersions",
    "peerMetadata",
    "metadata",
    "add",
    "remove",
    "newHeads",
];

/// Decodes one frame (one CBOR map) into a message.
pub fn decode(frame: &[u8]) -> Result<Message, DecodeError> {
    let mut d = Decoder::new(frame);
    match skip_tags(&mut d)? {
        Type::Map | Type::MapIndef => {}
        _ => return Err(DecodeError::NotAMap),
    }
    let pos = map_fields(&mut d, &TOP_KEYS, "message")?;
    let end = d.position();
    if let Some(extra) = frame.len().checked_sub(end).filter(|n| *n > 0) {
        return Err(DecodeError::TrailingBytes(extra));
    }
    let mut f = Fields {
        d: &mut d,
        keys: &TOP_KEYS,
        pos,
    };
    let message_type = f.text("type")?;
    let message = match message_type.as_str() {
        "join" => {
            let peer_metadata = if f.has_key("peerMetadata") {
                f.peer_metadata("peerMetadata")?
            } else {
                f.peer_metadata("metadata")?
            };
            Message::Join {
                sender_id: f.text("senderId")?,
                supported_protocol_versions: f.opt_text_array("supportedProtocolVersions")?,
                peer_metadata,
            }
        }
        "peer" => {
            let peer_metadata = if f.has_key("peerMetadata") {
                f.peer_metadata("peerMetadata")?
            } else {
                f.peer_metadata("metadata")?
            };
            Message::Peer {
                sender_id: f.text("senderId")?,
                target_id: f.text("targetId")?,
                selected_protocol_version: f.text("selectedProtocolVersion")?,
                peer_metadata,
            }
        }
        "error" => Message::Error {
            message: f.text("message")?,
            sender_id: f.opt_text("senderId")?,
            target_id: f.opt_text("targetId")?,
        },
        "request" => Message::Request {
            sender_id: f.text("senderId")?,
            target_id: f.text("targetId")?,
            document_id: f.document_id("documentId")?,
            data: f.bytes("data")?,
        },
        "sync" => Message::Sync {
            sender_id: f.text("senderId")?,
            target_id: f.text("targetId")?,
            document_id: f.document_id("documentId")?,
            data: f.bytes("data")?,
        },
        "doc-unavailable" => Message::DocUnavailable {
            sender_id: f.text("senderId")?,
            target_id: f.text("targetId")?,
            document_id: f.document_id("documentId")?,
        },
        "ephemeral" => Message::Ephemeral {
            sender_id: f.text("senderId")?,
            target_id: f.text("targetId")?,
            document_id: f.document_id("documentId")?,
            count: f.uint("count")?,
            session_id: f.text("sessionId")?,
            data: f.bytes("data")?,
        },
        "remote-subscription-change" => Message::RemoteSubscriptionChange {
            sender_id: f.text("senderId")?,
            target_id: f.text("targetId")?,
            add: f.opt_text_array("add")?.unwrap_or_default(),
            remove: f.opt_text_array("remove")?.unwrap_or_default(),
        },
        "remote-heads-changed" => Message::RemoteHeadsChanged {
            sender_id: f.text("senderId")?,
            target_id: f.text("targetId")?,
            document_id: f.document_id("documentId")?,
            new_heads: f.new_heads("newHeads")?,
        },
        "leave" => Message::Leave {
            sender_id: f.text("senderId")?,
        },
        _ => Message::Unknown { message_type },
    };
    Ok(message)
}

/// Steps over tags (e.g. tag 64 that cbor-x puts on `Uint8Array` with its default options) and
/// returns the type of the tagged value.
fn skip_tags(d: &mut Decoder<'_>) -> Result<Type, DecodeError> {
    loop {
        let t = d.datatype()?;
        if t != Type::Tag {
            return Ok(t);
        }
        d.tag()?;
    }
}

/// Walks the items of an array or map, definite or indefinite.
struct Items {
    /// `None` for indefinite length (ends at a break).
    remaining: Option<u64>,
}

impl Items {
    fn next(&mut self, d: &mut Decoder<'_>) -> Result<bool, DecodeError> {
        match &mut self.remaining {
            Some(0) => Ok(false),
            Some(n) => {
                *n -= 1;
                // A break inside a definite container is malformed; `skip` would swallow it.
                if d.datatype()? == Type::Break {
                    return Err(DecodeError::Cbor("unexpected break".into()));
                }
                Ok(true)
            }
            None => {
                if d.datatype()? == Type::Break {
                    d.set_position(d.position().saturating_add(1));
                    Ok(false)
                } else {
                    Ok(true)
                }
            }
        }
    }
}

/// Reads a text string, definite or indefinite (whose chunks are concatenated).
fn read_text<'b>(d: &mut Decoder<'b>, field: &'static str) -> Result<Cow<'b, str>, DecodeError> {
    match skip_tags(d)? {
        Type::String => Ok(Cow::Borrowed(d.str()?)),
        Type::StringIndef => {
            let mut s = String::new();
            for chunk in d.str_iter()? {
                s.push_str(chunk?);
            }
            Ok(Cow::Owned(s))
        }
        other => Err(wrong_type(field, "text string", other)),
    }
}

/// Reads a byte string, definite or indefinite.
fn read_bytes(d: &mut Decoder<'_>, field: &'static str) -> Result<Vec<u8>, DecodeError> {
    match skip_tags(d)? {
        Type::Bytes => Ok(d.bytes()?.to_vec()),
        Type::BytesIndef => {
            let mut v = Vec::new();
            for chunk in d.bytes_iter()? {
                v.extend_from_slice(chunk?);
            }
            Ok(v)
        }
        other => Err(wrong_type(field, "byte string", other)),
    }
}

/// Walks a map, recording where the value of each wanted text key starts (the last one wins on
/// duplicates) and skipping everything else. Leaves `d` just after the map.
fn map_fields<const N: usize>(
    d: &mut Decoder<'_>,
    keys: &[&'static str; N],
    field: &'static str,
) -> Result<[Option<usize>; N], DecodeError> {
    let len = match skip_tags(d)? {
        Type::Map | Type::MapIndef => d.map()?,
        other => return Err(wrong_type(field, "map", other)),
    };
    let mut items = Items { remaining: len };
    let mut pos = [None; N];
    while items.next(d)? {
        let key = match d.datatype()? {
            Type::String | Type::StringIndef => Some(read_text(d, field)?),
            _ => {
                d.skip()?;
                None
            }
        };
        if d.datatype()? == Type::Break {
            return Err(DecodeError::Cbor("map key without a value".into()));
        }
        if let Some(slot) = key
            .and_then(|k| keys.iter().position(|w| *w == k))
            .and_then(|i| pos.get_mut(i))
        {
            *slot = Some(d.position());
        }
        d.skip()?;
    }
    Ok(pos)
}

/// Decodes the map at the decoder's position with `f`, which may jump around inside it; leaves
/// the decoder after the map.
fn with_map<'b, const N: usize, T>(
    d: &mut Decoder<'b>,
    keys: &'static [&'static str; N],
    field: &'static str,
    f: impl FnOnce(&mut Fields<'_, 'b, N>) -> Result<T, DecodeError>,
) -> Result<T, DecodeError> {
    let pos = map_fields(d, keys, field)?;
    let end = d.position();
    let out = f(&mut Fields { d, keys, pos })?;
    d.set_position(end);
    Ok(out)
}

/// Lazy access to the values of a decoded map, by key.
struct Fields<'d, 'b, const N: usize> {
    d: &'d mut Decoder<'b>,
    keys: &'static [&'static str; N],
    pos: [Option<usize>; N],
}

impl<'b, const N: usize> Fields<'_, 'b, N> {
    fn has_key(&self, key: &'static str) -> bool {
        self.position(key).is_some()
    }

    fn position(&self, key: &'static str) -> Option<usize> {
        let i = self.keys.iter().position(|k| *k == key)?;
        self.pos.get(i).copied().flatten()
    }

    /// Moves to the value of `key`; false when the key is absent or its value is `null`/`undefined`
    /// (JS writes `undefined` properties rather than leaving them out).
    fn seek(&mut self, key: &'static str) -> Result<bool, DecodeError> {
        let Some(p) = self.position(key) else {
            return Ok(false);
        };
        self.d.set_position(p);
        Ok(!matches!(skip_tags(self.d)?, Type::Null | Type::Undefined))
    }

    fn require(&mut self, key: &'static str) -> Result<(), DecodeError> {
        if self.seek(key)? {
            Ok(())
        } else {
            Err(DecodeError::MissingField(key))
        }
    }

    fn text(&mut self, key: &'static str) -> Result<String, DecodeError> {
        self.require(key)?;
        Ok(read_text(self.d, key)?.into_owned())
    }

    fn opt_text(&mut self, key: &'static str) -> Result<Option<String>, DecodeError> {
        if !self.seek(key)? {
            return Ok(None);
        }
        Ok(Some(read_text(self.d, key)?.into_owned()))
    }

    fn bytes(&mut self, key: &'static str) -> Result<Vec<u8>, DecodeError> {
        self.require(key)?;
        read_bytes(self.d, key)
    }

    fn opt_bool(&mut self, key: &'static str) -> Result<Option<bool>, DecodeError> {
        if !self.seek(key)? {
            return Ok(None);
        }
        match self.d.datatype()? {
            Type::Bool => Ok(Some(self.d.bool()?)),
            other => Err(wrong_type(key, "bool", other)),
        }
    }

    /// A bs58check text string, or (as samod accepts) a byte string of the raw id.
    fn document_id(&mut self, key: &'static str) -> Result<DocumentId, DecodeError> {
        self.require(key)?;
        match self.d.datatype()? {
            Type::Bytes | Type::BytesIndef => {
                let raw = read_bytes(self.d, key)?;
                if raw.is_empty() {
                    return Err(crate::DocumentIdError::Empty.into());
                }
                Ok(DocumentId::from_bytes(&raw))
            }
            _ => Ok(DocumentId::from_str(&read_text(self.d, key)?)?),
        }
    }

    /// An unsigned integer, or a float (JS numbers above 2^32 arrive as float64), truncated.
    fn uint(&mut self, key: &'static str) -> Result<u64, DecodeError> {
        self.require(key)?;
        read_uint(self.d, key)
    }

    fn opt_text_array(&mut self, key: &'static str) -> Result<Option<Vec<String>>, DecodeError> {
        if !self.seek(key)? {
            return Ok(None);
        }
        read_text_array(self.d, key).map(Some)
    }

    fn peer_metadata(&mut self, key: &'static str) -> Result<Option<PeerMetadata>, DecodeError> {
        if !self.seek(key)? {
            return Ok(None);
        }
        with_map(self.d, &["storageId", "isEphemeral"], key, |m| {
            Ok(PeerMetadata {
                storage_id: m.opt_text("storageId")?,
                is_ephemeral: m.opt_bool("isEphemeral")?.unwrap_or(false),
            })
        })
        .map(Some)
    }

    fn new_heads(&mut self, key: &'static str) -> Result<BTreeMap<String, HeadsInfo>, DecodeError> {
        self.require(key)?;
        let len = match self.d.datatype()? {
            Type::Map | Type::MapIndef => self.d.map()?,
            other => return Err(wrong_type(key, "map", other)),
        };
        let mut items = Items { remaining: len };
        let mut out = BTreeMap::new();
        while items.next(self.d)? {
            let storage_id = read_text(self.d, key)?.into_owned();
            let info = with_map(self.d, &["heads", "timestamp"], key, |m| {
                m.require("heads")?;
                let heads = read_text_array(m.d, "heads")?;
                Ok(HeadsInfo {
                    heads,
                    timestamp: m.uint("timestamp")?,
                })
            })?;
            out.insert(storage_id, info);
        }
        Ok(out)
    }
}

fn read_text_array(d: &mut Decoder<'_>, field: &'static str) -> Result<Vec<String>, DecodeError> {
    let len = match skip_tags(d)? {
        Type::Array | Type::ArrayIndef => d.array()?,
        other => return Err(wrong_type(field, "array", other)),
    };
    let mut items = Items { remaining: len };
    // No `with_capacity(len)`: the length header is attacker-controlled.
    let mut out = Vec::new();
    while items.next(d)? {
        out.push(read_text(d, field)?.into_owned());
    }
    Ok(out)
}

fn read_uint(d: &mut Decoder<'_>, field: &'static str) -> Result<u64, DecodeError> {
    let value = match skip_tags(d)? {
        Type::U8 | Type::U16 | Type::U32 | Type::U64 => return Ok(d.u64()?),
        Type::I8 | Type::I16 | Type::I32 | Type::I64 | Type::Int => {
            return Err(DecodeError::InvalidNumber {
                field,
                reason: "negative",
            });
        }
        Type::F16 => read_f16(d)?,
        Type::F32 | Type::F64 => d.f64()?,
        other => return Err(wrong_type(field, "unsigned integer or float", other)),
    };
    float_to_u64(value, field)
}

fn float_to_u64(value: f64, field: &'static str) -> Result<u64, DecodeError> {
    let reason = if value.is_nan() {
        "NaN"
    } else if value.is_infinite() {
        "infinite"
    } else if value < 0.0 {
        "negative"
    } else if value.trunc() >= 18_446_744_073_709_551_616.0 {
        "too large"
    } else {
        // In range and finite: the cast truncates exactly.
        return Ok(value.trunc() as u64);
    };
    Err(DecodeError::InvalidNumber { field, reason })
}

/// Reads a half float. minicbor only decodes these with its `half` feature, which would add a
/// dependency for one rarely seen encoding; the conversion is a few lines.
fn read_f16(d: &mut Decoder<'_>) -> Result<f64, DecodeError> {
    let p = d.position();
    let bits = d
        .input()
        .get(p.saturating_add(1)..p.saturating_add(3))
        .and_then(|b| <[u8; 2]>::try_from(b).ok())
        .map(u16::from_be_bytes)
        .ok_or_else(|| DecodeError::Cbor("end of input".into()))?;
    d.set_position(p.saturating_add(3));
    Ok(f16_to_f64(bits))
}

fn f16_to_f64(bits: u16) -> f64 {
    let sign = if bits & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exp = (bits >> 10) & 0x1f;
    let mant = f64::from(bits & 0x3ff);
    let magnitude = match exp {
        0 => mant * 2f64.powi(-24),
        31 if mant == 0.0 => f64::INFINITY,
        31 => f64::NAN,
        e => (1.0 + mant / 1024.0) * 2f64.powi(i32::from(e) - 15),
    };
    sign * magnitude
}

// ---------------------------------------------------------------------------------------------
// Encoding

type Enc = Encoder<Vec<u8>>;
type EncResult = Result<(), minicbor::encode::Error<Infallible>>;

/// Encodes a message as one CBOR map with definite lengths.
pub fn encode(message: &Message) -> Vec<u8> {
    let mut e = Encoder::new(Vec::new());
    // Writing into a Vec cannot fail (its error type is `Infallible`), so there is nothing to report.
    let _ = encode_into(&mut e, message);
    e.into_writer()
}

fn encode_into(e: &mut Enc, m: &Message) -> EncResult {
    match m {
        Message::Join {
            sender_id,
            supported_protocol_versions,
            peer_metadata,
        } => {
            let n = 2
                + u64::from(supported_protocol_versions.is_some())
                + u64::from(peer_metadata.is_some());
            e.map(n)?;
            e.str("type")?.str("join")?;
            e.str("senderId")?.str(sender_id)?;
            if let Some(versions) = supported_protocol_versions {
                e.str("supportedProtocolVersions")?;
                text_array(e, versions)?;
            }
            if let Some(pm) = peer_metadata {
                e.str("peerMetadata")?;
                encode_peer_metadata(e, pm)?;
            }
        }
        Message::Peer {
            sender_id,
            target_id,
            selected_protocol_version,
            peer_metadata,
        } => {
            e.map(4 + u64::from(peer_metadata.is_some()))?;
            e.str("type")?.str("peer")?;
            e.str("senderId")?.str(sender_id)?;
            e.str("targetId")?.str(target_id)?;
            e.str("selectedProtocolVersion")?
                .str(selected_protocol_version)?;
            if let Some(pm) = peer_metadata {
                e.str("peerMetadata")?;
                encode_peer_metadata(e, pm)?;
            }
        }
        Message::Error {
            message,
            sender_id,
            target_id,
        } => {
            e.map(2 + u64::from(sender_id.is_some()) + u64::from(target_id.is_some()))?;
            e.str("type")?.str("error")?;
            e.str("message")?.str(message)?;
            if let Some(s) = sender_id {
                e.str("senderId")?.str(s)?;
            }
            if let Some(t) = target_id {
                e.str("targetId")?.str(t)?;
            }
        }
        Message::Request {
            sender_id,
            target_id,
            document_id,
            data,
        }
        | Message::Sync {
            sender_id,
            target_id,
            document_id,
            data,
        } => {
            e.map(5)?;
            e.str("type")?.str(m.type_name())?;
            e.str("senderId")?.str(sender_id)?;
            e.str("targetId")?.str(target_id)?;
            e.str("documentId")?.str(document_id.as_str())?;
            e.str("data")?.bytes(data)?;
        }
        Message::DocUnavailable {
            sender_id,
            target_id,
            document_id,
        } => {
            e.map(4)?;
            e.str("type")?.str("doc-unavailable")?;
            e.str("senderId")?.str(sender_id)?;
            e.str("targetId")?.str(target_id)?;
            e.str("documentId")?.str(document_id.as_str())?;
        }
        Message::Ephemeral {
            sender_id,
            target_id,
            document_id,
            count,
            session_id,
            data,
        } => {
            e.map(7)?;
            e.str("type")?.str("ephemeral")?;
            e.str("senderId")?.str(sender_id)?;
            e.str("targetId")?.str(target_id)?;
            e.str("documentId")?.str(document_id.as_str())?;
            e.str("count")?.u64(*count)?;
            e.str("sessionId")?.str(session_id)?;
            e.str("data")?.bytes(data)?;
        }
        Message::RemoteSubscriptionChange {
            sender_id,
            target_id,
            add,
            remove,
        } => {
            e.map(5)?;
            e.str("type")?.str("remote-subscription-change")?;
            e.str("senderId")?.str(sender_id)?;
            e.str("targetId")?.str(target_id)?;
            e.str("add")?;
            text_array(e, add)?;
            e.str("remove")?;
            text_array(e, remove)?;
        }
        Message::RemoteHeadsChanged {
            sender_id,
            target_id,
            document_id,
            new_heads,
        } => {
            e.map(5)?;
            e.str("type")?.str("remote-heads-changed")?;
            e.str("senderId")?.str(sender_id)?;
            e.str("targetId")?.str(target_id)?;
            e.str("documentId")?.str(document_id.as_str())?;
            e.str("newHeads")?.map(len_u64(new_heads.len()))?;
            for (storage_id, info) in new_heads {
                e.str(storage_id)?.map(2)?;
                e.str("heads")?;
                text_array(e, &info.heads)?;
                e.str("timestamp")?.u64(info.timestamp)?;
            }
        }
        Message::Leave { sender_id } => {
            e.map(2)?;
            e.str("type")?.str("leave")?;
            e.str("senderId")?.str(sender_id)?;
        }
        Message::Unknown { message_type } => {
            e.map(1)?;
            e.str("type")?.str(message_type)?;
        }
    }
    Ok(())
}

fn encode_peer_metadata(e: &mut Enc, pm: &PeerMetadata) -> EncResult {
    e.map(1 + u64::from(pm.storage_id.is_some()))?;
    if let Some(s) = &pm.storage_id {
        e.str("storageId")?.str(s)?;
    }
    e.str("isEphemeral")?.bool(pm.is_ephemeral)?;
    Ok(())
}

fn text_array(e: &mut Enc, items: &[String]) -> EncResult {
    e.array(len_u64(items.len()))?;
    for item in items {
        e.str(item)?;
    }
    Ok(())
}

fn len_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

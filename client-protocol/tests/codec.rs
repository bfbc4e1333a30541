//! Wire codec tests: round trips, cbor-x vectors, lenient decoding, strict encoding, robustness.

// `allow-unwrap-in-tests` covers only `#[test]` fns; the frame-building helpers here unwrap too.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use driftless_client_protocol::{
    DecodeError, DocumentId, DocumentIdError, HeadsInfo, Message, PeerMetadata, decode, encode,
};
use minicbor::Encoder;
use proptest::prelude::*;

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn doc() -> DocumentId {
    "4NMNnkMhL8jXrdJ9jamS58PAVdXu".parse().unwrap()
}

/// One or more instances of every message type, covering optional fields both ways.
fn samples() -> Vec<Message> {
    let mut heads = BTreeMap::new();
    heads.insert(
        "storage-a".to_owned(),
        HeadsInfo {
            heads: vec!["headA".into(), "headB".into()],
            timestamp: 1_722_000_000_123,
        },
    );
    heads.insert(
        "storage-b".to_owned(),
        HeadsInfo {
            heads: vec![],
            timestamp: 0,
        },
    );
    vec![
        Message::Join {
            sender_id: "client-a".into(),
            supported_protocol_versions: Some(vec!["1".into()]),
            peer_metadata: Some(PeerMetadata {
                storage_id: Some("store-1".into()),
                is_ephemeral: false,
            }),
        },
        Message::Join {
            sender_id: "client-b".into(),
            supported_protocol_versions: None,
            peer_metadata: None,
        },
        Message::Join {
            sender_id: "client-c".into(),
            supported_protocol_versions: Some(vec![]),
            peer_metadata: Some(PeerMetadata {
                storage_id: None,
                is_ephemeral: true,
            }),
        },
        Message::Peer {
            sender_id: "server".into(),
            target_id: "client-a".into(),
            selected_protocol_version: "1".into(),
            peer_metadata: Some(PeerMetadata {
                storage_id: Some("uuid-ish".into()),
                is_ephemeral: false,
            }),
        },
        Message::Peer {
            sender_id: "server".into(),
            target_id: "client-a".into(),
            selected_protocol_version: "1".into(),
            peer_metadata: None,
        },
        Message::Error {
            message: "unsupported protocol version".into(),
            sender_id: Some("server".into()),
            target_id: Some("client-a".into()),
        },
        Message::Error {
            message: "boom".into(),
            sender_id: None,
            target_id: None,
        },
        Message::Error {
            message: "half".into(),
            sender_id: Some("s".into()),
            target_id: None,
        },
        Message::Request {
            sender_id: "client-a".into(),
            target_id: "server".into(),
            document_id: doc(),
            data: vec![0x42, 1, 2, 3],
        },
        Message::Sync {
            sender_id: "server".into(),
            target_id: "client-a".into(),
            document_id: DocumentId::from_bytes(&[0, 0, 7]),
            data: vec![],
        },
        Message::DocUnavailable {
            sender_id: "server".into(),
            target_id: "client-a".into(),
            document_id: doc(),
        },
        Message::Ephemeral {
            sender_id: "client-a".into(),
            target_id: "client-b".into(),
            document_id: doc(),
            count: u64::MAX,
            session_id: "s5kv8ux13po".into(),
            data: vec![0xa1, 0x61, 0x78, 0x01],
        },
        Message::RemoteSubscriptionChange {
            sender_id: "client-a".into(),
            target_id: "server".into(),
            add: vec!["storage-a".into(), "storage-b".into()],
            remove: vec![],
        },
        Message::RemoteSubscriptionChange {
            sender_id: "client-a".into(),
            target_id: "server".into(),
            add: vec![],
            remove: vec!["storage-c".into()],
        },
        Message::RemoteHeadsChanged {
            sender_id: "server".into(),
            target_id: "client-a".into(),
            document_id: doc(),
            new_heads: heads,
        },
        Message::RemoteHeadsChanged {
            sender_id: "server".into(),
            target_id: "client-a".into(),
            document_id: doc(),
            new_heads: BTreeMap::new(),
        },
        Message::Leave {
            sender_id: "client-a".into(),
        },
        Message::Unknown {
            message_type: "subduction-connection".into(),
        },
    ]
}

#[test]
fn every_message_round_trips() {
    let samples = samples();
    let mut seen = std::collections::BTreeSet::new();
    for m in &samples {
        let frame = encode(m);
        assert_eq!(decode(&frame).as_ref(), Ok(m), "frame {frame:02x?}");
        seen.insert(m.type_name().to_owned());
    }
    // Guard against the sample list silently losing a type.
    assert_eq!(seen.len(), 11, "{seen:?}");
}

// ----- cbor-x vectors and hand-built frames ----------------------------------------------------

const CBORX_JOIN: &str = "b900046474797065646a6f696e6873656e646572496468636c69656e742d616c706565724d65746164617461b900026973746f726167654964f76b6973457068656d6572616cf57819737570706f7274656450726f746f636f6c56657273696f6e73816131";

#[test]
fn cbor_x_join_vector() {
    assert_eq!(
        decode(&hex(CBORX_JOIN)),
        Ok(Message::Join {
            sender_id: "client-a".into(),
            supported_protocol_versions: Some(vec!["1".into()]),
            peer_metadata: Some(PeerMetadata {
                storage_id: None,
                is_ephemeral: true,
            }),
        })
    );
}

/// Builds a frame with minicbor's encoder, for shapes our own encoder never writes.
fn build(f: impl FnOnce(&mut Encoder<Vec<u8>>)) -> Vec<u8> {
    let mut e = Encoder::new(Vec::new());
    f(&mut e);
    e.into_writer()
}

fn leave(sender: &str) -> Message {
    Message::Leave {
        sender_id: sender.into(),
    }
}

#[test]
fn non_minimal_length_headers() {
    // Map count as u16, key/value strings with 1-byte and 2-byte length headers.
    let mut f = hex("b90002");
    f.extend(hex("7804"));
    f.extend(b"type");
    f.extend(hex("790005"));
    f.extend(b"leave");
    f.extend(hex("7a00000008"));
    f.extend(b"senderId");
    f.extend(hex("7b0000000000000001"));
    f.extend(b"x");
    assert_eq!(decode(&f), Ok(leave("x")));

    // `0xb9 00 04` (as cbor-x writes) with a nested `0xb9` map and a non-minimal array header.
    let mut f = hex("b90004");
    for (k, v) in [("type", "join"), ("senderId", "p")] {
        f.push(0x60 + k.len() as u8);
        f.extend(k.as_bytes());
        f.push(0x60 + v.len() as u8);
        f.extend(v.as_bytes());
    }
    f.extend(hex("6c706565724d65746164617461")); // "peerMetadata"
    f.extend(hex("b900016b6973457068656d6572616cf4")); // {isEphemeral: false}
    f.extend(hex(
        "7819737570706f7274656450726f746f636f6c56657273696f6e73",
    )); // key
    f.extend(hex("9900026131780132")); // ["1", "2"] with u16 count, second string non-minimal
    assert_eq!(
        decode(&f),
        Ok(Message::Join {
            sender_id: "p".into(),
            supported_protocol_versions: Some(vec!["1".into(), "2".into()]),
            peer_metadata: Some(PeerMetadata::default()),
        })
    );
}

#[test]
fn indefinite_lengths_everywhere() {
    let f = build(|e| {
        e.begin_map().unwrap();
        e.str("type").unwrap().str("sync").unwrap();
        // Indefinite text key and value.
        e.begin_str().unwrap();
        e.str("sender").unwrap().str("Id").unwrap();
        e.end().unwrap();
        e.begin_str().unwrap();
        e.str("cli").unwrap().str("ent").unwrap();
        e.end().unwrap();
        e.str("targetId").unwrap().str("srv").unwrap();
        e.str("documentId")
            .unwrap()
            .str("4NMNnkMhL8jXrdJ9jamS58PAVdXu")
            .unwrap();
        e.str("data").unwrap();
        e.begin_bytes().unwrap();
        e.bytes(&[1, 2])
            .unwrap()
            .bytes(&[])
            .unwrap()
            .bytes(&[3])
            .unwrap();
        e.end().unwrap();
        e.end().unwrap();
    });
    assert_eq!(
        decode(&f),
        Ok(Message::Sync {
            sender_id: "client".into(),
            target_id: "srv".into(),
            document_id: doc(),
            data: vec![1, 2, 3],
        })
    );

    let f = build(|e| {
        e.begin_map().unwrap();
        e.str("type")
            .unwrap()
            .str("remote-subscription-change")
            .unwrap();
        e.str("senderId").unwrap().str("a").unwrap();
        e.str("targetId").unwrap().str("b").unwrap();
        e.str("add").unwrap().begin_array().unwrap();
        e.str("s1").unwrap().str("s2").unwrap().end().unwrap();
        e.str("metadata")
            .unwrap()
            .begin_map()
            .unwrap()
            .end()
            .unwrap(); // unknown here: skipped
        e.end().unwrap();
    });
    assert_eq!(
        decode(&f),
        Ok(Message::RemoteSubscriptionChange {
            sender_id: "a".into(),
            target_id: "b".into(),
            add: vec!["s1".into(), "s2".into()],
            remove: vec![],
        })
    );
}

fn ephemeral_frame(count: impl Fn(&mut Encoder<Vec<u8>>)) -> Vec<u8> {
    build(|e| {
        e.map(7).unwrap();
        e.str("count").unwrap();
        count(e);
        e.str("type").unwrap().str("ephemeral").unwrap();
        e.str("senderId").unwrap().str("a").unwrap();
        e.str("targetId").unwrap().str("b").unwrap();
        e.str("documentId")
            .unwrap()
            .str("4NMNnkMhL8jXrdJ9jamS58PAVdXu")
            .unwrap();
        e.str("sessionId").unwrap().str("sess").unwrap();
        e.str("data").unwrap().bytes(&[9]).unwrap();
    })
}

fn ephemeral_count(frame: &[u8]) -> Result<u64, DecodeError> {
    match decode(frame)? {
        Message::Ephemeral { count, .. } => Ok(count),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn float_counts_and_timestamps() {
    assert_eq!(
        ephemeral_count(&ephemeral_frame(|e| drop(e.f64(7.0)))),
        Ok(7)
    );
    assert_eq!(
        ephemeral_count(&ephemeral_frame(|e| drop(e.f64(7.9)))),
        Ok(7)
    );
    assert_eq!(
        ephemeral_count(&ephemeral_frame(|e| drop(e.f32(3.5)))),
        Ok(3)
    );
    // f16 2.5 = 0x4100, written by hand (minicbor encodes f16 only with its `half` feature).
    assert_eq!(
        ephemeral_count(&ephemeral_frame(|e| {
            e.writer_mut().extend([0xf9, 0x41, 0x00]);
        })),
        Ok(2)
    );
    assert_eq!(
        ephemeral_count(&ephemeral_frame(|e| drop(e.f64(1_722_000_000_123.0)))),
        Ok(1_722_000_000_123)
    );
    assert_eq!(ephemeral_count(&ephemeral_frame(|e| drop(e.u8(5)))), Ok(5));
    assert_eq!(
        ephemeral_count(&ephemeral_frame(|e| drop(e.f64(-0.0)))),
        Ok(0)
    );

    for (bad, reason) in [
        (f64::NAN, "NaN"),
        (f64::INFINITY, "infinite"),
        (f64::NEG_INFINITY, "infinite"),
        (-1.0, "negative"),
        (1e20, "too large"),
    ] {
        assert_eq!(
            ephemeral_count(&ephemeral_frame(|e| drop(e.f64(bad)))),
            Err(DecodeError::InvalidNumber {
                field: "count",
                reason
            }),
            "{bad}"
        );
    }
    assert_eq!(
        ephemeral_count(&ephemeral_frame(|e| drop(e.i64(-3)))),
        Err(DecodeError::InvalidNumber {
            field: "count",
            reason: "negative"
        })
    );
    assert!(matches!(
        ephemeral_count(&ephemeral_frame(|e| drop(e.str("7")))),
        Err(DecodeError::WrongType { field: "count", .. })
    ));

    // Timestamp as float64, like `Date.now()` through cbor-x.
    let f = build(|e| {
        e.map(5).unwrap();
        e.str("type").unwrap().str("remote-heads-changed").unwrap();
        e.str("senderId").unwrap().str("a").unwrap();
        e.str("targetId").unwrap().str("b").unwrap();
        e.str("documentId")
            .unwrap()
            .str("4NMNnkMhL8jXrdJ9jamS58PAVdXu")
            .unwrap();
        e.str("newHeads").unwrap().map(1).unwrap();
        e.str("store").unwrap().map(2).unwrap();
        e.str("timestamp")
            .unwrap()
            .f64(1_722_000_000_123.0)
            .unwrap();
        e.str("heads").unwrap().array(1).unwrap().str("h").unwrap();
    });
    let mut expected = BTreeMap::new();
    expected.insert(
        "store".to_owned(),
        HeadsInfo {
            heads: vec!["h".into()],
            timestamp: 1_722_000_000_123,
        },
    );
    assert_eq!(
        decode(&f),
        Ok(Message::RemoteHeadsChanged {
            sender_id: "a".into(),
            target_id: "b".into(),
            document_id: doc(),
            new_heads: expected,
        })
    );
}

#[test]
fn undefined_and_null_optionals() {
    for absent in [
        (|e: &mut Encoder<Vec<u8>>| drop(e.undefined())) as fn(&mut Encoder<Vec<u8>>),
        |e| drop(e.null()),
    ] {
        let join = build(|e| {
            e.map(4).unwrap();
            e.str("type").unwrap().str("join").unwrap();
            e.str("senderId").unwrap().str("a").unwrap();
            e.str("supportedProtocolVersions").unwrap();
            absent(e);
            e.str("peerMetadata").unwrap();
            absent(e);
        });
        assert_eq!(
            decode(&join),
            Ok(Message::Join {
                sender_id: "a".into(),
                supported_protocol_versions: None,
                peer_metadata: None,
            })
        );

        let peer = build(|e| {
            e.map(5).unwrap();
            e.str("type").unwrap().str("peer").unwrap();
            e.str("senderId").unwrap().str("s").unwrap();
            e.str("targetId").unwrap().str("c").unwrap();
            e.str("selectedProtocolVersion").unwrap().str("1").unwrap();
            e.str("peerMetadata").unwrap().map(2).unwrap();
            e.str("storageId").unwrap();
            absent(e);
            e.str("isEphemeral").unwrap();
            absent(e);
        });
        assert_eq!(
            decode(&peer),
            Ok(Message::Peer {
                sender_id: "s".into(),
                target_id: "c".into(),
                selected_protocol_version: "1".into(),
                peer_metadata: Some(PeerMetadata::default()),
            })
        );

        let rsc = build(|e| {
            e.map(5).unwrap();
            e.str("type")
                .unwrap()
                .str("remote-subscription-change")
                .unwrap();
            e.str("senderId").unwrap().str("a").unwrap();
            e.str("targetId").unwrap().str("b").unwrap();
            e.str("add").unwrap();
            absent(e);
            e.str("remove").unwrap();
            absent(e);
        });
        assert_eq!(
            decode(&rsc),
            Ok(Message::RemoteSubscriptionChange {
                sender_id: "a".into(),
                target_id: "b".into(),
                add: vec![],
                remove: vec![],
            })
        );

        let err = build(|e| {
            e.map(3).unwrap();
            e.str("type").unwrap().str("error").unwrap();
            e.str("message").unwrap().str("m").unwrap();
            e.str("senderId").unwrap();
            absent(e);
        });
        assert_eq!(
            decode(&err),
            Ok(Message::Error {
                message: "m".into(),
                sender_id: None,
                target_id: None,
            })
        );

        // A required field that is undefined/null counts as missing.
        let leave = build(|e| {
            e.map(2).unwrap();
            e.str("type").unwrap().str("leave").unwrap();
            e.str("senderId").unwrap();
            absent(e);
        });
        assert_eq!(decode(&leave), Err(DecodeError::MissingField("senderId")));
    }
}

#[test]
fn extra_keys_are_skipped_in_any_order() {
    let f = build(|e| {
        e.map(9).unwrap();
        e.str("zzz").unwrap().map(2).unwrap();
        e.str("nested").unwrap().array(3).unwrap();
        e.u8(1)
            .unwrap()
            .begin_map()
            .unwrap()
            .str("k")
            .unwrap()
            .f64(1.5)
            .unwrap();
        e.end().unwrap();
        e.array(0).unwrap();
        e.u32(7).unwrap().bytes(&[1, 2, 3]).unwrap();
        e.str("data").unwrap().bytes(&[4, 5]).unwrap();
        e.u64(99).unwrap().str("non-text key").unwrap();
        e.str("documentId")
            .unwrap()
            .str("4NMNnkMhL8jXrdJ9jamS58PAVdXu")
            .unwrap();
        e.str("tagged")
            .unwrap()
            .tag(minicbor::data::IanaTag::DateTime)
            .unwrap();
        e.str("2024-01-01T00:00:00Z").unwrap();
        e.str("targetId").unwrap().str("t").unwrap();
        e.str("senderId").unwrap().str("s").unwrap();
        e.str("message").unwrap().undefined().unwrap();
        e.str("type").unwrap().str("request").unwrap();
    });
    assert_eq!(
        decode(&f),
        Ok(Message::Request {
            sender_id: "s".into(),
            target_id: "t".into(),
            document_id: doc(),
            data: vec![4, 5],
        })
    );
}

#[test]
fn metadata_alias_and_missing_is_ephemeral() {
    let f = build(|e| {
        e.map(3).unwrap();
        e.str("type").unwrap().str("join").unwrap();
        e.str("senderId").unwrap().str("a").unwrap();
        e.str("metadata").unwrap().map(1).unwrap();
        e.str("storageId").unwrap().str("st").unwrap();
    });
    assert_eq!(
        decode(&f),
        Ok(Message::Join {
            sender_id: "a".into(),
            supported_protocol_versions: None,
            peer_metadata: Some(PeerMetadata {
                storage_id: Some("st".into()),
                is_ephemeral: false,
            }),
        })
    );
    // `peerMetadata` wins over `metadata` when both are present.
    let f = build(|e| {
        e.map(6).unwrap();
        e.str("metadata").unwrap().map(1).unwrap();
        e.str("storageId").unwrap().str("old").unwrap();
        e.str("type").unwrap().str("peer").unwrap();
        e.str("senderId").unwrap().str("a").unwrap();
        e.str("targetId").unwrap().str("b").unwrap();
        e.str("selectedProtocolVersion").unwrap().str("1").unwrap();
        e.str("peerMetadata").unwrap().map(1).unwrap();
        e.str("isEphemeral").unwrap().bool(true).unwrap();
    });
    assert_eq!(
        decode(&f),
        Ok(Message::Peer {
            sender_id: "a".into(),
            target_id: "b".into(),
            selected_protocol_version: "1".into(),
            peer_metadata: Some(PeerMetadata {
                storage_id: None,
                is_ephemeral: true,
            }),
        })
    );
}

fn doc_unavailable_with_id(id: impl Fn(&mut Encoder<Vec<u8>>)) -> Vec<u8> {
    build(|e| {
        e.map(4).unwrap();
        e.str("type").unwrap().str("doc-unavailable").unwrap();
        e.str("senderId").unwrap().str("a").unwrap();
        e.str("targetId").unwrap().str("b").unwrap();
        e.str("documentId").unwrap();
        id(e);
    })
}

#[test]
fn document_id_forms() {
    let expected = Ok(Message::DocUnavailable {
        sender_id: "a".into(),
        target_id: "b".into(),
        document_id: doc(),
    });
    let raw = hex("f1c29c8474c84adeb800be47627d33bf");
    assert_eq!(
        decode(&doc_unavailable_with_id(|e| drop(e.bytes(&raw)))),
        expected
    );
    assert_eq!(
        decode(&doc_unavailable_with_id(|e| drop(
            e.str("4NMNnkMhL8jXrdJ9jamS58PAVdXu")
        ))),
        expected
    );
    assert_eq!(
        decode(&doc_unavailable_with_id(|e| drop(e.bytes(&[])))),
        Err(DecodeError::DocumentId(DocumentIdError::Empty))
    );
    assert!(matches!(
        decode(&doc_unavailable_with_id(|e| drop(
            e.str("4NMNnkMhL8jXrdJ9jamS58PAVdXv")
        ))),
        Err(DecodeError::DocumentId(DocumentIdError::BadChecksum(_)))
    ));
    assert!(matches!(
        decode(&doc_unavailable_with_id(|e| drop(e.u8(1)))),
        Err(DecodeError::WrongType {
            field: "documentId",
            ..
        })
    ));
}

#[test]
fn structural_errors() {
    let good = encode(&leave("a"));
    // Trailing bytes.
    let mut f = good.clone();
    f.extend([0x00, 0x01]);
    assert_eq!(decode(&f), Err(DecodeError::TrailingBytes(2)));
    // Not a map.
    assert_eq!(decode(&hex("8161")), Err(DecodeError::NotAMap));
    assert_eq!(decode(&hex("6474797065")), Err(DecodeError::NotAMap));
    assert_eq!(decode(&hex("f6")), Err(DecodeError::NotAMap));
    assert!(matches!(decode(&[]), Err(DecodeError::Cbor(_))));
    // Missing `type` and missing required fields.
    assert_eq!(decode(&hex("a0")), Err(DecodeError::MissingField("type")));
    let f = build(|e| {
        e.map(4).unwrap();
        e.str("type").unwrap().str("sync").unwrap();
        e.str("senderId").unwrap().str("a").unwrap();
        e.str("targetId").unwrap().str("b").unwrap();
        e.str("documentId")
            .unwrap()
            .str("4NMNnkMhL8jXrdJ9jamS58PAVdXu")
            .unwrap();
    });
    assert_eq!(decode(&f), Err(DecodeError::MissingField("data")));
    // `data` must be a byte string.
    let f = build(|e| {
        e.map(5).unwrap();
        e.str("type").unwrap().str("sync").unwrap();
        e.str("senderId").unwrap().str("a").unwrap();
        e.str("targetId").unwrap().str("b").unwrap();
        e.str("documentId")
            .unwrap()
            .str("4NMNnkMhL8jXrdJ9jamS58PAVdXu")
            .unwrap();
        e.str("data").unwrap().array(1).unwrap().u8(1).unwrap();
    });
    assert!(matches!(
        decode(&f),
        Err(DecodeError::WrongType { field: "data", .. })
    ));
    // `type` must be text.
    assert!(matches!(
        decode(&hex("a1647479706501")),
        Err(DecodeError::WrongType { field: "type", .. })
    ));
    // Unknown type: never an error, whatever else is in the map.
    let f = build(|e| {
        e.map(2).unwrap();
        e.str("data").unwrap().str("not bytes").unwrap();
        e.str("type").unwrap().str("frobnicate").unwrap();
    });
    assert_eq!(
        decode(&f),
        Ok(Message::Unknown {
            message_type: "frobnicate".into()
        })
    );
    // A break where a definite map expects an entry.
    assert!(matches!(decode(&hex("a1ff")), Err(DecodeError::Cbor(_))));
    // Indefinite map with a key but no value.
    assert!(decode(&hex("bf6474797065ff")).is_err());
}

// ----- encoded output, read back by an independent strict reader --------------------------------

/// A deliberately separate, strict CBOR reader for checking our output: it rejects indefinite
/// lengths and non-minimal headers, and keeps the major type of every item.
#[derive(Debug, PartialEq)]
enum V {
    Uint(u64),
    Bytes(Vec<u8>),
    Text(String),
    Array(Vec<V>),
    Map(Vec<(V, V)>),
    Bool(bool),
}

fn strict_read(buf: &[u8], pos: &mut usize) -> V {
    let ib = buf[*pos];
    *pos += 1;
    let (major, info) = (ib >> 5, ib & 0x1f);
    if major == 7 {
        return match info {
            20 => V::Bool(false),
            21 => V::Bool(true),
            _ => panic!("unexpected simple/float {ib:#x} in our output"),
        };
    }
    let arg = match info {
        0..=23 => u64::from(info),
        24..=27 => {
            let n = 1usize << (info - 24);
            let v = buf[*pos..*pos + n]
                .iter()
                .fold(0u64, |a, b| (a << 8) | u64::from(*b));
            *pos += n;
            let min = match n {
                1 => 24,
                2 => 0x100,
                4 => 0x1_0000,
                _ => 0x1_0000_0000,
            };
            assert!(v >= min, "non-minimal header {ib:#x} {v}");
            v
        }
        _ => panic!("indefinite or reserved header {ib:#x}"),
    };
    let len = arg as usize;
    match major {
        0 => V::Uint(arg),
        2 => {
            let v = buf[*pos..*pos + len].to_vec();
            *pos += len;
            V::Bytes(v)
        }
        3 => {
            let v = String::from_utf8(buf[*pos..*pos + len].to_vec()).unwrap();
            *pos += len;
            V::Text(v)
        }
        4 => V::Array((0..len).map(|_| strict_read(buf, pos)).collect()),
        5 => V::Map(
            (0..len)
                .map(|_| (strict_read(buf, pos), strict_read(buf, pos)))
                .collect(),
        ),
        _ => panic!("unexpected major type {major} in our output"),
    }
}

fn strict_map(frame: &[u8]) -> BTreeMap<String, V> {
    let mut pos = 0;
    let V::Map(entries) = strict_read(frame, &mut pos) else {
        panic!("top level is not a map")
    };
    assert_eq!(pos, frame.len(), "trailing bytes in our output");
    let mut out = BTreeMap::new();
    for (k, v) in entries {
        let V::Text(k) = k else {
            panic!("non-text key")
        };
        assert!(out.insert(k, v).is_none(), "duplicate key");
    }
    out
}

#[test]
fn encoded_output_is_strict_and_typed() {
    for m in samples() {
        let frame = encode(&m);
        let map = strict_map(&frame);
        assert_eq!(map.get("type"), Some(&V::Text(m.type_name().to_owned())));
        for key in [
            "senderId",
            "targetId",
            "sessionId",
            "message",
            "selectedProtocolVersion",
        ] {
            if let Some(v) = map.get(key) {
                assert!(matches!(v, V::Text(_)), "{key} in {m:?}");
            }
        }
        if let Some(v) = map.get("data") {
            assert!(matches!(v, V::Bytes(_)), "data in {m:?}");
        }
        if let Some(v) = map.get("count") {
            assert!(matches!(v, V::Uint(_)), "count in {m:?}");
        }
        match &m {
            Message::Request { document_id, .. }
            | Message::Sync { document_id, .. }
            | Message::DocUnavailable { document_id, .. }
            | Message::Ephemeral { document_id, .. }
            | Message::RemoteHeadsChanged { document_id, .. } => {
                assert_eq!(
                    map.get("documentId"),
                    Some(&V::Text(document_id.to_string())),
                    "documentId must be the bs58check text"
                );
            }
            _ => assert!(!map.contains_key("documentId")),
        }
        match &m {
            Message::Error {
                sender_id,
                target_id,
                ..
            } => {
                assert_eq!(map.contains_key("senderId"), sender_id.is_some());
                assert_eq!(map.contains_key("targetId"), target_id.is_some());
            }
            Message::RemoteSubscriptionChange { .. } => {
                assert!(matches!(map.get("add"), Some(V::Array(_))));
                assert!(matches!(map.get("remove"), Some(V::Array(_))));
            }
            Message::RemoteHeadsChanged { .. } => {
                let Some(V::Map(heads)) = map.get("newHeads") else {
                    panic!("newHeads")
                };
                for (_, info) in heads {
                    let V::Map(fields) = info else { panic!() };
                    assert!(
                        fields
                            .iter()
                            .any(|(k, v)| *k == V::Text("timestamp".into())
                                && matches!(v, V::Uint(_)))
                    );
                }
            }
            _ => {}
        }
    }
}

#[test]
fn peer_metadata_encoding_shape() {
    let m = Message::Peer {
        sender_id: "s".into(),
        target_id: "c".into(),
        selected_protocol_version: "1".into(),
        peer_metadata: Some(PeerMetadata {
            storage_id: None,
            is_ephemeral: false,
        }),
    };
    let map = strict_map(&encode(&m));
    assert_eq!(
        map.get("peerMetadata"),
        Some(&V::Map(vec![(
            V::Text("isEphemeral".into()),
            V::Bool(false)
        )]))
    );
    let m = Message::Peer {
        sender_id: "s".into(),
        target_id: "c".into(),
        selected_protocol_version: "1".into(),
        peer_metadata: Some(PeerMetadata {
            storage_id: Some("st".into()),
            is_ephemeral: false,
        }),
    };
    let map = strict_map(&encode(&m));
    assert_eq!(
        map.get("peerMetadata"),
        Some(&V::Map(vec![
            (V::Text("storageId".into()), V::Text("st".into())),
            (V::Text("isEphemeral".into()), V::Bool(false)),
        ]))
    );
}

// ----- robustness --------------------------------------------------------------------------------

#[test]
fn truncations_and_bit_flips_never_panic() {
    for m in samples() {
        let frame = encode(&m);
        for len in 0..frame.len() {
            // A strict prefix of a definite-length frame can never be a whole message.
            assert!(decode(&frame[..len]).is_err(), "{m:?} prefix {len}");
        }
        for i in 0..frame.len() {
            for bit in 0..8 {
                let mut f = frame.clone();
                f[i] ^= 1 << bit;
                let _ = decode(&f);
            }
        }
    }
    // The cbor-x vector too (non-minimal headers, undefined).
    let frame = hex(CBORX_JOIN);
    for len in 0..frame.len() {
        assert!(decode(&frame[..len]).is_err());
    }
    for i in 0..frame.len() {
        for bit in 0..8 {
            let mut f = frame.clone();
            f[i] ^= 1 << bit;
            let _ = decode(&f);
        }
    }
}

/// A `leave` frame with an extra key whose value is `value`.
fn leave_with_extra(value: &[u8]) -> Vec<u8> {
    let mut f = hex("a3");
    f.extend(hex("6474797065656c65617665")); // type: leave
    f.extend(hex("6873656e64657249646161")); // senderId: "a"
    f.extend(hex("6178")); // "x"
    f.extend(value);
    f
}

#[test]
fn deep_nesting_does_not_overflow() {
    let depth = 200_000;
    // Definite arrays of one element, innermost 0.
    let mut v = vec![0x81; depth];
    v.push(0x00);
    assert_eq!(decode(&leave_with_extra(&v)), Ok(leave("a")));
    // Indefinite arrays and maps.
    let mut v = vec![0x9f; depth];
    v.extend(vec![0xff; depth]);
    assert_eq!(decode(&leave_with_extra(&v)), Ok(leave("a")));
    let mut v = Vec::new();
    for _ in 0..depth {
        v.extend([0xbf, 0x00]);
    }
    v.extend(vec![0xff; depth]);
    assert_eq!(decode(&leave_with_extra(&v)), Ok(leave("a")));
    // Unterminated nesting is an error, not a hang or overflow.
    assert!(decode(&leave_with_extra(&vec![0x9f; depth])).is_err());
    // Deep tags.
    let mut v = vec![0xc6; depth];
    v.push(0x00);
    assert_eq!(decode(&leave_with_extra(&v)), Ok(leave("a")));
}

#[test]
fn forged_lengths_do_not_allocate() {
    // Byte/text strings, arrays and maps claiming 2^64-1 elements, as an extra key and as fields
    // we read. Each must fail quickly (running out of input), not allocate.
    for header in [
        "5bffffffffffffffff",
        "7bffffffffffffffff",
        "9bffffffffffffffff",
        "bbffffffffffffffff",
    ] {
        assert!(decode(&leave_with_extra(&hex(header))).is_err(), "{header}");
        let mut f = hex("a2");
        f.extend(hex("6474797065646a6f696e")); // type: join
        f.extend(hex(
            "7819737570706f7274656450726f746f636f6c56657273696f6e73",
        ));
        f.extend(hex(header));
        assert!(decode(&f).is_err(), "{header}");
    }
    assert!(decode(&hex("bbffffffffffffffff")).is_err());
    assert!(decode(&hex("bb7fffffffffffffff6474797065")).is_err());
}

proptest! {
    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode(&bytes);
    }

    /// Random tails behind a map header reach the key/value paths much more often.
    #[test]
    fn random_maps_never_panic(
        header in prop::sample::select(vec![0xa1u8, 0xa3, 0xa6, 0xb9, 0xbf]),
        tail in proptest::collection::vec(any::<u8>(), 0..256),
    ) {
        let mut f = vec![header];
        if header == 0xb9 {
            f.extend([0x00, 0x05]);
        }
        f.extend(&tail);
        let _ = decode(&f);
    }

    /// Valid frames with random bytes spliced in at a random place.
    #[test]
    fn spliced_frames_never_panic(
        which in 0usize..18,
        at in any::<prop::sample::Index>(),
        junk in proptest::collection::vec(any::<u8>(), 0..16),
    ) {
        let samples = samples();
        let frame = encode(&samples[which % samples.len()]);
        let i = at.index(frame.len() + 1);
        let mut f = frame[..i].to_vec();
        f.extend(&junk);
        f.extend(&frame[i..]);
        let _ = decode(&f);
    }
}

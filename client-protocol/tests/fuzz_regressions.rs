//! Inputs the fuzz targets (`fuzz/`) once crashed on, kept as permanent tests: every file under
//! `tests/fuzz-regressions/<target>/` is replayed the way its target would (never a panic), and each
//! engine finding also has a scripted test that names what went wrong.
//!
//! The same files are copied into `fuzz/seeds/<target>/`, so every fuzz run starts from them too.

#![allow(clippy::unwrap_used)] // a panic is the failure report

mod common;

use std::hint::black_box;
use std::path::PathBuf;

use automerge::sync::{self, SyncDoc};
use automerge::transaction::Transactable;
use automerge::{ActorId, AutoCommit, ROOT};
use common::*;
use driftless_client_protocol::engine::{Input, close_code};
use driftless_client_protocol::sync_guard::{self, SyncGuardError};
use driftless_client_protocol::{Message, decode, encode};

fn inputs(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz-regressions")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .collect()
}

/// A document with history, like the `receive_sync` target's.
fn loaded_document() -> automerge::Automerge {
    let mut d = AutoCommit::new().with_actor(ActorId::from(vec![0xa1; 16]));
    for i in 0..8 {
        d.put(ROOT, format!("k{i}"), i as i64).unwrap();
        d.commit();
    }
    automerge::Automerge::load(&d.save()).unwrap()
}

#[test]
fn frame_decode_inputs_do_not_panic() {
    for (name, bytes) in inputs("frame_decode") {
        if let Ok(m) = black_box(decode(&bytes)) {
            assert_eq!(decode(&encode(&m)).unwrap(), m, "{name}");
        }
    }
}

/// As the engine handles a payload: decode, guard, then let Automerge have it.
#[test]
fn receive_sync_inputs_are_refused_or_handled_without_panic() {
    let base = loaded_document();
    for (_name, bytes) in inputs("receive_sync") {
        let Some((&mode, payload)) = bytes.split_first() else {
            continue;
        };
        let mut doc = base.clone();
        let mut state = if mode & 1 == 1 {
            sync::State::new_read_only()
        } else {
            sync::State::new()
        };
        if mode & 2 == 2 {
            black_box(doc.generate_sync_message(&mut state));
        }
        let Ok(message) = sync::Message::decode(payload) else {
            continue;
        };
        if sync_guard::check(&message).is_err() {
            continue;
        }
        let _ = black_box(doc.receive_sync_message(&mut state, message));
        black_box(doc.generate_sync_message(&mut state));
    }
}

/// Automerge 0.12 divides by zero on a bloom filter with entries and zero bits per entry: a single
/// `sync` frame from any peer would have panicked the engine thread. The engine now closes the
/// connection with 1007 instead.
#[test]
fn a_bloom_filter_without_bits_closes_the_sender_instead_of_panicking() {
    let payload = &inputs("receive_sync")
        .into_iter()
        .find(|(n, _)| n == "bloom-zero-bits-per-entry")
        .unwrap()
        .1[1..];
    let message = sync::Message::decode(payload).unwrap();
    assert_eq!(
        sync_guard::check(&message),
        Err(SyncGuardError::BloomWithoutBits)
    );

    let mut server = Server::new();
    let mut alice = Client::new("alice", 1);
    alice.connect(&mut server);
    alice.create(&doc_id(1), 1);
    run_to_quiescence(&mut server, &mut [&mut alice], &[doc_id(1)]);

    let mut mallory = Client::new("mallory", 2);
    mallory.connect(&mut server);
    server.frame(
        2,
        &Message::Sync {
            sender_id: "mallory".into(),
            target_id: SERVER.into(),
            document_id: doc_id(1),
            data: payload.to_vec(),
        },
    );
    assert_eq!(server.closed[&2].0, close_code::INVALID_PAYLOAD);
    // Everyone else carries on.
    alice.edit(&doc_id(1), "after", 1);
    run_to_quiescence(&mut server, &mut [&mut alice], &[doc_id(1)]);
    assert!(alice.get_i64(&doc_id(1), "after") == Some(1));
    assert!(!server.closed.contains_key(&1));
}

/// Probe counts size an allocation in Automerge; absurd ones are refused before it sees them.
#[test]
fn absurd_bloom_parameters_are_refused() {
    // have = [{ last_sync: [], bloom: entries 1, 10 bits each, u32::MAX probes, 2 bytes }]
    let mut bloom = vec![1, 10];
    bloom.extend([0xff, 0xff, 0xff, 0xff, 0x0f]);
    bloom.extend([0, 0]);
    // type 0x42, heads: [], need: [], one have with last_sync: [] and the filter, changes: []
    let mut bytes = vec![0x42, 0, 0, 1, 0];
    bytes.push(bloom.len() as u8);
    bytes.extend(&bloom);
    bytes.push(0);
    let message = sync::Message::decode(&bytes).unwrap();
    assert_eq!(
        sync_guard::check(&message),
        Err(SyncGuardError::TooManyProbes(u32::MAX))
    );
    // And a real client's message passes.
    let mut d = AutoCommit::new();
    d.put(ROOT, "a", 1).unwrap();
    let peer = loaded_document();
    let mut state = sync::State::new();
    let mut their = sync::State::new();
    let first = peer.generate_sync_message(&mut their).unwrap();
    d.sync().receive_sync_message(&mut state, first).unwrap();
    let reply = d.sync().generate_sync_message(&mut state).unwrap();
    assert!(!reply.have.is_empty());
    assert_eq!(sync_guard::check(&reply), Ok(()));
}

/// `engine_sequence` inputs need the fuzz harness to replay (`cargo fuzz run engine_sequence` does,
/// from fuzz/seeds); each has a scripted test here.
#[test]
fn engine_inputs_are_kept_for_the_fuzzer() {
    assert!(!inputs("engine_sequence").is_empty());
}

/// A connection that joined as one PeerId and then again as another kept the first mapping after
/// it closed: a stale entry per re-join (unbounded memory from one connection), caught by
/// `check_invariants` ("peer maps to a live connection") in `engine_sequence`.
#[test]
fn rejoining_under_another_peer_id_leaves_no_stale_peer_entry() {
    let mut server = Server::new();
    server.input(connected(1));
    for peer in ["p-0", "p-1", "p-2"] {
        let mut c = Client::new(peer, 1);
        c.conn = 1;
        server.frame(1, &c.join_message());
    }
    // An unsupported version closes the connection; Server::input runs check_invariants.
    server.frame(
        1,
        &Message::Join {
            sender_id: "p-3".into(),
            supported_protocol_versions: Some(vec!["2".into()]),
            peer_metadata: None,
        },
    );
    assert_eq!(server.closed[&1].0, close_code::PROTOCOL_ERROR);
    // The released PeerIds can join anew and nothing old is closed on their behalf.
    let mut p0 = Client::new("p-0", 2);
    p0.connect(&mut server);
    assert!(!server.closed.contains_key(&2));
    server.input(Input::Disconnected { conn: 2 });
    assert_eq!(server.engine.connection_count(), 0);
}

/// Writes the fuzz targets' seed corpora (real frames and sync messages) into `fuzz/seeds/`:
/// `cargo test -p driftless-client-protocol --test fuzz_regressions -- --ignored write_fuzz_seeds`.
/// The files are committed; rerun after a protocol change.
#[test]
#[ignore = "writes fuzz/seeds; run by hand"]
fn write_fuzz_seeds() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds");
    let write = |target: &str, name: &str, bytes: &[u8]| {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), bytes).unwrap();
    };
    // A real exchange: a client with history syncing with a server that has other history.
    let mut client = AutoCommit::new().with_actor(ActorId::from(vec![1; 16]));
    client.put(ROOT, "title", "hello").unwrap();
    client.commit();
    let mut server = loaded_document();
    let (mut cs, mut ss) = (sync::State::new(), sync::State::new());
    let mut sync_payloads = Vec::new();
    for _ in 0..4 {
        if let Some(m) = client.sync().generate_sync_message(&mut cs) {
            sync_payloads.push(m.clone().encode());
            server.receive_sync_message(&mut ss, m).unwrap();
        }
        if let Some(m) = server.generate_sync_message(&mut ss) {
            sync_payloads.push(m.clone().encode());
            client.sync().receive_sync_message(&mut cs, m).unwrap();
        }
    }
    for (i, payload) in sync_payloads.iter().enumerate() {
        for mode in [0u8, 2] {
            let mut bytes = vec![mode];
            bytes.extend(payload);
            write("receive_sync", &format!("exchange-{i}-mode-{mode}"), &bytes);
        }
    }

    let doc = doc_id(1);
    let peer = |s: &str| s.to_owned();
    let mut heads = std::collections::BTreeMap::new();
    heads.insert(
        peer("storage-1"),
        driftless_client_protocol::HeadsInfo {
            heads: vec![peer("3J8eYhhUCTzFqHx2RyfDF8zqRDsBkDyzCtsWCrrvJyyq")],
            timestamp: 1_700_000_000_000,
        },
    );
    let frames = [
        (
            "join",
            Message::Join {
                sender_id: peer("client"),
                supported_protocol_versions: Some(vec![peer("1")]),
                peer_metadata: Some(driftless_client_protocol::PeerMetadata {
                    storage_id: None,
                    is_ephemeral: true,
                }),
            },
        ),
        (
            "peer",
            Message::Peer {
                sender_id: peer("server"),
                target_id: peer("client"),
                selected_protocol_version: peer("1"),
                peer_metadata: Some(driftless_client_protocol::PeerMetadata {
                    storage_id: Some(peer("storage-1")),
                    is_ephemeral: false,
                }),
            },
        ),
        (
            "request",
            Message::Request {
                sender_id: peer("client"),
                target_id: peer("server"),
                document_id: doc.clone(),
                data: sync_payloads[0].clone(),
            },
        ),
        (
            "sync",
            Message::Sync {
                sender_id: peer("server"),
                target_id: peer("client"),
                document_id: doc.clone(),
                data: sync_payloads[1].clone(),
            },
        ),
        (
            "doc-unavailable",
            Message::DocUnavailable {
                sender_id: peer("server"),
                target_id: peer("client"),
                document_id: doc.clone(),
            },
        ),
        (
            "ephemeral",
            Message::Ephemeral {
                sender_id: peer("client"),
                target_id: peer("server"),
                document_id: doc.clone(),
                count: 3,
                session_id: peer("session"),
                data: vec![0xa1, 0x61, 0x78, 0x01],
            },
        ),
        (
            "error",
            Message::Error {
                message: peer("unsupported protocol version"),
                sender_id: Some(peer("server")),
                target_id: Some(peer("client")),
            },
        ),
        (
            "leave",
            Message::Leave {
                sender_id: peer("client"),
            },
        ),
        (
            "remote-subscription-change",
            Message::RemoteSubscriptionChange {
                sender_id: peer("client"),
                target_id: peer("server"),
                add: vec![peer("storage-1")],
                remove: vec![],
            },
        ),
        (
            "remote-heads-changed",
            Message::RemoteHeadsChanged {
                sender_id: peer("server"),
                target_id: peer("client"),
                document_id: doc.clone(),
                new_heads: heads,
            },
        ),
    ];
    for (name, message) in frames {
        write("frame_decode", name, &encode(&message));
    }
}

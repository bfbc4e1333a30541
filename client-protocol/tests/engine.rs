//! Script-style tests of the sans-IO engine: Alice creates, Bob finds, the disk is slow.

mod common;

use std::time::Duration;

use automerge::sync;
use common::*;
use driftless_client_protocol::engine::{Effect, Input, LoadResult, close_code};
use driftless_client_protocol::{Message, encode};

#[test]
fn handshake_answers_join_with_peer_and_storage_id() {
    let mut server = Server::new();
    let mut alice = Client::new("alice", 1);
    let effects = server.input(connected(1));
    assert!(
        effects.is_empty(),
        "nothing is sent before join: {effects:?}"
    );
    let answer = alice.connect(&mut server);
    assert_eq!(
        answer,
        vec![Message::Peer {
            sender_id: SERVER.into(),
            target_id: "alice".into(),
            selected_protocol_version: "1".into(),
            peer_metadata: Some(driftless_client_protocol::PeerMetadata {
                storage_id: Some(STORAGE.into()),
                is_ephemeral: false,
            }),
        }]
    );
}

#[test]
fn join_without_versions_is_version_one() {
    let mut server = Server::new();
    server.input(connected(1));
    server.frame(
        1,
        &Message::Join {
            sender_id: "old".into(),
            supported_protocol_versions: None,
            peer_metadata: None,
        },
    );
    assert!(matches!(server.take_outbox(1)[..], [Message::Peer { .. }]));
}

#[test]
fn unsupported_version_gets_error_then_close() {
    let mut server = Server::new();
    server.input(connected(1));
    let effects = server.frame(
        1,
        &Message::Join {
            sender_id: "future".into(),
            supported_protocol_versions: Some(vec!["2".into()]),
            peer_metadata: None,
        },
    );
    assert_eq!(effects.len(), 2);
    assert!(matches!(&effects[0], Effect::Send { conn: 1, .. }));
    match server.take_outbox(1).as_slice() {
        [
            Message::Error {
                message,
                target_id: Some(target),
                ..
            },
        ] => {
            assert_eq!(message, "unsupported protocol version");
            assert_eq!(target, "future");
        }
        other => panic!("expected one error, got {other:?}"),
    }
    assert_eq!(server.closed[&1].0, close_code::PROTOCOL_ERROR);
}

#[test]
fn messages_before_join_are_ignored() {
    let mut server = Server::new();
    let mut alice = Client::new("alice", 1);
    alice.create(&doc_id(1), 1);
    server.input(connected(1));
    let sync = alice.outgoing(&doc_id(1)).unwrap();
    let effects = server.frame(1, &sync);
    assert!(effects.is_empty(), "{effects:?}");
    assert!(server.loads.is_empty());
}

#[test]
fn undecodable_frame_closes_only_that_connection() {
    let mut server = Server::new();
    let mut alice = Client::new("alice", 1);
    let mut bob = Client::new("bob", 2);
    alice.connect(&mut server);
    bob.connect(&mut server);
    let effects = server.input(Input::FrameReceived {
        conn: 1,
        frame: vec![0xff, 0x00, 0x13],
    });
    assert!(
        matches!(&effects[..], [Effect::Close { conn: 1, reason }] if reason.code == close_code::INVALID_PAYLOAD && reason.reason.contains("connection 1"))
    );
    // Bob carries on.
    bob.create(&doc_id(2), 2);
    let m = bob.outgoing(&doc_id(2)).unwrap();
    server.frame(2, &m);
    assert_eq!(server.loads, vec![doc_id(2)]);
    assert_eq!(server.engine.connection_count(), 1);
}

#[test]
fn join_timeout_closes_silent_sockets() {
    let mut server = Server::new();
    let mut alice = Client::new("alice", 1);
    server.input(connected(2));
    alice.connect(&mut server);
    server.advance(Duration::from_secs(9));
    assert!(server.input(Input::Tick).is_empty());
    server.advance(Duration::from_secs(2));
    let effects = server.input(Input::Tick);
    assert!(
        matches!(&effects[..], [Effect::Close { conn: 2, reason }] if reason.code == close_code::POLICY_VIOLATION)
    );
    assert!(!server.closed.contains_key(&1), "joined connection stays");
}

#[test]
fn request_waits_for_storage_then_answers_unavailable() {
    let mut server = Server::new();
    let mut bob = Client::new("bob", 2);
    bob.connect(&mut server);
    bob.want(&doc_id(7), 2);
    let m = bob.outgoing(&doc_id(7)).unwrap();
    assert!(matches!(m, Message::Request { .. }));
    let effects = server.frame(2, &m);
    assert_eq!(effects, vec![Effect::Load { doc: doc_id(7) }]);
    assert!(
        server.take_outbox(2).is_empty(),
        "no answer before storage was checked"
    );
    server.answer_loads();
    assert_eq!(
        server.take_outbox(2),
        vec![Message::DocUnavailable {
            sender_id: SERVER.into(),
            target_id: "bob".into(),
            document_id: doc_id(7),
        }]
    );
}

#[test]
fn stored_document_is_served_to_a_fresh_client() {
    let mut server = Server::new();
    let mut alice = Client::new("alice", 1);
    alice.connect(&mut server);
    alice.create(&doc_id(1), 1);
    alice.edit(&doc_id(1), "n", 42);
    run_to_quiescence(&mut server, &mut [&mut alice], &[doc_id(1)]);
    assert!(server.disk.contains_key(&doc_id(1)));

    // A new engine over the same disk (a restart), and a client that has nothing.
    let mut server = server.restarted();
    let mut carol = Client::new("carol", 3);
    carol.connect(&mut server);
    carol.want(&doc_id(1), 3);
    run_to_quiescence(&mut server, &mut [&mut carol], &[doc_id(1)]);
    assert_eq!(carol.get_i64(&doc_id(1), "n"), Some(42));
    assert_eq!(carol.heads(&doc_id(1)), alice.heads(&doc_id(1)));
}

#[test]
fn nothing_is_acknowledged_before_the_write_is_durable() {
    let mut server = Server::new();
    let mut alice = Client::new("alice", 1);
    let mut bob = Client::new("bob", 2);
    alice.connect(&mut server);
    bob.connect(&mut server);
    alice.create(&doc_id(1), 1);
    bob.want(&doc_id(1), 2);
    run_to_quiescence(&mut server, &mut [&mut alice, &mut bob], &[doc_id(1)]);

    alice.edit(&doc_id(1), "n", 1);
    let change_heads = alice.heads(&doc_id(1));
    let m = alice.outgoing(&doc_id(1)).unwrap();
    let effects = server.frame(1, &m);
    assert!(
        effects.iter().all(|e| matches!(e, Effect::Persist { .. })),
        "only a persist before durability: {effects:?}"
    );
    assert_eq!(server.writes.len(), 1);
    // More traffic meanwhile: still no acknowledgement, no forwarding.
    if let Some(m) = bob.outgoing(&doc_id(1)) {
        server.frame(2, &m);
    }
    assert!(server.take_outbox(1).is_empty());
    assert!(server.take_outbox(2).is_empty());

    let (write, doc, op) = server.writes.remove(0);
    server.store(&doc, op);
    server.input(Input::WriteDurable { write });
    // Now Alice hears heads that include her change, and Bob receives it.
    let to_alice = server.take_outbox(1);
    let acked = to_alice.iter().any(|m| match m {
        Message::Sync { data, .. } => {
            let mut heads = sync::Message::decode(data).unwrap().heads;
            heads.sort();
            heads == change_heads
        }
        _ => false,
    });
    assert!(acked, "alice's reply acknowledges her change: {to_alice:?}");
    for m in server.take_outbox(2) {
        bob.receive(&m);
    }
    run_to_quiescence(&mut server, &mut [&mut alice, &mut bob], &[doc_id(1)]);
    assert_eq!(bob.get_i64(&doc_id(1), "n"), Some(1));
}

#[test]
fn failed_write_acknowledges_nothing_and_closes_the_writers() {
    let mut server = Server::new();
    let mut alice = Client::new("alice", 1);
    alice.connect(&mut server);
    alice.create(&doc_id(1), 1);
    let m = alice.outgoing(&doc_id(1)).unwrap();
    server.frame(1, &m);
    server.answer_loads();
    // The first message only carries heads; the server asks for the changes.
    for m in server.take_outbox(1) {
        alice.receive(&m);
    }
    let m = alice.outgoing(&doc_id(1)).unwrap();
    server.frame(1, &m);
    let (write, _, _) = server.writes.remove(0);
    let effects = server.input(Input::WriteFailed {
        write,
        error: "disk full".into(),
    });
    assert!(
        matches!(&effects[..], [Effect::Close { conn: 1, reason }] if reason.code == close_code::INTERNAL_ERROR && reason.reason.contains("disk full"))
    );
    assert!(server.take_outbox(1).is_empty());
    assert_eq!(server.engine.resident_document_count(), 0);
    // The next request goes back to storage.
    let mut bob = Client::new("bob", 2);
    bob.connect(&mut server);
    bob.want(&doc_id(1), 2);
    let m = bob.outgoing(&doc_id(1)).unwrap();
    server.frame(2, &m);
    assert_eq!(server.loads, vec![doc_id(1)]);
}

#[test]
fn late_arrival_reaches_the_earlier_requester() {
    let mut server = Server::new();
    let mut alice = Client::new("alice", 1);
    let mut bob = Client::new("bob", 2);
    alice.connect(&mut server);
    bob.connect(&mut server);
    bob.want(&doc_id(5), 2);
    let m = bob.outgoing(&doc_id(5)).unwrap();
    server.frame(2, &m);
    server.answer_loads();
    assert!(matches!(
        server.take_outbox(2)[..],
        [Message::DocUnavailable { .. }]
    ));

    alice.create(&doc_id(5), 1);
    alice.edit(&doc_id(5), "late", 7);
    // Bob does not ask again: the server must push to him once the document exists.
    run_to_quiescence(&mut server, &mut [&mut alice], &[doc_id(5)]);
    let to_bob = server.take_outbox(2);
    assert!(!to_bob.is_empty(), "bob is told about the document");
    for m in to_bob {
        bob.receive(&m);
    }
    run_to_quiescence(&mut server, &mut [&mut alice, &mut bob], &[doc_id(5)]);
    assert_eq!(bob.get_i64(&doc_id(5), "late"), Some(7));
}

#[test]
fn ephemeral_is_relayed_to_other_peers_once() {
    let mut server = Server::new();
    let mut alice = Client::new("alice", 1);
    let mut bob = Client::new("bob", 2);
    let mut carol = Client::new("carol", 3);
    for c in [&mut alice, &mut bob, &mut carol] {
        c.connect(&mut server);
    }
    alice.create(&doc_id(1), 1);
    bob.want(&doc_id(1), 2);
    carol.want(&doc_id(1), 3);
    run_to_quiescence(
        &mut server,
        &mut [&mut alice, &mut bob, &mut carol],
        &[doc_id(1)],
    );
    let eph = |count| Message::Ephemeral {
        sender_id: "alice".into(),
        target_id: SERVER.into(),
        document_id: doc_id(1),
        count,
        session_id: "s1".into(),
        data: vec![1, 2, 3],
    };
    server.frame(1, &eph(1));
    for (conn, name) in [(2, "bob"), (3, "carol")] {
        assert_eq!(
            server.take_outbox(conn),
            vec![Message::Ephemeral {
                sender_id: "alice".into(),
                target_id: name.into(),
                document_id: doc_id(1),
                count: 1,
                session_id: "s1".into(),
                data: vec![1, 2, 3],
            }]
        );
    }
    assert!(
        server.take_outbox(1).is_empty(),
        "never echoed to the sender"
    );
    // A duplicate (same sender, session, count) is dropped; a newer count goes through.
    assert!(server.frame(1, &eph(1)).is_empty());
    server.frame(1, &eph(2));
    assert_eq!(server.take_outbox(2).len(), 1);
    // Never persisted.
    assert!(server.writes.is_empty());
}

#[test]
fn changes_arriving_during_a_write_are_applied_in_one_batch() {
    let mut server = Server::new();
    let mut alice = Client::new("alice", 1);
    let mut bob = Client::new("bob", 2);
    alice.connect(&mut server);
    bob.connect(&mut server);
    alice.create(&doc_id(1), 1);
    bob.want(&doc_id(1), 2);
    run_to_quiescence(&mut server, &mut [&mut alice, &mut bob], &[doc_id(1)]);

    alice.edit(&doc_id(1), "a", 1);
    let m = alice.outgoing(&doc_id(1)).unwrap();
    server.frame(1, &m);
    assert_eq!(server.writes.len(), 1, "first write in flight");
    // While it is in flight, both send more changes.
    alice.edit(&doc_id(1), "a2", 2);
    bob.edit(&doc_id(1), "b", 3);
    // Bob's state still thinks the server needs his heads; alice's in-flight flag blocks her, so reset.
    let m = bob.outgoing(&doc_id(1)).unwrap();
    server.frame(2, &m);
    assert_eq!(
        server.writes.len(),
        1,
        "nothing applied while a write is in flight"
    );
    let (write, doc, op) = server.writes.remove(0);
    server.store(&doc, op);
    server.input(Input::WriteDurable { write });
    assert_eq!(server.writes.len(), 1, "the queued change is one new write");
    run_to_quiescence(&mut server, &mut [&mut alice, &mut bob], &[doc_id(1)]);
    let stored = server.stored_doc(&doc_id(1)).unwrap();
    assert_eq!(sorted_heads(&stored), alice.heads(&doc_id(1)));
    assert_eq!(alice.heads(&doc_id(1)), bob.heads(&doc_id(1)));
    assert_eq!(json_of(&stored), alice.json(&doc_id(1)));
}

#[test]
fn several_documents_of_one_peer_each_get_a_persist() {
    let mut server = Server::new();
    let mut alice = Client::new("alice", 1);
    alice.connect(&mut server);
    let ids: Vec<_> = (1..=5).map(doc_id).collect();
    for id in &ids {
        alice.create(id, 1);
    }
    run_to_quiescence(&mut server, &mut [&mut alice], &ids);
    for id in &ids {
        let stored = server.stored_doc(id).expect("stored");
        assert_eq!(sorted_heads(&stored), alice.heads(id));
    }
}

#[test]
fn compaction_snapshots_after_the_threshold() {
    let mut config = driftless_client_protocol::engine::EngineConfig::new(SERVER, STORAGE);
    config.compact_after_chunks = 3;
    let mut server = Server::with_config(config);
    let mut alice = Client::new("alice", 1);
    alice.connect(&mut server);
    alice.create(&doc_id(1), 1);
    for i in 0..10 {
        alice.edit(&doc_id(1), "n", i);
        run_to_quiescence(&mut server, &mut [&mut alice], &[doc_id(1)]);
        assert!(server.disk[&doc_id(1)].len() <= 3, "chunks stay bounded");
    }
    let stored = server.stored_doc(&doc_id(1)).unwrap();
    assert_eq!(sorted_heads(&stored), alice.heads(&doc_id(1)));
}

#[test]
fn newest_connection_of_a_peer_wins() {
    let mut server = Server::new();
    let mut first = Client::new("alice", 1);
    let mut second = Client::new("alice", 2);
    first.connect(&mut server);
    let answer = second.connect(&mut server);
    assert!(matches!(answer[..], [Message::Peer { .. }]));
    assert_eq!(server.closed[&1].0, close_code::NORMAL);
    assert_eq!(server.engine.connection_count(), 1);
}

#[test]
fn unknown_and_gossip_messages_are_ignored() {
    let mut server = Server::new();
    let mut alice = Client::new("alice", 1);
    alice.connect(&mut server);
    for m in [
        Message::Unknown {
            message_type: "future-thing".into(),
        },
        Message::RemoteSubscriptionChange {
            sender_id: "alice".into(),
            target_id: SERVER.into(),
            add: vec!["x".into()],
            remove: vec![],
        },
        Message::DocUnavailable {
            sender_id: "alice".into(),
            target_id: SERVER.into(),
            document_id: doc_id(1),
        },
    ] {
        assert!(server.frame(1, &m).is_empty());
    }
    assert_eq!(server.engine.connection_count(), 1);
}

#[test]
fn a_broken_sync_payload_closes_with_the_document_id() {
    let mut server = Server::new();
    let mut alice = Client::new("alice", 1);
    alice.connect(&mut server);
    let effects = server.input(Input::FrameReceived {
        conn: 1,
        frame: encode(&Message::Sync {
            sender_id: "alice".into(),
            target_id: SERVER.into(),
            document_id: doc_id(9),
            data: vec![0x42, 0xff, 0xff],
        }),
    });
    match &effects[..] {
        [Effect::Close { conn: 1, reason }] => {
            assert_eq!(reason.code, close_code::INVALID_PAYLOAD);
            assert!(reason.reason.contains(&doc_id(9).to_string()));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn failed_load_is_unavailable_and_never_written() {
    let mut server = Server::new();
    let mut alice = Client::new("alice", 1);
    alice.connect(&mut server);
    alice.create(&doc_id(1), 1);
    let m = alice.outgoing(&doc_id(1)).unwrap();
    server.frame(1, &m);
    server.loads.clear();
    server.input(Input::StorageLoaded {
        doc: doc_id(1),
        result: LoadResult::Failed("corrupt".into()),
    });
    assert!(matches!(
        server.take_outbox(1)[..],
        [Message::DocUnavailable { .. }]
    ));
    assert!(server.writes.is_empty());
}

#[test]
fn idle_documents_are_evicted_and_reloaded() {
    let mut server = Server::new();
    let mut alice = Client::new("alice", 1);
    alice.connect(&mut server);
    alice.create(&doc_id(1), 1);
    run_to_quiescence(&mut server, &mut [&mut alice], &[doc_id(1)]);
    assert_eq!(server.engine.resident_document_count(), 1);
    server.input(Input::Disconnected { conn: 1 });
    server.advance(Duration::from_secs(301));
    server.input(Input::Tick);
    assert_eq!(server.engine.resident_document_count(), 0);
    let mut bob = Client::new("bob", 2);
    bob.connect(&mut server);
    bob.want(&doc_id(1), 2);
    run_to_quiescence(&mut server, &mut [&mut bob], &[doc_id(1)]);
    assert_eq!(bob.heads(&doc_id(1)), alice.heads(&doc_id(1)));
}

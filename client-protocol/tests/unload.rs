//! Quiet documents leave memory even while connections have them open (issue #9, S6): the
//! connections keep their sync states, the next message reloads the document from storage, and
//! nothing is lost or re-sent in full.

mod common;

use std::time::Duration;

use automerge::transaction::Transactable;
use automerge::{ROOT, ReadDoc};
use common::*;
use driftless_client_protocol::engine::{EngineConfig, Input};

fn small_and_large_config() -> EngineConfig {
    EngineConfig {
        idle_evict: Duration::from_secs(300),
        small_idle_evict: Duration::from_secs(2),
        small_doc_ops: 1000,
        ..EngineConfig::new(SERVER, STORAGE)
    }
}

fn tick_after(server: &mut Server, by: Duration) {
    server.advance(by);
    server.input(Input::Tick);
}

#[test]
fn a_quiet_open_document_is_unloaded_and_reloaded_by_the_next_change() {
    let mut server = Server::with_config(small_and_large_config());
    let (d, mut alice, mut bob) = (doc_id(1), Client::new("alice", 1), Client::new("bob", 2));
    alice.connect(&mut server);
    bob.connect(&mut server);
    alice.create(&d, 1);
    bob.want(&d, 2);
    run_to_quiescence(
        &mut server,
        &mut [&mut alice, &mut bob],
        std::slice::from_ref(&d),
    );
    assert_eq!(bob.heads(&d), alice.heads(&d));
    assert_eq!(server.engine.resident_document_count(), 1);

    // Quiet for less than the small-document timeout: stays.
    tick_after(&mut server, Duration::from_secs(1));
    assert_eq!(server.engine.resident_document_count(), 1);
    // Quiet for longer: unloaded, though both connections still have it open.
    tick_after(&mut server, Duration::from_secs(2));
    assert_eq!(server.engine.resident_document_count(), 0);
    assert!(server.engine.document(&d).is_none());
    assert!(server.closed.is_empty(), "no connection is closed");
    assert!(server.loads.is_empty());

    // Alice edits: the document is loaded again and Bob, who only has it open, gets the edit.
    alice.edit(&d, "count", 7);
    let message = alice.outgoing(&d).expect("alice has a change to send");
    server.frame(alice.conn, &message);
    assert_eq!(server.loads, vec![d.clone()], "the next message reloads it");
    run_to_quiescence(
        &mut server,
        &mut [&mut alice, &mut bob],
        std::slice::from_ref(&d),
    );
    assert_eq!(bob.get_i64(&d, "count"), Some(7));
    assert_eq!(bob.heads(&d), alice.heads(&d));
    assert_eq!(server.engine.resident_document_count(), 1);
    let stored = server.stored_doc(&d).expect("stored");
    assert_eq!(sorted_heads(&stored), alice.heads(&d));
}

#[test]
fn an_up_to_date_peer_costs_no_changes_after_a_reload() {
    // The kept sync state knows what the peer holds: after the reload, a peer that only says
    // "I still have the same heads" is not sent the document again.
    let mut server = Server::with_config(small_and_large_config());
    let (d, mut alice) = (doc_id(2), Client::new("alice", 1));
    alice.connect(&mut server);
    alice.create(&d, 1);
    run_to_quiescence(&mut server, &mut [&mut alice], std::slice::from_ref(&d));
    tick_after(&mut server, Duration::from_secs(3));
    assert_eq!(server.engine.resident_document_count(), 0);
    // A client's fresh sync message for the same heads (as after a reconnect of its sync state).
    alice.docs.get_mut(&d).expect("doc").1 = automerge::sync::State::new();
    let message = alice.outgoing(&d).expect("a fresh state always says hello");
    server.frame(alice.conn, &message);
    server.answer_loads();
    for m in server.take_outbox(alice.conn) {
        if let driftless_client_protocol::Message::Sync { data, .. } = &m {
            let sync = automerge::sync::Message::decode(data).expect("decodes");
            assert!(
                sync.changes.is_empty(),
                "no changes re-sent to an up-to-date peer"
            );
        }
        alice.receive(&m);
    }
}

#[test]
fn nothing_is_unloaded_while_a_write_is_in_flight() {
    let mut server = Server::with_config(small_and_large_config());
    let (d, mut alice) = (doc_id(3), Client::new("alice", 1));
    alice.connect(&mut server);
    alice.create(&d, 1);
    // Deliver messages both ways until the server has a write in flight, and stop there.
    for _ in 0..10 {
        if !server.writes.is_empty() {
            break;
        }
        if let Some(message) = alice.outgoing(&d) {
            server.frame(alice.conn, &message);
        }
        server.answer_loads();
        for m in server.take_outbox(alice.conn) {
            alice.receive(&m);
        }
    }
    assert!(!server.writes.is_empty(), "a write is in flight");
    tick_after(&mut server, Duration::from_secs(10));
    assert_eq!(server.engine.resident_document_count(), 1);
    server.make_durable();
    run_to_quiescence(&mut server, &mut [&mut alice], std::slice::from_ref(&d));
    tick_after(&mut server, Duration::from_secs(10));
    assert_eq!(server.engine.resident_document_count(), 0);
}

#[test]
fn a_large_document_stays_until_the_longer_timeout() {
    let mut server = Server::with_config(small_and_large_config());
    let (d, mut alice) = (doc_id(4), Client::new("alice", 1));
    alice.connect(&mut server);
    alice.create(&d, 1);
    // 12,000 characters: 12,000 operations, far over the small-document limit.
    let (doc, _) = alice.docs.get_mut(&d).expect("doc");
    let text = doc
        .put_object(ROOT, "body", automerge::ObjType::Text)
        .expect("text");
    let noise: String = (0..12_000u32)
        .map(|i| char::from(b'a' + (i.wrapping_mul(2_654_435_761) >> 27) as u8 % 26))
        .collect();
    doc.splice_text(&text, 0, 0, &noise).expect("splice");
    run_to_quiescence(&mut server, &mut [&mut alice], std::slice::from_ref(&d));
    tick_after(&mut server, Duration::from_secs(10));
    assert_eq!(server.engine.resident_document_count(), 1, "large: stays");
    tick_after(&mut server, Duration::from_secs(300));
    assert_eq!(server.engine.resident_document_count(), 0);
    let (doc, _) = alice.docs.get_mut(&d).expect("doc");
    assert_eq!(doc.length(&text), 12_000);
}

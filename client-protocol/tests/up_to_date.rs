//! `engine::receive_up_to_date` (the fast path for a peer acknowledging our heads) leaves a sync
//! state exactly as automerge's `receive_sync_message` does, and declines everything else.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use automerge::sync::{self, SyncDoc};
use automerge::transaction::Transactable;
use automerge::{ActorId, Automerge, ROOT};
use driftless_client_protocol::engine::receive_up_to_date;

fn doc(actor: u8, edits: usize) -> Automerge {
    let mut d = Automerge::new().with_actor(ActorId::from(vec![actor; 16]));
    for i in 0..edits {
        let mut tx = d.transaction();
        tx.put(ROOT, format!("k{}", i % 7), i as i64).unwrap();
        tx.commit();
    }
    d
}

/// Syncs `server` and `peer` to quiescence; returns the last message the peer would send.
fn sync_pair(
    server: &mut Automerge,
    s_state: &mut sync::State,
    peer: &mut Automerge,
    p_state: &mut sync::State,
) {
    for _ in 0..20 {
        let mut moved = false;
        if let Some(m) = server.generate_sync_message(s_state) {
            peer.receive_sync_message(p_state, m).unwrap();
            moved = true;
        }
        if let Some(m) = peer.generate_sync_message(p_state) {
            server.receive_sync_message(s_state, m).unwrap();
            moved = true;
        }
        if !moved {
            return;
        }
    }
    panic!("no quiescence");
}

#[test]
fn an_acknowledgement_leaves_the_state_as_automerge_would() {
    for (edits, extra) in [(1, 1), (30, 3), (200, 1)] {
        let mut server = doc(1, edits);
        let mut peer = Automerge::new();
        let (mut s_state, mut p_state) = (sync::State::new(), sync::State::new());
        sync_pair(&mut server, &mut s_state, &mut peer, &mut p_state);
        // New changes on the server, sent to the peer; the peer's answer acknowledges them.
        for i in 0..extra {
            let mut tx = server.transaction();
            tx.put(ROOT, "x", i as i64).unwrap();
            tx.commit();
        }
        let to_peer = server
            .generate_sync_message(&mut s_state)
            .expect("changes to send");
        peer.receive_sync_message(&mut p_state, to_peer).unwrap();
        let ack = peer
            .generate_sync_message(&mut p_state)
            .expect("an acknowledgement");
        assert_eq!(ack.heads, server.get_heads());
        let mut slow = s_state.clone();
        server.receive_sync_message(&mut slow, ack.clone()).unwrap();
        let mut fast = s_state.clone();
        assert!(receive_up_to_date(&server, &mut fast, ack).is_ok());
        assert_eq!(fast, slow, "{edits} edits, {extra} new");
        // And the next step behaves the same: nothing to say.
        assert_eq!(
            server.generate_sync_message(&mut fast).map(|m| m.encode()),
            server.generate_sync_message(&mut slow).map(|m| m.encode())
        );
    }
}

#[test]
fn anything_else_is_declined_untouched() {
    let server = doc(1, 5);
    let other = doc(2, 3);
    let mut state = sync::State::new();
    let before = state.clone();
    // Other heads.
    let mut o_state = sync::State::new();
    let m = other.generate_sync_message(&mut o_state).unwrap();
    let back = receive_up_to_date(&server, &mut state, m.clone()).unwrap_err();
    assert_eq!(back.encode(), m.clone().encode());
    // Our heads but with changes attached.
    let mut with_changes = m;
    with_changes.heads = server.get_heads();
    with_changes.changes = sync::ChunkList::from(vec![server.save()]);
    assert!(receive_up_to_date(&server, &mut state, with_changes).is_err());
    // An empty document's empty heads.
    let empty = Automerge::new();
    let mut e_state = sync::State::new();
    let m = empty.generate_sync_message(&mut e_state).unwrap();
    assert!(receive_up_to_date(&Automerge::new(), &mut state, m).is_err());
    assert_eq!(state, before);
}

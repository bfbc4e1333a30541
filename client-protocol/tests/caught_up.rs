//! `engine::peer_is_caught_up`, the engine's shortcut past `generate_sync_message`: whenever it
//! says "caught up", automerge itself would have had nothing to send, and it does say so once a
//! peer has acknowledged our heads (the state after every reader's acknowledgement in a fan-out).
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use automerge::sync::{self, SyncDoc as _};
use automerge::transaction::Transactable as _;
use automerge::{ActorId, Automerge, AutomergeError, ROOT};
use driftless_client_protocol::engine::peer_is_caught_up;

fn edit(doc: &mut Automerge, key: &str, value: i64) {
    doc.transact::<_, _, AutomergeError>(|tx| {
        tx.put(ROOT, key, value)?;
        Ok(())
    })
    .unwrap();
}

/// Checks the shortcut against automerge on a clone of the state, then generates for real.
fn generate(doc: &Automerge, state: &mut sync::State) -> Option<sync::Message> {
    if peer_is_caught_up(doc, &doc.get_heads(), state) {
        let mut copy = state.clone();
        assert!(
            doc.generate_sync_message(&mut copy).is_none(),
            "shortcut said caught up, automerge had something to send"
        );
        assert_eq!(
            copy, *state,
            "automerge's None must leave the state as it was"
        );
    }
    doc.generate_sync_message(state)
}

/// Syncs server <-> client until quiet; returns whether the server ended with the client caught up.
fn sync_until_quiet(server: &Automerge, client: &mut Automerge) -> (sync::State, sync::State) {
    let (mut s, mut c) = (sync::State::new(), sync::State::new());
    for _ in 0..20 {
        let a = generate(server, &mut s);
        let b = client.generate_sync_message(&mut c);
        if a.is_none() && b.is_none() {
            break;
        }
        if let Some(m) = a {
            client.receive_sync_message(&mut c, m).unwrap();
        }
        if let Some(m) = b {
            // The server side is read-only here: its document is not changed by the client.
            let mut scratch = server.clone();
            scratch.receive_sync_message(&mut s, m).unwrap();
        }
    }
    (s, c)
}

#[test]
fn an_acknowledging_reader_is_caught_up_and_automerge_agrees() {
    let mut server = Automerge::new().with_actor(ActorId::from(&[1u8; 16][..]));
    edit(&mut server, "a", 1);
    let mut reader = Automerge::new();
    let (mut s, mut c) = sync_until_quiet(&server, &mut reader);
    assert_eq!(reader.get_heads(), server.get_heads());
    assert!(peer_is_caught_up(&server, &server.get_heads(), &s));

    // A new change: not caught up any more; the fan-out message goes out, the reader acknowledges.
    for i in 0..5 {
        edit(&mut server, "a", i + 2);
        assert!(!peer_is_caught_up(&server, &server.get_heads(), &s));
        let m = generate(&server, &mut s).expect("the change must be sent");
        // Sent but not yet acknowledged: still not caught up (their heads are the old ones).
        assert!(!peer_is_caught_up(&server, &server.get_heads(), &s));
        reader.receive_sync_message(&mut c, m).unwrap();
        let ack = reader
            .generate_sync_message(&mut c)
            .expect("reader acknowledges");
        server.receive_sync_message(&mut s, ack).unwrap();
        assert!(peer_is_caught_up(&server, &server.get_heads(), &s));
        assert!(generate(&server, &mut s).is_none());
    }
}

#[test]
fn a_fresh_or_diverged_peer_is_not_caught_up() {
    let mut server = Automerge::new().with_actor(ActorId::from(&[1u8; 16][..]));
    edit(&mut server, "a", 1);
    assert!(!peer_is_caught_up(
        &server,
        &server.get_heads(),
        &sync::State::new()
    ));
    assert!(!peer_is_caught_up(
        &Automerge::new(),
        &[],
        &sync::State::new()
    ));

    // A peer with a change of its own: its heads differ from ours.
    let mut peer = Automerge::new().with_actor(ActorId::from(&[2u8; 16][..]));
    edit(&mut peer, "b", 1);
    let mut s = sync::State::new();
    let mut p = sync::State::new();
    let hello = peer.generate_sync_message(&mut p).unwrap();
    server.receive_sync_message(&mut s, hello).unwrap();
    assert!(!peer_is_caught_up(&server, &server.get_heads(), &s));
    assert!(generate(&server, &mut s).is_some());
}

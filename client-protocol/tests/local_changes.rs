//! Local changes: what a provider bridge writes into a document goes through the same pipeline as
//! a peer's changes (batched, persisted, forwarded only once durable) and is answered once durable.

mod common;

use automerge::transaction::Transactable;
use automerge::{ActorId, AutoCommit, ROOT};
use common::*;
use driftless_client_protocol::engine::{Access, DEFAULT_WORKSPACE, Input, Role};

fn bridge_change(title: &str) -> (AutoCommit, Vec<u8>) {
    let mut d = AutoCommit::new().with_actor(ActorId::from(vec![0xb1; 16]));
    d.put(ROOT, "title", title).expect("put");
    let bytes = d.save_incremental();
    (d, bytes)
}

#[test]
fn a_local_change_creates_the_document_and_is_answered_once_durable() {
    let mut server = Server::new();
    let (mut bridge_doc, bytes) = bridge_change("from the provider");
    server.input(Input::LocalChange {
        doc: doc_id(1),
        workspace: DEFAULT_WORKSPACE.into(),
        changes: bytes,
        token: 7,
    });
    server.answer_loads();
    assert_eq!(server.writes.len(), 1, "persisted");
    assert!(server.local_done.is_empty(), "not answered before durable");
    server.make_durable();
    let mut expected = bridge_doc.get_heads();
    expected.sort();
    match &server.local_done[..] {
        [(7, Ok(heads))] => {
            let mut heads = heads.clone();
            heads.sort();
            assert_eq!(heads, expected);
        }
        other => panic!("{other:?}"),
    }
    // An app client finds what the bridge wrote.
    let mut app = Client::new("app", 1);
    app.connect(&mut server);
    app.want(&doc_id(1), 2);
    run_to_quiescence(&mut server, &mut [&mut app], &[doc_id(1)]);
    assert_eq!(app.heads(&doc_id(1)), expected);
}

#[test]
fn a_local_change_reaches_open_peers_only_after_it_is_durable() {
    let mut server = Server::new();
    let mut app = Client::new("app", 1);
    app.connect(&mut server);
    app.create(&doc_id(1), 1);
    run_to_quiescence(&mut server, &mut [&mut app], &[doc_id(1)]);

    // The bridge edits a fork of the stored document.
    let stored = server.stored_doc(&doc_id(1)).unwrap();
    let mut fork = AutoCommit::load(&stored.save())
        .unwrap()
        .with_actor(ActorId::from(vec![0xb1; 16]));
    let before = fork.get_heads();
    fork.put(ROOT, "location", "Room 4").unwrap();
    let changes = fork.save_after(&before);
    server.input(Input::LocalChange {
        doc: doc_id(1),
        workspace: DEFAULT_WORKSPACE.into(),
        changes,
        token: 1,
    });
    assert!(
        server.take_outbox(1).is_empty(),
        "nothing forwarded before durable"
    );
    server.make_durable();
    assert!(matches!(server.local_done[..], [(1, Ok(_))]));
    for m in server.take_outbox(1) {
        app.receive(&m);
    }
    run_to_quiescence(&mut server, &mut [&mut app], &[doc_id(1)]);
    assert_eq!(app.json(&doc_id(1))["location"], "Room 4");
}

#[test]
fn a_repeated_local_change_is_answered_at_once() {
    let mut server = Server::new();
    let (_, bytes) = bridge_change("x");
    for token in [1, 2] {
        server.input(Input::LocalChange {
            doc: doc_id(1),
            workspace: DEFAULT_WORKSPACE.into(),
            changes: bytes.clone(),
            token,
        });
        server.answer_loads();
        server.make_durable();
    }
    assert_eq!(server.disk[&doc_id(1)].len(), 1, "stored once");
    assert!(matches!(server.local_done[..], [(1, Ok(_)), (2, Ok(_))]));
}

#[test]
fn a_local_change_for_another_workspace_is_refused() {
    let mut server = Server::new();
    let mut app = Client::new("app", 1);
    app.connect_with(&mut server, Access::new("acme", Role::Write));
    app.create(&doc_id(1), 1);
    run_to_quiescence(&mut server, &mut [&mut app], &[doc_id(1)]);
    let (_, bytes) = bridge_change("intruder");
    server.input(Input::LocalChange {
        doc: doc_id(1),
        workspace: "other".into(),
        changes: bytes,
        token: 3,
    });
    assert!(server.writes.is_empty());
    assert!(matches!(&server.local_done[..], [(3, Err(e))] if e.contains("another workspace")));
}

#[test]
fn a_failed_write_fails_the_local_change() {
    let mut server = Server::new();
    let (_, bytes) = bridge_change("x");
    server.input(Input::LocalChange {
        doc: doc_id(1),
        workspace: DEFAULT_WORKSPACE.into(),
        changes: bytes,
        token: 9,
    });
    server.answer_loads();
    let (write, _, _) = server.writes.remove(0);
    server.input(Input::WriteFailed {
        write,
        error: "disk full".into(),
    });
    assert!(matches!(&server.local_done[..], [(9, Err(e))] if e.contains("disk full")));
}

#[test]
fn broken_local_changes_are_refused_without_harm() {
    let mut server = Server::new();
    server.input(Input::LocalChange {
        doc: doc_id(1),
        workspace: DEFAULT_WORKSPACE.into(),
        changes: vec![0x85, 0x6f, 0x4a, 0x83, 1, 2, 3],
        token: 4,
    });
    server.answer_loads();
    assert!(matches!(&server.local_done[..], [(4, Err(_))]));
    assert!(server.writes.is_empty());
}

//! Script-style tests of the engine's authorization rules: workspaces, document-scoped tokens,
//! read-only peers, ticket binding and the per-document size quota.

#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure report

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use driftless_client_protocol::engine::{
    Access, Effect, EngineConfig, Input, Refusal, Role, TicketGrant, close_code,
};
use driftless_client_protocol::{DocumentId, Message};

fn writer(workspace: &str) -> Access {
    Access::new(workspace, Role::Write)
}

fn reader(workspace: &str) -> Access {
    Access::new(workspace, Role::Read)
}

fn scoped(workspace: &str, docs: &[DocumentId]) -> Access {
    Access {
        docs: Some(docs.iter().cloned().collect::<HashSet<_>>()),
        ..writer(workspace)
    }
}

fn unavailable(to: &str, doc: &DocumentId) -> Message {
    Message::DocUnavailable {
        sender_id: SERVER.into(),
        target_id: to.into(),
        document_id: doc.clone(),
    }
}

/// No message carries document bytes.
fn no_document_bytes(messages: &[Message]) -> bool {
    messages.iter().all(|m| match m {
        Message::Sync { data, .. } => automerge::sync::Message::decode(data)
            .map(|m| m.changes.is_empty())
            .unwrap_or(false),
        _ => true,
    })
}

/// A `sync` from `client` that carries its changes for `doc`, produced against a peer that lacks
/// them (as a client would send to a server that asks for them).
fn message_with_changes(client: &mut Client, doc: &DocumentId) -> Message {
    use automerge::sync::SyncDoc;
    let (d, _) = client.docs.get_mut(doc).unwrap();
    let mut theirs = automerge::AutoCommit::new();
    let (mut ours_state, mut their_state) =
        (automerge::sync::State::new(), automerge::sync::State::new());
    for _ in 0..10 {
        let m = d.sync().generate_sync_message(&mut ours_state).unwrap();
        if !m.changes.is_empty() {
            return Message::Sync {
                sender_id: client.peer_id.clone(),
                target_id: SERVER.into(),
                document_id: doc.clone(),
                data: m.encode(),
            };
        }
        theirs
            .sync()
            .receive_sync_message(&mut their_state, m)
            .unwrap();
        if let Some(reply) = theirs.sync().generate_sync_message(&mut their_state) {
            d.sync()
                .receive_sync_message(&mut ours_state, reply)
                .unwrap();
        }
    }
    panic!("no message with changes");
}

/// Alice (workspace `a`) creates document 1 with `secret = 1` and it is stored.
fn alice_with_document(server: &mut Server) -> Client {
    let mut alice = Client::new("alice", 1);
    alice.connect_with(server, writer("a"));
    alice.create(&doc_id(1), 1);
    alice.edit(&doc_id(1), "secret", 1);
    run_to_quiescence(server, &mut [&mut alice], &[doc_id(1)]);
    assert_eq!(server.workspaces[&doc_id(1)], "a");
    alice
}

#[test]
fn another_workspaces_document_answers_like_a_never_seen_id() {
    let mut server = Server::new();
    let _alice = alice_with_document(&mut server);
    // Evict it, so the request goes through storage like any cold document.
    server.input(Input::Disconnected { conn: 1 });
    server.advance(Duration::from_secs(301));
    server.input(Input::Tick);

    let mut eve = Client::new("eve", 2);
    eve.connect_with(&mut server, writer("b"));
    let mut answers = Vec::new();
    for doc in [doc_id(1), doc_id(2)] {
        eve.want(&doc, 2);
        let m = eve.outgoing(&doc).unwrap();
        server.frame(2, &m);
        server.answer_loads();
        answers.push(server.take_outbox(2));
    }
    assert_eq!(answers[0], vec![unavailable("eve", &doc_id(1))]);
    assert_eq!(answers[1], vec![unavailable("eve", &doc_id(2))]);
    assert!(
        server
            .refusals
            .contains(&(2, Some(doc_id(1)), Refusal::OtherWorkspace))
    );
}

#[test]
fn resident_document_of_another_workspace_sends_no_bytes() {
    let mut server = Server::new();
    let mut alice = alice_with_document(&mut server);
    let mut eve = Client::new("eve", 2);
    eve.connect_with(&mut server, writer("b"));
    eve.want(&doc_id(1), 2);
    let m = eve.outgoing(&doc_id(1)).unwrap();
    server.frame(2, &m);
    let to_eve = server.take_outbox(2);
    assert_eq!(to_eve, vec![unavailable("eve", &doc_id(1))]);
    // Later edits by alice are not forwarded to eve either.
    alice.edit(&doc_id(1), "secret", 2);
    run_to_quiescence(&mut server, &mut [&mut alice], &[doc_id(1)]);
    assert!(server.take_outbox(2).is_empty());
}

#[test]
fn a_push_to_another_workspaces_id_applies_nothing_and_creates_nothing() {
    let mut server = Server::new();
    let alice = alice_with_document(&mut server);
    let stored_before = sorted_heads(&server.stored_doc(&doc_id(1)).unwrap());

    // Eve has her own document under the same id and pushes it, changes included.
    let mut eve = Client::new("eve", 2);
    eve.connect_with(&mut server, writer("b"));
    eve.create(&doc_id(1), 9);
    eve.edit(&doc_id(1), "secret", 666);
    let mut to_eve = Vec::new();
    for _ in 0..3 {
        if let Some(m) = eve.outgoing(&doc_id(1)) {
            server.frame(2, &m);
        }
        server.answer_loads();
        let answer = server.take_outbox(2);
        for m in &answer {
            eve.receive(m);
        }
        to_eve.extend(answer);
    }
    assert!(server.writes.is_empty(), "nothing persisted");
    assert!(
        to_eve.iter().all(|m| *m == unavailable("eve", &doc_id(1))),
        "{to_eve:?}"
    );
    assert!(no_document_bytes(&to_eve));
    let stored = server.stored_doc(&doc_id(1)).unwrap();
    assert_eq!(sorted_heads(&stored), stored_before);
    assert_eq!(json_of(&stored)["secret"], 1);
    assert_eq!(server.workspaces[&doc_id(1)], "a");
    drop(alice);

    // The only difference from a brand-new id: a brand-new id is created in eve's workspace.
    eve.create(&doc_id(3), 9);
    run_to_quiescence(&mut server, &mut [&mut eve], &[doc_id(3)]);
    assert_eq!(server.workspaces[&doc_id(3)], "b");
}

#[test]
fn a_waiting_peer_of_another_workspace_never_receives_the_document() {
    let mut server = Server::new();
    let mut eve = Client::new("eve", 2);
    eve.connect_with(&mut server, writer("b"));
    let mut bob = Client::new("bob", 3);
    bob.connect_with(&mut server, writer("a"));
    for c in [&mut eve, &mut bob] {
        c.want(&doc_id(5), c.conn as u8);
        let m = c.outgoing(&doc_id(5)).unwrap();
        server.frame(c.conn, &m);
        server.answer_loads();
        assert_eq!(server.take_outbox(c.conn).len(), 1, "doc-unavailable");
    }
    let mut alice = Client::new("alice", 1);
    alice.connect_with(&mut server, writer("a"));
    alice.create(&doc_id(5), 1);
    run_to_quiescence(&mut server, &mut [&mut alice], &[doc_id(5)]);
    assert!(server.take_outbox(2).is_empty(), "eve hears nothing");
    assert!(
        !server.take_outbox(3).is_empty(),
        "bob (same workspace) does"
    );
}

#[test]
fn a_token_scoped_to_one_document_cannot_reach_another() {
    let mut server = Server::new();
    let mut alice = Client::new("alice", 1);
    alice.connect_with(&mut server, writer("a"));
    alice.create(&doc_id(1), 1);
    alice.create(&doc_id(2), 1);
    run_to_quiescence(&mut server, &mut [&mut alice], &[doc_id(1), doc_id(2)]);

    let mut carol = Client::new("carol", 2);
    carol.connect_with(&mut server, scoped("a", &[doc_id(1)]));
    carol.want(&doc_id(2), 2);
    let m = carol.outgoing(&doc_id(2)).unwrap();
    let effects = server.frame(2, &m);
    assert!(
        !effects.iter().any(|e| matches!(e, Effect::Load { .. })),
        "nothing is looked up"
    );
    assert_eq!(
        server.take_outbox(2),
        vec![unavailable("carol", &doc_id(2))]
    );
    assert!(
        server
            .refusals
            .contains(&(2, Some(doc_id(2)), Refusal::OutOfScope))
    );
    // A push with changes for B is refused the same way and stores nothing.
    carol.create(&doc_id(2), 2);
    let m = carol.outgoing(&doc_id(2)).unwrap();
    server.frame(2, &m);
    assert!(server.writes.is_empty());
    assert_eq!(
        server.take_outbox(2),
        vec![unavailable("carol", &doc_id(2))]
    );

    // Document A works.
    carol.want(&doc_id(1), 2);
    run_to_quiescence(&mut server, &mut [&mut carol], &[doc_id(1)]);
    assert_eq!(carol.heads(&doc_id(1)), alice.heads(&doc_id(1)));
}

#[test]
fn a_read_only_peer_reads_but_its_changes_go_nowhere() {
    let mut server = Server::new();
    let mut alice = alice_with_document(&mut server);
    let mut bob = Client::new("bob", 3);
    bob.connect_with(&mut server, writer("a"));
    bob.want(&doc_id(1), 3);
    let mut rita = Client::new("rita", 2);
    rita.connect_with(&mut server, reader("a"));
    rita.want(&doc_id(1), 2);
    run_to_quiescence(
        &mut server,
        &mut [&mut alice, &mut bob, &mut rita],
        &[doc_id(1)],
    );
    assert_eq!(rita.get_i64(&doc_id(1), "secret"), Some(1), "she reads");

    let stored_before = sorted_heads(&server.stored_doc(&doc_id(1)).unwrap());
    rita.edit(&doc_id(1), "vandal", 1);
    // A current client does not even offer changes to a read-only server state; an older one (or a
    // hostile one) does: send a message that carries the change.
    let pushed = message_with_changes(&mut rita, &doc_id(1));
    server.frame(2, &pushed);
    // Terminates: the refused changes are not re-requested forever.
    run_to_quiescence(
        &mut server,
        &mut [&mut alice, &mut bob, &mut rita],
        &[doc_id(1)],
    );
    assert_eq!(
        sorted_heads(&server.stored_doc(&doc_id(1)).unwrap()),
        stored_before,
        "never persisted"
    );
    assert_eq!(bob.get_i64(&doc_id(1), "vandal"), None, "never forwarded");
    assert_eq!(alice.get_i64(&doc_id(1), "vandal"), None);
    assert!(
        server
            .refusals
            .iter()
            .any(|r| *r == (2, Some(doc_id(1)), Refusal::ReadOnlyChanges))
    );

    // She still receives what writers do.
    alice.edit(&doc_id(1), "secret", 2);
    run_to_quiescence(
        &mut server,
        &mut [&mut alice, &mut bob, &mut rita],
        &[doc_id(1)],
    );
    assert_eq!(rita.get_i64(&doc_id(1), "secret"), Some(2));
    assert_eq!(bob.get_i64(&doc_id(1), "secret"), Some(2));
}

#[test]
fn a_read_only_peer_cannot_create_a_document() {
    let mut server = Server::new();
    let mut rita = Client::new("rita", 2);
    rita.connect_with(&mut server, reader("a"));
    rita.create(&doc_id(4), 2);
    let m = rita.outgoing(&doc_id(4)).unwrap();
    server.frame(2, &m);
    server.answer_loads();
    assert_eq!(server.take_outbox(2), vec![unavailable("rita", &doc_id(4))]);
    assert!(server.writes.is_empty());
    assert!(server.disk.is_empty());
}

#[test]
fn a_ticket_is_bound_to_the_first_peer_id_that_joins_with_it() {
    let mut server = Server::new();
    let ticket = |server: &Server| Access {
        ticket: Some(TicketGrant {
            id: "t1".into(),
            expires: server.now + Duration::from_secs(300),
        }),
        ..writer("a")
    };
    let mut browser = Client::new("peer-js", 1);
    let access = ticket(&server);
    assert!(matches!(
        browser.connect_with(&mut server, access)[..],
        [Message::Peer { .. }]
    ));
    // The JS client's automatic reconnect: same URL, same peer id.
    server.input(Input::Disconnected { conn: 1 });
    let mut reconnect = Client::new("peer-js", 2);
    let access = ticket(&server);
    assert!(matches!(
        reconnect.connect_with(&mut server, access)[..],
        [Message::Peer { .. }]
    ));
    // Someone else with the same ticket is closed at its join, before any `peer`.
    let mut thief = Client::new("peer-thief", 3);
    let access = ticket(&server);
    assert!(thief.connect_with(&mut server, access).is_empty());
    let (code, reason) = &server.closed[&3];
    assert_eq!(*code, close_code::POLICY_VIOLATION);
    assert!(reason.contains("ticket"), "{reason}");
    assert!(
        server
            .refusals
            .contains(&(3, None, Refusal::TicketPeerMismatch))
    );
    // A second join on the bound connection with another id is refused as well.
    server.frame(2, &thief.join_message());
    assert_eq!(server.closed[&2].0, close_code::POLICY_VIOLATION);
}

#[test]
fn the_same_peer_id_in_another_workspace_does_not_supersede() {
    let mut server = Server::new();
    let mut alice = Client::new("same", 1);
    alice.connect_with(&mut server, writer("a"));
    let mut eve = Client::new("same", 2);
    eve.connect_with(&mut server, writer("b"));
    assert!(server.closed.is_empty());
    assert_eq!(server.engine.connection_count(), 2);
}

#[test]
fn ephemeral_messages_stay_in_the_workspace_and_carry_the_senders_own_id() {
    let mut server = Server::new();
    let mut alice = alice_with_document(&mut server);
    let mut bob = Client::new("bob", 3);
    bob.connect_with(&mut server, writer("a"));
    bob.want(&doc_id(1), 3);
    run_to_quiescence(&mut server, &mut [&mut alice, &mut bob], &[doc_id(1)]);
    let mut eve = Client::new("eve", 2);
    eve.connect_with(&mut server, writer("b"));
    let eph = |sender: &str, count| Message::Ephemeral {
        sender_id: sender.into(),
        target_id: SERVER.into(),
        document_id: doc_id(1),
        count,
        session_id: "s".into(),
        data: vec![7],
    };
    // Eve (other workspace) cannot reach alice's peers, nor speak as alice.
    server.frame(2, &eph("eve", 1));
    server.frame(2, &eph("alice", 100));
    assert!(server.take_outbox(1).is_empty());
    assert!(server.take_outbox(3).is_empty());
    // Alice's own presence still goes through (eve's forged count did not suppress it).
    server.frame(1, &eph("alice", 1));
    assert_eq!(server.take_outbox(3).len(), 1);
}

#[test]
fn a_document_never_grows_past_its_quota() {
    let mut config = EngineConfig::new(SERVER, STORAGE);
    config.max_document_bytes = Some(500);
    let mut server = Server::with_config(config);
    let mut alice = Client::new("alice", 1);
    alice.connect_with(&mut server, writer("a"));
    alice.create(&doc_id(1), 1);
    run_to_quiescence(&mut server, &mut [&mut alice], &[doc_id(1)]);
    let stored_before = sorted_heads(&server.stored_doc(&doc_id(1)).unwrap());

    // A big edit: random bytes do not compress.
    let big: String = (0..5_000u32)
        .map(|i| char::from(b'a' + ((i.wrapping_mul(2_654_435_761) >> 13) % 26) as u8))
        .collect();
    {
        use automerge::transaction::Transactable;
        let (d, _) = alice.docs.get_mut(&doc_id(1)).unwrap();
        d.put(automerge::ROOT, "big", big).unwrap();
    }
    for _ in 0..4 {
        if server.closed.contains_key(&1) {
            break;
        }
        if let Some(m) = alice.outgoing(&doc_id(1)) {
            server.frame(1, &m);
        }
        server.make_durable();
        for m in server.take_outbox(1) {
            alice.receive(&m);
        }
    }
    let sizes: Vec<usize> = server.disk[&doc_id(1)].iter().map(|c| c.len()).collect();
    let (code, reason) = server
        .closed
        .get(&1)
        .unwrap_or_else(|| panic!("not closed; stored {sizes:?}"));
    assert_eq!(*code, close_code::MESSAGE_TOO_BIG);
    assert!(
        reason.contains(&doc_id(1).to_string()) && reason.contains("quota"),
        "{reason}"
    );
    assert!(server.refusals.iter().any(|(c, d, r)| *c == 1
        && *d == Some(doc_id(1))
        && matches!(r, Refusal::QuotaExceeded { limit: 500, .. })));
    assert_eq!(
        sorted_heads(&server.stored_doc(&doc_id(1)).unwrap()),
        stored_before,
        "nothing of the refused change is stored"
    );
}

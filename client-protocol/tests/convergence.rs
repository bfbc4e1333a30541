//! Seeded convergence: replicas with fixed actor ids edit at random while their messages reach the
//! engine in random interleavings and the disk acknowledges writes at random moments. After healing,
//! every replica and the stored document have equal sorted heads and equal JSON.
//!
//! `CONVERGENCE_SEED=n` replays one seed; `CONVERGENCE_SEEDS=k` runs k seeds (default 64).

mod common;

use std::collections::VecDeque;

use automerge::transaction::Transactable;
use automerge::{ObjType, ROOT, ReadDoc};
use common::*;
use driftless_client_protocol::Message;
use driftless_client_protocol::engine::Input;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const CLIENTS: usize = 4;

fn random_edit(rng: &mut StdRng, client: &mut Client, doc: &driftless_client_protocol::DocumentId) {
    let (d, _) = client.docs.get_mut(doc).expect("doc");
    match rng.random_range(0..3) {
        0 => {
            let key = format!("k{}", rng.random_range(0..5));
            d.put(ROOT, key, rng.random_range(0..1000i64)).expect("put");
        }
        1 => {
            let list = match d.get(ROOT, "list").expect("get") {
                Some((_, id)) => id,
                None => d.put_object(ROOT, "list", ObjType::List).expect("list"),
            };
            let len = d.length(&list);
            let at = rng.random_range(0..=len);
            d.insert(&list, at, rng.random_range(0..100i64))
                .expect("insert");
        }
        _ => {
            let text = match d.get(ROOT, "text").expect("get") {
                Some((_, id)) => id,
                None => d.put_object(ROOT, "text", ObjType::Text).expect("text"),
            };
            let len = d.length(&text);
            let at = rng.random_range(0..=len);
            d.splice_text(&text, at, 0, "ab").expect("splice");
        }
    }
}

fn run_seed(seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut server = Server::new();
    let doc = doc_id(1);
    let mut clients: Vec<Client> = (0..CLIENTS)
        .map(|i| Client::new(&format!("peer-{i}"), i as u64 + 1))
        .collect();
    for (i, c) in clients.iter_mut().enumerate() {
        c.connect(&mut server);
        if i == 0 {
            c.create(&doc, 1);
        } else {
            c.want(&doc, i as u8 + 1);
        }
    }
    // Per-connection FIFO queues: the protocol needs in-order delivery per connection, nothing more.
    let mut to_server: Vec<VecDeque<Message>> = vec![VecDeque::new(); CLIENTS];

    for _step in 0..400 {
        let i = rng.random_range(0..CLIENTS);
        match rng.random_range(0..6) {
            0 if clients[i].heads(&doc).len() + clients[0].heads(&doc).len() > 0 => {
                if !clients[i].heads(&doc).is_empty() {
                    random_edit(&mut rng, &mut clients[i], &doc);
                }
            }
            1 => {
                if let Some(m) = clients[i].outgoing(&doc) {
                    to_server[i].push_back(m);
                }
            }
            2 => {
                if let Some(m) = to_server[i].pop_front() {
                    server.frame(clients[i].conn, &m);
                }
            }
            3 => server.answer_loads(),
            4 => {
                // The disk commits the oldest pending write.
                if !server.writes.is_empty() {
                    let (write, d, op) = server.writes.remove(0);
                    server.store(&d, op);
                    server.input(Input::WriteDurable { write });
                }
            }
            _ => {
                let conn = clients[i].conn;
                if let Some(m) = server.outbox.get_mut(&conn).and_then(|q| q.pop_front()) {
                    clients[i].receive(&m);
                }
            }
        }
    }
    // Heal: flush the queues, then exchange until quiet.
    for (i, q) in to_server.iter_mut().enumerate() {
        while let Some(m) = q.pop_front() {
            server.frame(clients[i].conn, &m);
        }
    }
    let mut refs: Vec<&mut Client> = clients.iter_mut().collect();
    run_to_quiescence(&mut server, &mut refs, std::slice::from_ref(&doc));

    let stored = server.stored_doc(&doc).expect("document stored");
    let expected_heads = sorted_heads(&stored);
    let expected_json = json_of(&stored);
    for c in clients.iter_mut() {
        assert_eq!(
            c.heads(&doc),
            expected_heads,
            "seed {seed}: {} heads",
            c.peer_id
        );
        assert_eq!(
            c.json(&doc),
            expected_json,
            "seed {seed}: {} json",
            c.peer_id
        );
    }
    let resident = server.engine.document(&doc).expect("resident");
    assert_eq!(
        sorted_heads(resident),
        expected_heads,
        "seed {seed}: server memory"
    );
    assert!(server.closed.is_empty(), "seed {seed}: {:?}", server.closed);
}

#[test]
fn replicas_converge_through_the_engine() {
    if let Ok(seed) = std::env::var("CONVERGENCE_SEED") {
        run_seed(seed.parse().expect("CONVERGENCE_SEED is a number"));
        return;
    }
    let seeds: u64 = std::env::var("CONVERGENCE_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(64);
    for seed in 0..seeds {
        let result = std::panic::catch_unwind(|| run_seed(seed));
        if let Err(e) = result {
            eprintln!("convergence failed for seed {seed}; replay with CONVERGENCE_SEED={seed}");
            std::panic::resume_unwind(e);
        }
    }
}

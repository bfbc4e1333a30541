//! Arbitrary bytes as a sync message received for a loaded document with some history (what the
//! engine does with every `sync`/`request` payload, after its `sync_guard`): never a panic.
#![no_main]

use std::hint::black_box;

use automerge::sync::{self, SyncDoc};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, payload)) = data.split_first() else {
        return;
    };
    let mut doc = driftless_fuzz::loaded_document().clone();
    let mut state = if mode & 1 == 1 {
        sync::State::new_read_only()
    } else {
        sync::State::new()
    };
    if mode & 2 == 2 {
        // As the engine's state looks after it spoke first.
        black_box(doc.generate_sync_message(&mut state));
    }
    let Ok(message) = black_box(sync::Message::decode(payload)) else {
        return;
    };
    // What the engine refuses before Automerge sees it (Automerge 0.12 panics on some of it).
    if driftless_client_protocol::sync_guard::check(&message).is_err() {
        return;
    }
    let _ = black_box(doc.receive_sync_message(&mut state, message));
    black_box(doc.generate_sync_message(&mut state));
    black_box(doc.get_heads());
});

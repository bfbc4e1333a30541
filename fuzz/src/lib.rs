//! Shared fixtures of the fuzz targets: small documents with fixed actors and history.

use std::sync::OnceLock;

use automerge::transaction::Transactable;
use automerge::{ActorId, AutoCommit, Automerge, ObjType, ROOT};

/// The bases a fuzzed client starts a document from: empty, some history, and more history on top.
pub fn base_documents() -> &'static [AutoCommit; 3] {
    static BASES: OnceLock<[AutoCommit; 3]> = OnceLock::new();
    BASES.get_or_init(|| {
        let empty = AutoCommit::new().with_actor(ActorId::from(vec![0xa0; 16]));
        let mut one = AutoCommit::new().with_actor(ActorId::from(vec![0xa1; 16]));
        one.put(ROOT, "title", "hello").expect("put");
        let list = one.put_object(ROOT, "list", ObjType::List).expect("list");
        let text = one.put_object(ROOT, "text", ObjType::Text).expect("text");
        for i in 0..8 {
            one.insert(&list, i, i as i64).expect("insert");
            one.splice_text(&text, 0, 0, "ab").expect("splice");
            one.commit();
        }
        let mut two = one.fork().with_actor(ActorId::from(vec![0xa2; 16]));
        for i in 0..5 {
            two.put(ROOT, format!("k{i}"), i as i64).expect("put");
            two.splice_text(&text, 1, 1, "x").expect("splice");
            two.commit();
        }
        // Concurrent history on `one` too, so `two` merged with it has two heads.
        one.put(ROOT, "title", "concurrent").expect("put");
        one.commit();
        let mut merged = two.clone();
        merged.merge(&mut one.clone()).expect("merge");
        [empty, one, merged]
    })
}

/// A loaded document with some history and two heads (what the engine holds for a busy document).
pub fn loaded_document() -> &'static Automerge {
    static DOC: OnceLock<Automerge> = OnceLock::new();
    DOC.get_or_init(|| {
        let mut d = base_documents()[2].clone();
        Automerge::load(&d.save()).expect("base document loads")
    })
}

//! A scripted world around the engine: simulated clients (real Automerge documents with their own sync
//! states) talk to one engine through explicit queues, so tests decide every delivery.
#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use automerge::sync::{self, SyncDoc};
use automerge::transaction::Transactable;
use automerge::{ActorId, AutoCommit, Automerge, ChangeHash, ROOT, ReadDoc};
use driftless_client_protocol::engine::{
    Access, ConnectionId, Effect, Engine, EngineConfig, Input, LoadResult, PersistOp, Refusal,
    WriteId,
};
use driftless_client_protocol::{DocumentId, Message, PeerMetadata, decode, encode};

pub const SERVER: &str = "server-peer";
pub const STORAGE: &str = "server-storage-id";

pub fn doc_id(n: u8) -> DocumentId {
    DocumentId::from_bytes(&[n; 16])
}

/// The server side: an engine, an in-memory "disk", and the effects not yet carried out.
pub struct Server {
    pub engine: Engine,
    pub config: EngineConfig,
    pub now: Instant,
    /// Frames sent to each connection, oldest first, not yet read by the test.
    pub outbox: HashMap<ConnectionId, VecDeque<Message>>,
    pub closed: HashMap<ConnectionId, (u16, String)>,
    /// Loads requested and not answered.
    pub loads: Vec<DocumentId>,
    /// Persists requested and not yet reported durable.
    pub writes: Vec<(WriteId, DocumentId, PersistOp)>,
    /// Durable storage: chunks per document.
    pub disk: HashMap<DocumentId, Vec<Vec<u8>>>,
    /// Durable storage: each document's workspace (written with its first chunk).
    pub workspaces: HashMap<DocumentId, String>,
    /// The workspace each persisted document was given by the engine.
    persist_workspace: HashMap<DocumentId, String>,
    /// Every `Refused` effect, in order.
    pub refusals: Vec<(ConnectionId, Option<DocumentId>, Refusal)>,
    /// Every `LocalChangeDone`, in order.
    pub local_done: Vec<(u64, Result<Vec<automerge::ChangeHash>, String>)>,
}

impl Server {
    pub fn new() -> Self {
        Self::with_config(EngineConfig::new(SERVER, STORAGE))
    }

    pub fn with_config(config: EngineConfig) -> Self {
        Self {
            engine: Engine::new(config.clone()),
            config,
            now: Instant::now(),
            outbox: HashMap::new(),
            closed: HashMap::new(),
            loads: Vec::new(),
            writes: Vec::new(),
            disk: HashMap::new(),
            workspaces: HashMap::new(),
            persist_workspace: HashMap::new(),
            refusals: Vec::new(),
            local_done: Vec::new(),
        }
    }

    /// Feeds an input and files its effects; returns the effects too.
    pub fn input(&mut self, input: Input) -> Vec<Effect> {
        let mut out = Vec::new();
        self.engine.handle(self.now, input, &mut out);
        self.engine.check_invariants();
        for effect in &out {
            match effect {
                Effect::Send { conn, frame } => {
                    let message = decode(frame).expect("engine sent an undecodable frame");
                    self.outbox.entry(*conn).or_default().push_back(message);
                }
                Effect::Load { doc } => self.loads.push(doc.clone()),
                Effect::Persist {
                    write,
                    doc,
                    workspace,
                    op,
                } => {
                    let previous = self
                        .persist_workspace
                        .insert(doc.clone(), workspace.clone());
                    assert!(
                        previous.is_none_or(|p| p == *workspace),
                        "a document never changes workspace"
                    );
                    self.writes.push((*write, doc.clone(), op.clone()))
                }
                Effect::Refused { conn, doc, refusal } => {
                    self.refusals.push((*conn, doc.clone(), refusal.clone()))
                }
                Effect::Close { conn, reason } => {
                    self.closed
                        .insert(*conn, (reason.code, reason.reason.clone()));
                }
                Effect::LocalChangeDone { token, result } => {
                    self.local_done.push((*token, result.clone()))
                }
            }
        }
        out
    }

    /// A new engine over the same durable storage (a restart).
    pub fn restarted(&mut self) -> Server {
        let mut server = Server::with_config(self.config.clone());
        server.disk = std::mem::take(&mut self.disk);
        server.workspaces = std::mem::take(&mut self.workspaces);
        server.persist_workspace = self.persist_workspace.clone();
        server
    }

    pub fn advance(&mut self, by: Duration) {
        self.now += by;
    }

    pub fn frame(&mut self, conn: ConnectionId, message: &Message) -> Vec<Effect> {
        self.input(Input::FrameReceived {
            conn,
            frame: encode(message),
        })
    }

    /// Answers every pending load from the in-memory disk.
    pub fn answer_loads(&mut self) {
        for doc in std::mem::take(&mut self.loads) {
            let result = match self.disk.get(&doc) {
                None => LoadResult::NotFound,
                Some(chunks) => LoadResult::Found {
                    doc: Box::new(Automerge::load(&chunks.concat()).expect("stored chunks load")),
                    workspace: self.workspaces[&doc].clone(),
                    stored_bytes: chunks.iter().map(|c| c.len() as u64).sum(),
                },
            };
            self.input(Input::StorageLoaded { doc, result });
        }
    }

    /// Makes every pending write durable, in order.
    pub fn make_durable(&mut self) {
        while !self.writes.is_empty() {
            let (write, doc, op) = self.writes.remove(0);
            self.store(&doc, op);
            self.input(Input::WriteDurable { write });
        }
    }

    pub fn store(&mut self, doc: &DocumentId, op: PersistOp) {
        let workspace = self.persist_workspace[doc].clone();
        self.workspaces.entry(doc.clone()).or_insert(workspace);
        let chunks = self.disk.entry(doc.clone()).or_default();
        match op {
            PersistOp::Append(bytes) => chunks.push(bytes),
            PersistOp::Snapshot(bytes) => *chunks = vec![bytes],
        }
    }

    pub fn take_outbox(&mut self, conn: ConnectionId) -> Vec<Message> {
        self.outbox
            .get_mut(&conn)
            .map(|q| q.drain(..).collect())
            .unwrap_or_default()
    }

    pub fn stored_doc(&self, doc: &DocumentId) -> Option<Automerge> {
        self.disk
            .get(doc)
            .map(|c| Automerge::load(&c.concat()).expect("stored chunks load"))
    }
}

/// An app client: its own documents and one sync state per document towards the server.
pub struct Client {
    pub peer_id: String,
    pub conn: ConnectionId,
    pub docs: HashMap<DocumentId, (AutoCommit, sync::State)>,
}

impl Client {
    pub fn new(peer_id: &str, conn: ConnectionId) -> Self {
        Self {
            peer_id: peer_id.to_owned(),
            conn,
            docs: HashMap::new(),
        }
    }

    pub fn join_message(&self) -> Message {
        Message::Join {
            sender_id: self.peer_id.clone(),
            supported_protocol_versions: Some(vec!["1".to_owned()]),
            peer_metadata: Some(PeerMetadata {
                storage_id: None,
                is_ephemeral: true,
            }),
        }
    }

    /// Connects (open mode: writer in workspace `default`) and joins; returns the server's answer.
    pub fn connect(&mut self, server: &mut Server) -> Vec<Message> {
        self.connect_with(server, Access::open())
    }

    /// Connects with `access` and joins; returns the server's answer.
    pub fn connect_with(&mut self, server: &mut Server, access: Access) -> Vec<Message> {
        server.input(Input::Connected {
            conn: self.conn,
            access,
        });
        let join = self.join_message();
        server.frame(self.conn, &join);
        server.take_outbox(self.conn)
    }

    /// A new document with a fixed actor id and one initial change.
    pub fn create(&mut self, doc: &DocumentId, actor: u8) {
        let mut d = AutoCommit::new().with_actor(ActorId::from(vec![actor; 16]));
        d.put(ROOT, "title", "hello").expect("put");
        self.docs.insert(doc.clone(), (d, sync::State::new()));
    }

    /// An empty document this client wants from the server.
    pub fn want(&mut self, doc: &DocumentId, actor: u8) {
        let d = AutoCommit::new().with_actor(ActorId::from(vec![actor; 16]));
        self.docs.insert(doc.clone(), (d, sync::State::new()));
    }

    pub fn edit(&mut self, doc: &DocumentId, key: &str, value: i64) {
        let (d, _) = self.docs.get_mut(doc).expect("client has doc");
        d.put(ROOT, key, value).expect("put");
    }

    /// The next sync message for `doc`, as `request` when the client has nothing yet.
    pub fn outgoing(&mut self, doc: &DocumentId) -> Option<Message> {
        let (d, state) = self.docs.get_mut(doc)?;
        let empty = d.get_heads().is_empty();
        let message = d.sync().generate_sync_message(state)?;
        let data = message.encode();
        Some(if empty {
            Message::Request {
                sender_id: self.peer_id.clone(),
                target_id: SERVER.to_owned(),
                document_id: doc.clone(),
                data,
            }
        } else {
            Message::Sync {
                sender_id: self.peer_id.clone(),
                target_id: SERVER.to_owned(),
                document_id: doc.clone(),
                data,
            }
        })
    }

    /// Applies a server message; returns true if it was a sync message.
    pub fn receive(&mut self, message: &Message) -> bool {
        if let Message::Sync {
            document_id, data, ..
        } = message
        {
            let (d, state) = self.docs.get_mut(document_id).expect("client has doc");
            let msg = sync::Message::decode(data).expect("server sync message decodes");
            d.sync()
                .receive_sync_message(state, msg)
                .expect("client applies server message");
            true
        } else {
            false
        }
    }

    pub fn heads(&mut self, doc: &DocumentId) -> Vec<ChangeHash> {
        let mut h = self
            .docs
            .get_mut(doc)
            .expect("client has doc")
            .0
            .get_heads();
        h.sort();
        h
    }

    pub fn json(&self, doc: &DocumentId) -> serde_json::Value {
        let (d, _) = self.docs.get(doc).expect("client has doc");
        serde_json::to_value(automerge::AutoSerde::from(d)).expect("json")
    }

    pub fn get_i64(&self, doc: &DocumentId, key: &str) -> Option<i64> {
        let (d, _) = self.docs.get(doc)?;
        match d.get(ROOT, key).ok()?? {
            (automerge::Value::Scalar(s), _) => s.as_i64(),
            _ => None,
        }
    }
}

pub fn sorted_heads(doc: &Automerge) -> Vec<ChangeHash> {
    let mut h = doc.get_heads();
    h.sort();
    h
}

pub fn json_of(doc: &Automerge) -> serde_json::Value {
    serde_json::to_value(automerge::AutoSerde::from(doc)).expect("json")
}

/// Exchanges messages between the clients and the server until nothing moves, making writes durable
/// as they come.
pub fn run_to_quiescence(server: &mut Server, clients: &mut [&mut Client], docs: &[DocumentId]) {
    for _ in 0..1000 {
        let mut moved = false;
        for c in clients.iter_mut() {
            for doc in docs {
                if !c.docs.contains_key(doc) {
                    continue;
                }
                while let Some(m) = c.outgoing(doc) {
                    server.frame(c.conn, &m);
                    moved = true;
                }
            }
        }
        server.answer_loads();
        if !server.writes.is_empty() {
            server.make_durable();
            moved = true;
        }
        for c in clients.iter_mut() {
            for m in server.take_outbox(c.conn) {
                c.receive(&m);
                moved = true;
            }
        }
        if !moved {
            return;
        }
    }
    panic!("no quiescence after 1000 rounds");
}

/// `Connected` in open mode (a writer in workspace `default`).
pub fn connected(conn: ConnectionId) -> Input {
    Input::Connected {
        conn,
        access: Access::open(),
    }
}

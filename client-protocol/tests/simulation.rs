//! Seeded simulation of the engine under faults: 8 clients and one server, a lossy network, client
//! disconnects, storage failures and server crashes. After healing, every replica and the server agree,
//! and nothing the server ever acknowledged was lost.
//!
//! # The model
//! - **Network.** Each connection is a WebSocket over TCP: within a connection, frames arrive in the
//!   order sent, each after a random delay (so a frame never overtakes an earlier one on the same
//!   connection). Across connections there is no order: frames of different connections, including the
//!   old and the new connection of a reconnecting client, interleave freely.
//! - **Drop.** TCP does not lose single frames, so a dropped frame is a connection fault: the frame and
//!   everything still in flight on that connection, both ways, are lost, both ends notice, the host
//!   reports `Disconnected`, and the client reconnects later with fresh sync states.
//! - **Duplication.** A frame is occasionally delivered twice in a row (a retrying proxy or client):
//!   the engine and the sync protocol must shrug it off.
//! - **Client disconnect.** The client walks away: what it already wrote may still reach the server
//!   (a random prefix of its in-flight frames), then `Disconnected` follows, possibly after the same
//!   client's next connection joined (the engine must handle "superseded" and late frames).
//! - **Host.** As `server/src/host.rs`: frames of a connection the engine closed are dropped; the frames
//!   queued before a `Close` are delivered, then the client sees the close; `Disconnected` is fed once.
//! - **Storage.** Loads and writes complete at random later moments, in any order across documents. A
//!   write is committed to the disk, then (maybe later) reported durable; or it fails (`WriteFailed`,
//!   nothing stored).
//! - **Server crash.** A new engine over the durable disk only: writes not yet committed are lost,
//!   loads in flight vanish, every connection drops and every frame in flight is lost.
//!
//! # What is checked
//! - Every sync message the engine emits carries heads that are already on the durable disk (the
//!   durable-before-acknowledged invariant, checked as the message leaves the engine, which is stricter
//!   than when a client receives it), and after every crash the reloaded disk holds every head ever
//!   acknowledged.
//! - `check_invariants()` after every input.
//! - After healing (no faults, run to quiescence): every client, the resident server copy and the disk
//!   have equal sorted heads and equal JSON for every document; the engine holds exactly the clients'
//!   connections and no write in flight.
//!
//! `SIM_SEEDS=n` runs seeds 0..n (default 200); `SIM_SEED=n` replays one (a failing seed is printed).
//! Replays are exact: the simulation never iterates a hash map where order could matter.

mod common;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use automerge::sync;
use automerge::transaction::Transactable;
use automerge::{ActorId, Automerge, ChangeHash, ObjType, ROOT, ReadDoc};
use common::{Client, SERVER, STORAGE, doc_id, json_of, sorted_heads};
use driftless_client_protocol::engine::{
    Access, ConnectionId, Effect, Engine, EngineConfig, Input, LoadResult, PersistOp, WriteId,
};
use driftless_client_protocol::{DocumentId, Message, decode, encode};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const CLIENTS: usize = 8;
const DOCS: usize = 3;
/// Faulty steps per seed before healing.
const STEPS: usize = 1000;

/// Fault probabilities, per delivered frame or per step.
#[derive(Clone, Copy)]
struct Faults {
    /// A delivered frame instead breaks its connection.
    drop: f64,
    /// A delivered frame is delivered twice.
    duplicate: f64,
    /// Per step: a client walks away.
    disconnect: f64,
    /// Per step: the server crashes.
    crash: f64,
    /// Per committed write: it fails instead.
    write_fail: f64,
}

const FAULTY: Faults = Faults {
    drop: 0.01,
    duplicate: 0.02,
    disconnect: 0.004,
    crash: 0.002,
    write_fail: 0.03,
};
const NONE: Faults = Faults {
    drop: 0.0,
    duplicate: 0.0,
    disconnect: 0.0,
    crash: 0.0,
    write_fail: 0.0,
};

/// One WebSocket between a client and the server.
struct Link {
    client: usize,
    to_server: VecDeque<(Instant, Vec<u8>)>,
    to_client: VecDeque<(Instant, Vec<u8>)>,
    /// The client still reads from and writes to it.
    client_open: bool,
    /// The host knows it (its `Connected` was fed and no `Disconnected` yet).
    registered: bool,
    /// The engine closed it: the host drops its frames, flushes what was queued, then closes.
    closing: bool,
    /// The client side is gone: once the frames it wrote are read, the host reports `Disconnected`.
    gone: bool,
}

struct Write {
    id: WriteId,
    doc: usize,
    op: PersistOp,
    workspace: String,
    /// On disk already; only the report is outstanding.
    committed: bool,
}

struct SimClient {
    client: Client,
    link: Option<ConnectionId>,
    joined: bool,
    reconnect_at: Option<Instant>,
}

struct Sim {
    rng: StdRng,
    seed: u64,
    now: Instant,
    next_tick: Instant,
    faults: Faults,
    config: EngineConfig,
    engine: Engine,
    ids: Vec<DocumentId>,
    links: BTreeMap<ConnectionId, Link>,
    next_conn: ConnectionId,
    clients: Vec<SimClient>,
    writes: Vec<Write>,
    loads: Vec<usize>,
    /// Durable storage: chunks and workspace per document.
    disk: Vec<Vec<Vec<u8>>>,
    disk_workspace: Vec<Option<String>>,
    /// The disk's documents, kept loaded to check acknowledgements cheaply.
    durable: Vec<Automerge>,
    /// Every head the engine ever reported in a sync message, per document.
    acked: Vec<BTreeSet<ChangeHash>>,
    stats: Stats,
}

/// What a run went through, to see that the faults actually happen.
#[derive(Default, Debug, Clone, Copy)]
struct Stats {
    crashes: u32,
    drops: u32,
    duplicates: u32,
    disconnects: u32,
    write_failures: u32,
    engine_closes: u32,
    edits: u32,
    acks: u32,
}

impl std::ops::AddAssign for Stats {
    fn add_assign(&mut self, o: Stats) {
        self.crashes += o.crashes;
        self.drops += o.drops;
        self.duplicates += o.duplicates;
        self.disconnects += o.disconnects;
        self.write_failures += o.write_failures;
        self.engine_closes += o.engine_closes;
        self.edits += o.edits;
        self.acks += o.acks;
    }
}

fn actor(client: usize, doc: usize) -> ActorId {
    ActorId::from(vec![(client * DOCS + doc + 1) as u8; 16])
}

fn random_edit(rng: &mut StdRng, d: &mut automerge::AutoCommit) {
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
            let del = rng.random_range(0..=(len - at).min(2)) as isize;
            d.splice_text(&text, at, del, "ab").expect("splice");
        }
    }
}

impl Sim {
    fn new(seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let config = EngineConfig {
            compact_after_chunks: 4,
            idle_evict: Duration::from_secs(2),
            ..EngineConfig::new(SERVER, STORAGE)
        };
        let ids: Vec<DocumentId> = (0..DOCS).map(|d| doc_id(d as u8 + 1)).collect();
        let mut clients = Vec::new();
        for c in 0..CLIENTS {
            let mut client = Client::new(&format!("peer-{c}"), 0);
            for (d, id) in ids.iter().enumerate() {
                if c == d {
                    client.create(id, (c * DOCS + d + 1) as u8);
                    // `create` uses the same actor scheme; keep the invariant explicit.
                    let (doc, _) = client.docs.get_mut(id).expect("created");
                    assert_eq!(doc.get_actor(), &actor(c, d));
                } else if rng.random_bool(0.7) {
                    client.want(id, (c * DOCS + d + 1) as u8);
                }
            }
            clients.push(SimClient {
                client,
                link: None,
                joined: false,
                reconnect_at: Some(Instant::now()),
            });
        }
        let now = Instant::now();
        for c in &mut clients {
            c.reconnect_at = Some(now + Duration::from_millis(rng.random_range(0..50)));
        }
        Self {
            rng,
            seed,
            now,
            next_tick: now + Duration::from_secs(1),
            faults: FAULTY,
            engine: Engine::new(config.clone()),
            config,
            ids,
            links: BTreeMap::new(),
            next_conn: 1,
            clients,
            writes: Vec::new(),
            loads: Vec::new(),
            disk: vec![Vec::new(); DOCS],
            disk_workspace: vec![None; DOCS],
            durable: (0..DOCS).map(|_| Automerge::new()).collect(),
            acked: vec![BTreeSet::new(); DOCS],
            stats: Stats::default(),
        }
    }

    fn doc_index(&self, id: &DocumentId) -> usize {
        self.ids
            .iter()
            .position(|d| d == id)
            .unwrap_or_else(|| panic!("seed {}: unknown document {id}", self.seed))
    }

    fn delay(&mut self) -> Duration {
        Duration::from_millis(self.rng.random_range(1..40))
    }

    /// Feeds one input and carries out its effects as the host would.
    fn input(&mut self, input: Input) {
        let mut out = Vec::new();
        self.engine.handle(self.now, input, &mut out);
        self.engine.check_invariants();
        // Sends are grouped per connection (in order) and delays drawn in connection order, so the
        // engine's hash-map iteration order across connections cannot change a replay.
        let mut sends: BTreeMap<ConnectionId, Vec<Vec<u8>>> = BTreeMap::new();
        let mut closes = Vec::new();
        for effect in out {
            match effect {
                Effect::Send { conn, frame } => {
                    self.check_send(conn, &frame);
                    sends.entry(conn).or_default().push(frame);
                }
                Effect::Load { doc } => {
                    let d = self.doc_index(&doc);
                    assert!(!self.loads.contains(&d), "seed {}: double load", self.seed);
                    self.loads.push(d);
                }
                Effect::Persist {
                    write,
                    doc,
                    workspace,
                    op,
                } => {
                    let d = self.doc_index(&doc);
                    assert!(
                        self.writes.iter().all(|w| w.doc != d),
                        "seed {}: two writes in flight for one document",
                        self.seed
                    );
                    self.writes.push(Write {
                        id: write,
                        doc: d,
                        op,
                        workspace,
                        committed: false,
                    });
                }
                Effect::Close { conn, .. } => {
                    self.stats.engine_closes += 1;
                    closes.push(conn)
                }
                Effect::Refused { refusal, .. } => {
                    panic!("seed {}: unexpected refusal {refusal:?}", self.seed)
                }
                Effect::LocalChangeDone { token, .. } => {
                    panic!(
                        "seed {}: no local changes are made here ({token})",
                        self.seed
                    )
                }
            }
        }
        for (conn, frames) in sends {
            for frame in frames {
                let at = self.now + self.delay();
                let Some(link) = self.links.get_mut(&conn) else {
                    continue;
                };
                // The host drops sends after a close; TCP keeps order within the connection.
                if link.closing || !link.registered {
                    continue;
                }
                let at = link.to_client.back().map_or(at, |(t, _)| at.max(*t));
                link.to_client.push_back((at, frame));
            }
        }
        for conn in closes {
            if let Some(link) = self.links.get_mut(&conn) {
                link.closing = true;
            }
        }
    }

    /// What leaves the engine: addressed to the connection's peer, and acknowledging only durable heads.
    fn check_send(&mut self, conn: ConnectionId, frame: &[u8]) {
        let message = decode(frame).expect("engine sent an undecodable frame");
        let Some(link) = self.links.get(&conn) else {
            panic!("seed {}: send to unknown connection {conn}", self.seed);
        };
        let peer = &self.clients[link.client].client.peer_id;
        if let Message::Sync {
            sender_id,
            target_id,
            document_id,
            data,
        } = &message
        {
            assert_eq!(sender_id, SERVER);
            assert_eq!(
                target_id, peer,
                "seed {}: sync to the wrong peer",
                self.seed
            );
            let d = self.doc_index(document_id);
            let m = sync::Message::decode(data).expect("engine sync message decodes");
            for head in &m.heads {
                assert!(
                    self.durable[d].get_change_by_hash(head).is_some(),
                    "seed {}: the engine acknowledged {head} of doc {d} before it was durable",
                    self.seed
                );
                self.acked[d].insert(*head);
                self.stats.acks += 1;
            }
        }
    }

    fn connect(&mut self, c: usize) {
        let conn = self.next_conn;
        self.next_conn += 1;
        let client = &mut self.clients[c];
        client.link = Some(conn);
        client.joined = false;
        client.reconnect_at = None;
        client.client.conn = conn;
        // A new connection: fresh sync states, as automerge-repo starts a new peer.
        for (_, state) in client.client.docs.values_mut() {
            *state = sync::State::new();
        }
        let join = encode(&client.client.join_message());
        let at = self.now + self.delay();
        self.links.insert(
            conn,
            Link {
                client: c,
                to_server: VecDeque::from([(at, join)]),
                to_client: VecDeque::new(),
                client_open: true,
                registered: true,
                closing: false,
                gone: false,
            },
        );
        self.input(Input::Connected {
            conn,
            access: Access::open(),
        });
    }

    /// The client side loses the connection; it reconnects later.
    fn client_lost(&mut self, conn: ConnectionId) {
        let Some(link) = self.links.get_mut(&conn) else {
            return;
        };
        if !link.client_open {
            return;
        }
        link.client_open = false;
        link.gone = true;
        link.to_client.clear();
        let c = link.client;
        let at = self.now + Duration::from_millis(self.rng.random_range(10..400));
        let client = &mut self.clients[c];
        if client.link == Some(conn) {
            client.link = None;
            client.joined = false;
            client.reconnect_at = Some(at);
        }
    }

    /// A connection fault (a "dropped" frame): both directions lose what is in flight.
    fn break_link(&mut self, conn: ConnectionId) {
        self.client_lost(conn);
        if let Some(link) = self.links.get_mut(&conn) {
            link.to_server.clear();
        }
        self.reap(conn);
    }

    /// Reports `Disconnected` once the connection has nothing left to deliver to the server.
    fn reap(&mut self, conn: ConnectionId) {
        let Some(link) = self.links.get(&conn) else {
            return;
        };
        if !(link.gone && link.to_server.is_empty()) {
            return;
        }
        let registered = link.registered;
        self.links.remove(&conn);
        if registered {
            self.input(Input::Disconnected { conn });
        }
    }

    /// The client walks away; a random prefix of what it wrote still reaches the server.
    fn client_disconnects(&mut self, c: usize) {
        let Some(conn) = self.clients[c].link else {
            return;
        };
        self.client_lost(conn);
        let keep = {
            let link = &self.links[&conn];
            self.rng.random_range(0..=link.to_server.len())
        };
        if let Some(link) = self.links.get_mut(&conn) {
            link.to_server.truncate(keep);
        }
        self.reap(conn);
    }

    fn crash(&mut self) {
        self.stats.crashes += 1;
        // Uncommitted writes and loads in flight vanish with the process, and so does every socket.
        self.writes.clear();
        self.loads.clear();
        let conns: Vec<ConnectionId> = self.links.keys().copied().collect();
        for conn in conns {
            self.client_lost(conn);
        }
        self.links.clear();
        self.engine = Engine::new(self.config.clone());
        self.check_acknowledged_durable("after a crash");
    }

    /// Reloads the disk as a restarted server would and checks it holds every acknowledged head.
    fn check_acknowledged_durable(&mut self, when: &str) {
        for d in 0..DOCS {
            let stored = if self.disk[d].is_empty() {
                Automerge::new()
            } else {
                Automerge::load(&self.disk[d].concat()).expect("stored chunks load")
            };
            for head in &self.acked[d] {
                assert!(
                    stored.get_change_by_hash(head).is_some(),
                    "seed {}: {when}: acknowledged change {head} of doc {d} is not on disk",
                    self.seed
                );
            }
            assert_eq!(sorted_heads(&stored), sorted_heads(&self.durable[d]));
        }
    }

    fn store(&mut self, d: usize, op: &PersistOp, workspace: &str) {
        self.disk_workspace[d].get_or_insert_with(|| workspace.to_owned());
        match op {
            PersistOp::Append(bytes) => {
                self.disk[d].push(bytes.clone());
                self.durable[d].load_incremental(bytes).expect("append");
            }
            PersistOp::Snapshot(bytes) => {
                self.disk[d] = vec![bytes.clone()];
                self.durable[d] = Automerge::load(bytes).expect("snapshot loads");
            }
        }
    }

    /// The disk commits (or fails) one write; the report may come later.
    fn commit_write(&mut self) {
        let pending: Vec<usize> = (0..self.writes.len())
            .filter(|&i| !self.writes[i].committed)
            .collect();
        if pending.is_empty() {
            return;
        }
        let i = pending[self.rng.random_range(0..pending.len())];
        if self.rng.random_bool(self.faults.write_fail) {
            self.stats.write_failures += 1;
            let w = self.writes.remove(i);
            self.input(Input::WriteFailed {
                write: w.id,
                error: "simulated disk failure".into(),
            });
            return;
        }
        let (d, op, ws) = {
            let w = &self.writes[i];
            (w.doc, w.op.clone(), w.workspace.clone())
        };
        self.store(d, &op, &ws);
        self.writes[i].committed = true;
        if self.rng.random_bool(0.7) {
            self.report_write(i);
        }
    }

    fn report_write(&mut self, i: usize) {
        let w = self.writes.remove(i);
        self.input(Input::WriteDurable { write: w.id });
    }

    fn answer_load(&mut self) {
        if self.loads.is_empty() {
            return;
        }
        let d = self
            .loads
            .remove(self.rng.random_range(0..self.loads.len()));
        let result = if self.disk[d].is_empty() {
            LoadResult::NotFound
        } else {
            LoadResult::Found {
                doc: Box::new(Automerge::load(&self.disk[d].concat()).expect("stored chunks load")),
                workspace: self.disk_workspace[d].clone().expect("workspace stored"),
                stored_bytes: self.disk[d].iter().map(|c| c.len() as u64).sum(),
            }
        };
        self.input(Input::StorageLoaded {
            doc: self.ids[d].clone(),
            result,
        });
    }

    /// Sends every sync message the client's documents have (after `peer`, like automerge-repo).
    fn flush(&mut self, c: usize, only: Option<usize>) {
        let client = &mut self.clients[c];
        let (Some(conn), true) = (client.link, client.joined) else {
            return;
        };
        let mut frames = Vec::new();
        for (d, id) in self.ids.iter().enumerate() {
            if only.is_some_and(|o| o != d) {
                continue;
            }
            while let Some(m) = client.client.outgoing(id) {
                frames.push(encode(&m));
            }
        }
        for frame in frames {
            let at = self.now + self.delay();
            let link = self.links.get_mut(&conn).expect("client's link");
            let at = link.to_server.back().map_or(at, |(t, _)| at.max(*t));
            link.to_server.push_back((at, frame));
        }
    }

    fn client_receives(&mut self, c: usize, frame: &[u8]) {
        let message = decode(frame).expect("client decodes the server's frame");
        match &message {
            Message::Peer { .. } => {
                self.clients[c].joined = true;
                self.flush(c, None);
            }
            Message::Sync { document_id, .. } => {
                let d = self.doc_index(document_id);
                let client = &mut self.clients[c].client;
                assert!(
                    client.docs.contains_key(document_id),
                    "seed {}: sync for a document the client never asked for",
                    self.seed
                );
                client.receive(&message);
                self.flush(c, Some(d));
            }
            // The client keeps waiting: the server syncs it when the document turns up.
            Message::DocUnavailable { .. } => {}
            other => panic!("seed {}: unexpected message {other:?}", self.seed),
        }
    }

    /// Links with a frame due now, as (conn, towards the server?).
    fn due(&self) -> Vec<(ConnectionId, bool)> {
        let mut due = Vec::new();
        for (conn, link) in &self.links {
            if link.to_server.front().is_some_and(|(t, _)| *t <= self.now) {
                due.push((*conn, true));
            }
            if link.to_client.front().is_some_and(|(t, _)| *t <= self.now) {
                due.push((*conn, false));
            }
        }
        due
    }

    fn deliver_one(&mut self) -> bool {
        let due = self.due();
        if due.is_empty() {
            return false;
        }
        let (conn, to_server) = due[self.rng.random_range(0..due.len())];
        if self.rng.random_bool(self.faults.drop) {
            self.stats.drops += 1;
            self.break_link(conn);
            return true;
        }
        let times = if self.rng.random_bool(self.faults.duplicate) {
            self.stats.duplicates += 1;
            2
        } else {
            1
        };
        let link = self.links.get_mut(&conn).expect("due link");
        if to_server {
            let (_, frame) = link.to_server.pop_front().expect("due frame");
            // The host feeds frames only from connections it has open.
            if link.registered && !link.closing {
                for _ in 0..times {
                    self.input(Input::FrameReceived {
                        conn,
                        frame: frame.clone(),
                    });
                }
            }
            self.reap(conn);
        } else {
            let (_, frame) = link.to_client.pop_front().expect("due frame");
            let (c, open) = (link.client, link.client_open);
            if open {
                for _ in 0..times {
                    self.client_receives(c, &frame);
                }
            }
        }
        self.settle_closes();
        true
    }

    /// Connections the engine closed and whose queued frames were delivered: the client sees the close,
    /// the host drops the socket and reports `Disconnected`.
    fn settle_closes(&mut self) {
        let done: Vec<ConnectionId> = self
            .links
            .iter()
            .filter(|(_, l)| l.closing && l.to_client.is_empty())
            .map(|(c, _)| *c)
            .collect();
        for conn in done {
            self.client_lost(conn);
            if let Some(link) = self.links.get_mut(&conn) {
                link.to_server.clear();
            }
            self.reap(conn);
        }
    }

    fn reconnect_due(&mut self) {
        for c in 0..CLIENTS {
            if self.clients[c].link.is_none()
                && self.clients[c].reconnect_at.is_some_and(|t| t <= self.now)
            {
                self.connect(c);
            }
        }
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
        while self.next_tick <= self.now {
            self.next_tick += Duration::from_secs(1);
            self.input(Input::Tick);
        }
        self.reconnect_due();
    }

    fn edit(&mut self, c: usize, d: usize) {
        let id = self.ids[d].clone();
        let Some((doc, _)) = self.clients[c].client.docs.get_mut(&id) else {
            return;
        };
        // Like an app, a client edits only a document it has.
        if doc.get_heads().is_empty() {
            return;
        }
        random_edit(&mut self.rng, doc);
        self.stats.edits += 1;
        if self.rng.random_bool(0.5) {
            self.flush(c, Some(d));
        }
    }

    fn step(&mut self) {
        let dt = Duration::from_millis(self.rng.random_range(0..8));
        self.advance(dt);
        let roll = self.rng.random_range(0..100);
        match roll {
            0..45 => {
                self.deliver_one();
            }
            45..57 => {
                let (c, d) = (
                    self.rng.random_range(0..CLIENTS),
                    self.rng.random_range(0..DOCS),
                );
                self.edit(c, d);
            }
            57..65 => {
                let c = self.rng.random_range(0..CLIENTS);
                self.flush(c, None);
            }
            65..77 => self.commit_write(),
            77..83 => {
                let committed: Vec<usize> = (0..self.writes.len())
                    .filter(|&i| self.writes[i].committed)
                    .collect();
                if !committed.is_empty() {
                    let i = committed[self.rng.random_range(0..committed.len())];
                    self.report_write(i);
                }
            }
            83..93 => self.answer_load(),
            _ => {
                if self.rng.random_bool(self.faults.disconnect * 10.0) {
                    let c = self.rng.random_range(0..CLIENTS);
                    self.stats.disconnects += 1;
                    self.client_disconnects(c);
                }
                if self.rng.random_bool(self.faults.crash * 10.0) {
                    self.crash();
                }
            }
        }
    }

    /// No more faults: reconnect everyone and run until nothing moves.
    fn heal(&mut self) {
        self.faults = NONE;
        for c in 0..CLIENTS {
            if self.clients[c].link.is_none() {
                self.clients[c].reconnect_at = Some(self.now);
            }
        }
        self.reconnect_due();
        for _ in 0..200_000 {
            if self.deliver_one() {
                continue;
            }
            if self.writes.iter().any(|w| !w.committed) {
                self.commit_write();
                continue;
            }
            if !self.writes.is_empty() {
                self.report_write(0);
                continue;
            }
            if !self.loads.is_empty() {
                self.answer_load();
                continue;
            }
            let before: usize = self.links.values().map(|l| l.to_server.len()).sum();
            for c in 0..CLIENTS {
                self.flush(c, None);
            }
            let after: usize = self.links.values().map(|l| l.to_server.len()).sum();
            let next = self
                .links
                .values()
                .flat_map(|l| l.to_server.front().into_iter().chain(l.to_client.front()))
                .map(|(t, _)| *t)
                .min();
            match next {
                Some(t) => self.advance(t.saturating_duration_since(self.now)),
                None if after == before && self.clients.iter().all(|c| c.link.is_some()) => {
                    return;
                }
                None => self.advance(Duration::from_millis(50)),
            }
        }
        panic!("seed {}: no quiescence while healing", self.seed);
    }

    fn check_converged(&mut self) {
        assert_eq!(self.engine.writes_in_flight(), 0, "seed {}", self.seed);
        assert_eq!(
            self.engine.connection_count(),
            CLIENTS,
            "seed {}: the engine holds exactly the clients' connections",
            self.seed
        );
        self.check_acknowledged_durable("after healing");
        for d in 0..DOCS {
            let id = self.ids[d].clone();
            let stored = &self.durable[d];
            let heads = sorted_heads(stored);
            let json = json_of(stored);
            assert!(!heads.is_empty(), "seed {}: doc {d} was stored", self.seed);
            if let Some(resident) = self.engine.document(&id) {
                assert_eq!(
                    sorted_heads(resident),
                    heads,
                    "seed {}: server memory",
                    self.seed
                );
                assert_eq!(json_of(resident), json, "seed {}: server memory", self.seed);
            }
            for c in &mut self.clients {
                if !c.client.docs.contains_key(&id) {
                    continue;
                }
                assert_eq!(
                    c.client.heads(&id),
                    heads,
                    "seed {}: {} heads of doc {d}",
                    self.seed,
                    c.client.peer_id
                );
                assert_eq!(
                    c.client.json(&id),
                    json,
                    "seed {}: {} json of doc {d}",
                    self.seed,
                    c.client.peer_id
                );
            }
        }
    }
}

/// Returns what the seed went through.
fn run_seed(seed: u64) -> Stats {
    let mut sim = Sim::new(seed);
    for _ in 0..STEPS {
        sim.step();
    }
    sim.heal();
    sim.check_converged();
    sim.stats
}

#[test]
fn replicas_converge_and_nothing_acknowledged_is_lost_under_faults() {
    if let Ok(seed) = std::env::var("SIM_SEED") {
        let seed = seed.parse().expect("SIM_SEED is a number");
        let stats = run_seed(seed);
        eprintln!("seed {seed}: converged; {stats:?}");
        return;
    }
    let seeds: u64 = std::env::var("SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let started = Instant::now();
    let mut total = Stats::default();
    for seed in 0..seeds {
        match std::panic::catch_unwind(|| run_seed(seed)) {
            Ok(stats) => total += stats,
            Err(e) => {
                eprintln!("simulation failed for seed {seed}; replay with SIM_SEED={seed}");
                std::panic::resume_unwind(e);
            }
        }
    }
    eprintln!(
        "{seeds} seeds in {:?}; in total {total:?}",
        started.elapsed()
    );
}

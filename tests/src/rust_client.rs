//! A minimal automerge-repo client for end-to-end tests: one WebSocket, the join/peer handshake, and
//! per-document Automerge sync over the crate's codec. It remembers the heads the server last
//! reported for each document: what the server has acknowledged.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use automerge::sync::{self, SyncDoc};
use automerge::{AutoCommit, ChangeHash};
use driftless_client_protocol::{DocumentId, Message, PeerMetadata, decode, encode};
use futures::{SinkExt as _, StreamExt as _};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// One document as the client holds it.
pub struct ClientDoc {
    pub doc: AutoCommit,
    state: sync::State,
    /// The heads the server reported in its latest sync message, sorted.
    pub server_heads: Vec<ChangeHash>,
    pub unavailable: bool,
}

/// A connected client.
pub struct RustClient {
    ws: Ws,
    pub peer_id: String,
    pub server_peer_id: String,
    pub docs: HashMap<DocumentId, ClientDoc>,
}

impl RustClient {
    /// Connects and completes the handshake.
    pub async fn connect(url: &str, peer_id: &str) -> anyhow::Result<Self> {
        let (mut ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .with_context(|| format!("connect to {url}"))?;
        let join = Message::Join {
            sender_id: peer_id.to_owned(),
            supported_protocol_versions: Some(vec!["1".to_owned()]),
            peer_metadata: Some(PeerMetadata {
                storage_id: None,
                is_ephemeral: true,
            }),
        };
        ws.send(WsMessage::binary(encode(&join))).await?;
        let server_peer_id = loop {
            match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
                Err(_) => bail!("no peer message within 5 s"),
                Ok(None) => bail!("connection closed during the handshake"),
                Ok(Some(frame)) => {
                    if let WsMessage::Binary(bytes) = frame? {
                        match decode(&bytes)? {
                            Message::Peer { sender_id, .. } => break sender_id,
                            other => bail!("expected peer, got {}", other.type_name()),
                        }
                    }
                }
            }
        };
        Ok(Self {
            ws,
            peer_id: peer_id.to_owned(),
            server_peer_id,
            docs: HashMap::new(),
        })
    }

    /// Adds a document this client has (or wants, if `doc` is empty). The sync state starts fresh.
    pub fn add(&mut self, id: DocumentId, doc: AutoCommit) {
        self.docs.insert(
            id,
            ClientDoc {
                doc,
                state: sync::State::new(),
                server_heads: Vec::new(),
                unavailable: false,
            },
        );
    }

    /// Sends every sync message the documents have for the server.
    pub async fn flush(&mut self) -> anyhow::Result<()> {
        let ids: Vec<DocumentId> = self.docs.keys().cloned().collect();
        for id in ids {
            self.flush_doc(&id).await?;
        }
        Ok(())
    }

    /// Sends every sync message one document has for the server.
    pub async fn flush_doc(&mut self, id: &DocumentId) -> anyhow::Result<()> {
        let mut frames = Vec::new();
        if let Some(d) = self.docs.get_mut(id) {
            let empty = d.doc.get_heads().is_empty();
            while let Some(m) = d.doc.sync().generate_sync_message(&mut d.state) {
                let (sender_id, target_id, document_id, data) = (
                    self.peer_id.clone(),
                    self.server_peer_id.clone(),
                    id.clone(),
                    m.encode(),
                );
                frames.push(encode(&if empty {
                    Message::Request {
                        sender_id,
                        target_id,
                        document_id,
                        data,
                    }
                } else {
                    Message::Sync {
                        sender_id,
                        target_id,
                        document_id,
                        data,
                    }
                }));
            }
        }
        if !frames.is_empty() {
            for f in frames {
                self.ws.feed(WsMessage::binary(f)).await?;
            }
            self.ws.flush().await?;
        }
        Ok(())
    }

    /// Waits up to `within` for one frame from the server and applies it. `Ok(false)` on timeout.
    pub async fn receive_one(&mut self, within: Duration) -> anyhow::Result<bool> {
        Ok(self.receive(within).await?.is_some())
    }

    /// Waits up to `within` for one frame and applies it; returns the document it concerned (or
    /// `Some(None)` for frames about no document), `None` on timeout.
    pub async fn receive(
        &mut self,
        within: Duration,
    ) -> anyhow::Result<Option<Option<DocumentId>>> {
        let frame = match tokio::time::timeout(within, self.ws.next()).await {
            Err(_) => return Ok(None),
            Ok(None) => bail!("connection closed"),
            Ok(Some(frame)) => frame?,
        };
        let bytes = match frame {
            WsMessage::Binary(b) => b,
            WsMessage::Close(c) => bail!("server closed the connection: {c:?}"),
            _ => return Ok(Some(None)),
        };
        match decode(&bytes)? {
            Message::Sync {
                document_id, data, ..
            } => {
                let d = self
                    .docs
                    .get_mut(&document_id)
                    .ok_or_else(|| anyhow!("sync for unknown document {document_id}"))?;
                let m = sync::Message::decode(&data)?;
                let mut heads = m.heads.clone();
                heads.sort();
                d.server_heads = heads;
                d.unavailable = false;
                d.doc.sync().receive_sync_message(&mut d.state, m)?;
                Ok(Some(Some(document_id)))
            }
            Message::DocUnavailable { document_id, .. } => {
                if let Some(d) = self.docs.get_mut(&document_id) {
                    d.unavailable = true;
                }
                Ok(Some(Some(document_id)))
            }
            _ => Ok(Some(None)),
        }
    }

    /// Exchanges messages until nothing arrives for `quiet`. Only the document a frame concerned is
    /// asked for replies, so syncing many documents stays linear.
    pub async fn sync_until_quiet(&mut self, quiet: Duration) -> anyhow::Result<()> {
        self.flush().await?;
        loop {
            match self.receive(quiet).await? {
                None => return Ok(()),
                Some(Some(id)) => self.flush_doc(&id).await?,
                Some(None) => {}
            }
        }
    }

    /// True when the server reported exactly our heads for `id`.
    pub fn acknowledged(&mut self, id: &DocumentId) -> bool {
        let Some(d) = self.docs.get_mut(id) else {
            return false;
        };
        let mut ours = d.doc.get_heads();
        ours.sort();
        !ours.is_empty() && ours == d.server_heads
    }
}

//! One benchmark client connection: WebSocket dial, `join`/`peer` handshake, then protocol
//! messages in and out.
//!
//! Outgoing frames go through an unbounded queue to a writer task, so the caller never blocks on a
//! socket write while the server is blocked writing to us (a window of hundreds of documents in
//! flight would otherwise risk a send/send deadlock). The writer batches whatever is queued into
//! one flush.

use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use driftless_client_protocol::{DocumentId, Message, PeerMetadata, decode, encode};
use futures::stream::{SplitStream, StreamExt as _};
use futures::{SinkExt as _, stream::SplitSink};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A joined connection to an automerge-repo server.
pub struct Client {
    out: mpsc::UnboundedSender<Vec<u8>>,
    inbox: SplitStream<Ws>,
    writer: tokio::task::JoinHandle<anyhow::Result<()>>,
    /// Our PeerId (`senderId` of everything we send).
    pub peer_id: String,
    /// The server's PeerId from its `peer` reply (`targetId` of everything we send).
    pub server_id: String,
    /// WebSocket payload bytes queued for sending and taken off the socket (frames of the
    /// protocol, without WebSocket/TCP headers).
    sent_bytes: std::cell::Cell<u64>,
    received_bytes: u64,
}

impl Drop for Client {
    fn drop(&mut self) {
        self.writer.abort();
    }
}

impl Client {
    /// Dials `url` (TCP_NODELAY on), sends `join` as an ephemeral peer and waits for `peer`,
    /// failing if that takes longer than `timeout`.
    pub async fn connect(url: &str, peer_id: String, timeout: Duration) -> anyhow::Result<Self> {
        match tokio::time::timeout(timeout, Self::connect_inner(url, peer_id)).await {
            Ok(result) => result,
            Err(_) => bail!("connect and handshake with {url} timed out after {timeout:?}"),
        }
    }

    async fn connect_inner(url: &str, peer_id: String) -> anyhow::Result<Self> {
        let (ws, _) = tokio_tungstenite::connect_async_with_config(url, None, true)
            .await
            .with_context(|| format!("cannot connect to {url}"))?;
        let (sink, inbox) = ws.split();
        let (out, rx) = mpsc::unbounded_channel();
        let writer = tokio::spawn(write_loop(sink, rx));
        let mut client = Self {
            out,
            inbox,
            writer,
            peer_id,
            server_id: String::new(),
            sent_bytes: std::cell::Cell::new(0),
            received_bytes: 0,
        };
        client.send(&Message::Join {
            sender_id: client.peer_id.clone(),
            supported_protocol_versions: Some(vec!["1".into()]),
            peer_metadata: Some(PeerMetadata {
                storage_id: None,
                is_ephemeral: true,
            }),
        })?;
        match client.recv().await.context("waiting for `peer`")? {
            Message::Peer {
                sender_id,
                selected_protocol_version,
                ..
            } => {
                if selected_protocol_version != "1" {
                    bail!("server selected protocol version {selected_protocol_version:?}");
                }
                client.server_id = sender_id;
            }
            Message::Error { message, .. } => bail!("server refused join: {message}"),
            other => bail!("expected `peer`, got `{}`", other.type_name()),
        }
        Ok(client)
    }

    /// Queues one message for sending.
    pub fn send(&self, message: &Message) -> anyhow::Result<()> {
        let frame = encode(message);
        self.sent_bytes
            .set(self.sent_bytes.get() + frame.len() as u64);
        self.out
            .send(frame)
            .map_err(|_| anyhow!("connection writer has stopped"))
    }

    /// Payload bytes of every frame sent so far (including `join`).
    pub fn sent_bytes(&self) -> u64 {
        self.sent_bytes.get()
    }

    /// Payload bytes of every binary frame received so far (including `peer`).
    pub fn received_bytes(&self) -> u64 {
        self.received_bytes
    }

    /// Queues a `sync` (or `request` when `request` is true) carrying an automerge sync message.
    pub fn send_sync(
        &self,
        document_id: &DocumentId,
        data: Vec<u8>,
        request: bool,
    ) -> anyhow::Result<()> {
        let sender_id = self.peer_id.clone();
        let target_id = self.server_id.clone();
        let document_id = document_id.clone();
        let message = if request {
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
        };
        self.send(&message)
    }

    /// The next protocol message from the server. Cancel-safe (no message is lost when the
    /// future is dropped). A close, a text frame or an undecodable frame is an error.
    pub async fn recv(&mut self) -> anyhow::Result<Message> {
        Ok(self.recv_at().await?.0)
    }

    /// Like [`Client::recv`], with the moment the frame was taken off the socket (before decoding).
    pub async fn recv_at(&mut self) -> anyhow::Result<(Message, std::time::Instant)> {
        loop {
            match self.inbox.next().await {
                None => bail!("connection closed by the server"),
                Some(Err(e)) => bail!("connection failed: {e}"),
                Some(Ok(WsMessage::Binary(bytes))) => {
                    let at = std::time::Instant::now();
                    self.received_bytes += bytes.len() as u64;
                    let message = decode(&bytes).context("undecodable frame from the server")?;
                    return Ok((message, at));
                }
                Some(Ok(WsMessage::Close(frame))) => match frame {
                    Some(f) => bail!("server closed the connection: {} {}", f.code, f.reason),
                    None => bail!("server closed the connection"),
                },
                Some(Ok(WsMessage::Text(_))) => bail!("server sent a text frame"),
                Some(Ok(_)) => {}
            }
        }
    }
}

async fn write_loop(
    mut sink: SplitSink<Ws, WsMessage>,
    mut rx: mpsc::UnboundedReceiver<Vec<u8>>,
) -> anyhow::Result<()> {
    while let Some(frame) = rx.recv().await {
        sink.feed(WsMessage::Binary(frame.into())).await?;
        while let Ok(frame) = rx.try_recv() {
            sink.feed(WsMessage::Binary(frame.into())).await?;
        }
        sink.flush().await?;
    }
    let _ = sink.close().await;
    Ok(())
}

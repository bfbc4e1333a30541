//! The group-commit writer: one OS thread owns every write transaction.
//!
//! It blocks for the first queued persist, drains whatever else is already queued (up to
//! [`MAX_BATCH_OPS`] / [`MAX_BATCH_BYTES`]), applies them all in one transaction, commits (fsync in
//! `Durability::Immediate`), and only then reports `WriteDurable` for each. A failed commit reports
//! `WriteFailed` for every write in the batch and is logged loudly; nothing is acknowledged.
//! fsync costs ~0.1-7 ms here, so one commit per change would cap ingest near 2.5k/s (performance.md).

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Instant;

use driftless_client_protocol::engine::Input;

use crate::config::Durability;
use crate::metrics::Metrics;
use crate::storage::{PersistRequest, Storage};

/// Most persists applied in one transaction.
pub const MAX_BATCH_OPS: usize = 1000;
/// Most bytes applied in one transaction (a single larger persist still goes alone).
pub const MAX_BATCH_BYTES: usize = 8 * 1024 * 1024;

/// The sending side, held by the engine host. Never blocks: the engine must not wait on the disk.
#[derive(Debug, Clone)]
pub struct WriteQueue {
    tx: mpsc::Sender<PersistRequest>,
    metrics: Arc<Metrics>,
}

/// The writer thread stopped; the request was not queued.
#[derive(Debug, thiserror::Error)]
#[error("storage writer has stopped")]
pub struct WriterStopped(pub PersistRequest);

impl WriteQueue {
    pub fn submit(&self, req: PersistRequest) -> Result<(), WriterStopped> {
        self.metrics.storage_pending_writes.fetch_add(1, Relaxed);
        self.tx.send(req).map_err(|e| {
            self.metrics.storage_pending_writes.fetch_sub(1, Relaxed);
            WriterStopped(e.0)
        })
    }
}

/// The receiving side, handed to [`spawn`].
#[derive(Debug)]
pub struct WriteReceiver(mpsc::Receiver<PersistRequest>);

pub fn channel(metrics: Arc<Metrics>) -> (WriteQueue, WriteReceiver) {
    let (tx, rx) = mpsc::channel();
    (WriteQueue { tx, metrics }, WriteReceiver(rx))
}

/// Starts the writer thread. It exits once every [`WriteQueue`] is dropped and the queue is empty.
/// `report` receives `WriteDurable` / `WriteFailed` for every request, after its commit.
pub fn spawn(
    rx: WriteReceiver,
    storage: Storage,
    durability: Durability,
    metrics: Arc<Metrics>,
    report: impl Fn(Input) + Send + 'static,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("driftless-writer".into())
        .spawn(move || writer_loop(rx.0, &storage, durability, &metrics, &report))
}

fn writer_loop(
    rx: mpsc::Receiver<PersistRequest>,
    storage: &Storage,
    durability: Durability,
    metrics: &Metrics,
    report: &dyn Fn(Input),
) {
    let mut carry: Option<PersistRequest> = None;
    loop {
        let first = match carry.take() {
            Some(req) => req,
            None => match rx.recv() {
                Ok(req) => req,
                Err(_) => return, // every sender dropped and the queue is empty
            },
        };
        let mut bytes = first.byte_len();
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH_OPS {
            let Ok(req) = rx.try_recv() else { break };
            if bytes + req.byte_len() > MAX_BATCH_BYTES {
                carry = Some(req);
                break;
            }
            bytes += req.byte_len();
            batch.push(req);
        }

        let started = Instant::now();
        let result = storage.commit_batch(&batch, durability);
        metrics
            .storage_pending_writes
            .fetch_sub(batch.len() as u64, Relaxed);
        match result {
            Ok(()) => {
                metrics.record_commit(batch.len(), started.elapsed());
                for req in batch {
                    report(Input::WriteDurable { write: req.write });
                }
            }
            Err(e) => {
                metrics.storage_commit_failures.fetch_add(1, Relaxed);
                let error = e.to_string();
                tracing::error!(
                    writes = batch.len(),
                    bytes,
                    %error,
                    "STORAGE COMMIT FAILED: none of these writes is durable; reporting them failed"
                );
                for req in batch {
                    report(Input::WriteFailed {
                        write: req.write,
                        error: error.clone(),
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use driftless_client_protocol::DocumentId;
    use driftless_client_protocol::engine::PersistOp;
    use std::sync::atomic::Ordering::Relaxed;

    #[test]
    fn queued_persists_commit_in_one_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path()).unwrap();
        let metrics = Arc::new(Metrics::default());
        let (queue, rx) = channel(metrics.clone());
        // Queue everything before the writer starts, so it finds one full batch.
        let n = 500u64;
        for write in 0..n {
            let doc = DocumentId::from_bytes(&[(write % 7) as u8; 16]);
            let op = PersistOp::Append(write.to_be_bytes().to_vec());
            queue
                .submit(PersistRequest {
                    write,
                    doc,
                    workspace: "default".into(),
                    op,
                })
                .unwrap();
        }
        assert_eq!(metrics.storage_pending_writes.load(Relaxed), n);
        let (report_tx, report_rx) = mpsc::channel();
        let thread = spawn(
            rx,
            storage.clone(),
            Durability::Immediate,
            metrics.clone(),
            move |input| report_tx.send(input).unwrap(),
        )
        .unwrap();
        drop(queue);
        thread.join().unwrap();

        let acked: Vec<u64> = report_rx
            .iter()
            .map(|input| match input {
                Input::WriteDurable { write } => write,
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(acked, (0..n).collect::<Vec<_>>());
        assert_eq!(metrics.storage_commits.load(Relaxed), 1);
        assert_eq!(metrics.storage_pending_writes.load(Relaxed), 0);
        let doc0 = DocumentId::from_bytes(&[0; 16]);
        let chunks = storage.load(&doc0).unwrap().unwrap();
        assert_eq!(chunks.len(), (0..n).filter(|w| w % 7 == 0).count());
        assert_eq!(chunks[1], 7u64.to_be_bytes().to_vec());
    }

    #[test]
    fn batches_are_capped() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path()).unwrap();
        let metrics = Arc::new(Metrics::default());
        let (queue, rx) = channel(metrics.clone());
        let n = MAX_BATCH_OPS as u64 + 10;
        for write in 0..n {
            let doc = DocumentId::from_bytes(&[1; 16]);
            queue
                .submit(PersistRequest {
                    write,
                    doc,
                    workspace: "default".into(),
                    op: PersistOp::Append(vec![1]),
                })
                .unwrap();
        }
        drop(queue);
        let (report_tx, report_rx) = mpsc::channel();
        spawn(rx, storage, Durability::None, metrics.clone(), move |i| {
            report_tx.send(i).unwrap()
        })
        .unwrap()
        .join()
        .unwrap();
        assert_eq!(report_rx.iter().count() as u64, n);
        assert_eq!(metrics.storage_commits.load(Relaxed), 2);
    }
}

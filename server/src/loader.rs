//! Document loads off the engine thread: a small pool of OS threads reads chunks and does the
//! Automerge load work, so the engine only ever receives a ready document.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;

use driftless_client_protocol::DocumentId;
use driftless_client_protocol::engine::{Input, LoadResult};
use tokio::sync::oneshot;

use crate::metrics::Metrics;
use crate::storage::{LoadError, Storage};

/// What a JSON read of a document found.
#[derive(Debug)]
pub enum DocJson {
    Found(serde_json::Value),
    NotFound,
    Failed(String),
}

enum Job {
    /// Answer the engine with `StorageLoaded`.
    Engine(DocumentId),
    /// Answer an HTTP read of a non-resident document of a workspace.
    Json(DocumentId, String, oneshot::Sender<DocJson>),
}

/// The pool. Dropping it lets queued jobs finish, then joins the threads.
pub struct Loader {
    tx: Option<mpsc::Sender<Job>>,
    threads: Vec<JoinHandle<()>>,
}

/// The loader pool has stopped.
#[derive(Debug, thiserror::Error)]
#[error("document loader has stopped")]
pub struct LoaderStopped;

impl Loader {
    pub fn spawn(
        storage: Storage,
        threads: usize,
        metrics: Arc<Metrics>,
        report: impl Fn(Input) + Send + Sync + 'static,
    ) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel::<Job>();
        // A shared receiver behind a mutex is the simplest work queue for a handful of threads.
        let rx = Arc::new(Mutex::new(rx));
        let report = Arc::new(report);
        let mut handles = Vec::new();
        for i in 0..threads.max(1) {
            let (rx, storage, metrics, report) =
                (rx.clone(), storage.clone(), metrics.clone(), report.clone());
            handles.push(
                std::thread::Builder::new()
                    .name(format!("driftless-loader-{i}"))
                    .spawn(move || {
                        loop {
                            let job = match rx.lock() {
                                Ok(rx) => rx.recv(),
                                Err(_) => return,
                            };
                            let Ok(job) = job else { return };
                            run_job(job, &storage, &metrics, &*report);
                        }
                    })?,
            );
        }
        Ok(Self {
            tx: Some(tx),
            threads: handles,
        })
    }

    /// Loads `doc` for the engine; the answer arrives as `Input::StorageLoaded`.
    pub fn load(&self, doc: DocumentId) -> Result<(), LoaderStopped> {
        self.send(Job::Engine(doc))
    }

    /// Reads `doc` from storage as JSON, if it belongs to `workspace` (else "not found").
    pub fn read_json(
        &self,
        doc: DocumentId,
        workspace: String,
        reply: oneshot::Sender<DocJson>,
    ) -> Result<(), LoaderStopped> {
        self.send(Job::Json(doc, workspace, reply))
    }

    fn send(&self, job: Job) -> Result<(), LoaderStopped> {
        self.tx
            .as_ref()
            .ok_or(LoaderStopped)?
            .send(job)
            .map_err(|_| LoaderStopped)
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        self.tx = None;
        for handle in self.threads.drain(..) {
            let _ = handle.join();
        }
    }
}

fn run_job(job: Job, storage: &Storage, metrics: &Metrics, report: &dyn Fn(Input)) {
    metrics.storage_loads.fetch_add(1, Relaxed);
    match job {
        Job::Engine(doc) => {
            let result = match storage.load_stored(&doc) {
                Ok(Some(stored)) => LoadResult::Found {
                    doc: Box::new(stored.document),
                    workspace: stored.workspace,
                    stored_bytes: stored.stored_bytes,
                },
                Ok(None) => LoadResult::NotFound,
                Err(e) => LoadResult::Failed(load_failed(metrics, &doc, &e)),
            };
            report(Input::StorageLoaded { doc, result });
        }
        Job::Json(doc, workspace, reply) => {
            let answer = match storage.load_stored(&doc) {
                Ok(Some(stored)) if stored.workspace == workspace => {
                    document_json(&stored.document)
                }
                Ok(Some(_)) => DocJson::NotFound,
                Ok(None) => DocJson::NotFound,
                Err(e) => DocJson::Failed(load_failed(metrics, &doc, &e)),
            };
            let _ = reply.send(answer);
        }
    }
}

fn load_failed(metrics: &Metrics, doc: &DocumentId, e: &LoadError) -> String {
    metrics.storage_load_failures.fetch_add(1, Relaxed);
    let message = match e {
        LoadError::Storage(e) => format!("document {doc}: {e}"),
        LoadError::Corrupt { .. } => e.to_string(),
    };
    tracing::error!(%doc, error = %message, "document load failed");
    message
}

/// The document as JSON: Text as strings, counters as numbers.
pub fn document_json(document: &automerge::Automerge) -> DocJson {
    match serde_json::to_value(automerge::AutoSerde::from(document)) {
        Ok(value) => DocJson::Found(value),
        Err(e) => DocJson::Failed(format!("document does not convert to JSON: {e}")),
    }
}

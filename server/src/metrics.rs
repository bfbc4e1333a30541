//! Process-wide counters, rendered as Prometheus text by `GET /metrics`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// A histogram with fixed bucket bounds; cheap enough to update on every commit.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// Non-cumulative counts per bound; the last slot is `+Inf`.
    counts: Vec<AtomicU64>,
    count: AtomicU64,
    /// Sum in millionths of the unit, so it fits an atomic integer.
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, value: f64) {
        let slot = self
            .bounds
            .iter()
            .position(|b| value <= *b)
            .unwrap_or(self.bounds.len());
        self.counts[slot].fetch_add(1, Relaxed);
        self.count.fetch_add(1, Relaxed);
        self.sum_micros
            .fetch_add((value * 1_000_000.0).round() as u64, Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Relaxed)
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (bound, count) in self.bounds.iter().zip(&self.counts) {
            cumulative += count.load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        cumulative += self.counts[self.bounds.len()].load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
        let sum = self.sum_micros.load(Relaxed) as f64 / 1_000_000.0;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {}", self.count());
    }
}

/// A counter with one label whose values are static names.
#[derive(Debug, Default)]
pub struct LabeledCounter {
    counts: Mutex<BTreeMap<&'static str, u64>>,
}

impl LabeledCounter {
    pub fn inc(&self, label: &'static str) {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        *counts.entry(label).or_default() += 1;
    }

    pub fn get(&self, label: &str) -> u64 {
        let counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        counts.get(label).copied().unwrap_or(0)
    }

    fn render(&self, out: &mut String, name: &str, label: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        let counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        for (value, count) in counts.iter() {
            let _ = writeln!(out, "{name}{{{label}=\"{value}\"}} {count}");
        }
    }
}

const SECONDS_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0];

/// Everything `/metrics` reports. Shared by `Arc`; all fields are atomics.
#[derive(Debug)]
pub struct Metrics {
    /// Open WebSocket connections (registered with the engine host).
    pub connections: AtomicU64,
    /// Documents resident in the engine, refreshed by the engine thread after every input.
    pub resident_documents: AtomicU64,
    pub messages_in: AtomicU64,
    pub messages_out: AtomicU64,
    /// Connections closed because their outbound queue was full.
    pub slow_reader_closes: AtomicU64,
    pub storage_commits: AtomicU64,
    pub storage_commit_failures: AtomicU64,
    /// Persists handed to the writer and not yet committed (or failed).
    pub storage_pending_writes: AtomicU64,
    pub storage_commit_batch_size: Histogram,
    pub storage_commit_seconds: Histogram,
    pub storage_loads: AtomicU64,
    pub storage_load_failures: AtomicU64,
    /// Upgrades and API requests refused for their credentials, by reason.
    pub auth_failures: LabeledCounter,
    /// Limits that tripped, by limit name.
    pub limit_hits: LabeledCounter,
    /// What the engine refused (authorization, read-only, quota), by kind.
    pub refusals: LabeledCounter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            connections: AtomicU64::new(0),
            resident_documents: AtomicU64::new(0),
            messages_in: AtomicU64::new(0),
            messages_out: AtomicU64::new(0),
            slow_reader_closes: AtomicU64::new(0),
            storage_commits: AtomicU64::new(0),
            storage_commit_failures: AtomicU64::new(0),
            storage_pending_writes: AtomicU64::new(0),
            storage_commit_batch_size: Histogram::new(BATCH_BUCKETS),
            storage_commit_seconds: Histogram::new(SECONDS_BUCKETS),
            storage_loads: AtomicU64::new(0),
            storage_load_failures: AtomicU64::new(0),
            auth_failures: LabeledCounter::default(),
            limit_hits: LabeledCounter::default(),
            refusals: LabeledCounter::default(),
        }
    }
}

impl Metrics {
    pub fn record_commit(&self, batch_size: usize, elapsed: Duration) {
        self.storage_commits.fetch_add(1, Relaxed);
        self.storage_commit_batch_size.observe(batch_size as f64);
        self.storage_commit_seconds.observe(elapsed.as_secs_f64());
    }

    /// Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut scalar = |name: &str, kind: &str, help: &str, value: &AtomicU64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}",
                value.load(Relaxed)
            );
        };
        scalar(
            "driftless_connections",
            "gauge",
            "Open WebSocket connections.",
            &self.connections,
        );
        scalar(
            "driftless_resident_documents",
            "gauge",
            "Documents held in memory.",
            &self.resident_documents,
        );
        scalar(
            "driftless_messages_in_total",
            "counter",
            "Binary WebSocket messages received.",
            &self.messages_in,
        );
        scalar(
            "driftless_messages_out_total",
            "counter",
            "Binary WebSocket messages sent.",
            &self.messages_out,
        );
        scalar(
            "driftless_slow_reader_closes_total",
            "counter",
            "Connections closed because they did not read fast enough.",
            &self.slow_reader_closes,
        );
        scalar(
            "driftless_storage_commits_total",
            "counter",
            "Storage write transactions committed.",
            &self.storage_commits,
        );
        scalar(
            "driftless_storage_commit_failures_total",
            "counter",
            "Storage write transactions that failed (their writes were reported failed).",
            &self.storage_commit_failures,
        );
        scalar(
            "driftless_storage_pending_writes",
            "gauge",
            "Persists queued for the writer and not yet committed.",
            &self.storage_pending_writes,
        );
        scalar(
            "driftless_storage_loads_total",
            "counter",
            "Document loads from storage.",
            &self.storage_loads,
        );
        scalar(
            "driftless_storage_load_failures_total",
            "counter",
            "Document loads that failed.",
            &self.storage_load_failures,
        );
        self.storage_commit_batch_size.render(
            &mut out,
            "driftless_storage_commit_batch_size",
            "Persists per storage commit.",
        );
        self.storage_commit_seconds.render(
            &mut out,
            "driftless_storage_commit_seconds",
            "Time to commit one storage write transaction, fsync included.",
        );
        self.auth_failures.render(
            &mut out,
            "driftless_auth_failures_total",
            "reason",
            "WebSocket upgrades and API requests refused for their credentials.",
        );
        self.limit_hits.render(
            &mut out,
            "driftless_limit_hits_total",
            "limit",
            "Times a limit tripped (connection refused, throttled or closed).",
        );
        self.refusals.render(
            &mut out,
            "driftless_refusals_total",
            "kind",
            "Protocol messages refused by authorization, read-only access or the document quota.",
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative() {
        let m = Metrics::default();
        m.record_commit(1, Duration::from_micros(50));
        m.record_commit(150, Duration::from_millis(3));
        let text = m.render();
        assert!(text.contains("driftless_storage_commits_total 2"), "{text}");
        assert!(
            text.contains("driftless_storage_commit_batch_size_bucket{le=\"1\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("driftless_storage_commit_batch_size_bucket{le=\"200\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("driftless_storage_commit_seconds_bucket{le=\"+Inf\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("driftless_storage_commit_batch_size_sum 151"),
            "{text}"
        );
    }
}

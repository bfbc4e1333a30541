//! Connection admission (caps per workspace and per IP) and per-connection token buckets.
//!
//! Every limit that trips counts in `driftless_limit_hits_total{limit="..."}` and logs a line naming
//! the connection (or peer address) and the limit.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::Limits;

/// Metric label values of the limits.
pub mod limit {
    pub const CONNECTIONS_PER_IP: &str = "connections_per_ip";
    pub const CONNECTIONS_PER_WORKSPACE: &str = "connections_per_workspace";
    pub const MESSAGES_PER_SECOND: &str = "messages_per_second";
    pub const BYTES_PER_SECOND: &str = "bytes_per_second";
    pub const DOCUMENT_BYTES: &str = "max_document_bytes";
    pub const OUTBOUND_QUEUE: &str = "outbound_queue";
    pub const MESSAGE_SIZE: &str = "max_message_bytes";
}

#[derive(Default, Debug)]
struct Counts {
    per_ip: HashMap<IpAddr, usize>,
    per_workspace: HashMap<String, usize>,
}

/// Counts open connections per IP and per workspace.
#[derive(Debug)]
pub struct Admission {
    max_per_ip: usize,
    max_per_workspace: usize,
    counts: Mutex<Counts>,
}

/// One admitted connection; dropping it frees its place.
#[derive(Debug)]
pub struct AdmissionGuard {
    admission: Arc<Admission>,
    ip: IpAddr,
    workspace: String,
}

impl Admission {
    pub fn new(limits: &Limits) -> Arc<Self> {
        Arc::new(Self {
            max_per_ip: limits.max_connections_per_ip,
            max_per_workspace: limits.max_connections_per_workspace,
            counts: Mutex::new(Counts::default()),
        })
    }

    /// Takes a place for a connection from `ip` in `workspace`, or names the limit that is full.
    pub fn admit(
        self: &Arc<Self>,
        ip: IpAddr,
        workspace: &str,
    ) -> Result<AdmissionGuard, &'static str> {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if counts.per_ip.get(&ip).copied().unwrap_or(0) >= self.max_per_ip {
            return Err(limit::CONNECTIONS_PER_IP);
        }
        if counts.per_workspace.get(workspace).copied().unwrap_or(0) >= self.max_per_workspace {
            return Err(limit::CONNECTIONS_PER_WORKSPACE);
        }
        *counts.per_ip.entry(ip).or_default() += 1;
        *counts
            .per_workspace
            .entry(workspace.to_owned())
            .or_default() += 1;
        Ok(AdmissionGuard {
            admission: self.clone(),
            ip,
            workspace: workspace.to_owned(),
        })
    }
}

impl Drop for AdmissionGuard {
    fn drop(&mut self) {
        let mut counts = self
            .admission
            .counts
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(n) = counts.per_ip.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.per_ip.remove(&self.ip);
            }
        }
        if let Some(n) = counts.per_workspace.get_mut(&self.workspace) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.per_workspace.remove(&self.workspace);
            }
        }
    }
}

/// A token bucket: `rate` tokens per second, holding at most `burst`.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn new(rate: u64, burst: u64, now: Instant) -> Self {
        let burst = burst.max(1) as f64;
        Self {
            rate: rate.max(1) as f64,
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// Takes `n` tokens (going into debt if needed) and returns how long to wait before the debt is
    /// repaid: zero when the bucket had enough.
    pub fn take(&mut self, n: u64, now: Instant) -> Duration {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.tokens -= n as f64;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admission_caps_and_frees() {
        let limits = Limits {
            max_connections_per_ip: 2,
            max_connections_per_workspace: 3,
            ..Limits::default()
        };
        let a = Admission::new(&limits);
        let ip1: IpAddr = "10.0.0.1".parse().unwrap();
        let ip2: IpAddr = "10.0.0.2".parse().unwrap();
        let g1 = a.admit(ip1, "w").unwrap();
        let _g2 = a.admit(ip1, "w").unwrap();
        assert_eq!(a.admit(ip1, "w").unwrap_err(), limit::CONNECTIONS_PER_IP);
        let _g3 = a.admit(ip2, "w").unwrap();
        assert_eq!(
            a.admit(ip2, "w").unwrap_err(),
            limit::CONNECTIONS_PER_WORKSPACE
        );
        let _other = a.admit(ip2, "other").unwrap();
        drop(g1);
        a.admit(ip1, "w").unwrap();
    }

    #[test]
    fn bucket_allows_burst_then_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10, 5, t0);
        for _ in 0..5 {
            assert_eq!(b.take(1, t0), Duration::ZERO);
        }
        let wait = b.take(1, t0);
        assert!(wait > Duration::from_millis(90) && wait <= Duration::from_millis(100));
        // After a second, 10 more (capped at the burst of 5).
        let t1 = t0 + Duration::from_secs(1);
        for _ in 0..5 {
            assert_eq!(b.take(1, t1), Duration::ZERO);
        }
        assert!(b.take(1, t1) > Duration::ZERO);
    }
}

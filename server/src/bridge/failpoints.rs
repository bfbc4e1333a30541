//! Test-only fault injection for the bridge runner (cargo feature `failpoints`, off by default).
//!
//! A test arms a named point of one bridge; when the runner reaches it, the round fails right
//! there, exactly as if the process had died at that instant: nothing after the point runs, and
//! only what was durable before it survives. Points are per bridge id, so tests that run bridges
//! in one process do not disturb each other.
//!
//! Points: `import.before_send` (a new provider record's pending import is stored, its document
//! not yet sent) and `import.after_send` (the document is durable, its link not yet stored).
//! Must not: be compiled into a release build.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

static ARMED: Mutex<BTreeMap<(String, String), u32>> = Mutex::new(BTreeMap::new());

fn armed() -> MutexGuard<'static, BTreeMap<(String, String), u32>> {
    ARMED.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Makes `point` of bridge `bridge` fail the next `times` times it is reached.
pub fn arm(bridge: &str, point: &str, times: u32) {
    armed().insert((bridge.to_owned(), point.to_owned()), times);
}

/// Disarms `point` of bridge `bridge`.
pub fn disarm(bridge: &str, point: &str) {
    armed().remove(&(bridge.to_owned(), point.to_owned()));
}

/// Whether `point` of `bridge` fails now (counting the hit).
pub(crate) fn fire(bridge: &str, point: &str) -> bool {
    let mut armed = armed();
    let key = (bridge.to_owned(), point.to_owned());
    match armed.get_mut(&key) {
        Some(left) if *left > 0 => {
            *left -= 1;
            if *left == 0 {
                armed.remove(&key);
            }
            true
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_point_fires_as_often_as_armed_and_only_for_its_bridge() {
        arm("fp-test", "p", 2);
        assert!(!fire("other", "p"));
        assert!(fire("fp-test", "p"));
        assert!(fire("fp-test", "p"));
        assert!(!fire("fp-test", "p"));
        arm("fp-test", "p", 1);
        disarm("fp-test", "p");
        assert!(!fire("fp-test", "p"));
    }
}

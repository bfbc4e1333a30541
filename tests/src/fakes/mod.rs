//! Fake provider servers for the bridge tests (loopback, faults injectable from the tests).

pub mod google;
pub mod graph;

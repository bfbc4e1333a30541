//! Arbitrary bytes as one WebSocket frame: `decode` never panics, and whatever decodes re-encodes to
//! a frame that decodes to the same message.
#![no_main]

use driftless_client_protocol::{decode, encode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(message) = std::hint::black_box(decode(data)) {
        let again = decode(&encode(&message)).expect("an encoded message decodes");
        assert_eq!(again, message, "decode(encode(m)) == m");
    }
});

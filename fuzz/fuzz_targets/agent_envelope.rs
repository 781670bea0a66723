//! The agent-to-agent envelope codec (the shim's public wire decoder, built on its codec):
//! any bytes decode to an envelope or a typed error; a decoded envelope re-encodes to bytes
//! that decode to the same envelope.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pstream_agent::Envelope;

fuzz_target!(|data: &[u8]| {
    if let Ok(envelope) = Envelope::decode(data) {
        let encoded = envelope.encode();
        assert_eq!(Envelope::decode(&encoded).as_ref(), Ok(&envelope));
    }
});

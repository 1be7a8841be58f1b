//! Feeds arbitrary bytes to the checkpoint loader (as f32 and as f64) and asserts that it never
//! panics, and that whatever it accepts re-encodes to exactly the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sd_attention::train::checkpoint::Checkpoint;
use sd_attention::Error;

fuzz_target!(|data: &[u8]| {
    match Checkpoint::<f32>::decode(data) {
        Ok(c) => assert_eq!(c.encode().expect("accepted checkpoint re-encodes"), data),
        Err(e) => assert!(matches!(e, Error::Malformed { .. })),
    }
    match Checkpoint::<f64>::decode(data) {
        Ok(c) => assert_eq!(c.encode().expect("accepted checkpoint re-encodes"), data),
        Err(e) => assert!(matches!(e, Error::Malformed { .. })),
    }
});

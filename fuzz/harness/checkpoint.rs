//! Feeds arbitrary bytes to the checkpoint loader (as f32 and as f64) and asserts that it never
//! panics, rejects only as malformed or corrupted, and that whatever it accepts re-encodes to exactly
//! the same bytes.

use sd_attention::train::checkpoint::Checkpoint;
use sd_attention::Error;

/// Runs one input; a panic is a finding (the API panicked or broke a promise checked here).
pub fn run(data: &[u8]) {
    match Checkpoint::<f32>::decode(data) {
        Ok(c) => assert_eq!(c.encode().expect("accepted checkpoint re-encodes"), data),
        Err(e) => assert!(matches!(e, Error::Malformed { .. } | Error::ChecksumMismatch { .. })),
    }
    match Checkpoint::<f64>::decode(data) {
        Ok(c) => assert_eq!(c.encode().expect("accepted checkpoint re-encodes"), data),
        Err(e) => assert!(matches!(e, Error::Malformed { .. } | Error::ChecksumMismatch { .. })),
    }
}

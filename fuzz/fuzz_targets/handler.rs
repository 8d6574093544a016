//! Any bytes as an invocation payload, end to end through the handler over an in-memory
//! bucket: refused with the documented message, or applied exactly as its records one by one
//! would be; failures are reported for exactly the failed users.
#![no_main]

use libfuzzer_sys::fuzz_target;
use usersync_fuzz::{check_batch, check_payload, records_of};

fuzz_target!(|data: &[u8]| {
    let Ok(payload) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    if let Some(records) = records_of(&payload) {
        check_batch(&records);
    }
    check_payload(payload);
});

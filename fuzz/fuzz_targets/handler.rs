//! Any bytes as an invocation payload, end to end through the handler over an in-memory
//! bucket, taken as `bootstrap` takes it (JSON text): refused with the documented message, or
//! applied exactly as its records one by one would be; failures are reported for exactly the
//! failed users.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::value::RawValue;
use usersync_function::payload_records;
use usersync_fuzz::{check_batch, check_payload};

fuzz_target!(|data: &[u8]| {
    let Ok(payload) = serde_json::from_slice::<Box<RawValue>>(data) else {
        return;
    };
    if let Ok(records) = payload_records(&payload) {
        check_batch(&records);
    }
    check_payload(&payload);
});

//! Any bytes as an invocation payload: parsed, refused or planned, never a panic; a plan
//! accounts for every record and gives every user a key of the rule.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::value::RawValue;
use usersync_function::payload_records;
use usersync_fuzz::{check_planning, configs};

fuzz_target!(|data: &[u8]| {
    let Ok(payload) = serde_json::from_slice::<Box<RawValue>>(data) else {
        return;
    };
    match payload_records(&payload) {
        Ok(records) => {
            for config in configs() {
                check_planning(&records, &config);
            }
        }
        Err(err) => {
            let message = err.to_string();
            assert!(
                message.starts_with("the payload is not a DynamoDB Streams event: "),
                "{message}"
            );
        }
    }
});

//! Any bytes as an invocation payload: parsed, refused or planned, never a panic; a plan
//! accounts for every record and gives every user a key of the rule.
#![no_main]

use libfuzzer_sys::fuzz_target;
use usersync_function::stream_records;
use usersync_fuzz::{check_planning, configs};

fuzz_target!(|data: &[u8]| {
    let Ok(payload) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    match stream_records(payload) {
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

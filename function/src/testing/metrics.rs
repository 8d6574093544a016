//! The batches' metrics records, captured ([`CapturedMetrics`]) and checked against the
//! Embedded Metric Format specification ([`check_emf_line`]).

use std::io::{self, Write};
use std::sync::{Arc, Mutex, PoisonError};

use serde_json::{Map, Value};

use crate::metrics::MetricsOut;

/// The function name of the records [`CapturedMetrics::out`] writes.
pub const FUNCTION_NAME: &str = "usersync-test";

/// What a [`MetricsOut`] wrote, kept in memory.
#[derive(Clone, Debug, Default)]
pub struct CapturedMetrics(Arc<Mutex<Vec<u8>>>);

impl CapturedMetrics {
    pub fn new() -> CapturedMetrics {
        CapturedMetrics::default()
    }

    /// Records of function [`FUNCTION_NAME`], written here.
    pub fn out(&self) -> MetricsOut {
        MetricsOut::to_writer(FUNCTION_NAME, self.clone())
    }

    /// Every line written so far, without its line ending.
    pub fn lines(&self) -> Vec<String> {
        let bytes = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        String::from_utf8_lossy(&bytes)
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

impl Write for CapturedMetrics {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The largest log event CloudWatch Logs takes, and so the largest EMF document (the
/// specification's figure has been 256 KB and later 1 MB; the smaller is checked).
const MAX_DOCUMENT_BYTES: usize = 256 * 1024;
/// Metric definitions per directive, and values per metric array, at most.
const MAX_METRICS: usize = 100;
/// Dimension names per dimension set, at most.
const MAX_DIMENSIONS: usize = 30;
/// The units a metric definition may name: those of CloudWatch's `MetricDatum.Unit`.
const UNITS: [&str; 27] = [
    "Seconds",
    "Microseconds",
    "Milliseconds",
    "Bytes",
    "Kilobytes",
    "Megabytes",
    "Gigabytes",
    "Terabytes",
    "Bits",
    "Kilobits",
    "Megabits",
    "Gigabits",
    "Terabits",
    "Percent",
    "Count",
    "Bytes/Second",
    "Kilobytes/Second",
    "Megabytes/Second",
    "Gigabytes/Second",
    "Terabytes/Second",
    "Bits/Second",
    "Kilobits/Second",
    "Megabits/Second",
    "Gigabits/Second",
    "Terabits/Second",
    "Count/Second",
    "None",
];
/// 2001-09-09 in epoch milliseconds; every timestamp in milliseconds since is larger, while
/// one in seconds would not be for another 30,000 years.
const MIN_TIMESTAMP_MS: u64 = 1_000_000_000_000;

/// Checks one log line against the CloudWatch Embedded Metric Format specification
/// (<https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html>)
/// and returns its root object, or what is wrong with it:
///
/// - the line is one JSON object and nothing else, within the size of a log event;
/// - its root member `_aws` is an object with exactly `Timestamp`, an integer of epoch
///   milliseconds, and `CloudWatchMetrics`, an array of directives;
/// - each directive has exactly a `Namespace` (a string of 1 to 255 characters), `Dimensions`
///   (an array of at least one dimension set, each an array of at most 30 names, each of a root
///   member whose value is a string) and `Metrics` (an array of at most 100 definitions, each
///   with a `Name` of a root member whose value is a number or an array of at most 100 numbers,
///   and optionally a `Unit` among CloudWatch's units and a `StorageResolution` of 1 or 60).
pub fn check_emf_line(line: &str) -> Result<Map<String, Value>, String> {
    if line.contains('\n') {
        return Err("the document spans more than one line".to_owned());
    }
    if line.len() > MAX_DOCUMENT_BYTES {
        return Err(format!(
            "the document is {} bytes, over {MAX_DOCUMENT_BYTES}",
            line.len()
        ));
    }
    let Value::Object(root) =
        serde_json::from_str::<Value>(line).map_err(|err| format!("not JSON: {err}"))?
    else {
        return Err("the document is not a JSON object".to_owned());
    };
    let aws = object(root.get("_aws"), "_aws")?;
    only_members(aws, "_aws", &["Timestamp", "CloudWatchMetrics"])?;
    match aws.get("Timestamp").and_then(Value::as_u64) {
        Some(ms) if ms >= MIN_TIMESTAMP_MS => {}
        Some(n) => return Err(format!("_aws.Timestamp {n} is not in epoch milliseconds")),
        None => return Err("_aws.Timestamp is not a non-negative integer".to_owned()),
    }
    let directives = array(aws.get("CloudWatchMetrics"), "_aws.CloudWatchMetrics")?;
    for (i, directive) in directives.iter().enumerate() {
        let at = format!("_aws.CloudWatchMetrics[{i}]");
        let directive = object(Some(directive), &at)?;
        only_members(directive, &at, &["Namespace", "Dimensions", "Metrics"])?;
        match directive.get("Namespace").and_then(Value::as_str) {
            Some(namespace) if (1..=255).contains(&namespace.chars().count()) => {}
            _ => {
                return Err(format!(
                    "{at}.Namespace is not a string of 1 to 255 characters"
                ))
            }
        }
        let dimension_sets = array(directive.get("Dimensions"), &format!("{at}.Dimensions"))?;
        if dimension_sets.is_empty() {
            return Err(format!("{at}.Dimensions has no dimension set"));
        }
        for (j, set) in dimension_sets.iter().enumerate() {
            let set_at = format!("{at}.Dimensions[{j}]");
            let names = array(Some(set), &set_at)?;
            if names.len() > MAX_DIMENSIONS {
                return Err(format!(
                    "{set_at} has {} names, over {MAX_DIMENSIONS}",
                    names.len()
                ));
            }
            for name in names {
                let name = name
                    .as_str()
                    .ok_or_else(|| format!("{set_at} holds {name}, not a string"))?;
                if !root.get(name).is_some_and(Value::is_string) {
                    return Err(format!(
                        "dimension {name:?} is not a root member with a string value"
                    ));
                }
            }
        }
        let definitions = array(directive.get("Metrics"), &format!("{at}.Metrics"))?;
        if definitions.len() > MAX_METRICS {
            return Err(format!(
                "{at}.Metrics has {} definitions, over {MAX_METRICS}",
                definitions.len()
            ));
        }
        for (k, definition) in definitions.iter().enumerate() {
            let definition_at = format!("{at}.Metrics[{k}]");
            let definition = object(Some(definition), &definition_at)?;
            only_members(
                definition,
                &definition_at,
                &["Name", "Unit", "StorageResolution"],
            )?;
            let name = definition
                .get("Name")
                .and_then(Value::as_str)
                .ok_or_else(|| format!("{definition_at}.Name is not a string"))?;
            let is_value = match root.get(name) {
                Some(Value::Number(_)) => true,
                Some(Value::Array(values)) => {
                    values.len() <= MAX_METRICS && values.iter().all(Value::is_number)
                }
                _ => false,
            };
            if !is_value {
                return Err(format!(
                    "metric {name:?} is not a root member with a number value"
                ));
            }
            if let Some(unit) = definition.get("Unit") {
                if !unit.as_str().is_some_and(|unit| UNITS.contains(&unit)) {
                    return Err(format!(
                        "{definition_at}.Unit {unit} is not a CloudWatch unit"
                    ));
                }
            }
            if let Some(resolution) = definition.get("StorageResolution") {
                if !matches!(resolution.as_u64(), Some(1 | 60)) {
                    return Err(format!(
                        "{definition_at}.StorageResolution {resolution} is neither 1 nor 60"
                    ));
                }
            }
        }
    }
    Ok(root)
}

fn object<'a>(value: Option<&'a Value>, at: &str) -> Result<&'a Map<String, Value>, String> {
    value
        .and_then(Value::as_object)
        .ok_or_else(|| format!("{at} is not an object"))
}

fn array<'a>(value: Option<&'a Value>, at: &str) -> Result<&'a Vec<Value>, String> {
    value
        .and_then(Value::as_array)
        .ok_or_else(|| format!("{at} is not an array"))
}

/// The specification's objects "MUST NOT contain any additional members".
fn only_members(object: &Map<String, Value>, at: &str, allowed: &[&str]) -> Result<(), String> {
    match object.keys().find(|key| !allowed.contains(&key.as_str())) {
        Some(key) => Err(format!(
            "{at} has a member {key:?} the specification does not define"
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The specification's own example, which must pass.
    fn example() -> Value {
        json!({
            "_aws": {
                "Timestamp": 1574109732004_u64,
                "CloudWatchMetrics": [{
                    "Namespace": "lambda-function-metrics",
                    "Dimensions": [["functionVersion"]],
                    "Metrics": [{"Name": "time", "Unit": "Milliseconds"}]
                }]
            },
            "functionVersion": "$LATEST",
            "time": 100,
            "requestId": "989ffbf8-9ace-4817-a57c-e4dd734019ee"
        })
    }

    fn check(document: &Value) -> Result<Map<String, Value>, String> {
        check_emf_line(&document.to_string())
    }

    #[test]
    fn the_specification_s_example_passes() {
        let root = check(&example()).unwrap();
        assert_eq!(root["time"], 100);
    }

    #[test]
    fn each_broken_rule_is_named() {
        type Breaks = fn(&mut Value);
        let broken: [(&str, Breaks); 10] = [
            ("Timestamp", |d| d["_aws"]["Timestamp"] = json!(1574109732)),
            ("Timestamp", |d| {
                d["_aws"]["Timestamp"] = json!("1574109732004")
            }),
            ("_aws is not an object", |d| d["_aws"] = json!("{}")),
            ("Namespace", |d| {
                d["_aws"]["CloudWatchMetrics"][0]["Namespace"] = json!("")
            }),
            ("\"functionVersion\" is not a root member", |d| {
                d["functionVersion"] = json!(1)
            }),
            ("no dimension set", |d| {
                d["_aws"]["CloudWatchMetrics"][0]["Dimensions"] = json!([])
            }),
            ("over 30", |d| {
                d["_aws"]["CloudWatchMetrics"][0]["Dimensions"] =
                    json!([vec!["functionVersion"; 31]])
            }),
            ("\"time\" is not a root member with a number", |d| {
                d["time"] = json!("100")
            }),
            ("not a CloudWatch unit", |d| {
                d["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Unit"] = json!("ms")
            }),
            ("does not define", |d| d["_aws"]["Extra"] = json!(1)),
        ];
        for (fragment, breaks) in broken {
            let mut document = example();
            breaks(&mut document);
            let err = check(&document).expect_err(&document.to_string());
            assert!(err.contains(fragment), "{err:?} should say {fragment:?}");
        }
        let mut too_many = example();
        too_many["_aws"]["CloudWatchMetrics"][0]["Metrics"] =
            json!(vec![json!({"Name": "time"}); 101]);
        assert!(check(&too_many).unwrap_err().contains("over 100"));
        assert!(check_emf_line("{\"_aws\":{}}\n{}").is_err());
        assert!(check_emf_line("[1]").is_err());
    }
}

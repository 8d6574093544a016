//! The stack's CloudWatch dashboard, named after the stack: the four signals its alarms watch
//! (iterator age, failure queue depth, function errors, lag), one graph each, the two lag
//! graphs with the alarms' threshold drawn in.
//!
//! CloudFormation takes `DashboardBody` as JSON text; the body is written with `Fn::Sub`
//! placeholders for the region, the function's name and the queue's name, and its keys are
//! sorted, so the text is the same for the same settings. Its structure: "Dashboard Body
//! Structure and Syntax",
//! https://docs.aws.amazon.com/AmazonCloudWatch/latest/APIReference/CloudWatch-Dashboard-Body-Structure.html.

use serde_json::{json, Value};
use usersync_function::metrics;

use super::alarms::lag_threshold_ms;
use super::{logical_id, sub};
use crate::settings::StackSettings;

/// Graphs are half the dashboard's 24 columns wide, two to a row.
const WIDTH: u32 = 12;
const HEIGHT: u32 = 6;

/// The dashboard resource (`AWS::CloudWatch::Dashboard`).
pub(super) fn dashboard(settings: &StackSettings) -> Value {
    let function = format!("${{{}}}", logical_id::MIRROR_FUNCTION);
    let queue = format!("${{{}.QueueName}}", logical_id::FAILURE_QUEUE);
    let threshold = lag_threshold_ms(settings);
    let graphs = [
        graph(
            "Iterator age (ms, maximum)",
            ["AWS/Lambda", "IteratorAge", "FunctionName", &function],
            "Maximum",
            Some(threshold),
        ),
        graph(
            "Failure queue: batches waiting (maximum)",
            [
                "AWS/SQS",
                "ApproximateNumberOfMessagesVisible",
                "QueueName",
                &queue,
            ],
            "Maximum",
            None,
        ),
        graph(
            "Function errors (sum)",
            ["AWS/Lambda", "Errors", "FunctionName", &function],
            "Sum",
            None,
        ),
        graph(
            "Lag from table to bucket (ms, maximum)",
            [
                metrics::NAMESPACE,
                metrics::metric::LAG_MS,
                metrics::DIMENSION,
                &function,
            ],
            "Maximum",
            Some(threshold),
        ),
    ];
    let widgets: Vec<Value> = graphs
        .into_iter()
        .zip(0u32..)
        .map(|(mut widget, i)| {
            widget["x"] = json!((i % 2) * WIDTH);
            widget["y"] = json!((i / 2) * HEIGHT);
            widget
        })
        .collect();
    let mut body = json!({ "widgets": widgets });
    body.sort_all_objects();
    json!({
        "Type": "AWS::CloudWatch::Dashboard",
        "Properties": {
            "DashboardName": sub("${AWS::StackName}".to_owned()),
            "DashboardBody": sub(body.to_string()),
        }
    })
}

/// One metric graph of a minute's resolution; `threshold` draws an alarm's threshold.
fn graph(title: &str, metric: [&str; 4], stat: &str, threshold: Option<u64>) -> Value {
    let mut properties = json!({
        "title": title,
        "region": "${AWS::Region}",
        "metrics": [metric],
        "stat": stat,
        "period": 60,
        "view": "timeSeries",
    });
    if let Some(value) = threshold {
        properties["annotations"] = json!({ "horizontal": [{ "label": "alarm", "value": value }] });
    }
    json!({ "type": "metric", "width": WIDTH, "height": HEIGHT, "properties": properties })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_is_json_once_its_placeholders_are_filled() {
        let dashboard = dashboard(&StackSettings::default());
        let text = dashboard["Properties"]["DashboardBody"]["Fn::Sub"]
            .as_str()
            .expect("the body is an Fn::Sub of text");
        let filled = text
            .replace("${AWS::Region}", "eu-west-1")
            .replace("${MirrorFunction}", "usersync-mirror")
            .replace("${FailureQueue.QueueName}", "usersync-FailureQueue-1");
        assert!(!filled.contains("${"), "{filled}");
        let body: Value = serde_json::from_str(&filled).expect("the body is JSON");
        let widgets = body["widgets"].as_array().unwrap();
        assert_eq!(widgets.len(), 4);
        let places: Vec<(u64, u64)> = widgets
            .iter()
            .map(|w| (w["x"].as_u64().unwrap(), w["y"].as_u64().unwrap()))
            .collect();
        assert_eq!(places, [(0, 0), (12, 0), (0, 6), (12, 6)]);
    }
}

//! What a deployed stack looks like now, and how it is doing (`health`: its alarms and the
//! function's metrics).

use std::collections::BTreeMap;
use std::time::SystemTime;

use aws_sdk_sqs::types::QueueAttributeName;

use super::adopt::{adopted_names, AdoptedNames};
use super::health::{health, HealthReport};
use super::{
    as_text, aws_error, describe_stack, outputs_of, status_of, ResourceStatus, StackError,
    StackStatus,
};
use crate::target::Target;
use crate::template::output;

/// One resource of the stack.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ResourceReport {
    pub logical_id: String,
    pub resource_type: String,
    pub physical_id: Option<String>,
    /// `None` when CloudFormation gave none; printed and serialised as an empty text.
    #[serde(serialize_with = "resource_status_text")]
    pub status: Option<ResourceStatus>,
}

impl ResourceReport {
    /// The status as CloudFormation spells it, empty when it gave none.
    pub fn status_text(&self) -> &str {
        self.status.as_ref().map_or("", ResourceStatus::as_str)
    }
}

fn resource_status_text<S: serde::Serializer>(
    status: &Option<ResourceStatus>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(status.as_ref().map_or("", ResourceStatus::as_str))
}

/// The event source mapping as Lambda reports it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct MappingReport {
    pub uuid: String,
    pub state: String,
    pub last_processing_result: Option<String>,
    pub batch_size: Option<i32>,
    /// Batches of one shard processed at once (`ParallelizationFactor`).
    pub parallelization_factor: Option<i32>,
}

/// Everything `cargo xtask status` shows; serialised as is for `--output json`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct StackReport {
    pub stack_name: String,
    /// Serialised as CloudFormation spells it (`CREATE_COMPLETE`).
    #[serde(serialize_with = "as_text")]
    pub status: StackStatus,
    pub status_reason: Option<String>,
    pub outputs: BTreeMap<String, String>,
    pub resources: Vec<ResourceReport>,
    pub event_source_mappings: Vec<MappingReport>,
    pub failure_queue_depth: Option<u64>,
    pub bucket_objects: Option<u64>,
    /// The existing table and bucket the stack adopted (from its outputs), which are no
    /// resources of it: `adopted_table` and `adopted_bucket`, `null` when it has its own.
    #[serde(flatten)]
    pub adopted: AdoptedNames,
    /// The stack's alarms and the function's metrics, and what of them could not be read:
    /// `alarms`, `metrics` and `read_errors`.
    #[serde(flatten)]
    pub health: HealthReport,
}

/// Reads the state of `stack`; `None` when it does not exist.
pub async fn status(target: &Target, stack: &str) -> Result<Option<StackReport>, StackError> {
    let Some(found) = describe_stack(target, stack).await? else {
        return Ok(None);
    };
    let outputs = outputs_of(&found);
    let adopted = adopted_names(&outputs);
    let resources = target
        .cloudformation()
        .describe_stack_resources()
        .stack_name(stack)
        .send()
        .await
        .map_err(|err| aws_error(format!("read the resources of stack {stack}"), err))?
        .stack_resources()
        .iter()
        .map(|r| ResourceReport {
            logical_id: r.logical_resource_id().unwrap_or_default().to_owned(),
            resource_type: r.resource_type().unwrap_or_default().to_owned(),
            physical_id: r.physical_resource_id().map(str::to_owned),
            status: r.resource_status().cloned(),
        })
        .collect::<Vec<_>>();

    let event_source_mappings = match outputs.get(output::FUNCTION_NAME) {
        Some(function) => mappings(target, function).await?,
        None => Vec::new(),
    };
    let failure_queue_depth = match outputs.get(output::FAILURE_QUEUE_URL) {
        Some(url) => Some(queue_depth(target, url).await?),
        None => None,
    };
    let bucket_objects = match outputs.get(output::BUCKET_NAME) {
        Some(bucket) => Some(count_objects(target, bucket).await?),
        None => None,
    };
    // A CloudWatch failure (such as a role without cloudwatch:DescribeAlarms) is recorded in
    // the report rather than failing it.
    let health = health(
        &target.cloudwatch(),
        &target.kind,
        &resources,
        outputs.get(output::FUNCTION_NAME).map(String::as_str),
        SystemTime::now(),
    )
    .await;

    Ok(Some(StackReport {
        stack_name: stack.to_owned(),
        status: status_of(&found),
        status_reason: found.stack_status_reason().map(str::to_owned),
        outputs,
        resources,
        event_source_mappings,
        failure_queue_depth,
        bucket_objects,
        adopted,
        health,
    }))
}

async fn mappings(target: &Target, function: &str) -> Result<Vec<MappingReport>, StackError> {
    let listed = target
        .lambda()
        .list_event_source_mappings()
        .function_name(function)
        .send()
        .await
        .map_err(|err| aws_error(format!("list the event source mappings of {function}"), err))?;
    Ok(listed
        .event_source_mappings()
        .iter()
        .map(|m| MappingReport {
            uuid: m.uuid().unwrap_or_default().to_owned(),
            state: m.state().unwrap_or("unknown").to_owned(),
            last_processing_result: m.last_processing_result().map(str::to_owned),
            batch_size: m.batch_size(),
            parallelization_factor: m.parallelization_factor(),
        })
        .collect())
}

async fn queue_depth(target: &Target, url: &str) -> Result<u64, StackError> {
    let attributes = target
        .sqs()
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .send()
        .await
        .map_err(|err| aws_error(format!("read the depth of queue {url}"), err))?;
    Ok(attributes
        .attributes()
        .and_then(|a| a.get(&QueueAttributeName::ApproximateNumberOfMessages))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0))
}

async fn count_objects(target: &Target, bucket: &str) -> Result<u64, StackError> {
    let mut pages = target
        .s3()
        .list_objects_v2()
        .bucket(bucket)
        .into_paginator()
        .send();
    let mut count = 0;
    while let Some(page) = pages.next().await {
        let page =
            page.map_err(|err| aws_error(format!("count the objects of bucket {bucket}"), err))?;
        count += page.contents().len() as u64;
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::super::health::{AlarmReport, MetricTotals, MetricsReport};
    use super::*;

    #[test]
    fn a_stack_report_keeps_its_json_field_names_and_values() {
        let report = StackReport {
            stack_name: "usersync".to_owned(),
            status: StackStatus::CreateComplete,
            status_reason: None,
            outputs: BTreeMap::from([("TableName".to_owned(), "users".to_owned())]),
            resources: vec![
                ResourceReport {
                    logical_id: "UsersTable".to_owned(),
                    resource_type: "AWS::DynamoDB::Table".to_owned(),
                    physical_id: Some("users".to_owned()),
                    status: Some(ResourceStatus::UpdateComplete),
                },
                ResourceReport {
                    logical_id: "DataBucket".to_owned(),
                    resource_type: "AWS::S3::Bucket".to_owned(),
                    physical_id: None,
                    status: None,
                },
            ],
            event_source_mappings: vec![MappingReport {
                uuid: "1234".to_owned(),
                state: "Enabled".to_owned(),
                last_processing_result: None,
                batch_size: Some(100),
                parallelization_factor: Some(1),
            }],
            failure_queue_depth: Some(0),
            bucket_objects: None,
            adopted: AdoptedNames {
                table: Some("people".to_owned()),
                bucket: None,
            },
            health: HealthReport {
                alarms: Some(vec![AlarmReport {
                    name: "usersync-errors".to_owned(),
                    logical_id: "ErrorsAlarm".to_owned(),
                    state: "ALARM".to_owned(),
                    reason: Some("Threshold Crossed: 1 datapoint [2.0] was greater than the threshold (0.0).".to_owned()),
                    state_changed: Some("2026-05-01T10:00:00Z".to_owned()),
                    metric: Some("AWS/Lambda Errors".to_owned()),
                    evaluated: true,
                    not_evaluated_reason: None,
                }]),
                metrics: Some(MetricsReport::Published(MetricTotals {
                    window_seconds: 3600,
                    records: 1200,
                    failed_users: 2,
                    max_lag_ms: Some(850),
                })),
                read_errors: BTreeMap::new(),
            },
        };
        assert_eq!(
            serde_json::to_value(&report).unwrap(),
            serde_json::json!({
                "stack_name": "usersync",
                "status": "CREATE_COMPLETE",
                "status_reason": null,
                "outputs": {"TableName": "users"},
                "resources": [
                    {
                        "logical_id": "UsersTable",
                        "resource_type": "AWS::DynamoDB::Table",
                        "physical_id": "users",
                        "status": "UPDATE_COMPLETE",
                    },
                    {
                        "logical_id": "DataBucket",
                        "resource_type": "AWS::S3::Bucket",
                        "physical_id": null,
                        "status": "",
                    },
                ],
                "event_source_mappings": [{
                    "uuid": "1234",
                    "state": "Enabled",
                    "last_processing_result": null,
                    "batch_size": 100,
                    "parallelization_factor": 1,
                }],
                "failure_queue_depth": 0,
                "bucket_objects": null,
                "adopted_table": "people",
                "adopted_bucket": null,
                "alarms": [{
                    "name": "usersync-errors",
                    "logical_id": "ErrorsAlarm",
                    "state": "ALARM",
                    "reason": "Threshold Crossed: 1 datapoint [2.0] was greater than the threshold (0.0).",
                    "state_changed": "2026-05-01T10:00:00Z",
                    "metric": "AWS/Lambda Errors",
                    "evaluated": true,
                    "not_evaluated_reason": null,
                }],
                "metrics": {
                    "published": true,
                    "window_seconds": 3600,
                    "records": 1200,
                    "failed_users": 2,
                    "max_lag_ms": 850,
                },
                "read_errors": {},
            })
        );
    }

    /// On the embedded emulator: alarms shown as not evaluated, metrics as not published; a
    /// part that could not be read is `null` with its error under `read_errors`.
    #[test]
    fn unserved_and_unread_health_keeps_its_json_shape() {
        let report = StackReport {
            health: HealthReport {
                alarms: None,
                metrics: Some(MetricsReport::NotPublished {
                    reason: "nothing publishes them here".to_owned(),
                }),
                read_errors: BTreeMap::from([(
                    "alarms".to_owned(),
                    "failed to call CloudWatch DescribeAlarms: AccessDenied: no".to_owned(),
                )]),
            },
            ..bare_report("usersync", StackStatus::CreateComplete)
        };
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["alarms"], serde_json::Value::Null);
        assert_eq!(
            json["metrics"],
            serde_json::json!({"published": false, "reason": "nothing publishes them here"})
        );
        assert_eq!(
            json["read_errors"],
            serde_json::json!({
                "alarms": "failed to call CloudWatch DescribeAlarms: AccessDenied: no",
            })
        );
    }

    /// A stack in `status` with nothing else known about it.
    fn bare_report(stack_name: &str, status: StackStatus) -> StackReport {
        StackReport {
            stack_name: stack_name.to_owned(),
            status,
            status_reason: None,
            outputs: BTreeMap::new(),
            resources: Vec::new(),
            event_source_mappings: Vec::new(),
            failure_queue_depth: None,
            bucket_objects: None,
            adopted: AdoptedNames::default(),
            health: HealthReport::default(),
        }
    }

    #[test]
    fn statuses_unknown_to_the_sdk_serialise_as_given() {
        for text in ["UNKNOWN", "SOME_NEW_STATUS_IN_PROGRESS"] {
            let report = bare_report("s", StackStatus::from(text));
            assert_eq!(serde_json::to_value(&report).unwrap()["status"], text);
        }
    }
}

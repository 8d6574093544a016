//! `cargo xtask status`: what the stack looks like now.

use anyhow::{bail, Context, Result};
use deployer::stack;
use deployer::template::logical_id;

use crate::args::{print_json, TargetArgs};

pub async fn run(target_args: &TargetArgs) -> Result<()> {
    let settings = target_args.settings()?;
    let target = target_args.connect().await?;
    let stack_name = &settings.stack_name;
    let report = stack::status(&target, stack_name)
        .await
        .with_context(|| format!("failed to read the status of stack {stack_name}"))?;
    let Some(report) = report else {
        if target_args.json() {
            print_json(&serde_json::json!({ "stack_name": stack_name, "status": "NOT_FOUND" }))?;
        }
        bail!(
            "stack {stack_name} does not exist on {}; deploy it with `cargo xtask deploy`",
            target.describe()
        );
    };
    if target_args.json() {
        return print_json(&report);
    }
    println!(
        "stack {} on {}: {}",
        report.stack_name,
        target.describe(),
        report.status
    );
    if let Some(reason) = &report.status_reason {
        println!("  reason: {reason}");
    }
    println!("outputs");
    for (name, value) in &report.outputs {
        println!("  {name:<22} {value}");
    }
    println!("resources");
    for resource in &report.resources {
        println!(
            "  {:<22} {:<34} {:<20} {}",
            resource.logical_id,
            resource.resource_type,
            resource.status_text(),
            resource.physical_id.as_deref().unwrap_or("-")
        );
    }
    // Not resources of the stack: the existing table and bucket it mirrors.
    let adopted = [
        (
            logical_id::USERS_TABLE,
            "AWS::DynamoDB::Table",
            &report.adopted.table,
        ),
        (
            logical_id::DATA_BUCKET,
            "AWS::S3::Bucket",
            &report.adopted.bucket,
        ),
    ];
    for (id, resource_type, name) in adopted {
        if let Some(name) = name {
            println!("  {id:<22} {resource_type:<34} {:<20} {name}", "adopted");
        }
    }
    println!("event source mapping");
    for mapping in &report.event_source_mappings {
        println!(
            "  {} {} (last processing result: {}, batch size {}, parallelization factor {})",
            mapping.uuid,
            mapping.state,
            mapping
                .last_processing_result
                .as_deref()
                .unwrap_or("none yet"),
            mapping
                .batch_size
                .map_or_else(|| "-".to_owned(), |n| n.to_string()),
            mapping
                .parallelization_factor
                .map_or_else(|| "-".to_owned(), |n| n.to_string())
        );
    }
    if let Some(depth) = report.failure_queue_depth {
        println!("failure queue: {depth} message(s)");
    }
    if let Some(count) = report.bucket_objects {
        println!("bucket: {count} object(s)");
    }
    Ok(())
}

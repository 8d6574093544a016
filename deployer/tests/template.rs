//! The synthesised CloudFormation template: the default template as a snapshot
//! (`tests/golden/template.json`) and the template of a stack that adopts an existing table and
//! bucket, both encrypted with KMS keys (`tests/golden/template-adopted.json`), then what the
//! settings and the adoption change, references, the policies and the role's exact permissions,
//! rendering, cfn-lint and checkov. No network.
//!
//! After an intended change of the template, `UPDATE_EXPECT=1 cargo test -p deployer --test
//! template` rewrites the snapshots; review their diff like code.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use deployer::settings::{Architecture, ArtifactLocation, DeleteScope, StackSettings};
use deployer::template::{
    self, logical_id, output, synthesize, synthesize_adopting, to_json_string, to_yaml_string,
    AdoptedBucket, AdoptedTable, Adoption, CHECKOV_SKIPS, DESCRIPTION,
};
use expect_test::expect_file;
use serde_json::{json, Value};
use usersync_function::config::vars;

fn artifact() -> ArtifactLocation {
    ArtifactLocation {
        bucket: "usersync-assets-123456789012-eu-west-1".to_owned(),
        key: "usersync/bootstrap-0123abcd.zip".to_owned(),
    }
}

fn default_template() -> Value {
    synthesize(&StackSettings::default(), &artifact())
}

/// The adopted table's stream, as DescribeTable's `LatestStreamArn` gives it.
const ADOPTED_STREAM: &str =
    "arn:aws:dynamodb:eu-west-1:123456789012:table/people/stream/2024-05-01T00:00:00.000";
/// The KMS key the adopted table is encrypted with.
const TABLE_KEY: &str =
    "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab";
/// The key of the adopted bucket's default encryption, from a bare key id.
const BUCKET_KEY: &str =
    "arn:${AWS::Partition}:kms:eu-west-1:123456789012:key/0987dcba-09fe-87dc-65ba-ab0987654321";

fn adopted_table(kms_key_arn: Option<&str>) -> AdoptedTable {
    AdoptedTable {
        name: "people".to_owned(),
        stream_arn: ADOPTED_STREAM.to_owned(),
        key_attribute: "user_id".to_owned(),
        kms_key_arn: kms_key_arn.map(str::to_owned),
    }
}

fn adopted_bucket(kms_key_arn: Option<&str>) -> AdoptedBucket {
    AdoptedBucket {
        name: "people-mirror".to_owned(),
        kms_key_arn: kms_key_arn.map(str::to_owned),
    }
}

/// An existing table and bucket, each encrypted with a KMS key.
fn full_adoption() -> Adoption {
    Adoption {
        table: Some(adopted_table(Some(TABLE_KEY))),
        bucket: Some(adopted_bucket(Some(BUCKET_KEY))),
    }
}

/// The adoptions whose templates are checked: each kind alone, without a key, and both with
/// keys.
fn adoption_variants() -> Vec<(&'static str, Adoption)> {
    vec![
        (
            "adopted-table",
            Adoption {
                table: Some(adopted_table(None)),
                bucket: None,
            },
        ),
        (
            "adopted-bucket",
            Adoption {
                table: None,
                bucket: Some(adopted_bucket(None)),
            },
        ),
        ("adopted-both-kms", full_adoption()),
    ]
}

fn adopted_template() -> Value {
    synthesize_adopting(&StackSettings::default(), &artifact(), &full_adoption())
}

/// Settings that differ from every default, to see each one reach the template.
fn custom_settings() -> StackSettings {
    StackSettings {
        stack_name: "users-test".to_owned(),
        batch_size: 500,
        maximum_batching_window_seconds: 7,
        parallelization_factor: 4,
        maximum_retry_attempts: 2,
        maximum_record_age_seconds: 120,
        bisect_batch_on_function_error: false,
        memory_mb: 1024,
        timeout_seconds: 300,
        delete_scope: DeleteScope::Prefix,
        key_prefix: "users/".to_owned(),
        object_name: "profile.json".to_owned(),
        max_concurrency: Some(16),
        log_retention_days: 90,
        retain_data_on_teardown: true,
        architecture: Architecture::X86_64,
        existing_table: None,
        existing_bucket: None,
        // Below maximum_record_age_seconds above, so that it can fire.
        alarm_iterator_age_seconds: 90,
        alarm_email: Some("ops@example.com".to_owned()),
        alarm_topic_arn: None,
    }
}

/// An existing SNS topic the alarms may notify instead.
const ALARM_TOPIC_ARN: &str = "arn:aws:sns:eu-west-1:123456789012:ops-alarms";

/// The default settings with the alarms notifying an email address (through a topic the stack
/// creates) or an existing topic.
fn alarm_email_settings() -> StackSettings {
    StackSettings {
        alarm_email: Some("ops@example.com".to_owned()),
        ..StackSettings::default()
    }
}

fn alarm_topic_settings() -> StackSettings {
    StackSettings {
        alarm_topic_arn: Some(ALARM_TOPIC_ARN.to_owned()),
        ..StackSettings::default()
    }
}

fn resource<'a>(template: &'a Value, id: &str) -> &'a Value {
    template["Resources"]
        .get(id)
        .unwrap_or_else(|| panic!("the template has no resource {id}"))
}

fn props<'a>(template: &'a Value, id: &str) -> &'a Value {
    &resource(template, id)["Properties"]
}

fn ref_(id: &str) -> Value {
    json!({ "Ref": id })
}

fn get_att(id: &str, attribute: &str) -> Value {
    json!({ "Fn::GetAtt": [id, attribute] })
}

fn sub(text: &str) -> Value {
    json!({ "Fn::Sub": text })
}

/// The whole default template, word for word: every resource, property, policy and output.
/// The tests below check what varies with the settings and what each decision is for.
#[test]
fn the_default_template_is_the_snapshot() {
    expect_file!["golden/template.json"].assert_eq(&to_json_string(&default_template()));
}

/// The whole template of a stack that adopts an existing table and bucket, both encrypted with
/// KMS keys.
#[test]
fn the_adopted_template_is_the_snapshot() {
    expect_file!["golden/template-adopted.json"].assert_eq(&to_json_string(&adopted_template()));
}

#[test]
fn adopting_nothing_is_the_default_template() {
    for settings in [StackSettings::default(), custom_settings()] {
        assert_eq!(
            to_json_string(&synthesize_adopting(
                &settings,
                &artifact(),
                &Adoption::default()
            )),
            to_json_string(&synthesize(&settings, &artifact()))
        );
    }
}

fn resource_ids(template: &Value) -> BTreeSet<&str> {
    template["Resources"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect()
}

#[test]
fn an_adopted_table_or_bucket_has_no_resource_in_the_stack() {
    for (variant, adoption) in adoption_variants() {
        let template = synthesize_adopting(&StackSettings::default(), &artifact(), &adoption);
        let mut expected: BTreeSet<&str> = logical_id::ALL.into_iter().collect();
        if adoption.table.is_some() {
            expected.remove(logical_id::USERS_TABLE);
        }
        if adoption.bucket.is_some() {
            expected.remove(logical_id::DATA_BUCKET);
            // The stack never changes an adopted bucket, its policy included.
            expected.remove(logical_id::DATA_BUCKET_POLICY);
        }
        assert_eq!(resource_ids(&template), expected, "{variant}");
    }
}

#[test]
fn an_adopted_table_is_named_literally_and_its_key_reaches_the_function() {
    let template = synthesize_adopting(
        &StackSettings::default(),
        &artifact(),
        &Adoption {
            table: Some(adopted_table(None)),
            bucket: None,
        },
    );
    assert_eq!(
        props(&template, logical_id::EVENT_SOURCE_MAPPING)["EventSourceArn"],
        ADOPTED_STREAM
    );
    let outputs = &template["Outputs"];
    assert_eq!(outputs[output::TABLE_NAME]["Value"], "people");
    assert_eq!(outputs[output::STREAM_ARN]["Value"], ADOPTED_STREAM);
    assert_eq!(outputs[output::ADOPTED_TABLE]["Value"], "people");
    assert!(outputs.get(output::ADOPTED_BUCKET).is_none());
    // The bucket is the stack's own.
    assert_eq!(
        outputs[output::BUCKET_NAME]["Value"],
        ref_(logical_id::DATA_BUCKET)
    );
    let variables = &props(&template, logical_id::MIRROR_FUNCTION)["Environment"]["Variables"];
    assert_eq!(variables[vars::KEY_ATTRIBUTE], "user_id");
    assert_eq!(variables[vars::BUCKET_NAME], ref_(logical_id::DATA_BUCKET));
}

#[test]
fn an_adopted_bucket_is_named_literally_and_by_partition_aware_arns() {
    let template = synthesize_adopting(
        &StackSettings {
            delete_scope: DeleteScope::Prefix,
            ..StackSettings::default()
        },
        &artifact(),
        &Adoption {
            table: None,
            bucket: Some(adopted_bucket(None)),
        },
    );
    let outputs = &template["Outputs"];
    assert_eq!(outputs[output::BUCKET_NAME]["Value"], "people-mirror");
    assert_eq!(outputs[output::ADOPTED_BUCKET]["Value"], "people-mirror");
    assert!(outputs.get(output::ADOPTED_TABLE).is_none());
    let variables = &props(&template, logical_id::MIRROR_FUNCTION)["Environment"]["Variables"];
    assert_eq!(variables[vars::BUCKET_NAME], "people-mirror");
    // The stack's own table keeps the function's default key attribute.
    assert!(variables.get(vars::KEY_ATTRIBUTE).is_none());
    let permissions = role_permissions(&template);
    for (action, resource) in [
        ("s3:PutObject", "arn:${AWS::Partition}:s3:::people-mirror/*"),
        (
            "s3:DeleteObject",
            "arn:${AWS::Partition}:s3:::people-mirror/*",
        ),
        ("s3:ListBucket", "arn:${AWS::Partition}:s3:::people-mirror"),
    ] {
        assert!(
            permissions.contains(&(action.to_owned(), sub(resource).to_string())),
            "{action} on {resource}: {permissions:#?}"
        );
    }
}

#[test]
fn only_adopted_resources_have_adopted_outputs() {
    let template = default_template();
    for name in output::ADOPTED {
        assert!(template["Outputs"].get(name).is_none(), "{name}");
    }
    let template = adopted_template();
    let names: BTreeSet<&str> = template["Outputs"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let all: BTreeSet<&str> = output::ALL.into_iter().chain(output::ADOPTED).collect();
    assert_eq!(names, all);
    for name in output::ADOPTED {
        let description = template["Outputs"][name]["Description"].as_str().unwrap();
        assert!(description.contains("never"), "{name}: {description}");
    }
}

#[test]
fn the_logical_ids_and_the_description_are_the_crates_constants() {
    let template = default_template();
    let ids: BTreeSet<&str> = template["Resources"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let all: BTreeSet<&str> = logical_id::ALL.into_iter().collect();
    assert_eq!(ids, all);
    assert_eq!(template["Description"], DESCRIPTION);
    assert!(DESCRIPTION.contains("usersync"));
    assert!(template.get("Parameters").is_none());
}

#[test]
fn data_is_retained_only_when_asked() {
    let retained = synthesize(
        &StackSettings {
            retain_data_on_teardown: true,
            ..StackSettings::default()
        },
        &artifact(),
    );
    let deleted = synthesize(&StackSettings::default(), &artifact());
    for id in logical_id::ALL {
        let data = id == logical_id::USERS_TABLE || id == logical_id::DATA_BUCKET;
        let r = resource(&retained, id);
        if data {
            assert_eq!(r["DeletionPolicy"], "Retain", "{id}");
            assert_eq!(r["UpdateReplacePolicy"], "Retain", "{id}");
            let r = resource(&deleted, id);
            assert_eq!(r["DeletionPolicy"], "Delete", "{id}");
            assert_eq!(r["UpdateReplacePolicy"], "Delete", "{id}");
        } else {
            // Everything else is derived and goes with the stack.
            assert!(r.get("DeletionPolicy").is_none(), "{id}");
            assert!(r.get("UpdateReplacePolicy").is_none(), "{id}");
        }
    }
}

#[test]
fn bucket_policy_denies_every_request_without_tls() {
    let template = default_template();
    let policy = props(&template, logical_id::DATA_BUCKET_POLICY);
    assert_eq!(policy["Bucket"], ref_(logical_id::DATA_BUCKET));
    assert_eq!(
        policy["PolicyDocument"]["Statement"],
        json!([{
            "Sid": "DenyInsecureTransport",
            "Effect": "Deny",
            "Principal": "*",
            "Action": "s3:*",
            "Resource": [get_att("DataBucket", "Arn"), sub("${DataBucket.Arn}/*")],
            "Condition": { "Bool": { "aws:SecureTransport": "false" } },
        }])
    );
}

#[test]
fn log_group_has_the_function_log_group_name_and_the_retention() {
    let template = synthesize(&custom_settings(), &artifact());
    let group = props(&template, logical_id::FUNCTION_LOG_GROUP);
    assert_eq!(
        group["LogGroupName"],
        sub("/aws/lambda/${AWS::StackName}-mirror")
    );
    assert_eq!(group["RetentionInDays"], 90);

    // The same name the function gets, so Lambda's default group and ours coincide.
    let function_name = props(&template, logical_id::MIRROR_FUNCTION)["FunctionName"]["Fn::Sub"]
        .as_str()
        .unwrap();
    assert_eq!(
        group["LogGroupName"]["Fn::Sub"].as_str().unwrap(),
        format!("/aws/lambda/{function_name}")
    );
    assert_eq!(template::function_name("users-test"), "users-test-mirror");
    assert_eq!(
        template::log_group_name("users-test"),
        "/aws/lambda/users-test-mirror"
    );
}

#[test]
fn function_follows_the_settings_and_the_artifact() {
    let template = default_template();
    let function = resource(&template, logical_id::MIRROR_FUNCTION);
    // The `Ref` in `LoggingConfig` makes CloudFormation create the log group first, before
    // Lambda could create one without a retention period.
    assert!(function.get("DependsOn").is_none());
    assert_eq!(
        function["Properties"]["LoggingConfig"]["LogGroup"],
        ref_(logical_id::FUNCTION_LOG_GROUP)
    );
    let location = artifact();
    assert_eq!(
        function["Properties"]["Code"],
        json!({ "S3Bucket": location.bucket, "S3Key": location.key })
    );

    let template = synthesize(&custom_settings(), &artifact());
    let p = props(&template, logical_id::MIRROR_FUNCTION);
    assert_eq!(p["Architectures"], json!(["x86_64"]));
    assert_eq!(p["MemorySize"], 1024);
    assert_eq!(p["Timeout"], 300);
    assert_eq!(
        p["Environment"]["Variables"],
        json!({
            "BUCKET_NAME": ref_("DataBucket"),
            "KEY_PREFIX": "users/",
            "OBJECT_NAME": "profile.json",
            "DELETE_SCOPE": "prefix",
            "MAX_CONCURRENCY": "16",
        })
    );
}

#[test]
fn every_environment_value_is_a_string_or_a_reference() {
    let template = synthesize(&custom_settings(), &artifact());
    let variables = props(&template, logical_id::MIRROR_FUNCTION)["Environment"]["Variables"]
        .as_object()
        .unwrap();
    for (name, value) in variables {
        assert!(
            value.is_string() || value.get("Ref").is_some(),
            "{name} = {value}: Lambda takes strings"
        );
    }
}

#[test]
fn event_source_mapping_follows_the_settings() {
    let settings = custom_settings();
    let template = synthesize(&settings, &artifact());
    let p = props(&template, logical_id::EVENT_SOURCE_MAPPING);
    assert_eq!(p["BatchSize"], settings.batch_size);
    assert_eq!(
        p["MaximumBatchingWindowInSeconds"],
        settings.maximum_batching_window_seconds
    );
    assert_eq!(
        p["BisectBatchOnFunctionError"],
        settings.bisect_batch_on_function_error
    );
    assert_eq!(p["MaximumRetryAttempts"], settings.maximum_retry_attempts);
    assert_eq!(
        p["MaximumRecordAgeInSeconds"],
        settings.maximum_record_age_seconds
    );
    assert_eq!(p["ParallelizationFactor"], 4);
    assert_eq!(p["ParallelizationFactor"], settings.parallelization_factor);
    // The default is written too, so that going back to 1 changes the deployed mapping.
    let default = default_template();
    assert_eq!(
        props(&default, logical_id::EVENT_SOURCE_MAPPING)["ParallelizationFactor"],
        1
    );

    // AWS's "no limit" values pass through unchanged.
    let unbounded = StackSettings {
        maximum_retry_attempts: -1,
        maximum_record_age_seconds: -1,
        ..StackSettings::default()
    };
    let template = synthesize(&unbounded, &artifact());
    let p = props(&template, logical_id::EVENT_SOURCE_MAPPING);
    assert_eq!(p["MaximumRetryAttempts"], -1);
    assert_eq!(p["MaximumRecordAgeInSeconds"], -1);
}

#[test]
fn outputs_are_the_crates_constants_with_descriptions() {
    let template = default_template();
    let outputs = template["Outputs"].as_object().unwrap();
    let names: BTreeSet<&str> = outputs.keys().map(String::as_str).collect();
    let all: BTreeSet<&str> = output::ALL.into_iter().collect();
    assert_eq!(names, all);
    for (name, o) in outputs {
        let description = o["Description"].as_str().unwrap_or_default();
        assert!(!description.is_empty(), "output {name} has no description");
    }
}

/// The attributes `Fn::GetAtt` may ask of each resource type used here.
fn attributes_of(resource_type: &str) -> &'static [&'static str] {
    match resource_type {
        "AWS::DynamoDB::Table" => &["Arn", "StreamArn"],
        "AWS::S3::Bucket" => &["Arn", "DomainName", "RegionalDomainName"],
        "AWS::SQS::Queue" => &["Arn", "QueueName", "QueueUrl"],
        "AWS::Logs::LogGroup" => &["Arn"],
        "AWS::IAM::Role" => &["Arn", "RoleId"],
        "AWS::Lambda::Function" => &["Arn"],
        "AWS::KMS::Key" => &["Arn", "KeyId"],
        "AWS::SNS::Topic" => &["TopicArn", "TopicName"],
        "AWS::CloudWatch::Alarm" => &["Arn"],
        _ => &[],
    }
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Reference {
    Ref(String),
    GetAtt(String, String),
}

/// Every `Ref`, `Fn::GetAtt` and `${...}` of `Fn::Sub` in `value`, as (where, what) pairs.
fn references(value: &Value, path: &str, found: &mut Vec<(String, Reference)>) {
    match value {
        Value::Object(map) => {
            if let (1, Some(Value::String(id))) = (map.len(), map.get("Ref")) {
                found.push((path.to_owned(), Reference::Ref(id.clone())));
            }
            if let Some(att) = map.get("Fn::GetAtt") {
                let (id, attribute) = match att {
                    Value::Array(parts) => (
                        parts[0].as_str().unwrap().to_owned(),
                        parts[1].as_str().unwrap().to_owned(),
                    ),
                    Value::String(dotted) => {
                        let (id, attribute) = dotted.split_once('.').unwrap();
                        (id.to_owned(), attribute.to_owned())
                    }
                    other => panic!("{path}: malformed Fn::GetAtt {other}"),
                };
                found.push((path.to_owned(), Reference::GetAtt(id, attribute)));
            }
            if let Some(text) = map.get("Fn::Sub") {
                let (text, locals) = match text {
                    Value::String(text) => (text.as_str(), BTreeSet::new()),
                    Value::Array(parts) => (
                        parts[0].as_str().unwrap(),
                        parts[1].as_object().unwrap().keys().cloned().collect(),
                    ),
                    other => panic!("{path}: malformed Fn::Sub {other}"),
                };
                let mut rest = text;
                while let Some(start) = rest.find("${") {
                    let after = &rest[start + 2..];
                    let end = after
                        .find('}')
                        .unwrap_or_else(|| panic!("{path}: unclosed ${{ in {text:?}"));
                    let name = &after[..end];
                    rest = &after[end + 1..];
                    if name.starts_with('!') || locals.contains(name) {
                        continue; // a literal `${!...}` or a variable of this Sub
                    }
                    let reference = match name.split_once('.') {
                        Some((id, attribute)) => {
                            Reference::GetAtt(id.to_owned(), attribute.to_owned())
                        }
                        None => Reference::Ref(name.to_owned()),
                    };
                    found.push((path.to_owned(), reference));
                }
            }
            for (key, child) in map {
                references(child, &format!("{path}.{key}"), found);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                references(child, &format!("{path}[{i}]"), found);
            }
        }
        _ => {}
    }
}

#[test]
fn every_reference_points_at_an_existing_resource_and_attribute() {
    const PSEUDO: [&str; 4] = [
        "AWS::StackName",
        "AWS::Partition",
        "AWS::Region",
        "AWS::AccountId",
    ];
    let adopted = adoption_variants().into_iter().flat_map(|(_, adoption)| {
        [StackSettings::default(), custom_settings()]
            .map(|settings| synthesize_adopting(&settings, &artifact(), &adoption))
    });
    let templates: Vec<Value> = [
        StackSettings::default(),
        custom_settings(),
        alarm_email_settings(),
        alarm_topic_settings(),
    ]
    .iter()
    .map(|settings| synthesize(settings, &artifact()))
    .chain(adopted)
    .collect();
    for template in templates {
        let resources = template["Resources"].as_object().unwrap();
        let mut found = Vec::new();
        references(&template, "", &mut found);
        assert!(
            found.len() > 10,
            "the walk found too few references: {found:?}"
        );
        for (path, reference) in &found {
            match reference {
                Reference::Ref(id) if PSEUDO.contains(&id.as_str()) => {}
                Reference::Ref(id) => assert!(
                    resources.contains_key(id),
                    "{path}: Ref to missing resource {id}"
                ),
                Reference::GetAtt(id, attribute) => {
                    let r = resources
                        .get(id)
                        .unwrap_or_else(|| panic!("{path}: GetAtt of missing resource {id}"));
                    let kind = r["Type"].as_str().unwrap();
                    assert!(
                        attributes_of(kind).contains(&attribute.as_str()),
                        "{path}: {kind} has no attribute {attribute}"
                    );
                }
            }
        }
        for (id, r) in resources {
            let depends_on = match r.get("DependsOn") {
                None => vec![],
                Some(Value::String(one)) => vec![one.clone()],
                Some(Value::Array(many)) => many
                    .iter()
                    .map(|v| v.as_str().unwrap().to_owned())
                    .collect(),
                Some(other) => panic!("{id}: malformed DependsOn {other}"),
            };
            for target in depends_on {
                assert!(
                    resources.contains_key(&target),
                    "{id} depends on missing {target}"
                );
            }
        }
    }
}

#[test]
fn role_trusts_only_lambda() {
    let template = default_template();
    assert_eq!(
        props(&template, logical_id::FUNCTION_ROLE)["AssumeRolePolicyDocument"],
        json!({
            "Version": "2012-10-17",
            "Statement": [{
                "Effect": "Allow",
                "Principal": { "Service": "lambda.amazonaws.com" },
                "Action": "sts:AssumeRole",
            }]
        })
    );
}

fn one_or_many(value: &Value) -> Vec<Value> {
    match value {
        Value::Array(items) => items.clone(),
        other => vec![other.clone()],
    }
}

/// Every (action, resource) the role allows, with resources in compact JSON.
fn role_permissions(template: &Value) -> BTreeSet<(String, String)> {
    let role = props(template, logical_id::FUNCTION_ROLE);
    let policies = role["Policies"].as_array().unwrap();
    assert!(role.get("ManagedPolicyArns").is_none());
    let mut pairs = BTreeSet::new();
    for policy in policies {
        for statement in policy["PolicyDocument"]["Statement"].as_array().unwrap() {
            assert_eq!(statement["Effect"], "Allow", "{statement}");
            for key in ["NotAction", "NotResource", "Condition"] {
                assert!(statement.get(key).is_none(), "{key} in {statement}");
            }
            for action in one_or_many(&statement["Action"]) {
                for resource in one_or_many(&statement["Resource"]) {
                    let action = action.as_str().unwrap().to_owned();
                    assert!(
                        pairs.insert((action.clone(), resource.to_string())),
                        "({action}, {resource}) is granted twice"
                    );
                }
            }
        }
    }
    pairs
}

fn expected_permissions(scope: DeleteScope) -> BTreeSet<(String, String)> {
    let objects = sub("${DataBucket.Arn}/*");
    let stream = get_att("UsersTable", "StreamArn");
    let group = sub(
        "arn:${AWS::Partition}:logs:${AWS::Region}:${AWS::AccountId}:log-group:${FunctionLogGroup}",
    );
    let streams = sub(
        "arn:${AWS::Partition}:logs:${AWS::Region}:${AWS::AccountId}:log-group:${FunctionLogGroup}:*",
    );
    let mut pairs = vec![
        ("s3:PutObject", objects.clone()),
        ("s3:DeleteObject", objects),
        ("dynamodb:DescribeStream", stream.clone()),
        ("dynamodb:GetRecords", stream.clone()),
        ("dynamodb:GetShardIterator", stream),
        ("dynamodb:ListStreams", json!("*")),
        ("sqs:SendMessage", get_att("FailureQueue", "Arn")),
        ("logs:CreateLogStream", group.clone()),
        ("logs:CreateLogStream", streams.clone()),
        ("logs:PutLogEvents", group),
        ("logs:PutLogEvents", streams),
    ];
    if scope == DeleteScope::Prefix {
        pairs.push(("s3:ListBucket", get_att("DataBucket", "Arn")));
    }
    pairs
        .into_iter()
        .map(|(action, resource)| (action.to_owned(), resource.to_string()))
        .collect()
}

#[test]
fn role_allows_exactly_the_expected_actions_on_their_resources() {
    for scope in [DeleteScope::Object, DeleteScope::Prefix] {
        let settings = StackSettings {
            delete_scope: scope,
            ..StackSettings::default()
        };
        let template = synthesize(&settings, &artifact());
        assert_eq!(
            role_permissions(&template),
            expected_permissions(scope),
            "delete scope {scope}"
        );
    }
}

/// On an adopted table and bucket the role has exactly the permissions it has on the stack's
/// own (their ARNs written out), plus `kms:Decrypt` on the table's key and `kms:GenerateDataKey`
/// on the bucket's.
#[test]
fn role_allows_the_same_actions_on_adopted_resources_and_their_keys() {
    let own_objects = sub("${DataBucket.Arn}/*").to_string();
    let own_bucket = get_att("DataBucket", "Arn").to_string();
    let own_stream = get_att("UsersTable", "StreamArn").to_string();
    let objects = sub("arn:${AWS::Partition}:s3:::people-mirror/*").to_string();
    let bucket = sub("arn:${AWS::Partition}:s3:::people-mirror").to_string();
    let stream = json!(ADOPTED_STREAM).to_string();
    for scope in [DeleteScope::Object, DeleteScope::Prefix] {
        let settings = StackSettings {
            delete_scope: scope,
            ..StackSettings::default()
        };
        let template = synthesize_adopting(&settings, &artifact(), &full_adoption());
        let mut expected: BTreeSet<(String, String)> = expected_permissions(scope)
            .into_iter()
            .map(|(action, resource)| {
                let resource = match resource {
                    r if r == own_objects => objects.clone(),
                    r if r == own_bucket => bucket.clone(),
                    r if r == own_stream => stream.clone(),
                    r => r,
                };
                (action, resource)
            })
            .collect();
        expected.insert(("kms:Decrypt".to_owned(), json!(TABLE_KEY).to_string()));
        expected.insert((
            "kms:GenerateDataKey".to_owned(),
            sub(BUCKET_KEY).to_string(),
        ));
        assert_eq!(
            role_permissions(&template),
            expected,
            "delete scope {scope}"
        );
    }
    // Without KMS keys, no KMS permission.
    for (variant, adoption) in adoption_variants() {
        let template = synthesize_adopting(&StackSettings::default(), &artifact(), &adoption);
        let kms: Vec<_> = role_permissions(&template)
            .into_iter()
            .filter(|(action, _)| action.starts_with("kms:"))
            .collect();
        let keyed = adoption
            .table
            .iter()
            .filter_map(|t| t.kms_key_arn.as_ref())
            .chain(
                adoption
                    .bucket
                    .iter()
                    .filter_map(|b| b.kms_key_arn.as_ref()),
            )
            .count();
        assert_eq!(kms.len(), keyed, "{variant}: {kms:?}");
    }
}

#[test]
fn no_wildcard_action_and_a_wildcard_resource_only_for_list_streams() {
    let adopted = adoption_variants()
        .into_iter()
        .map(|(_, adoption)| synthesize_adopting(&custom_settings(), &artifact(), &adoption));
    let templates: Vec<Value> = [StackSettings::default(), custom_settings()]
        .iter()
        .map(|settings| synthesize(settings, &artifact()))
        .chain(adopted)
        .collect();
    for template in templates {
        for (action, resource) in role_permissions(&template) {
            assert!(
                !action.contains('*'),
                "wildcard action {action} on {resource}"
            );
            // Resource is compact JSON, so the bare wildcard is the string `"*"`.
            if resource == "\"*\"" {
                assert_eq!(
                    action, "dynamodb:ListStreams",
                    "only ListStreams may have the \"*\" resource"
                );
            }
        }
    }
}

#[test]
fn synthesis_is_deterministic() {
    for settings in [StackSettings::default(), custom_settings()] {
        let first = to_json_string(&synthesize(&settings, &artifact()));
        let second = to_json_string(&synthesize(&settings.clone(), &artifact()));
        assert_eq!(first, second);
        let first = to_yaml_string(&synthesize(&settings, &artifact())).unwrap();
        let second = to_yaml_string(&synthesize(&settings, &artifact())).unwrap();
        assert_eq!(first, second);
    }
}

#[test]
fn json_output_is_pretty_and_parses_back() {
    let template = default_template();
    let text = to_json_string(&template);
    assert!(text.starts_with("{\n  \""), "{text}");
    assert!(text.ends_with("}\n"));
    assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), template);
}

#[test]
fn yaml_output_parses_back_to_the_same_template() {
    for settings in [StackSettings::default(), custom_settings()] {
        let template = synthesize(&settings, &artifact());
        let yaml = to_yaml_string(&template).unwrap();
        let parsed: Value = serde_norway::from_str(&yaml).unwrap();
        assert_eq!(parsed, template);
        // Strings that YAML would otherwise read as booleans stay strings.
        assert!(yaml.contains("aws:SecureTransport: 'false'"), "{yaml}");
    }
}

#[test]
fn yaml_output_refuses_values_that_yaml_1_1_would_retype() {
    for value in ["yes", "off", "Y", "1:20", "1_000"] {
        let settings = StackSettings {
            object_name: value.to_owned(),
            ..StackSettings::default()
        };
        settings.validate().unwrap();
        let template = synthesize(&settings, &artifact());
        let message = to_yaml_string(&template).unwrap_err().to_string();
        assert!(
            message.contains(&format!("{value:?}")) && message.contains("JSON"),
            "{message}"
        );
        // The JSON form carries the value unchanged.
        let json: Value = serde_json::from_str(&to_json_string(&template)).unwrap();
        assert_eq!(
            json["Resources"]["MirrorFunction"]["Properties"]["Environment"]["Variables"]
                ["OBJECT_NAME"],
            value
        );
    }
    for value in [
        "userdata",
        "profile.json",
        "yesterday",
        "2024",
        "v1.2_3",
        "a:b",
    ] {
        let settings = StackSettings {
            object_name: value.to_owned(),
            ..StackSettings::default()
        };
        let yaml = to_yaml_string(&synthesize(&settings, &artifact()))
            .unwrap_or_else(|err| panic!("{value}: {}", deployer::errors::chain(&err)));
        let parsed: Value = serde_norway::from_str(&yaml).unwrap();
        assert_eq!(
            parsed["Resources"]["MirrorFunction"]["Properties"]["Environment"]["Variables"]
                ["OBJECT_NAME"],
            value
        );
    }
}

/// Finds a tool: the executable named by `variable` if set, else `name` on `PATH`; the error
/// says how to install it (`how`).
fn find_tool(variable: &str, name: &str, how: &str) -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os(variable).filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!(
                "{variable} is {} but there is no such file: {how}",
                path.display()
            ))
        };
    }
    let names: Vec<String> = if cfg!(windows) {
        vec![
            format!("{name}.exe"),
            format!("{name}.cmd"),
            name.to_owned(),
        ]
    } else {
        vec![name.to_owned()]
    };
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .flat_map(|dir| names.iter().map(move |name| dir.join(name)))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| format!("{name} was not found on PATH: {how}"))
}

/// Finds cfn-lint: `CFN_LINT` if set, else `cfn-lint` on `PATH`.
fn find_cfn_lint() -> Result<PathBuf, String> {
    find_tool(
        "CFN_LINT",
        "cfn-lint",
        "install it with `pip install cfn-lint` (or run `cargo xtask test`, which installs it), \
         or point CFN_LINT at the executable",
    )
}

/// Finds checkov: `CHECKOV` if set, else `checkov` on `PATH`.
fn find_checkov() -> Result<PathBuf, String> {
    find_tool(
        "CHECKOV",
        "checkov",
        "run `cargo xtask test`, which installs the pinned checkov into usersync's cache \
         (xtask/src/tools.rs names the version), or point CHECKOV at the executable",
    )
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn cfn_lint_finds_no_errors() {
    let cfn_lint = find_cfn_lint().unwrap_or_else(|message| panic!("{message}"));
    let dir = tempfile::tempdir().unwrap();
    let default = default_template();
    let custom = synthesize(&custom_settings(), &artifact());
    let mut files = vec![
        write(dir.path(), "default.json", &to_json_string(&default)),
        write(dir.path(), "custom.json", &to_json_string(&custom)),
        write(
            dir.path(),
            "default.yaml",
            &to_yaml_string(&default).unwrap(),
        ),
        write(
            dir.path(),
            "adopted.yaml",
            &to_yaml_string(&adopted_template()).unwrap(),
        ),
    ];
    for (variant, adoption) in adoption_variants() {
        let template = synthesize_adopting(&custom_settings(), &artifact(), &adoption);
        files.push(write(
            dir.path(),
            &format!("{variant}.json"),
            &to_json_string(&template),
        ));
    }
    // custom.json has the alarm email's topic; these have the other notification setting, and
    // the topic in YAML.
    files.push(write(
        dir.path(),
        "alarm-topic.json",
        &to_json_string(&synthesize(&alarm_topic_settings(), &artifact())),
    ));
    files.push(write(
        dir.path(),
        "alarm-email.yaml",
        &to_yaml_string(&synthesize(&alarm_email_settings(), &artifact())).unwrap(),
    ));

    let run = Command::new(&cfn_lint)
        .args([
            "--format",
            "parseable",
            "--non-zero-exit-code",
            "error",
            "--",
        ])
        .args(&files)
        .current_dir(dir.path())
        .output()
        .unwrap_or_else(|err| panic!("cannot run {}: {err}", cfn_lint.display()));
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    // Parseable lines are `file:line:column:end line:end column:rule:message`.
    let errors: Vec<&str> = stdout
        .lines()
        .filter(|line| {
            line.split(':')
                .nth(5)
                .is_some_and(|rule| rule.starts_with('E'))
        })
        .collect();
    let others: Vec<&str> = stdout
        .lines()
        .filter(|line| !errors.contains(line))
        .collect();
    if !others.is_empty() {
        eprintln!("cfn-lint warnings (accepted):\n{}", others.join("\n"));
    }
    assert!(
        errors.is_empty() && run.status.success(),
        "cfn-lint ({}) reported errors ({}):\n{}\n{stderr}",
        cfn_lint.display(),
        run.status,
        errors.join("\n")
    );
}

// ---------------------------------------------------------------------------------------
// Security: checkov, suppressions with reasons, no credentials
// ---------------------------------------------------------------------------------------

/// The templates that are scanned: the default, each settings variant that changes the
/// resources' security-relevant parts (the alarms' two notification settings among them), every
/// setting changed at once, and each adoption (with the prefix delete scope, whose role has the
/// most permissions, and an alarm email, which adds the most resources).
fn security_variants() -> Vec<(&'static str, Value)> {
    let prefix = StackSettings {
        delete_scope: DeleteScope::Prefix,
        ..StackSettings::default()
    };
    let mut variants = vec![
        ("default", default_template()),
        ("prefix-delete", synthesize(&prefix, &artifact())),
        (
            "retain-data",
            synthesize(
                &StackSettings {
                    retain_data_on_teardown: true,
                    ..StackSettings::default()
                },
                &artifact(),
            ),
        ),
        ("custom", synthesize(&custom_settings(), &artifact())),
        (
            "alarm-email",
            synthesize(&alarm_email_settings(), &artifact()),
        ),
        (
            "alarm-topic",
            synthesize(&alarm_topic_settings(), &artifact()),
        ),
    ];
    let prefix_and_email = StackSettings {
        alarm_email: Some("ops@example.com".to_owned()),
        ..prefix
    };
    for (variant, adoption) in adoption_variants() {
        variants.push((
            variant,
            synthesize_adopting(&prefix_and_email, &artifact(), &adoption),
        ));
    }
    variants
}

/// The checkov suppressions a template must carry: those of [`CHECKOV_SKIPS`] whose resource it
/// has.
fn skips_for(template: &Value) -> usize {
    CHECKOV_SKIPS
        .iter()
        .filter(|(id, _, _)| template["Resources"].get(id).is_some())
        .count()
}

/// Every `Metadata.checkov.skip` entry of the template, as (logical ID, check ID, comment).
fn checkov_skips(template: &Value) -> BTreeSet<(String, String, String)> {
    let mut skips = BTreeSet::new();
    for (id, resource) in template["Resources"].as_object().unwrap() {
        let Some(checkov) = resource.get("Metadata").and_then(|m| m.get("checkov")) else {
            continue;
        };
        for skip in checkov["skip"].as_array().expect("checkov.skip is a list") {
            let check = skip["id"].as_str().expect("a skip has an id").to_owned();
            let comment = skip["comment"].as_str().unwrap_or_default().to_owned();
            assert!(
                skips.insert((id.clone(), check.clone(), comment)),
                "{id} skips {check} twice"
            );
        }
    }
    skips
}

#[test]
fn every_checkov_suppression_names_a_check_and_gives_its_reason() {
    for (variant, template) in security_variants() {
        let skips = checkov_skips(&template);
        assert_eq!(skips.len(), skips_for(&template), "{variant}");
        if variant == "default" {
            assert_eq!(skips.len(), CHECKOV_SKIPS.len());
        }
        for (id, check, comment) in &skips {
            let number = check
                .strip_prefix("CKV_AWS_")
                .or_else(|| check.strip_prefix("CKV2_AWS_"));
            assert!(
                number.is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())),
                "{variant}: {id} skips {check:?}, not a checkov AWS check id"
            );
            assert!(
                comment.split_whitespace().count() >= 8,
                "{variant}: {id} skips {check} without a reason: {comment:?}"
            );
        }
        // Nothing but the suppressions is resource metadata.
        for (id, resource) in template["Resources"].as_object().unwrap() {
            if let Some(metadata) = resource.get("Metadata") {
                let keys: Vec<&String> = metadata.as_object().unwrap().keys().collect();
                assert_eq!(keys, ["checkov"], "{variant}: {id}");
            }
        }
    }
}

/// checkov's JSON report for one framework: `{check_type, results, summary}` (a list of those
/// when several frameworks ran).
fn cloudformation_report(report: Value) -> Value {
    match report {
        Value::Array(reports) => reports
            .into_iter()
            .find(|r| r["check_type"] == "cloudformation")
            .expect("a cloudformation report"),
        report => report,
    }
}

#[test]
fn checkov_finds_no_failed_check_and_every_suppression_is_used() {
    let checkov = find_checkov().unwrap_or_else(|message| panic!("{message}"));
    let dir = tempfile::tempdir().unwrap();
    let mut expected_skips = BTreeSet::new();
    let mut resources = 0;
    for (variant, template) in security_variants() {
        let mut renderings = vec![(format!("{variant}.json"), to_json_string(&template))];
        if variant == "default" {
            renderings.push((
                format!("{variant}.yaml"),
                to_yaml_string(&template).unwrap(),
            ));
        }
        for (file, text) in renderings {
            write(dir.path(), &file, &text);
            resources += template["Resources"].as_object().unwrap().len();
            for (id, check, _) in checkov_skips(&template) {
                expected_skips.insert((format!("/{file}"), id, check));
            }
        }
    }

    let run = Command::new(&checkov)
        .args(["--directory", "."])
        .args(["--framework", "cloudformation", "--output", "json"])
        // Offline: no guidelines or policies from Prisma Cloud.
        .arg("--skip-download")
        .current_dir(dir.path())
        .output()
        .unwrap_or_else(|err| panic!("cannot run {}: {err}", checkov.display()));
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|err| {
        panic!("checkov printed no JSON report ({err}):\n{stdout}\n{stderr}")
    });
    let report = cloudformation_report(report);
    let summary = &report["summary"];
    let results = &report["results"];

    let failed: Vec<String> = results["failed_checks"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            format!(
                "{} {} on {} in {}",
                c["check_id"].as_str().unwrap_or("?"),
                c["check_name"].as_str().unwrap_or("?"),
                c["resource"].as_str().unwrap_or("?"),
                c["file_path"].as_str().unwrap_or("?"),
            )
        })
        .collect();
    assert!(
        failed.is_empty(),
        "checkov {} failed checks (fix the template, or suppress in CHECKOV_SKIPS with the \
         reason):\n{}",
        failed.len(),
        failed.join("\n")
    );
    assert_eq!(summary["parsing_errors"], 0, "{summary}");
    assert_eq!(
        summary["resource_count"],
        json!(resources),
        "checkov scanned every resource of every file: {summary}"
    );
    assert!(summary["passed"].as_u64().unwrap_or(0) > 0, "{summary}");
    assert!(
        run.status.success(),
        "checkov exited {}:\n{stderr}",
        run.status
    );

    // Every suppression was needed (the check still fires without it) and carried its reason.
    let mut skipped = BTreeSet::new();
    for check in results["skipped_checks"].as_array().into_iter().flatten() {
        let resource = check["resource"].as_str().unwrap_or_default();
        let id = resource.rsplit('.').next().unwrap_or_default().to_owned();
        let comment = check["check_result"]["suppress_comment"]
            .as_str()
            .unwrap_or_default();
        assert!(
            !comment.trim().is_empty(),
            "{check}: skipped without a reason"
        );
        skipped.insert((
            check["file_path"].as_str().unwrap_or_default().to_owned(),
            id,
            check["check_id"].as_str().unwrap_or_default().to_owned(),
        ));
    }
    assert_eq!(
        skipped, expected_skips,
        "the suppressions checkov applied differ from the template's"
    );
}

/// Whether `text` holds an AWS access key id: a known prefix and 16 more of `[A-Z0-9]`.
fn holds_access_key_id(text: &str) -> Option<&str> {
    const PREFIXES: [&str; 9] = [
        "AKIA", "ASIA", "AGPA", "AIDA", "AROA", "AIPA", "ANPA", "ANVA", "APKA",
    ];
    let bytes = text.as_bytes();
    (0..bytes.len().saturating_sub(19)).find_map(|start| {
        let candidate = &text.get(start..start + 20)?;
        let prefixed = PREFIXES.iter().any(|p| candidate.starts_with(p));
        let rest_ok = candidate[4..]
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
        (prefixed && rest_ok).then_some(*candidate)
    })
}

/// A run of exactly 40 characters of `[A-Za-z0-9/+]`, the shape of a secret access key.
fn holds_secret_key_shape(text: &str) -> Option<&str> {
    let secret_char = |c: char| c.is_ascii_alphanumeric() || c == '/' || c == '+';
    text.split(|c: char| !secret_char(c))
        .find(|run| run.len() == 40 && run.bytes().any(|b| b.is_ascii_digit()))
}

#[test]
fn the_scanners_recognise_credentials() {
    assert_eq!(
        holds_access_key_id("id: AKIAIOSFODNN7EXAMPLE,"),
        Some("AKIAIOSFODNN7EXAMPLE")
    );
    assert_eq!(
        holds_access_key_id("ASIAY34FZKBOKMUTVV7A"),
        Some("ASIAY34FZKBOKMUTVV7A")
    );
    assert_eq!(holds_access_key_id("AKIA-not-a-key"), None);
    assert_eq!(
        holds_secret_key_shape("\"wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\""),
        Some("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
    );
    assert_eq!(
        holds_secret_key_shape("usersync/bootstrap-0123abcd.zip"),
        None
    );
}

#[test]
fn the_template_holds_no_credentials_or_tokens() {
    const NAMES: [&str; 11] = [
        "aws_secret",
        "secretaccesskey",
        "secret_access_key",
        "sessiontoken",
        "session_token",
        "securitytoken",
        "security-token",
        "accesskeyid",
        "access_key_id",
        "password",
        "private key",
    ];
    for (variant, template) in security_variants() {
        for text in [
            to_json_string(&template),
            to_yaml_string(&template).unwrap(),
        ] {
            if let Some(key) = holds_access_key_id(&text) {
                panic!("{variant}: the template holds an access key id {key}");
            }
            if let Some(secret) = holds_secret_key_shape(&text) {
                panic!("{variant}: the template holds a secret-key-shaped {secret}");
            }
            let lower = text.to_lowercase();
            for name in NAMES {
                assert!(
                    !lower.contains(name),
                    "{variant}: the template mentions {name}"
                );
            }
        }
        // The function gets no credentials through its environment: its role provides them.
        let variables = props(&template, logical_id::MIRROR_FUNCTION)["Environment"]["Variables"]
            .as_object()
            .unwrap();
        for name in variables.keys() {
            let upper = name.to_uppercase();
            for word in ["SECRET", "TOKEN", "PASSWORD", "ACCESS_KEY", "CREDENTIAL"] {
                assert!(
                    !upper.contains(word),
                    "{variant}: environment variable {name}"
                );
            }
        }
        assert!(
            template.get("Parameters").is_none(),
            "{variant}: no parameters to leak into"
        );
    }
}

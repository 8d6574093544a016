//! Checking an existing table before a stack adopts it: [`check_table`] reads its description and
//! refuses a key, stream or encryption the function cannot mirror.

use aws_sdk_dynamodb::types::{
    KeyType, ScalarAttributeType, SseType, StreamViewType, TableDescription,
};
use usersync_function::config;

use super::AdoptionError;
use crate::stack::aws_error;
use crate::template::AdoptedTable;

/// Reads table `name` (DescribeTable) and checks that the function can mirror it: a single
/// string HASH key, a stream with new images, and the KMS key it is encrypted with, if any.
pub async fn check_table(
    dynamodb: &aws_sdk_dynamodb::Client,
    name: &str,
    region: &str,
) -> Result<AdoptedTable, AdoptionError> {
    let not_found = || AdoptionError::TableNotFound {
        table: name.to_owned(),
        region: region.to_owned(),
    };
    let described = match dynamodb.describe_table().table_name(name).send().await {
        Ok(described) => described,
        Err(err)
            if err
                .as_service_error()
                .is_some_and(|e| e.is_resource_not_found_exception()) =>
        {
            return Err(not_found())
        }
        Err(err) => return Err(aws_error(format!("describe table {name} in {region}"), err).into()),
    };
    let description = described.table().ok_or_else(not_found)?;
    adopted_table(name, region, description)
}

/// What [`check_table`] makes of a table's description.
fn adopted_table(
    name: &str,
    region: &str,
    description: &TableDescription,
) -> Result<AdoptedTable, AdoptionError> {
    let table = name.to_owned();
    let key_of = |wanted: &KeyType| {
        description
            .key_schema()
            .iter()
            .find(|k| k.key_type() == wanted)
            .map(|k| k.attribute_name().to_owned())
    };
    let Some(hash) = key_of(&KeyType::Hash) else {
        return Err(AdoptionError::NoHashKey { table });
    };
    if let Some(range) = key_of(&KeyType::Range) {
        return Err(AdoptionError::CompositeKey { table, hash, range });
    }
    let hash_type = description
        .attribute_definitions()
        .iter()
        .find(|d| d.attribute_name() == hash)
        .map(|d| d.attribute_type().clone());
    if hash_type != Some(ScalarAttributeType::S) {
        return Err(AdoptionError::HashKeyNotString {
            table,
            attribute: hash,
            attribute_type: hash_type.map_or_else(
                || "unknown (no attribute definition)".to_owned(),
                |t| t.as_str().to_owned(),
            ),
        });
    }
    // The function's own rule for its KEY_ATTRIBUTE.
    if let Err(reason) = config::check_key_attribute(&hash) {
        return Err(AdoptionError::HashKeyRefused {
            table,
            attribute: hash,
            reason,
        });
    }

    // StreamSpecification (StreamEnabled, StreamViewType) and LatestStreamArn, "the ARN that
    // uniquely identifies the latest stream for this table", of DescribeTable's TableDescription
    // (https://docs.aws.amazon.com/amazondynamodb/latest/APIReference/API_TableDescription.html).
    // NEW_IMAGE and NEW_AND_OLD_IMAGES carry the item as it is after the change; KEYS_ONLY and
    // OLD_IMAGE do not
    // (https://docs.aws.amazon.com/amazondynamodb/latest/APIReference/API_StreamSpecification.html).
    let stream = description
        .stream_specification()
        .filter(|s| s.stream_enabled());
    let Some(stream) = stream else {
        return Err(AdoptionError::NoStream {
            table,
            region: region.to_owned(),
        });
    };
    match stream.stream_view_type() {
        Some(StreamViewType::NewAndOldImages | StreamViewType::NewImage) => {}
        // A view type cannot be changed in place: the stream is disabled, then enabled with the
        // new type, which makes a new stream; "When you modify the StreamViewType property,
        // DynamoDB creates a new stream", the old one deleted after its 24-hour retention
        // (https://docs.aws.amazon.com/AWSCloudFormation/latest/TemplateReference/aws-properties-dynamodb-table-streamspecification.html;
        // retention: https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/Streams.html).
        other => {
            return Err(AdoptionError::WrongViewType {
                table,
                view_type: other.map_or("none", StreamViewType::as_str).to_owned(),
                region: region.to_owned(),
            })
        }
    }
    let Some(stream_arn) = description.latest_stream_arn() else {
        return Err(AdoptionError::NoStreamArn { table });
    };

    // SSEType KMS is a key of KMS (the AWS managed aws/dynamodb key or a customer managed one);
    // without an SSEDescription the table uses an AWS owned key, which needs no permission
    // (https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/encryption.usagenotes.html).
    let kms_key_arn = description
        .sse_description()
        .filter(|sse| sse.sse_type() == Some(&SseType::Kms))
        .and_then(|sse| sse.kms_master_key_arn())
        .map(str::to_owned);
    Ok(AdoptedTable {
        name: table,
        stream_arn: stream_arn.to_owned(),
        key_attribute: hash,
        kms_key_arn,
    })
}

#[cfg(test)]
mod tests {
    use aws_sdk_dynamodb::operation::describe_table::{DescribeTableError, DescribeTableOutput};
    use aws_sdk_dynamodb::types::error::ResourceNotFoundException;
    use aws_sdk_dynamodb::types::{
        AttributeDefinition, KeySchemaElement, SseDescription, StreamSpecification,
    };
    use aws_smithy_mocks::mock;
    use aws_smithy_types::error::ErrorMetadata;
    use usersync_function::config::vars;

    use super::*;
    use crate::stack::adopt::test_support::{dynamodb, REGION, TABLE, TABLE_KEY};

    const STREAM: &str =
        "arn:aws:dynamodb:eu-west-1:123456789012:table/people/stream/2024-05-01T00:00:00.000";

    fn key(name: &str, key_type: KeyType) -> KeySchemaElement {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(key_type)
            .build()
            .unwrap()
    }

    fn attribute(name: &str, kind: ScalarAttributeType) -> AttributeDefinition {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(kind)
            .build()
            .unwrap()
    }

    fn stream(view: StreamViewType) -> StreamSpecification {
        StreamSpecification::builder()
            .stream_enabled(true)
            .stream_view_type(view)
            .build()
            .unwrap()
    }

    /// A table keyed by a string `user_id` with a NEW_AND_OLD_IMAGES stream, AWS owned key.
    fn good_table() -> aws_sdk_dynamodb::types::builders::TableDescriptionBuilder {
        TableDescription::builder()
            .table_name(TABLE)
            .key_schema(key("user_id", KeyType::Hash))
            .attribute_definitions(attribute("user_id", ScalarAttributeType::S))
            .stream_specification(stream(StreamViewType::NewAndOldImages))
            .latest_stream_arn(STREAM)
    }

    fn refusal(description: TableDescription) -> String {
        adopted_table(TABLE, REGION, &description)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn a_string_hash_key_with_new_images_is_adopted() {
        for view in [StreamViewType::NewAndOldImages, StreamViewType::NewImage] {
            let description = good_table()
                .stream_specification(stream(view.clone()))
                .build();
            assert_eq!(
                adopted_table(TABLE, REGION, &description).unwrap(),
                AdoptedTable {
                    name: TABLE.to_owned(),
                    stream_arn: STREAM.to_owned(),
                    key_attribute: "user_id".to_owned(),
                    kms_key_arn: None,
                },
                "{view:?}"
            );
        }
    }

    #[test]
    fn a_kms_encrypted_table_names_its_key() {
        let description = good_table()
            .sse_description(
                SseDescription::builder()
                    .sse_type(SseType::Kms)
                    .kms_master_key_arn(TABLE_KEY)
                    .build(),
            )
            .build();
        let table = adopted_table(TABLE, REGION, &description).unwrap();
        assert_eq!(table.kms_key_arn.as_deref(), Some(TABLE_KEY));
        // AES256 (no KMS key) needs nothing.
        let description = good_table()
            .sse_description(SseDescription::builder().sse_type(SseType::Aes256).build())
            .build();
        assert_eq!(
            adopted_table(TABLE, REGION, &description)
                .unwrap()
                .kms_key_arn,
            None
        );
    }

    #[test]
    fn a_range_key_is_refused() {
        let message = refusal(
            good_table()
                .key_schema(key("created", KeyType::Range))
                .build(),
        );
        assert_eq!(
            message,
            "table people has a composite primary key (user_id HASH, created RANGE): the \
             function writes one object per user_id, so several items would map to one object; \
             adopt a table whose key is a single string HASH key"
        );
    }

    #[test]
    fn a_hash_key_that_is_not_a_string_is_refused() {
        let description = TableDescription::builder()
            .key_schema(key("id", KeyType::Hash))
            .attribute_definitions(attribute("id", ScalarAttributeType::N))
            .stream_specification(stream(StreamViewType::NewImage))
            .latest_stream_arn(STREAM)
            .build();
        assert_eq!(
            refusal(description),
            "table people's hash key id is of type N, not a string (S): the function names each \
             user's object by that key's text; adopt a table whose HASH key is a string"
        );
        let blank = TableDescription::builder()
            .key_schema(key(" ", KeyType::Hash))
            .attribute_definitions(attribute(" ", ScalarAttributeType::S))
            .build();
        let message = refusal(blank);
        assert!(
            message.contains(&format!("cannot be the function's {}", vars::KEY_ATTRIBUTE)),
            "{message}"
        );
        assert!(
            refusal(TableDescription::builder().build()).contains("reports no HASH key"),
            "no key schema"
        );
    }

    #[test]
    fn a_table_without_a_stream_is_refused_with_the_command_that_enables_one() {
        for description in [
            good_table()
                .set_stream_specification(None)
                .set_latest_stream_arn(None)
                .build(),
            good_table()
                .stream_specification(
                    StreamSpecification::builder()
                        .stream_enabled(false)
                        .build()
                        .unwrap(),
                )
                .build(),
        ] {
            let message = refusal(description);
            assert!(
                message.starts_with("table people has no stream"),
                "{message}"
            );
            assert!(
                message.contains(
                    "`aws dynamodb update-table --table-name people --stream-specification \
                     StreamEnabled=true,StreamViewType=NEW_AND_OLD_IMAGES`"
                ),
                "{message}"
            );
            assert!(message.contains("eu-west-1"), "{message}");
        }
    }

    #[test]
    fn a_stream_without_new_images_is_refused_with_both_commands_and_the_new_stream() {
        for view in [StreamViewType::KeysOnly, StreamViewType::OldImage] {
            let message = refusal(
                good_table()
                    .stream_specification(stream(view.clone()))
                    .build(),
            );
            assert!(
                message.starts_with(&format!(
                    "table people's stream has view type {}, whose records carry no new image",
                    view.as_str()
                )),
                "{message}"
            );
            let disable = message
                .find("`aws dynamodb update-table --table-name people --stream-specification StreamEnabled=false`")
                .expect("the command that disables the stream");
            let enable = message
                .find("`aws dynamodb update-table --table-name people --stream-specification StreamEnabled=true,StreamViewType=NEW_AND_OLD_IMAGES`")
                .expect("the command that enables it again");
            assert!(disable < enable, "{message}");
            assert!(message.contains("a NEW stream with a new ARN"), "{message}");
            assert!(message.contains("24 hours"), "{message}");
        }
        let message = refusal(good_table().set_latest_stream_arn(None).build());
        assert!(message.contains("no LatestStreamArn"), "{message}");
    }

    #[tokio::test]
    async fn check_table_describes_the_named_table() {
        let described = mock!(aws_sdk_dynamodb::Client::describe_table)
            .match_requests(|r| r.table_name() == Some(TABLE))
            .then_output(|| {
                DescribeTableOutput::builder()
                    .table(good_table().build())
                    .build()
            });
        let table = check_table(&dynamodb(&[&described]), TABLE, REGION)
            .await
            .unwrap();
        assert_eq!(table.stream_arn, STREAM);
        assert_eq!(described.num_calls(), 1);
    }

    #[tokio::test]
    async fn a_missing_table_is_named_with_its_region_and_the_fix() {
        let missing = mock!(aws_sdk_dynamodb::Client::describe_table).then_error(|| {
            DescribeTableError::ResourceNotFoundException(
                ResourceNotFoundException::builder()
                    .message("Requested resource not found: Table: people not found")
                    .build(),
            )
        });
        let err = check_table(&dynamodb(&[&missing]), TABLE, REGION)
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "table people does not exist in eu-west-1: create it there, or name an existing \
             table of eu-west-1 in existing_table (usersync.toml) or --existing-table (deploy \
             with --region to reach a table of another region)"
        );
    }

    #[tokio::test]
    async fn another_describe_table_failure_names_the_table() {
        let denied = mock!(aws_sdk_dynamodb::Client::describe_table).then_error(|| {
            DescribeTableError::generic(
                ErrorMetadata::builder()
                    .code("AccessDeniedException")
                    .message("not authorized to perform: dynamodb:DescribeTable")
                    .build(),
            )
        });
        let err = check_table(&dynamodb(&[&denied]), TABLE, REGION)
            .await
            .unwrap_err();
        assert!(matches!(err, AdoptionError::Stack(_)), "{err:?}");
        assert_eq!(
            err.to_string(),
            "failed to describe table people in eu-west-1: AccessDeniedException: not authorized \
             to perform: dynamodb:DescribeTable"
        );
    }
}

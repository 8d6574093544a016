//! The embedded emulator's front door. fakecloud 0.51.0 applies `BatchWriteItem` without
//! writing the stream records DynamoDB writes for it (its `batch_write_item` never calls
//! `generate_stream_record`, unlike `PutItem`, `DeleteItem` and `TransactWriteItems`), so a user
//! written that way would never reach the function. The front forwards every request to the
//! emulator unchanged, except `BatchWriteItem`, which it sends as the `TransactWriteItems` of
//! the same writes in the same order (all of them stream) and answers in `BatchWriteItem`'s
//! shape, with nothing unprocessed.
//!
//! The rewritten request keeps its original signature: the emulator, started by us, does not
//! verify signatures (fakecloud's `--verify-sigv4` is off by default).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderValue, Request, Response};
use http_body_util::BodyExt;
use serde_json::{json, Map, Value};

use crate::emulator::proxy::{
    bad_gateway, full_body, BoxFuture, Intercepted, Interceptor, ProxyBody, ReverseProxy, Upstream,
};

const TARGET_HEADER: &str = "x-amz-target";
const BATCH_WRITE_ITEM: &str = "DynamoDB_20120810.BatchWriteItem";
const TRANSACT_WRITE_ITEMS: &str = "DynamoDB_20120810.TransactWriteItems";

/// The front, running on its own loopback port; it stops when dropped.
pub struct EmulatorFront {
    proxy: ReverseProxy,
}

impl EmulatorFront {
    /// Starts a front for the emulator listening on `emulator`.
    pub async fn start(emulator: SocketAddr) -> io::Result<EmulatorFront> {
        let proxy = ReverseProxy::start(emulator, Arc::new(StreamedBatchWrites)).await?;
        Ok(EmulatorFront { proxy })
    }

    pub fn addr(&self) -> SocketAddr {
        self.proxy.addr()
    }

    /// The endpoint URL clients use.
    pub fn endpoint_url(&self) -> String {
        self.proxy.url()
    }
}

/// Sends `BatchWriteItem` as `TransactWriteItems`.
struct StreamedBatchWrites;

impl Interceptor for StreamedBatchWrites {
    fn intercept<'a>(
        &'a self,
        request: Request<ProxyBody>,
        upstream: &'a Upstream,
    ) -> BoxFuture<'a, Intercepted> {
        Box::pin(async move {
            let is_batch_write = request
                .headers()
                .get(TARGET_HEADER)
                .is_some_and(|target| target.as_bytes() == BATCH_WRITE_ITEM.as_bytes());
            if !is_batch_write {
                return Intercepted::Forward(request);
            }
            let (parts, body) = request.into_parts();
            let body = match body.collect().await {
                Ok(collected) => collected.to_bytes(),
                // The client went away while sending; nobody is waiting for an answer.
                Err(_) => return Intercepted::Reset,
            };
            let Some(transact) = serde_json::from_slice(&body)
                .ok()
                .and_then(|request| transact_write_items(&request))
            else {
                // Not something this front understands: the emulator answers it as it is.
                return Intercepted::Forward(Request::from_parts(parts, full_body(body)));
            };
            let transact = Bytes::from(transact.to_string());
            let mut request = Request::from_parts(parts, full_body(transact.clone()));
            let headers = request.headers_mut();
            headers.insert(
                TARGET_HEADER,
                HeaderValue::from_static(TRANSACT_WRITE_ITEMS),
            );
            headers.insert(CONTENT_LENGTH, HeaderValue::from(transact.len()));
            match forward_as_batch_write(upstream, request).await {
                Ok(response) => Intercepted::Respond(response),
                Err(message) => Intercepted::Respond(bad_gateway(&message)),
            }
        })
    }
}

/// The `TransactWriteItems` request of the writes of a `BatchWriteItem` request, in order;
/// `None` when the request does not have `BatchWriteItem`'s shape.
fn transact_write_items(batch: &Value) -> Option<Value> {
    let mut items = Vec::new();
    for (table, requests) in batch.get("RequestItems")?.as_object()? {
        for request in requests.as_array()? {
            let item = match (request.get("PutRequest"), request.get("DeleteRequest")) {
                (Some(put), None) => {
                    json!({"Put": {"TableName": table, "Item": put.get("Item")?}})
                }
                (None, Some(delete)) => {
                    json!({"Delete": {"TableName": table, "Key": delete.get("Key")?}})
                }
                _ => return None,
            };
            items.push(item);
        }
    }
    let mut transact = Map::new();
    transact.insert("TransactItems".into(), Value::Array(items));
    for option in ["ReturnConsumedCapacity", "ReturnItemCollectionMetrics"] {
        if let Some(value) = batch.get(option) {
            transact.insert(option.into(), value.clone());
        }
    }
    Some(Value::Object(transact))
}

/// Sends the transaction and answers as `BatchWriteItem` would: success with no unprocessed
/// items (and the capacity and metrics asked for), or the emulator's error as it is.
async fn forward_as_batch_write(
    upstream: &Upstream,
    request: Request<ProxyBody>,
) -> Result<Response<ProxyBody>, String> {
    let response = upstream
        .send(request)
        .await
        .map_err(|err| err.to_string())?;
    let (mut parts, body) = response.into_parts();
    let body = body
        .collect()
        .await
        .map_err(|err| format!("failed to read the emulator's answer: {err}"))?
        .to_bytes();
    if !parts.status.is_success() {
        return Ok(Response::from_parts(parts, full_body(body)));
    }
    let answer = batch_write_answer(&body);
    parts
        .headers
        .insert(CONTENT_LENGTH, HeaderValue::from(answer.len()));
    parts.headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/x-amz-json-1.0"),
    );
    Ok(Response::from_parts(parts, full_body(answer)))
}

/// `BatchWriteItem`'s answer for a successful `TransactWriteItems` answer.
fn batch_write_answer(transact_answer: &[u8]) -> Bytes {
    let transact: Value = serde_json::from_slice(transact_answer).unwrap_or(Value::Null);
    let mut answer = Map::new();
    answer.insert("UnprocessedItems".into(), json!({}));
    for field in ["ConsumedCapacity", "ItemCollectionMetrics"] {
        if let Some(value) = transact.get(field) {
            answer.insert(field.into(), value.clone());
        }
    }
    Bytes::from(Value::Object(answer).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_writes_become_the_same_transaction_in_order() {
        let batch = json!({
            "RequestItems": {
                "users": [
                    {"PutRequest": {"Item": {"name": {"S": "alice"}}}},
                    {"DeleteRequest": {"Key": {"name": {"S": "bob"}}}},
                    {"PutRequest": {"Item": {"name": {"S": "carol"}, "n": {"N": "1"}}}}
                ]
            },
            "ReturnConsumedCapacity": "TOTAL"
        });
        assert_eq!(
            transact_write_items(&batch),
            Some(json!({
                "TransactItems": [
                    {"Put": {"TableName": "users", "Item": {"name": {"S": "alice"}}}},
                    {"Delete": {"TableName": "users", "Key": {"name": {"S": "bob"}}}},
                    {"Put": {"TableName": "users", "Item": {"name": {"S": "carol"}, "n": {"N": "1"}}}}
                ],
                "ReturnConsumedCapacity": "TOTAL"
            }))
        );
    }

    #[test]
    fn requests_of_another_shape_are_left_to_the_emulator() {
        for batch in [
            json!({}),
            json!({"RequestItems": []}),
            json!({"RequestItems": {"users": {}}}),
            json!({"RequestItems": {"users": [{}]}}),
            json!({"RequestItems": {"users": [{"PutRequest": {}, "DeleteRequest": {}}]}}),
            json!({"RequestItems": {"users": [{"PutRequest": {"NotItem": 1}}]}}),
        ] {
            assert_eq!(transact_write_items(&batch), None, "{batch}");
        }
    }

    #[test]
    fn a_transaction_answer_becomes_a_batch_answer_with_nothing_unprocessed() {
        assert_eq!(
            serde_json::from_slice::<Value>(&batch_write_answer(b"{}")).unwrap(),
            json!({"UnprocessedItems": {}})
        );
        let with_capacity = br#"{"ConsumedCapacity":[{"TableName":"users","CapacityUnits":2.0}]}"#;
        assert_eq!(
            serde_json::from_slice::<Value>(&batch_write_answer(with_capacity)).unwrap(),
            json!({
                "UnprocessedItems": {},
                "ConsumedCapacity": [{"TableName": "users", "CapacityUnits": 2.0}]
            })
        );
    }
}

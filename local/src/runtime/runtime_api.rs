//! The Lambda Runtime API (version `2018-06-01`) for one execution environment, on 127.0.0.1.
//!
//! A custom runtime such as `lambda_runtime` talks to Lambda through a small HTTP API: it
//! long-polls `GET /2018-06-01/runtime/invocation/next` for an event, then posts the result
//! to `/runtime/invocation/{id}/response` or `/runtime/invocation/{id}/error`; a runtime that
//! cannot start posts `/runtime/init/error` instead. [`RuntimeApi`] serves exactly that, with
//! the status codes and error bodies Lambda uses, so the real `bootstrap` runs here unchanged.
//!
//! One `RuntimeApi` serves one process. When a process is replaced its API is dropped with it,
//! so an event can never be handed to a long-poll left over from a killed process.

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, FailedToBufferBody};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

/// The largest response Lambda accepts from a synchronously invoked function (6 MB).
pub const MAX_RESPONSE_BYTES: usize = 6 * 1024 * 1024;

/// The header carrying an error's type when the runtime posts one.
pub const ERROR_TYPE_HEADER: &str = "lambda-runtime-function-error-type";

/// One event for the runtime, with the values `/invocation/next` sends as headers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invocation {
    /// `Lambda-Runtime-Aws-Request-Id`: names the invocation in the runtime's reply.
    pub request_id: String,
    /// The event document, sent as the body.
    pub payload: Bytes,
    /// `Lambda-Runtime-Deadline-Ms`: when the invocation times out, in ms since the Unix epoch.
    pub deadline_ms: u64,
    /// `Lambda-Runtime-Invoked-Function-Arn`.
    pub invoked_function_arn: String,
    /// `Lambda-Runtime-Trace-Id`: the X-Ray tracing header.
    pub trace_id: String,
    /// `Lambda-Runtime-Client-Context`, sent only when present.
    pub client_context: Option<String>,
    /// `Lambda-Runtime-Cognito-Identity`, sent only when present.
    pub cognito_identity: Option<String>,
}

/// How the runtime finished an invocation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Completion {
    /// `/invocation/{id}/response` with this body.
    Response(Bytes),
    /// `/invocation/{id}/error`, or a response too large for Lambda to accept.
    Error(ErrorReport),
}

/// An error in Lambda's error format, as the runtime reported it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrorReport {
    pub error_type: String,
    pub error_message: String,
}

/// How far the runtime has got with starting up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InitState {
    /// It has called neither `/invocation/next` nor `/init/error` yet.
    Initialising,
    /// It first asked for an event at this moment.
    Ready { at: Instant },
    /// It reported that it cannot start (`/init/error`).
    Failed(ErrorReport),
}

/// Why an invocation could not be queued.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SubmitError {
    #[error("request id {0:?} is already in use by an unfinished invocation")]
    DuplicateRequestId(String),
    #[error("the {header} value {value:?} cannot be sent as an HTTP header")]
    InvalidHeader { header: &'static str, value: String },
}

/// The Runtime API of one execution environment, listening on 127.0.0.1.
///
/// Dropping it stops the server and answers any waiting `/invocation/next` with the 500
/// "container error" that tells a runtime to exit.
pub struct RuntimeApi {
    address: SocketAddr,
    shared: Arc<Shared>,
    queue: mpsc::UnboundedSender<Queued>,
    init: watch::Receiver<InitState>,
    server: JoinHandle<()>,
    // Never sent on: dropping it is the signal that wakes long-polls when the API goes away.
    _closing: watch::Sender<()>,
}

/// An invocation handed to [`RuntimeApi::submit`] and not yet awaited.
#[derive(Debug)]
pub struct PendingInvocation {
    request_id: String,
    reply: oneshot::Receiver<Completion>,
}

struct Shared {
    // The receiving end is shared by the long-polls; the lock means one takes each event.
    queue: tokio::sync::Mutex<mpsc::UnboundedReceiver<Queued>>,
    open: Mutex<HashMap<String, Open>>,
    init: watch::Sender<InitState>,
    closing: watch::Receiver<()>,
}

/// An event waiting for `/invocation/next`, already rendered as the response it becomes.
struct Queued {
    request_id: String,
    headers: HeaderMap,
    payload: Bytes,
}

/// An invocation the runtime has not answered yet.
struct Open {
    // Lambda only accepts an answer to the invocation it handed out, not to one still queued.
    delivered: bool,
    reply: oneshot::Sender<Completion>,
}

impl RuntimeApi {
    /// Starts serving on an ephemeral port of 127.0.0.1.
    pub async fn bind() -> io::Result<RuntimeApi> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let address = listener.local_addr()?;
        let (queue, queue_rx) = mpsc::unbounded_channel();
        let (init_tx, init) = watch::channel(InitState::Initialising);
        let (closing_tx, closing) = watch::channel(());
        let shared = Arc::new(Shared {
            queue: tokio::sync::Mutex::new(queue_rx),
            open: Mutex::new(HashMap::new()),
            init: init_tx,
            closing,
        });
        let app = router(shared.clone());
        let server = tokio::spawn(async move {
            // `serve` only returns on a listener failure; the host then sees the runtime fail
            // to reach the API, so recording the cause is all that is left to do here.
            if let Err(err) = axum::serve(listener, app).await {
                tracing::warn!(error = %err, %address, "the Lambda Runtime API server stopped");
            }
        });
        Ok(RuntimeApi {
            address,
            shared,
            queue,
            init,
            server,
            _closing: closing_tx,
        })
    }

    /// Where the API listens: the value for `AWS_LAMBDA_RUNTIME_API`.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The runtime's start-up state right now.
    pub fn init_state(&self) -> InitState {
        self.init.borrow().clone()
    }

    /// Waits until the runtime has asked for its first event or reported an init error.
    pub async fn initialised(&self) -> InitState {
        let mut init = self.init.clone();
        let settled = init
            .wait_for(|state| !matches!(state, InitState::Initialising))
            .await
            .map(|state| state.clone());
        // The sender lives in `shared`, which `self` holds, so this cannot fail; if it somehow
        // did, the current state is still the best answer.
        settled.unwrap_or_else(|_| self.init_state())
    }

    /// Queues an event for the next `/invocation/next`; await the result through the
    /// returned [`PendingInvocation`].
    pub fn submit(&self, invocation: Invocation) -> Result<PendingInvocation, SubmitError> {
        let headers = next_headers(&invocation)?;
        let request_id = invocation.request_id;
        let (reply, reply_rx) = oneshot::channel();
        {
            let mut open = lock(&self.shared.open);
            if open.contains_key(&request_id) {
                return Err(SubmitError::DuplicateRequestId(request_id));
            }
            open.insert(
                request_id.clone(),
                Open {
                    delivered: false,
                    reply,
                },
            );
        }
        // The receiver lives in `shared`, which `self` holds, so the queue is never closed.
        let _ = self.queue.send(Queued {
            request_id: request_id.clone(),
            headers,
            payload: invocation.payload,
        });
        Ok(PendingInvocation {
            request_id,
            reply: reply_rx,
        })
    }
}

impl Drop for RuntimeApi {
    fn drop(&mut self) {
        // Stops accepting connections; open long-polls are woken by `_closing` being dropped.
        self.server.abort();
    }
}

impl PendingInvocation {
    /// The request id the runtime was given.
    pub fn request_id(&self) -> &str {
        &self.request_id
    }

    /// Waits for the runtime's answer; `None` if the API was dropped first.
    pub async fn completion(self) -> Option<Completion> {
        self.reply.await.ok()
    }
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/2018-06-01/runtime/invocation/next", get(next_invocation))
        .route(
            "/2018-06-01/runtime/invocation/{request_id}/response",
            post(invocation_response),
        )
        .route(
            "/2018-06-01/runtime/invocation/{request_id}/error",
            post(invocation_error),
        )
        .route("/2018-06-01/runtime/init/error", post(init_error))
        // Bodies over Lambda's limit are refused by the handlers in Lambda's own way.
        .layer(DefaultBodyLimit::max(MAX_RESPONSE_BYTES))
        .with_state(shared)
}

/// `GET /invocation/next`: blocks until an event is queued, then hands it out.
async fn next_invocation(State(shared): State<Arc<Shared>>) -> Response {
    shared.init.send_if_modified(|state| {
        if matches!(state, InitState::Initialising) {
            *state = InitState::Ready { at: Instant::now() };
            true
        } else {
            false
        }
    });

    let mut closing = shared.closing.clone();
    let queued = tokio::select! {
        queued = async { shared.queue.lock().await.recv().await } => queued,
        _ = closing.changed() => None,
    };
    let Some(queued) = queued else {
        return error_body(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Runtime.ContainerError",
            "the execution environment is shutting down",
        );
    };
    if let Some(open) = lock(&shared.open).get_mut(&queued.request_id) {
        open.delivered = true;
    }
    (StatusCode::OK, queued.headers, queued.payload).into_response()
}

/// `POST /invocation/{id}/response`.
async fn invocation_response(
    State(shared): State<Arc<Shared>>,
    Path(request_id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match body {
        Ok(body) => shared.finish(&request_id, Completion::Response(body)),
        Err(rejection) => shared.refuse_body(&request_id, rejection),
    }
}

/// `POST /invocation/{id}/error`.
async fn invocation_error(
    State(shared): State<Arc<Shared>>,
    Path(request_id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match body {
        Ok(body) => shared.finish(
            &request_id,
            Completion::Error(ErrorReport::from_request(&headers, &body)),
        ),
        Err(rejection) => shared.refuse_body(&request_id, rejection),
    }
}

/// `POST /init/error`: accepted once, and only before the runtime asked for an event.
async fn init_error(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(rejection) => return rejection.into_response(),
    };
    let report = ErrorReport::from_request(&headers, &body);
    let accepted = shared.init.send_if_modified(|state| {
        if matches!(state, InitState::Initialising) {
            *state = InitState::Failed(report);
            true
        } else {
            false
        }
    });
    if accepted {
        accepted_body()
    } else {
        error_body(
            StatusCode::FORBIDDEN,
            "InvalidStateTransition",
            "the runtime has already initialised or reported an init error",
        )
    }
}

impl Shared {
    /// Delivers the runtime's answer; 400 `InvalidRequestID` for an id that is not the open,
    /// handed-out invocation (unknown, still queued, or already answered), as Lambda does.
    fn finish(&self, request_id: &str, completion: Completion) -> Response {
        let open = {
            let mut open = lock(&self.open);
            match open.get(request_id) {
                Some(invocation) if invocation.delivered => open.remove(request_id),
                _ => None,
            }
        };
        match open {
            Some(invocation) => {
                // The host may have stopped waiting (it timed out); the answer is then moot.
                let _ = invocation.reply.send(completion);
                accepted_body()
            }
            None => error_body(
                StatusCode::BAD_REQUEST,
                "InvalidRequestID",
                "Invalid request ID",
            ),
        }
    }

    /// Answers a body that could not be read. A body over the limit fails the invocation the
    /// way Lambda fails it, so the caller gets an error instead of waiting for the timeout.
    fn refuse_body(&self, request_id: &str, rejection: BytesRejection) -> Response {
        if let BytesRejection::FailedToBufferBody(FailedToBufferBody::LengthLimitError(_)) =
            rejection
        {
            let message = format!(
                "Response payload size exceeded maximum allowed payload size ({MAX_RESPONSE_BYTES} bytes)."
            );
            self.finish(
                request_id,
                Completion::Error(ErrorReport {
                    error_type: "Function.ResponseSizeTooLarge".to_owned(),
                    error_message: message.clone(),
                }),
            );
            return error_body(
                StatusCode::PAYLOAD_TOO_LARGE,
                "RequestEntityTooLarge",
                &message,
            );
        }
        rejection.into_response()
    }
}

impl ErrorReport {
    /// Reads Lambda's error format, `{"errorType": …, "errorMessage": …, "stackTrace": […]}`.
    /// Like Lambda, falls back to the `Lambda-Runtime-Function-Error-Type` header when the
    /// body is missing or unreadable.
    fn from_request(headers: &HeaderMap, body: &[u8]) -> ErrorReport {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct ErrorRequest {
            error_type: Option<String>,
            error_message: Option<String>,
        }

        let header_type = headers
            .get(ERROR_TYPE_HEADER)
            .and_then(|value| value.to_str().ok())
            .filter(|value| !value.is_empty())
            .unwrap_or("Unhandled");
        match serde_json::from_slice::<ErrorRequest>(body) {
            Ok(parsed) => ErrorReport {
                error_type: parsed.error_type.unwrap_or_else(|| header_type.to_owned()),
                error_message: parsed.error_message.unwrap_or_default(),
            },
            Err(_) => ErrorReport {
                error_type: header_type.to_owned(),
                error_message: String::from_utf8_lossy(body).trim().to_owned(),
            },
        }
    }
}

/// The headers of the `/invocation/next` response for `invocation`.
fn next_headers(invocation: &Invocation) -> Result<HeaderMap, SubmitError> {
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let deadline_ms = invocation.deadline_ms.to_string();
    let values = [
        (
            "lambda-runtime-aws-request-id",
            Some(&invocation.request_id),
        ),
        ("lambda-runtime-deadline-ms", Some(&deadline_ms)),
        (
            "lambda-runtime-invoked-function-arn",
            Some(&invocation.invoked_function_arn),
        ),
        ("lambda-runtime-trace-id", Some(&invocation.trace_id)),
        (
            "lambda-runtime-client-context",
            invocation.client_context.as_ref(),
        ),
        (
            "lambda-runtime-cognito-identity",
            invocation.cognito_identity.as_ref(),
        ),
    ];
    for (header, value) in values {
        let Some(value) = value else { continue };
        let parsed = HeaderValue::from_str(value).map_err(|_| SubmitError::InvalidHeader {
            header,
            value: value.clone(),
        })?;
        headers.insert(HeaderName::from_static(header), parsed);
    }
    Ok(headers)
}

fn accepted_body() -> Response {
    (StatusCode::ACCEPTED, Json(json!({ "status": "OK" }))).into_response()
}

fn error_body(status: StatusCode, error_type: &str, message: &str) -> Response {
    (
        status,
        Json(json!({ "errorType": error_type, "errorMessage": message })),
    )
        .into_response()
}

/// Locks `mutex`, carrying on after a panic elsewhere: the map stays consistent because every
/// critical section is a single insert, update or remove.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

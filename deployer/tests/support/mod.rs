//! A scripted, in-process fake of the AWS calls the stack lifecycle makes: the CloudFormation
//! Query API, STS `GetCallerIdentity`, the S3 bucket and object calls of the assets and data
//! buckets (checking `ExpectedBucketOwner` as S3 does), and Lambda's Get/UpdateEventSourceMapping.
//! It answers through the SDK's
//! `infallible_client_fn` test HTTP client, so the code under test runs unchanged, request
//! serialisation and response parsing included, with no network.
//!
//! Each test scripts one scenario: the stack that exists at the start (if any), what the next
//! change set will hold, and the steps an execution or a deletion goes through. The fake keeps
//! the stack's state, validates requests the way CloudFormation does where it matters (no CREATE
//! change set over an existing stack, no UPDATE of a missing or `ROLLBACK_COMPLETE` one, only a
//! computed change set can be executed) and records every call for the test to inspect.
//!
//! Time: a running operation (an executed change set, a stack deletion) advances one scripted
//! step per poll. By default a poll is a `DescribeStackEvents` call (first page), so the
//! `DescribeStacks` that follows in the same poll sees the same state: the operation progresses
//! during the sleep between polls. [`Clock::EachStatusRead`] instead advances on `DescribeStacks`,
//! modelling an operation that moves on between a poll's two reads.

#![allow(dead_code, reason = "each test binary uses its own part of the fake")]

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use aws_smithy_http_client::test_util::infallible_client_fn;
use aws_smithy_types::body::SdkBody;
use deployer::target::Target;

/// The account STS reports.
pub const ACCOUNT: &str = "123456789012";
/// The region of the fake target.
pub const REGION: &str = "us-east-1";
/// The endpoint the fake target points at; nothing listens there.
pub const ENDPOINT: &str = "http://fake";
/// The assets bucket teardown looks for: `usersync-assets-<account>-<region>`.
pub const ASSETS_BUCKET: &str = "usersync-assets-123456789012-us-east-1";

const CFN_NAMESPACE: &str = "https://cloudformation.amazonaws.com/doc/2010-05-15/";
const STS_NAMESPACE: &str = "https://sts.amazonaws.com/doc/2011-06-15/";
const S3_NAMESPACE: &str = "http://s3.amazonaws.com/doc/2006-03-01/";
/// The path of Lambda's event source mapping API, followed by the mapping's UUID.
const MAPPINGS_PATH: &str = "/2015-03-31/event-source-mappings/";
/// Events per `DescribeStackEvents` page: small, so that reads span pages.
const EVENTS_PAGE_SIZE: usize = 4;

/// One stack event as scripted by a test.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub logical_id: String,
    pub resource_type: String,
    pub status: String,
    pub reason: Option<String>,
}

impl Event {
    /// An event of a resource of the stack.
    pub fn resource(logical_id: &str, resource_type: &str, status: &str) -> Self {
        Self {
            logical_id: logical_id.to_owned(),
            resource_type: resource_type.to_owned(),
            status: status.to_owned(),
            reason: None,
        }
    }

    /// An event of the stack `stack` itself.
    pub fn stack(stack: &str, status: &str) -> Self {
        Self::resource(stack, "AWS::CloudFormation::Stack", status)
    }

    pub fn because(mut self, reason: &str) -> Self {
        self.reason = Some(reason.to_owned());
        self
    }
}

/// One step of an operation: the stack's status afterwards and the events written on the way.
#[derive(Clone, Debug)]
pub struct Step {
    pub status: String,
    pub events: Vec<Event>,
}

impl Step {
    pub fn new(status: &str, events: Vec<Event>) -> Self {
        Self {
            status: status.to_owned(),
            events,
        }
    }
}

/// One line of a change set.
#[derive(Clone, Debug)]
pub struct Change {
    pub action: &'static str,
    pub logical_id: &'static str,
    pub resource_type: &'static str,
    pub replacement: Option<&'static str>,
}

/// What the next change set turns out to be once computed.
#[derive(Clone, Debug)]
pub enum ChangeSetOutcome {
    /// `CREATE_COMPLETE` with these changes.
    Changes(Vec<Change>),
    /// `FAILED` with this status reason.
    Failed(String),
}

/// The stack that exists when the scenario starts.
#[derive(Clone, Debug)]
pub struct ExistingStack {
    pub status: String,
    /// The deployed template, as `GetTemplate` returns it.
    pub template: String,
    pub outputs: Vec<(String, String)>,
    /// Its past events, oldest first.
    pub history: Vec<Event>,
}

/// When a running operation advances; see the module documentation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Clock {
    #[default]
    EachEventsRead,
    EachStatusRead,
}

/// Everything a test scripts.
#[derive(Clone, Debug)]
pub struct Scenario {
    pub stack_name: String,
    pub existing: Option<ExistingStack>,
    pub change_set: ChangeSetOutcome,
    /// The steps of an executed change set; the first is applied by `ExecuteChangeSet` itself.
    pub execution: Vec<Step>,
    /// The outputs a successful execution leaves.
    pub outputs_after_execution: Vec<(String, String)>,
    /// The steps of `DeleteStack`; the first is applied by `DeleteStack` itself.
    pub deletion: Vec<Step>,
    /// The steps of the second, third, ... `DeleteStack`; once used up, `deletion` again.
    pub deletion_retries: Vec<Vec<Step>>,
    pub clock: Clock,
    /// The S3 buckets that exist at the start.
    pub buckets: Vec<Bucket>,
    /// Objects written (`(bucket, key)`) when the first `DeleteStack` arrives: an invocation
    /// still running after the bucket was emptied.
    pub late_writes: Vec<(String, String)>,
    /// The stack's event source mapping as Lambda reports it; `None` when Lambda has none.
    pub mapping: Option<Mapping>,
    /// Whether the target serves Lambda's event source mapping API (an emulator may not).
    pub lambda_served: bool,
}

/// An S3 bucket, its owner and its objects' keys (one version each).
#[derive(Clone, Debug)]
pub struct Bucket {
    pub name: String,
    pub owner: String,
    pub keys: Vec<String>,
}

impl Bucket {
    pub fn new(name: &str, owner: &str, keys: &[&str]) -> Self {
        Self {
            name: name.to_owned(),
            owner: owner.to_owned(),
            keys: keys.iter().map(|k| (*k).to_owned()).collect(),
        }
    }
}

/// The stack's event source mapping in Lambda. Its UUID is the physical id of the stack's
/// `EventSourceMapping` resource ([`physical_id`]).
#[derive(Clone, Debug)]
pub struct Mapping {
    /// `Enabled`, `Disabled`, ...
    pub state: String,
    /// How many `GetEventSourceMapping` calls report `Disabling` after the mapping is disabled
    /// before it reads `Disabled`.
    pub disabling_reads: usize,
}

/// The physical id the fake gives resource `logical_id` of stack `stack`: a bucket's name, a
/// mapping's UUID.
pub fn physical_id(stack: &str, logical_id: &str) -> String {
    format!("{stack}-{logical_id}").to_lowercase()
}

impl Scenario {
    /// A scenario for `stack_name` with no stack and a plain, successful deletion script.
    pub fn new(stack_name: &str) -> Self {
        Self {
            stack_name: stack_name.to_owned(),
            existing: None,
            change_set: ChangeSetOutcome::Changes(Vec::new()),
            execution: Vec::new(),
            outputs_after_execution: Vec::new(),
            deletion: vec![
                Step::new(
                    "DELETE_IN_PROGRESS",
                    vec![Event::stack(stack_name, "DELETE_IN_PROGRESS").because("User Initiated")],
                ),
                Step::new(
                    "DELETE_COMPLETE",
                    vec![Event::stack(stack_name, "DELETE_COMPLETE")],
                ),
            ],
            deletion_retries: Vec::new(),
            clock: Clock::default(),
            buckets: Vec::new(),
            late_writes: Vec::new(),
            mapping: None,
            lambda_served: true,
        }
    }
}

/// One request the fake received: the Query API action (or `S3 <METHOD> <path>`) and its
/// form parameters.
#[derive(Clone, Debug)]
pub struct Call {
    pub action: String,
    pub params: BTreeMap<String, String>,
}

impl Call {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }
}

#[derive(Clone, Debug)]
struct RecordedEvent {
    id: String,
    event: Event,
}

#[derive(Clone, Debug)]
struct FakeStack {
    id: String,
    name: String,
    status: String,
    template: Option<String>,
    outputs: Vec<(String, String)>,
    /// Oldest first.
    events: Vec<RecordedEvent>,
}

#[derive(Clone, Debug)]
struct ChangeSet {
    id: String,
    name: String,
    stack_id: String,
    template: String,
    outcome: ChangeSetOutcome,
    described: usize,
    executed: bool,
}

#[derive(Debug)]
struct Running {
    stack_id: String,
    steps: VecDeque<Step>,
    /// The template a successful execution deploys.
    template: Option<String>,
}

#[derive(Debug)]
struct State {
    scenario: Scenario,
    live: Option<FakeStack>,
    deleted: Vec<FakeStack>,
    change_sets: Vec<ChangeSet>,
    running: Option<Running>,
    calls: Vec<Call>,
    unexpected: Vec<String>,
    /// Numbers stacks, change sets and events.
    serial: u64,
    buckets: Vec<Bucket>,
    mapping: Option<Mapping>,
    /// `DeleteStack` calls that started a deletion.
    deletions: usize,
}

/// The fake; clones share one state.
#[derive(Clone, Debug)]
pub struct FakeAws {
    state: Arc<Mutex<State>>,
}

struct Reply {
    status: u16,
    body: String,
    /// Extra response headers (a REST-JSON error's `x-amzn-errortype`).
    headers: Vec<(&'static str, String)>,
}

impl Reply {
    fn new(status: u16, body: String) -> Self {
        Self {
            status,
            body,
            headers: Vec::new(),
        }
    }
}

impl FakeAws {
    pub fn new(scenario: Scenario) -> Self {
        let mut state = State {
            scenario,
            live: None,
            deleted: Vec::new(),
            change_sets: Vec::new(),
            running: None,
            calls: Vec::new(),
            unexpected: Vec::new(),
            serial: 0,
            buckets: Vec::new(),
            mapping: None,
            deletions: 0,
        };
        state.buckets = state.scenario.buckets.clone();
        state.mapping = state.scenario.mapping.clone();
        if let Some(existing) = state.scenario.existing.clone() {
            let name = state.scenario.stack_name.clone();
            let id = state.new_stack_id(&name);
            let mut stack = FakeStack {
                id,
                name,
                status: existing.status,
                template: Some(existing.template),
                outputs: existing.outputs,
                events: Vec::new(),
            };
            for event in existing.history {
                let id = state.new_event_id();
                stack.events.push(RecordedEvent { id, event });
            }
            state.live = Some(stack);
        }
        Self {
            state: Arc::new(Mutex::new(state)),
        }
    }

    /// A target whose every client talks to this fake: the production constructor for an
    /// endpoint, with the fake as its HTTP client.
    pub fn target(&self) -> Target {
        let mut target = Target::for_endpoint(ENDPOINT, REGION);
        let fake = self.clone();
        let http_client = infallible_client_fn(move |request| fake.handle(request));
        target.sdk = target.sdk.into_builder().http_client(http_client).build();
        target
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("the fake's state is not poisoned")
    }

    /// Every call, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// Every call's action, in order.
    pub fn actions(&self) -> Vec<String> {
        self.lock().calls.iter().map(|c| c.action.clone()).collect()
    }

    /// The calls that change something (neither `Describe*`, `Get*` nor `List*`, nor an S3
    /// `HEAD` or `GET`), in order.
    pub fn mutations(&self) -> Vec<String> {
        self.actions()
            .into_iter()
            .filter(|a| {
                !(a.starts_with("Describe")
                    || a.starts_with("Get")
                    || a.starts_with("List")
                    || a.starts_with("S3 HEAD")
                    || a.starts_with("S3 GET"))
            })
            .collect()
    }

    /// The S3 calls, in order.
    pub fn s3_calls(&self) -> Vec<Call> {
        self.lock()
            .calls
            .iter()
            .filter(|c| c.action.starts_with("S3 "))
            .cloned()
            .collect()
    }

    /// The keys in bucket `name`, `None` when it does not exist.
    pub fn bucket_keys(&self, name: &str) -> Option<Vec<String>> {
        self.lock()
            .buckets
            .iter()
            .find(|b| b.name == name)
            .map(|b| b.keys.clone())
    }

    /// The mapping's state in Lambda.
    pub fn mapping_state(&self) -> Option<String> {
        self.lock().mapping.as_ref().map(|m| m.state.clone())
    }

    /// The calls of `action`, in order.
    pub fn calls_of(&self, action: &str) -> Vec<Call> {
        self.lock()
            .calls
            .iter()
            .filter(|c| c.action == action)
            .cloned()
            .collect()
    }

    /// The only call of `action`; panics unless there was exactly one.
    pub fn only_call(&self, action: &str) -> Call {
        let calls = self.calls_of(action);
        assert_eq!(calls.len(), 1, "expected one {action} call: {calls:#?}");
        calls.into_iter().next().expect("one call")
    }

    /// Requests the fake did not understand or the scenario did not script; should be empty.
    pub fn unexpected(&self) -> Vec<String> {
        self.lock().unexpected.clone()
    }

    /// The live stack's status, `None` when there is none.
    pub fn stack_status(&self) -> Option<String> {
        self.lock().live.as_ref().map(|s| s.status.clone())
    }

    /// The live stack's id.
    pub fn stack_id(&self) -> Option<String> {
        self.lock().live.as_ref().map(|s| s.id.clone())
    }

    /// The ids of the deleted stacks, oldest first.
    pub fn deleted_stack_ids(&self) -> Vec<String> {
        self.lock().deleted.iter().map(|s| s.id.clone()).collect()
    }

    /// The live stack's template.
    pub fn deployed_template(&self) -> Option<String> {
        self.lock().live.as_ref().and_then(|s| s.template.clone())
    }

    /// The names of the change sets still present.
    pub fn change_set_ids(&self) -> Vec<String> {
        self.lock()
            .change_sets
            .iter()
            .map(|c| c.id.clone())
            .collect()
    }

    fn handle(&self, request: http::Request<SdkBody>) -> http::Response<SdkBody> {
        let method = request.method().as_str().to_owned();
        let path = request.uri().path().to_owned();
        let query = request.uri().query().map(form_decode).unwrap_or_default();
        let body = request
            .body()
            .bytes()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default();
        let params = form_decode(&body);
        let mut state = self.lock();
        let reply = match params.get("Action") {
            Some(action) if method == "POST" && path == "/" => {
                let action = action.clone();
                state.calls.push(Call {
                    action: action.clone(),
                    params: params.clone(),
                });
                match params.get("Version").map(String::as_str) {
                    Some("2010-05-15") => state.cloudformation(&action, &params),
                    Some("2011-06-15") if action == "GetCallerIdentity" => Reply::new(
                        200,
                        format!(
                            r#"<GetCallerIdentityResponse xmlns="{STS_NAMESPACE}"><GetCallerIdentityResult><Arn>arn:aws:iam::{ACCOUNT}:user/tester</Arn><UserId>AIDAFAKE</UserId><Account>{ACCOUNT}</Account></GetCallerIdentityResult><ResponseMetadata><RequestId>fake</RequestId></ResponseMetadata></GetCallerIdentityResponse>"#
                        ),
                    ),
                    _ => state.unexpected(format!("{action} {params:?}")),
                }
            }
            _ if path.starts_with(MAPPINGS_PATH) => {
                let uuid = path[MAPPINGS_PATH.len()..].to_owned();
                state.lambda(&method, &uuid, &body)
            }
            _ => {
                // Path-style S3: `/<bucket>/` for a bucket, `/<bucket>/<key>` for an object; a
                // bucket subresource (`?versions`, `?delete`, ...) is part of the action.
                let path = path.trim_end_matches('/');
                let subresource = ["versions", "delete", "encryption", "publicAccessBlock"]
                    .into_iter()
                    .find(|name| query.contains_key(*name));
                let action = match subresource {
                    Some(name) => format!("S3 {method} {path}?{name}"),
                    None => format!("S3 {method} {path}"),
                };
                let mut call_params = query.clone();
                if let Some(owner) = request.headers().get("x-amz-expected-bucket-owner") {
                    call_params.insert(
                        "ExpectedBucketOwner".to_owned(),
                        owner.to_str().unwrap_or_default().to_owned(),
                    );
                }
                state.calls.push(Call {
                    action: action.clone(),
                    params: call_params.clone(),
                });
                state.s3(&method, path, subresource, &call_params, &body, action)
            }
        };
        let content_type = if reply.body.starts_with('{') {
            "application/json"
        } else {
            "text/xml"
        };
        let mut response = http::Response::builder()
            .status(reply.status)
            .header("content-type", content_type)
            .header("x-amzn-requestid", "fake");
        for (name, value) in reply.headers {
            response = response.header(name, value);
        }
        response
            .body(SdkBody::from(reply.body))
            .expect("a valid response")
    }
}

impl State {
    fn next_serial(&mut self) -> u64 {
        self.serial += 1;
        self.serial
    }

    fn new_stack_id(&mut self, name: &str) -> String {
        let n = self.next_serial();
        format!("arn:aws:cloudformation:{REGION}:{ACCOUNT}:stack/{name}/{n:08x}-0000-4000-8000-000000000000")
    }

    fn new_event_id(&mut self) -> String {
        format!("event-{:04}", self.next_serial())
    }

    fn unexpected(&mut self, what: String) -> Reply {
        self.unexpected.push(what.clone());
        error(
            "FakeUnsupported",
            &format!("the fake does not handle {what}"),
        )
    }

    /// The stack `name_or_id` designates: a name finds the live stack, an id also a deleted one.
    fn find(&self, name_or_id: &str) -> Option<&FakeStack> {
        self.live
            .iter()
            .chain(self.deleted.iter().rev())
            .find(|s| s.id == name_or_id || (s.name == name_or_id && s.status != "DELETE_COMPLETE"))
    }

    fn find_mut(&mut self, name_or_id: &str) -> Option<&mut FakeStack> {
        self.live
            .iter_mut()
            .chain(self.deleted.iter_mut().rev())
            .find(|s| s.id == name_or_id || (s.name == name_or_id && s.status != "DELETE_COMPLETE"))
    }

    fn record_events(&mut self, stack_id: &str, events: Vec<Event>) {
        let mut recorded = Vec::new();
        for event in events {
            let id = self.new_event_id();
            recorded.push(RecordedEvent { id, event });
        }
        if let Some(stack) = self.find_mut(stack_id) {
            stack.events.extend(recorded);
        }
    }

    fn start(&mut self, stack_id: String, steps: Vec<Step>, template: Option<String>) {
        self.running = Some(Running {
            stack_id,
            steps: steps.into(),
            template,
        });
        self.advance();
    }

    /// Applies the running operation's next step.
    fn advance(&mut self) {
        let Some(running) = self.running.as_mut() else {
            return;
        };
        let Some(step) = running.steps.pop_front() else {
            self.running = None;
            return;
        };
        let stack_id = running.stack_id.clone();
        let template = running.template.clone();
        if running.steps.is_empty() {
            self.running = None;
        }
        self.record_events(&stack_id, step.events);
        let outputs = self.scenario.outputs_after_execution.clone();
        let Some(stack) = self.find_mut(&stack_id) else {
            return;
        };
        stack.status = step.status.clone();
        if matches!(step.status.as_str(), "CREATE_COMPLETE" | "UPDATE_COMPLETE") {
            if let Some(template) = template {
                stack.template = Some(template);
                stack.outputs = outputs;
            }
        }
        if step.status == "DELETE_COMPLETE" {
            if let Some(gone) = self.live.take_if(|s| s.id == stack_id) {
                self.deleted.push(gone);
            }
        }
    }

    fn cloudformation(&mut self, action: &str, params: &BTreeMap<String, String>) -> Reply {
        let param = |name: &str| params.get(name).cloned().unwrap_or_default();
        match action {
            "DescribeStacks" => {
                if self.scenario.clock == Clock::EachStatusRead {
                    self.advance();
                }
                let wanted = param("StackName");
                match self.find(&wanted) {
                    Some(stack) => ok(
                        action,
                        &format!("<Stacks><member>{}</member></Stacks>", stack_xml(stack)),
                    ),
                    None => does_not_exist(&wanted),
                }
            }
            "DescribeStackEvents" => {
                let token = params.get("NextToken");
                if token.is_none() && self.scenario.clock == Clock::EachEventsRead {
                    self.advance();
                }
                let wanted = param("StackName");
                let Some(stack) = self.find(&wanted) else {
                    return does_not_exist(&wanted);
                };
                let start: usize = token.map_or(0, |t| t.parse().expect("a token of this fake"));
                let newest_first: Vec<&RecordedEvent> = stack.events.iter().rev().collect();
                let page = newest_first
                    .iter()
                    .skip(start)
                    .take(EVENTS_PAGE_SIZE)
                    .map(|e| event_xml(stack, e))
                    .collect::<String>();
                let next = start + EVENTS_PAGE_SIZE;
                let next_token = if next < newest_first.len() {
                    format!("<NextToken>{next}</NextToken>")
                } else {
                    String::new()
                };
                ok(
                    action,
                    &format!("<StackEvents>{page}</StackEvents>{next_token}"),
                )
            }
            "GetTemplate" => {
                let wanted = param("StackName");
                match self.find(&wanted).and_then(|s| s.template.clone()) {
                    Some(template) => ok(
                        action,
                        &format!(
                            "<TemplateBody>{}</TemplateBody><StagesAvailable><member>Original</member><member>Processed</member></StagesAvailable>",
                            escape(&template)
                        ),
                    ),
                    None => does_not_exist(&wanted),
                }
            }
            "CreateChangeSet" => self.create_change_set(params),
            "DescribeChangeSet" => {
                let Some(change_set) = self.change_set_mut(params) else {
                    return error(
                        "ChangeSetNotFound",
                        &format!("ChangeSet [{}] does not exist", param("ChangeSetName")),
                    );
                };
                change_set.described += 1;
                let (status, execution, reason, changes) = if change_set.described == 1 {
                    // Still being computed on the first look.
                    ("CREATE_IN_PROGRESS", "UNAVAILABLE", None, String::new())
                } else {
                    match &change_set.outcome {
                        ChangeSetOutcome::Changes(changes) => (
                            "CREATE_COMPLETE",
                            if change_set.executed {
                                "EXECUTE_COMPLETE"
                            } else {
                                "AVAILABLE"
                            },
                            None,
                            changes.iter().map(change_xml).collect(),
                        ),
                        ChangeSetOutcome::Failed(reason) => {
                            ("FAILED", "UNAVAILABLE", Some(reason.clone()), String::new())
                        }
                    }
                };
                let stack_name = self.scenario.stack_name.clone();
                let change_set = self.change_set_mut(params).expect("found above");
                ok(
                    action,
                    &format!(
                        "<ChangeSetName>{}</ChangeSetName><ChangeSetId>{}</ChangeSetId><StackId>{}</StackId><StackName>{}</StackName><CreationTime>2025-01-01T00:00:00.000Z</CreationTime><ExecutionStatus>{execution}</ExecutionStatus><Status>{status}</Status>{}<Capabilities><member>CAPABILITY_IAM</member></Capabilities><Changes>{changes}</Changes>",
                        escape(&change_set.name),
                        escape(&change_set.id),
                        escape(&change_set.stack_id),
                        escape(&stack_name),
                        reason.map_or_else(String::new, |r| format!("<StatusReason>{}</StatusReason>", escape(&r))),
                    ),
                )
            }
            "ExecuteChangeSet" => {
                let execution = self.scenario.execution.clone();
                let Some(change_set) = self.change_set_mut(params) else {
                    return error(
                        "ChangeSetNotFound",
                        &format!("ChangeSet [{}] does not exist", param("ChangeSetName")),
                    );
                };
                let ready = change_set.described > 1
                    && matches!(change_set.outcome, ChangeSetOutcome::Changes(_));
                if !ready || change_set.executed {
                    return error(
                        "InvalidChangeSetStatus",
                        "ChangeSet cannot be executed in its current status",
                    );
                }
                change_set.executed = true;
                let (stack_id, template) =
                    (change_set.stack_id.clone(), change_set.template.clone());
                if execution.is_empty() {
                    return self.unexpected("ExecuteChangeSet without an execution script".into());
                }
                self.start(stack_id, execution, Some(template));
                ok(action, "")
            }
            "DeleteChangeSet" => {
                let wanted = param("ChangeSetName");
                let before = self.change_sets.len();
                self.change_sets
                    .retain(|c| c.id != wanted && c.name != wanted);
                if self.change_sets.len() == before {
                    return error(
                        "ChangeSetNotFound",
                        &format!("ChangeSet [{wanted}] does not exist"),
                    );
                }
                ok(action, "")
            }
            "DeleteStack" => {
                let wanted = param("StackName");
                let target = self
                    .live
                    .as_ref()
                    .filter(|s| s.id == wanted || s.name == wanted)
                    .map(|s| s.id.clone());
                // Deleting a stack that does not exist succeeds and does nothing.
                if let Some(stack_id) = target {
                    self.deletions += 1;
                    if self.deletions == 1 {
                        for (bucket, key) in self.scenario.late_writes.clone() {
                            if let Some(found) = self.buckets.iter_mut().find(|b| b.name == bucket)
                            {
                                found.keys.push(key);
                            }
                        }
                    }
                    let deletion = self
                        .deletions
                        .checked_sub(2)
                        .and_then(|retry| self.scenario.deletion_retries.get(retry))
                        .unwrap_or(&self.scenario.deletion)
                        .clone();
                    self.start(stack_id, deletion, None);
                }
                Reply::new(
                    200,
                    format!(
                        r#"<DeleteStackResponse xmlns="{CFN_NAMESPACE}"><ResponseMetadata><RequestId>fake</RequestId></ResponseMetadata></DeleteStackResponse>"#
                    ),
                )
            }
            "DescribeStackResources" => {
                let wanted = param("StackName");
                let Some(stack) = self.find(&wanted) else {
                    return does_not_exist(&wanted);
                };
                let only = params.get("LogicalResourceId");
                let resources: Vec<(String, Event)> = resources_of(stack)
                    .into_iter()
                    .filter(|(logical_id, _)| only.is_none_or(|o| o == logical_id))
                    .collect();
                if let (Some(logical_id), true) = (only, resources.is_empty()) {
                    return error(
                        "ValidationError",
                        &format!("Resource {logical_id} does not exist for stack {wanted}"),
                    );
                }
                let members: String = resources
                    .iter()
                    .map(|(_, event)| resource_xml(stack, event))
                    .collect();
                ok(
                    action,
                    &format!("<StackResources>{members}</StackResources>"),
                )
            }
            _ => self.unexpected(format!("{action} {params:?}")),
        }
    }

    /// The S3 calls: bucket `HEAD`/`PUT` (create), `?encryption`, `?publicAccessBlock`,
    /// `?versions` (ListObjectVersions), `?delete` (DeleteObjects); object `HEAD` and `PUT`. A
    /// request whose `ExpectedBucketOwner` is not the bucket's owner gets 403 Access Denied, as
    /// S3 answers it.
    fn s3(
        &mut self,
        method: &str,
        path: &str,
        subresource: Option<&str>,
        params: &BTreeMap<String, String>,
        body: &str,
        action: String,
    ) -> Reply {
        let path = path.trim_start_matches('/');
        let (bucket_name, key) = match path.split_once('/') {
            Some((bucket, key)) => (bucket.to_owned(), Some(key.to_owned())),
            None => (path.to_owned(), None),
        };
        let head = method == "HEAD";
        let index = self.buckets.iter().position(|b| b.name == bucket_name);
        if (method, subresource, &key) == ("PUT", None, &None) {
            // CreateBucket takes no bucket owner condition.
            return match index.map(|i| self.buckets[i].owner.clone()) {
                Some(owner) if owner == ACCOUNT => s3_error(
                    409,
                    "BucketAlreadyOwnedByYou",
                    "Your previous request to create the named bucket succeeded and you already own it.",
                    false,
                ),
                Some(_) => s3_error(
                    409,
                    "BucketAlreadyExists",
                    "The requested bucket name is not available.",
                    false,
                ),
                None => {
                    self.buckets.push(Bucket::new(&bucket_name, ACCOUNT, &[]));
                    Reply::new(200, String::new())
                }
            };
        }
        let Some(index) = index else {
            return s3_error(
                404,
                "NoSuchBucket",
                "The specified bucket does not exist",
                head,
            );
        };
        let bucket = &mut self.buckets[index];
        if params
            .get("ExpectedBucketOwner")
            .is_some_and(|expected| *expected != bucket.owner)
        {
            return s3_error(403, "AccessDenied", "Access Denied", head);
        }
        match (method, subresource, key) {
            ("HEAD", None, None) => Reply::new(200, String::new()),
            ("PUT", Some("encryption" | "publicAccessBlock"), None) => {
                Reply::new(200, String::new())
            }
            ("GET", Some("versions"), None) => {
                let prefix = params.get("prefix").cloned().unwrap_or_default();
                let versions: String = bucket
                    .keys
                    .iter()
                    .filter(|k| k.starts_with(&prefix))
                    .map(|k| {
                        format!(
                            "<Version><Key>{}</Key><VersionId>v-{}</VersionId><IsLatest>true</IsLatest><LastModified>2025-01-01T00:00:00.000Z</LastModified><ETag>&quot;e&quot;</ETag><Size>1</Size><StorageClass>STANDARD</StorageClass></Version>",
                            escape(k),
                            escape(k)
                        )
                    })
                    .collect();
                Reply::new(
                    200,
                    format!(
                        r#"<ListVersionsResult xmlns="{S3_NAMESPACE}"><Name>{}</Name><Prefix>{}</Prefix><MaxKeys>1000</MaxKeys><IsTruncated>false</IsTruncated>{versions}</ListVersionsResult>"#,
                        escape(&bucket.name),
                        escape(&prefix)
                    ),
                )
            }
            ("POST", Some("delete"), None) => {
                let keys = xml_values(body, "Key");
                bucket.keys.retain(|k| !keys.contains(&escape(k)));
                Reply::new(
                    200,
                    format!(r#"<DeleteResult xmlns="{S3_NAMESPACE}"></DeleteResult>"#),
                )
            }
            ("HEAD", None, Some(key)) => {
                if bucket.keys.contains(&key) {
                    Reply::new(200, String::new())
                } else {
                    s3_error(404, "NoSuchKey", "The specified key does not exist.", true)
                }
            }
            ("PUT", None, Some(key)) => {
                bucket.keys.push(key);
                Reply::new(200, String::new())
            }
            _ => self.unexpected(action),
        }
    }

    /// Lambda's `GetEventSourceMapping` (`GET`) and `UpdateEventSourceMapping` (`PUT`) of the
    /// mapping `uuid`, recorded as those actions.
    fn lambda(&mut self, method: &str, uuid: &str, body: &str) -> Reply {
        let action = match method {
            "GET" => "GetEventSourceMapping",
            "PUT" => "UpdateEventSourceMapping",
            other => return self.unexpected(format!("Lambda {other} {uuid}")),
        };
        let mut params = BTreeMap::from([("UUID".to_owned(), uuid.to_owned())]);
        let update: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
        if let Some(enabled) = update.get("Enabled") {
            params.insert("Enabled".to_owned(), enabled.to_string());
        }
        self.calls.push(Call {
            action: action.to_owned(),
            params,
        });
        if !self.scenario.lambda_served {
            // An emulator without the API: no such route.
            return Reply::new(404, String::new());
        }
        let expected = physical_id(&self.scenario.stack_name, "EventSourceMapping");
        let Some(mapping) = self.mapping.as_mut().filter(|_| uuid == expected) else {
            return lambda_error(
                404,
                "ResourceNotFoundException",
                &format!(
                    "The resource you requested does not exist. (Service: Lambda, UUID {uuid})"
                ),
            );
        };
        match action {
            "GetEventSourceMapping" if mapping.state == "Disabling" => {
                if mapping.disabling_reads == 0 {
                    mapping.state = "Disabled".to_owned();
                } else {
                    mapping.disabling_reads -= 1;
                }
            }
            "UpdateEventSourceMapping" => match update.get("Enabled") {
                Some(serde_json::Value::Bool(false)) if mapping.state != "Disabled" => {
                    mapping.state = "Disabling".to_owned();
                }
                Some(serde_json::Value::Bool(true)) => mapping.state = "Enabled".to_owned(),
                _ => {}
            },
            _ => {}
        }
        let status = if action == "UpdateEventSourceMapping" {
            202
        } else {
            200
        };
        Reply::new(
            status,
            serde_json::json!({ "UUID": uuid, "State": mapping.state, "BatchSize": 100 })
                .to_string(),
        )
    }

    fn change_set_mut(&mut self, params: &BTreeMap<String, String>) -> Option<&mut ChangeSet> {
        let wanted = params.get("ChangeSetName")?;
        self.change_sets
            .iter_mut()
            .find(|c| &c.id == wanted || &c.name == wanted)
    }

    fn create_change_set(&mut self, params: &BTreeMap<String, String>) -> Reply {
        let param = |name: &str| params.get(name).cloned().unwrap_or_default();
        let name = param("StackName");
        let kind = param("ChangeSetType");
        let live = self.live.as_ref().map(|s| (s.id.clone(), s.status.clone()));
        let stack_id = match (kind.as_str(), live) {
            ("CREATE", None) => {
                let id = self.new_stack_id(&name);
                self.live = Some(FakeStack {
                    id: id.clone(),
                    name: name.clone(),
                    status: "REVIEW_IN_PROGRESS".to_owned(),
                    template: None,
                    outputs: Vec::new(),
                    events: Vec::new(),
                });
                self.record_events(
                    &id,
                    vec![Event::stack(&name, "REVIEW_IN_PROGRESS").because("User Initiated")],
                );
                id
            }
            ("CREATE", Some((id, status))) if status == "REVIEW_IN_PROGRESS" => id,
            ("CREATE", Some(_)) => {
                return error(
                    "AlreadyExistsException",
                    &format!("Stack [{name}] already exists and cannot be created again with the changeSet [{}].", param("ChangeSetName")),
                )
            }
            ("UPDATE", None) => return does_not_exist(&name),
            ("UPDATE", Some((id, status)))
                if status == "ROLLBACK_COMPLETE" || status.ends_with("_IN_PROGRESS") =>
            {
                return error(
                    "ValidationError",
                    &format!("Stack:{id} is in {status} state and can not be updated."),
                )
            }
            ("UPDATE", Some((id, _))) => id,
            _ => return self.unexpected(format!("CreateChangeSet of type {kind:?}")),
        };
        let n = self.next_serial();
        let change_set_name = param("ChangeSetName");
        let id = format!(
            "arn:aws:cloudformation:{REGION}:{ACCOUNT}:changeSet/{change_set_name}/{n:08x}-0000-4000-8000-000000000000"
        );
        self.change_sets.push(ChangeSet {
            id: id.clone(),
            name: change_set_name,
            stack_id: stack_id.clone(),
            template: param("TemplateBody"),
            outcome: self.scenario.change_set.clone(),
            described: 0,
            executed: false,
        });
        ok(
            "CreateChangeSet",
            &format!(
                "<Id>{}</Id><StackId>{}</StackId>",
                escape(&id),
                escape(&stack_id)
            ),
        )
    }
}

fn ok(action: &str, result: &str) -> Reply {
    Reply::new(
        200,
        format!(
            r#"<{action}Response xmlns="{CFN_NAMESPACE}"><{action}Result>{result}</{action}Result><ResponseMetadata><RequestId>fake</RequestId></ResponseMetadata></{action}Response>"#
        ),
    )
}

fn error(code: &str, message: &str) -> Reply {
    Reply::new(
        400,
        format!(
            r#"<ErrorResponse xmlns="{CFN_NAMESPACE}"><Error><Type>Sender</Type><Code>{code}</Code><Message>{}</Message></Error><RequestId>fake</RequestId></ErrorResponse>"#,
            escape(message)
        ),
    )
}

/// An S3 error; a `HEAD` answer has no body, so the SDK sees only the status.
fn s3_error(status: u16, code: &str, message: &str, head: bool) -> Reply {
    if head {
        return Reply::new(status, String::new());
    }
    Reply::new(
        status,
        format!(
            "<Error><Code>{code}</Code><Message>{}</Message><RequestId>fake</RequestId></Error>",
            escape(message)
        ),
    )
}

/// A Lambda (REST-JSON) error.
fn lambda_error(status: u16, code: &str, message: &str) -> Reply {
    Reply {
        status,
        body: serde_json::json!({ "Type": "User", "message": message }).to_string(),
        headers: vec![("x-amzn-errortype", code.to_owned())],
    }
}

/// Every resource of `stack` that has an event, with its latest event: what
/// `DescribeStackResources` reports, in the order the resources first appeared.
fn resources_of(stack: &FakeStack) -> Vec<(String, Event)> {
    let mut resources: Vec<(String, Event)> = Vec::new();
    for recorded in &stack.events {
        let event = &recorded.event;
        if event.resource_type == "AWS::CloudFormation::Stack" {
            continue;
        }
        match resources.iter_mut().find(|(id, _)| *id == event.logical_id) {
            Some((_, latest)) => *latest = event.clone(),
            None => resources.push((event.logical_id.clone(), event.clone())),
        }
    }
    resources
}

fn resource_xml(stack: &FakeStack, event: &Event) -> String {
    format!(
        "<member><StackName>{}</StackName><StackId>{}</StackId><LogicalResourceId>{}</LogicalResourceId><PhysicalResourceId>{}</PhysicalResourceId><ResourceType>{}</ResourceType><Timestamp>2025-01-01T00:00:00.000Z</Timestamp><ResourceStatus>{}</ResourceStatus>{}</member>",
        escape(&stack.name),
        escape(&stack.id),
        escape(&event.logical_id),
        escape(&physical_id(&stack.name, &event.logical_id)),
        escape(&event.resource_type),
        escape(&event.status),
        event.reason.as_deref().map_or_else(String::new, |r| format!(
            "<ResourceStatusReason>{}</ResourceStatusReason>",
            escape(r)
        )),
    )
}

/// The values of `<name>` elements in `xml`, in order.
fn xml_values(xml: &str, name: &str) -> Vec<String> {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    xml.split(&open)
        .skip(1)
        .filter_map(|rest| rest.split_once(&close).map(|(value, _)| value.to_owned()))
        .collect()
}

/// CloudFormation's answer about a stack that does not exist.
fn does_not_exist(name_or_id: &str) -> Reply {
    error(
        "ValidationError",
        &format!("Stack with id {name_or_id} does not exist"),
    )
}

fn stack_xml(stack: &FakeStack) -> String {
    let outputs: String = stack
        .outputs
        .iter()
        .map(|(k, v)| {
            format!(
                "<member><OutputKey>{}</OutputKey><OutputValue>{}</OutputValue></member>",
                escape(k),
                escape(v)
            )
        })
        .collect();
    format!(
        "<StackId>{}</StackId><StackName>{}</StackName><CreationTime>2025-01-01T00:00:00.000Z</CreationTime><StackStatus>{}</StackStatus><Capabilities><member>CAPABILITY_IAM</member></Capabilities><Outputs>{outputs}</Outputs>",
        escape(&stack.id),
        escape(&stack.name),
        escape(&stack.status)
    )
}

fn event_xml(stack: &FakeStack, recorded: &RecordedEvent) -> String {
    let event = &recorded.event;
    let physical = if event.resource_type == "AWS::CloudFormation::Stack" {
        stack.id.clone()
    } else {
        physical_id(&stack.name, &event.logical_id)
    };
    format!(
        "<member><StackId>{}</StackId><EventId>{}</EventId><StackName>{}</StackName><LogicalResourceId>{}</LogicalResourceId><PhysicalResourceId>{}</PhysicalResourceId><ResourceType>{}</ResourceType><Timestamp>2025-01-01T00:00:00.000Z</Timestamp><ResourceStatus>{}</ResourceStatus>{}</member>",
        escape(&stack.id),
        escape(&recorded.id),
        escape(&stack.name),
        escape(&event.logical_id),
        escape(&physical),
        escape(&event.resource_type),
        escape(&event.status),
        event.reason.as_deref().map_or_else(String::new, |r| format!(
            "<ResourceStatusReason>{}</ResourceStatusReason>",
            escape(r)
        )),
    )
}

fn change_xml(change: &Change) -> String {
    format!(
        "<member><Type>Resource</Type><ResourceChange><Action>{}</Action><LogicalResourceId>{}</LogicalResourceId><ResourceType>{}</ResourceType>{}</ResourceChange></member>",
        change.action,
        change.logical_id,
        change.resource_type,
        change
            .replacement
            .map_or_else(String::new, |r| format!("<Replacement>{r}</Replacement>")),
    )
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

/// Decodes an `application/x-www-form-urlencoded` body, as the Query protocol sends it.
fn form_decode(body: &str) -> BTreeMap<String, String> {
    body.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(key), percent_decode(value))
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).expect("ASCII");
                out.push(u8::from_str_radix(hex, 16).expect("a percent escape"));
                i += 3;
            }
            byte => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8(out).expect("form values are UTF-8")
}

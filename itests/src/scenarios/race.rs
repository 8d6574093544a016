//! 11. A whole-table reconcile with repair over 2,000 users while 200 of them are modified and
//!     100 deleted: the bucket ends up equal to the table. The writes are made deterministically
//!     through the reconcile's `RepairHook`, between a repair's read and its write (the moment a
//!     repair is most exposed to them), and the deployed mapping and function mirror them as
//!     they would any write. The hook waits until the function has mirrored its write, so the
//!     repair's write of what it read before always lands over the function's newer one: the
//!     order in which only the repair's second read can put the bucket right.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use aws_sdk_dynamodb::types::AttributeValue;
use deployer::reconcile::report::EXIT_IN_STEP;
use deployer::reconcile::{ReconcileOptions, RepairHook};
use futures::future::BoxFuture;
use futures::{StreamExt, TryStreamExt};
use serde_json::{json, Value};
use usersync_function::config::DEFAULT_KEY_ATTRIBUTE as KEY_ATTRIBUTE;

use super::{body, free_users, reconcile_stack, settings};
use crate::external::delete_keys;
use crate::harness::Backend;
use crate::test_stack::{n, s, CONVERGE_TIMEOUT};

const USERS: usize = 2000;
/// How often the hook looks whether the function has mirrored its write: often, since every
/// look holds up one repair.
const MIRROR_POLL: Duration = Duration::from_millis(50);

/// Modified while the reconcile runs: every tenth user (200).
fn modified(i: usize) -> bool {
    i.is_multiple_of(10)
}

/// Deleted while the reconcile runs: every twentieth, offset from the modified ones (100).
fn deleted(i: usize) -> bool {
    i % 20 == 5
}

/// Writes the table between a selected user's repair read and its first write, and waits
/// until the function has mirrored the write: the repair then writes what it read, which is
/// already old, over the function's newer object, and must notice and put it right.
struct ConcurrentWrites {
    dynamodb: aws_sdk_dynamodb::Client,
    table: String,
    s3: aws_sdk_s3::Client,
    bucket: String,
    /// User → the index of the user: modified or deleted as [`modified`] and [`deleted`] say.
    selected: HashMap<String, usize>,
    /// Users written so far; each only once, before its repair's first write.
    written: Mutex<HashSet<String>>,
    errors: Mutex<Vec<String>>,
}

impl ConcurrentWrites {
    async fn write(&self, name: &str, i: usize) -> Result<()> {
        let key = AttributeValue::S(name.to_owned());
        if modified(i) {
            self.dynamodb
                .update_item()
                .table_name(&self.table)
                .key(KEY_ATTRIBUTE, key)
                .update_expression("SET #plan = :plan, seats = :seats")
                .expression_attribute_names("#plan", "plan")
                .expression_attribute_values(":plan", s("pro"))
                .expression_attribute_values(":seats", n(i + 1))
                .send()
                .await?;
        } else {
            self.dynamodb
                .delete_item()
                .table_name(&self.table)
                .key(KEY_ATTRIBUTE, key)
                .send()
                .await?;
        }
        Ok(())
    }

    /// Waits until the user's object is what the function makes of the write: the new body,
    /// or none.
    async fn wait_mirrored(&self, name: &str, i: usize) -> Result<()> {
        let key = format!("{name}/userdata");
        let expected = modified(i).then(|| body(name, "pro", i as u32 + 1));
        let started = Instant::now();
        loop {
            let found = read_json(&self.s3, &self.bucket, &key).await?;
            if found == expected {
                return Ok(());
            }
            if started.elapsed() > CONVERGE_TIMEOUT {
                bail!(
                    "the function did not mirror the write within {}s: {key} is {found:?}",
                    CONVERGE_TIMEOUT.as_secs()
                );
            }
            tokio::time::sleep(MIRROR_POLL).await;
        }
    }

    fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        // A panic elsewhere does not make the sets wrong: they are only ever inserted into.
        mutex
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl RepairHook for ConcurrentWrites {
    fn before_write<'a>(&'a self, name: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let Some(&i) = self.selected.get(name) else {
                return;
            };
            // Only before the first write: the repair's later rounds are its answer to it.
            if !Self::lock(&self.written).insert(name.to_owned()) {
                return;
            }
            let written = match self.write(name, i).await {
                Ok(()) => self.wait_mirrored(name, i).await,
                Err(err) => Err(err),
            };
            if let Err(err) = written {
                Self::lock(&self.errors).push(format!("{name}: {err:#}"));
            }
        })
    }
}

pub(super) async fn reconcile_race(backend: &Backend) -> Result<()> {
    let mut settings = settings("race");
    // Each concurrent write waits for the function to mirror it: no batching window to wait
    // out first.
    settings.maximum_batching_window_seconds = 0;
    let stack = backend.deploy(settings).await?;
    let (names, items) = free_users("race", USERS, 4);
    stack.batch_put(items).await?;
    stack.wait_in_step("writing 2,000 users").await?;
    // The drift the reconcile starts from, behind the function's back: the objects of the users
    // that will be written during the reconcile are stale (so that the function's mirroring of
    // a delete shows, as the object going), every other object is gone.
    let s3 = stack.target.s3();
    let stale: Vec<&String> = names
        .iter()
        .enumerate()
        .filter(|(i, _)| modified(*i) || deleted(*i))
        .map(|(_, name)| name)
        .collect();
    let missing: Vec<String> = names
        .iter()
        .enumerate()
        .filter(|(i, _)| !modified(*i) && !deleted(*i))
        .map(|(_, name)| format!("{name}/userdata"))
        .collect();
    delete_keys(&s3, stack.bucket(), &missing).await?;
    let tampered = stale
        .iter()
        .map(|name| {
            let body = json!({"name": name, "plan": "tampered"}).to_string();
            (format!("{name}/userdata"), body)
        })
        .collect();
    put_all(&s3, stack.bucket(), tampered).await?;

    let hook = Arc::new(ConcurrentWrites {
        dynamodb: stack.target.dynamodb(),
        table: stack.table().to_owned(),
        s3,
        bucket: stack.bucket().to_owned(),
        selected: names
            .iter()
            .enumerate()
            .filter(|(i, _)| modified(*i) || deleted(*i))
            .map(|(i, name)| (name.clone(), i))
            .collect(),
        written: Mutex::default(),
        errors: Mutex::default(),
    });
    let options = ReconcileOptions {
        repair: true,
        hook: Some(Arc::clone(&hook) as _),
        // Every hook waits for the function, holding up one repair: more at once keep the
        // others going (about one user in seven is written).
        concurrency: 64,
        ..ReconcileOptions::default()
    };
    let report = reconcile_stack(&stack, options).await?;
    let errors = ConcurrentWrites::lock(&hook.errors).clone();
    ensure!(
        errors.is_empty(),
        "the concurrent writes failed: {errors:?}"
    );
    let written = ConcurrentWrites::lock(&hook.written).len();
    ensure!(
        written == 300,
        "expected 300 users written during their repair, {written} were"
    );
    ensure!(
        (report.missing, report.stale) == (missing.len() as u64, stale.len() as u64)
            && report.repaired == USERS as u64
            && report.failed == 0
            && report.exit_code() == EXIT_IN_STEP,
        "expected {} users missing, {} stale and all repaired, got exit code {}: {}",
        missing.len(),
        stale.len(),
        report.exit_code(),
        report.summary()
    );

    stack
        .wait_in_step("the reconcile and the 300 writes during it")
        .await?;
    let objects = stack.objects().await?;
    ensure!(
        objects.len() == USERS - 100,
        "expected {} objects, found {}",
        USERS - 100,
        objects.len()
    );
    for (i, name) in names.iter().enumerate() {
        let expected = if deleted(i) {
            None
        } else if modified(i) {
            Some(body(name, "pro", i as u32 + 1))
        } else {
            Some(body(name, "free", i as u32))
        };
        let key = format!("{name}/userdata");
        ensure!(
            objects.get(&key) == expected.as_ref(),
            "{key} is {:?}, expected {expected:?}",
            objects.get(&key)
        );
    }
    stack.teardown().await?;
    Ok(())
}

/// The object's body as JSON (`Null` when it is not JSON); `None` when there is no object.
async fn read_json(s3: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Result<Option<Value>> {
    let object = match s3.get_object().bucket(bucket).key(key).send().await {
        Ok(object) => object,
        Err(err) if err.as_service_error().is_some_and(|e| e.is_no_such_key()) => return Ok(None),
        Err(err) => return Err(err).with_context(|| format!("failed to read {key}")),
    };
    let bytes = object
        .body
        .collect()
        .await
        .with_context(|| format!("failed to read {key}"))?
        .into_bytes();
    Ok(Some(serde_json::from_slice(&bytes).unwrap_or(Value::Null)))
}

/// Puts `objects` (key, body) into `bucket`, 16 at a time.
async fn put_all(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    objects: Vec<(String, String)>,
) -> Result<()> {
    // Owned keys, bodies and clients: a stream of futures borrowing them is one rustc cannot
    // prove `Send` for every lifetime, which a scenario's future must be.
    let puts = objects.into_iter().map(|(key, body)| {
        let (s3, bucket) = (s3.clone(), bucket.to_owned());
        async move {
            s3.put_object()
                .bucket(bucket)
                .key(&key)
                .body(body.into_bytes().into())
                .send()
                .await
                .with_context(|| format!("failed to put {key}"))
                .map(drop)
        }
    });
    futures::stream::iter(puts)
        .buffer_unordered(16)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

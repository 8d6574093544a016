//! The whole reconcile over an in-memory table and bucket: every class under both scopes,
//! repairs, an interrupted run resumed, shares merged, and repairs racing with writes.

use std::collections::{BTreeMap, BTreeSet};
use std::num::NonZeroUsize;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use aws_sdk_dynamodb::types::AttributeValue;
use futures::future::BoxFuture;
use usersync_function::testing::{InjectedFailures, MemoryStore};
use usersync_function::{Config, DeleteScope, ObjectStore};

use super::etag::BucketEncryption;
use super::fake::{Etags, FakeBucket, FakeTable};
use super::report::{ReconcileReport, EXIT_DRIFT, EXIT_FAILED, EXIT_IN_STEP};
use super::run::{run, ReconcileError, Sources, BATCH};
use super::user::{expected_body, Item};
use super::{DeployedMirror, ReconcileOptions, RepairHook, Share};

const PREFIX: &str = "users/";

fn mirror(scope: DeleteScope) -> DeployedMirror {
    DeployedMirror {
        stack_name: "usersync".into(),
        table: "users".into(),
        function: "mirror".into(),
        config: Config {
            bucket: "data".into(),
            key_prefix: PREFIX.into(),
            object_name: "userdata".into(),
            delete_scope: scope,
            max_concurrency: NonZeroUsize::new(4).unwrap(),
            key_attribute: "name".into(),
            force_path_style: false,
        },
        outputs: BTreeMap::new(),
    }
}

/// A table, a bucket and a place for the checkpoint.
struct World {
    table: Arc<FakeTable>,
    bucket: FakeBucket,
    mirror: DeployedMirror,
    dir: tempfile::TempDir,
}

impl World {
    fn new(scope: DeleteScope, store: MemoryStore) -> Self {
        Self {
            table: FakeTable::new("name", 3),
            bucket: FakeBucket::new(Arc::new(store), 4),
            mirror: mirror(scope),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    async fn reconcile(
        &self,
        options: &ReconcileOptions,
    ) -> Result<ReconcileReport, ReconcileError> {
        let sources = Sources {
            table: &self.table,
            bucket: &self.bucket,
            store: &*self.bucket.store,
        };
        let dir = options
            .state_dir
            .clone()
            .unwrap_or_else(|| self.dir.path().to_owned());
        run(&sources, &self.mirror, &dir, options, &mut |_| {}).await
    }

    /// The object key of `name`.
    fn key(name: &str) -> String {
        usersync_function::key::user_keys(PREFIX, name, "userdata")
            .unwrap()
            .object
    }

    /// The user's body as the function writes it now.
    fn body(&self, name: &str) -> Vec<u8> {
        expected_body(&self.table.snapshot()[name])
    }

    /// Every user object the table says the bucket should hold.
    fn expected_objects(&self) -> BTreeMap<String, Vec<u8>> {
        self.table
            .snapshot()
            .values()
            .filter_map(|item| {
                let name = item.get("name")?.as_s().ok()?;
                let keys = usersync_function::key::user_keys(PREFIX, name, "userdata").ok()?;
                Some((keys.object, expected_body(item)))
            })
            .collect()
    }
}

fn options() -> ReconcileOptions {
    ReconcileOptions {
        segments: 4,
        ..ReconcileOptions::default()
    }
}

fn repairing() -> ReconcileOptions {
    ReconcileOptions {
        repair: true,
        ..options()
    }
}

/// Users in step, stale, missing, orphaned, their neighbours and foreign keys, and items the
/// function cannot mirror.
fn drifted(scope: DeleteScope) -> World {
    let world = World::new(scope, MemoryStore::default());
    for (name, age) in [("ann", 30), ("bob", 31), ("cy", 32), ("a/b", 1)] {
        world.table.put_user(name, &[("age", age)]);
    }
    world.table.put(
        "nameless",
        Item::from([("age".to_owned(), AttributeValue::N("1".into()))]),
    );
    world.table.put(
        "numbered",
        Item::from([("name".to_owned(), AttributeValue::N("7".into()))]),
    );
    let store = &world.bucket.store;
    for name in ["ann", "a/b"] {
        put(store, &World::key(name), &world.body(name));
    }
    put(store, &World::key("bob"), br#"{"age":1,"name":"bob"}"#);
    put(store, "users/dee/userdata", br#"{"name":"dee"}"#);
    put(store, "users/dee/avatar.png", b"png");
    put(store, "users/ann/avatar.png", b"png");
    put(store, "users/readme.txt", b"hello");
    put(store, "elsewhere/x", b"not under the prefix");
    world
}

fn put(store: &MemoryStore, key: &str, body: &[u8]) {
    futures::executor::block_on(store.put(key, body.to_vec())).unwrap();
}

fn keys(examples: &[super::report::Example]) -> Vec<&str> {
    examples.iter().map(|e| e.key.as_str()).collect()
}

#[tokio::test]
async fn every_class_under_object_scope_then_repaired() {
    let world = drifted(DeleteScope::Object);
    let setup = world.bucket.store.calls().len();
    let report = world.reconcile(&options()).await.unwrap();
    assert_eq!(
        (
            report.table_items,
            report.objects,
            report.missing,
            report.stale,
            report.orphaned,
            report.foreign,
            report.unmirrorable,
            report.drifted_users
        ),
        (6, 7, 1, 1, 1, 3, 2, 3),
        "{report:#?}"
    );
    assert_eq!(keys(&report.examples.missing), ["users/cy/userdata"]);
    assert_eq!(report.examples.missing[0].user.as_deref(), Some("cy"));
    assert_eq!(keys(&report.examples.stale), ["users/bob/userdata"]);
    assert_eq!(keys(&report.examples.orphaned), ["users/dee/userdata"]);
    assert_eq!(
        keys(&report.examples.foreign),
        [
            "users/ann/avatar.png",
            "users/dee/avatar.png",
            "users/readme.txt"
        ]
    );
    assert_eq!(report.examples.unmirrorable.len(), 2);
    // Only bob's ETag differed; the read confirmed it.
    assert_eq!(report.body_reads, 1);
    assert_eq!(report.exit_code(), EXIT_DRIFT);
    // Comparing changed nothing.
    assert_eq!(world.bucket.store.calls().len(), setup);

    let repaired = world.reconcile(&repairing()).await.unwrap();
    assert_eq!((repaired.repaired, repaired.failed), (3, 0));
    assert_eq!(repaired.exit_code(), EXIT_IN_STEP);
    let mut expected = world.expected_objects();
    for foreign in [
        "users/dee/avatar.png",
        "users/ann/avatar.png",
        "users/readme.txt",
        "elsewhere/x",
    ] {
        expected.insert(
            foreign.to_owned(),
            world.bucket.store.snapshot()[foreign].clone(),
        );
    }
    assert_eq!(world.bucket.store.snapshot(), expected);

    let again = world.reconcile(&options()).await.unwrap();
    assert_eq!((again.drifted_users, again.foreign), (0, 3));
    assert_eq!(again.exit_code(), EXIT_IN_STEP);
}

#[tokio::test]
async fn every_class_under_prefix_scope_then_repaired() {
    let world = drifted(DeleteScope::Prefix);
    let report = world.reconcile(&options()).await.unwrap();
    assert_eq!(
        (
            report.objects,
            report.missing,
            report.stale,
            report.orphaned,
            report.foreign,
            report.drifted_users
        ),
        (7, 1, 1, 2, 1, 3),
        "{report:#?}"
    );
    assert_eq!(
        keys(&report.examples.orphaned),
        ["users/dee/avatar.png", "users/dee/userdata"]
    );
    // ann's avatar is ann's: not reported.
    assert_eq!(keys(&report.examples.foreign), ["users/readme.txt"]);

    let repaired = world.reconcile(&repairing()).await.unwrap();
    assert_eq!((repaired.repaired, repaired.failed), (3, 0));
    let mut expected = world.expected_objects();
    for kept in ["users/ann/avatar.png", "users/readme.txt", "elsewhere/x"] {
        expected.insert(kept.to_owned(), world.bucket.store.snapshot()[kept].clone());
    }
    assert_eq!(world.bucket.store.snapshot(), expected);
}

#[tokio::test]
async fn a_kms_bucket_reads_every_body_and_judges_the_same() {
    let world = drifted(DeleteScope::Object);
    let mut kms = drifted(DeleteScope::Object);
    kms.bucket.encryption = BucketEncryption::Kms;
    kms.bucket.etags = Etags::Opaque;
    let plain = world.reconcile(&options()).await.unwrap();
    let report = kms.reconcile(&options()).await.unwrap();
    // ann, bob and a/b have objects: each is read.
    assert_eq!(report.body_reads, 3);
    assert_eq!(report.bucket_encryption, BucketEncryption::Kms);
    assert_eq!(comparable(report), comparable(plain));
}

#[tokio::test]
async fn a_failed_repair_is_counted_listed_and_fails_the_run() {
    let store = MemoryStore::default().with_failures(InjectedFailures::Keys(BTreeSet::from([
        "users/cy/userdata".to_owned(),
    ])));
    let world = World::new(DeleteScope::Object, store);
    world.table.put_user("cy", &[("age", 1)]);
    world.table.put_user("dee", &[("age", 2)]);
    let report = world.reconcile(&repairing()).await.unwrap();
    assert_eq!((report.repaired, report.failed), (1, 1));
    assert_eq!(report.examples.failed[0].user, "cy");
    assert!(
        report.examples.failed[0].error.contains("injected failure"),
        "{:?}",
        report.examples.failed
    );
    assert_eq!(report.exit_code(), EXIT_FAILED);
    assert!(report.summary().contains("1 of 2 users repaired, 1 failed"));
}

#[tokio::test]
async fn a_backfill_reads_the_table_twice_per_batch_of_users_not_twice_per_user() {
    let world = World::new(DeleteScope::Object, MemoryStore::default());
    for i in 0..250u32 {
        world.table.put_user(&format!("user{i:03}"), &[("n", i)]);
    }
    let report = world.reconcile(&repairing()).await.unwrap();
    assert_eq!((report.missing, report.repaired), (250, 250));
    assert_eq!(world.bucket.store.snapshot(), world.expected_objects());
    // Batches of 100, 100 and 50 users: a read before their writes and one after each.
    let reads = |count: &std::sync::atomic::AtomicUsize| count.load(Ordering::SeqCst);
    assert_eq!(
        (reads(&world.table.reads), reads(&world.table.batch_reads)),
        (0, 6)
    );
}

/// Many users, some drifted, for the runs that are interrupted or shared.
fn crowd(scope: DeleteScope) -> World {
    crowd_of(scope, 40)
}

/// [`crowd`] with `users` users.
fn crowd_of(scope: DeleteScope, users: u32) -> World {
    let world = World::new(scope, MemoryStore::default());
    for i in 0..users {
        let name = format!("user{i:02}");
        world.table.put_user(&name, &[("n", i)]);
        let key = World::key(&name);
        match i % 5 {
            0 => {}                                     // missing
            1 => put(&world.bucket.store, &key, b"{}"), // stale
            _ => put(&world.bucket.store, &key, &world.body(&name)),
        }
    }
    for i in 0..12u32 {
        put(
            &world.bucket.store,
            &format!("users/gone{i:02}/userdata"),
            b"{}",
        );
        put(
            &world.bucket.store,
            &format!("users/gone{i:02}/extra"),
            b"x",
        );
        put(&world.bucket.store, &format!("users/loose{i:02}"), b"x");
    }
    world.table.put(
        "nameless",
        Item::from([("n".to_owned(), AttributeValue::N("1".into()))]),
    );
    world
}

/// A report without what differs between equal runs: time, resumption, how many reads the
/// ETags spared, and which shares it covers.
fn comparable(mut report: ReconcileReport) -> ReconcileReport {
    report.seconds = 0.0;
    report.resumed = false;
    report.body_reads = 0;
    report.presence_checks = 0;
    report.shares.clear();
    report.bucket_encryption = BucketEncryption::Unknown;
    report
}

#[tokio::test]
async fn an_interrupted_scan_resumes_from_its_checkpoint_and_reports_the_same() {
    let baseline = crowd(DeleteScope::Prefix)
        .reconcile(&options())
        .await
        .unwrap();
    assert!(!baseline.resumed);

    let world = crowd(DeleteScope::Prefix);
    world.table.budget.set(5);
    let err = world.reconcile(&options()).await.unwrap_err();
    assert!(err.to_string().contains("injected interruption"), "{err}");
    let scanned_before = world.table.scans.lock().unwrap().len();
    world.table.budget.set(usize::MAX);
    let mut notes = Vec::new();
    let sources = Sources {
        table: &world.table,
        bucket: &world.bucket,
        store: &*world.bucket.store,
    };
    let resumed = run(
        &sources,
        &world.mirror,
        world.dir.path(),
        &options(),
        &mut |progress| notes.extend(progress.note.clone()),
    )
    .await
    .unwrap();
    assert!(resumed.resumed);
    assert!(
        notes
            .iter()
            .any(|n| n.contains("continuing the interrupted reconcile")),
        "{notes:?}"
    );
    assert_eq!(comparable(resumed), comparable(baseline.clone()));
    // The pages committed before the interruption were not scanned again: the resumed run's
    // first request of each segment starts at its checkpoint or at the start of a segment
    // that had none.
    let scans = world.table.scans.lock().unwrap().clone();
    let resumed_starts: BTreeMap<u32, Option<String>> = scans[scanned_before..]
        .iter()
        .rev()
        .map(|(segment, _, start)| (*segment, start.clone()))
        .collect();
    assert!(
        resumed_starts.values().any(Option::is_some),
        "every segment started over: {scans:?}"
    );

    // A finished run leaves no checkpoint: the next starts afresh.
    let fresh = world.reconcile(&options()).await.unwrap();
    assert!(!fresh.resumed);
}

#[tokio::test]
async fn an_interrupted_listing_resumes_after_the_last_key_committed() {
    let baseline = crowd(DeleteScope::Object)
        .reconcile(&options())
        .await
        .unwrap();
    let world = crowd(DeleteScope::Object);
    world.bucket.budget.set(3);
    assert!(world.reconcile(&options()).await.is_err());
    let listed_before = world.bucket.listings.lock().unwrap().len();
    world.bucket.budget.set(usize::MAX);
    let resumed = world.reconcile(&options()).await.unwrap();
    assert_eq!(comparable(resumed), comparable(baseline));
    let listings = world.bucket.listings.lock().unwrap().clone();
    // Three pages were committed: the resumed listing starts after the twelfth key.
    let first_resumed = listings[listed_before].clone().unwrap();
    let committed: Vec<String> = world
        .bucket
        .store
        .snapshot()
        .into_keys()
        .filter(|k| k.starts_with(PREFIX))
        .collect();
    assert_eq!(first_resumed, committed[11]);
}

#[tokio::test]
async fn an_interrupted_repair_skips_the_users_it_repaired() {
    // More users than a batch judges, so that the first batch is repaired and recorded
    // before the body reads of the second run out.
    let users = BATCH as u32 + 300;
    let mut baseline = crowd_of(DeleteScope::Object, users);
    baseline.bucket.etags = Etags::Opaque;
    baseline.bucket.encryption = BucketEncryption::Kms;
    let one_at_a_time = ReconcileOptions {
        concurrency: 1,
        ..repairing()
    };
    let expected = baseline.reconcile(&one_at_a_time).await.unwrap();
    assert_eq!(expected.repaired, expected.drifted_users);

    let mut world = crowd_of(DeleteScope::Object, users);
    world.bucket.etags = Etags::Opaque;
    world.bucket.encryption = BucketEncryption::Kms;
    // Every object is read: the first batch's reads fit, the second's do not.
    world.bucket.read_budget.set(BATCH);
    let setup = world.bucket.store.calls().len();
    assert!(world.reconcile(&one_at_a_time).await.is_err());
    assert!(
        world.bucket.store.calls().len() > setup,
        "nothing was repaired before the interruption"
    );
    world.bucket.read_budget.set(usize::MAX);
    let resumed = world.reconcile(&one_at_a_time).await.unwrap();
    assert!(resumed.resumed);
    assert_eq!(comparable(resumed), comparable(expected));
    // No user was written twice.
    let calls = world.bucket.store.calls().split_off(setup);
    let distinct: BTreeSet<&String> = calls.iter().collect();
    assert_eq!(distinct.len(), calls.len(), "{calls:?}");
    assert_eq!(
        world
            .bucket
            .store
            .snapshot()
            .into_iter()
            .filter(|(k, _)| k.ends_with("/userdata"))
            .collect::<BTreeMap<_, _>>(),
        world.expected_objects()
    );
}

#[tokio::test]
async fn other_parameters_do_not_resume_a_checkpoint_unless_restarted() {
    let world = crowd(DeleteScope::Object);
    world.table.budget.set(2);
    assert!(world.reconcile(&options()).await.is_err());
    world.table.budget.set(usize::MAX);
    let other = ReconcileOptions {
        segments: 8,
        ..options()
    };
    let err = world.reconcile(&other).await.unwrap_err();
    assert!(err.to_string().contains("--restart"), "{err}");
    let restarted = world
        .reconcile(&ReconcileOptions {
            restart: true,
            ..other
        })
        .await
        .unwrap();
    assert!(!restarted.resumed);
}

#[tokio::test]
async fn two_shares_merged_report_what_one_unshared_run_reports() {
    for scope in DeleteScope::ALL {
        let unshared = crowd(scope).reconcile(&options()).await.unwrap();
        let world = crowd(scope);
        let mut reports = Vec::new();
        for index in 0..2 {
            let share = ReconcileOptions {
                share: Some(Share { index, count: 2 }),
                state_dir: Some(world.dir.path().join(format!("share-{index}"))),
                ..options()
            };
            let report = world.reconcile(&share).await.unwrap();
            assert!(report.table_items < unshared.table_items);
            reports.push(report);
        }
        // Users scanned by the other share are asked about, not called orphans.
        assert!(reports.iter().any(|r| r.presence_checks > 0));
        let merged = ReconcileReport::merge(reports).unwrap();
        assert_eq!(merged.shares.len(), 2);
        assert_eq!(comparable(merged), comparable(unshared), "{scope}");
    }
}

/// Between a repair's read and its write, changes the user in the table (and mirrors the
/// change, as the function would) once per user: every third user is updated, every third
/// deleted, and some users not in the table are created.
struct Writer {
    table: Arc<FakeTable>,
    store: Arc<MemoryStore>,
    touched: Mutex<BTreeSet<String>>,
}

impl RepairHook for Writer {
    fn before_write<'a>(&'a self, name: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            if !self.touched.lock().unwrap().insert(name.to_owned()) {
                return;
            }
            let key = World::key(name);
            let number = name
                .trim_start_matches(|c: char| !c.is_ascii_digit())
                .parse::<u32>()
                .unwrap_or(0);
            if name.starts_with("gone") {
                if number % 2 == 0 {
                    self.table.put_user(name, &[("n", 1000 + number)]);
                    let body = expected_body(&self.table.snapshot()[name]);
                    self.store.put(&key, body).await.unwrap();
                }
                return;
            }
            match number % 3 {
                0 => {
                    self.table.put_user(name, &[("n", 1000 + number)]);
                    let body = expected_body(&self.table.snapshot()[name]);
                    self.store.put(&key, body).await.unwrap();
                }
                1 => {
                    self.table.remove(name);
                    self.store.delete(&key).await.unwrap();
                }
                _ => {}
            }
        })
    }
}

#[tokio::test]
async fn a_whole_table_repair_racing_with_writes_leaves_the_bucket_equal_to_the_table() {
    let world = crowd(DeleteScope::Object);
    // Every user drifted, so every user is repaired while the writer changes them.
    for name in world.table.snapshot().keys() {
        if name.starts_with("user") {
            put(&world.bucket.store, &World::key(name), b"{\"old\":true}");
        }
    }
    let writer = Arc::new(Writer {
        table: Arc::clone(&world.table),
        store: Arc::clone(&world.bucket.store),
        touched: Mutex::default(),
    });
    let options = ReconcileOptions {
        hook: Some(writer.clone()),
        ..repairing()
    };
    let report = world.reconcile(&options).await.unwrap();
    assert_eq!(report.failed, 0, "{:?}", report.examples.failed);
    assert!(writer.touched.lock().unwrap().len() >= 40);
    let user_objects: BTreeMap<String, Vec<u8>> = world
        .bucket
        .store
        .snapshot()
        .into_iter()
        .filter(|(k, _)| k.ends_with("/userdata"))
        .collect();
    let differences = differences(&user_objects, &world.expected_objects());
    assert!(
        differences.is_empty(),
        "the bucket is not the table:\n{}",
        differences.join("\n")
    );
}

/// Each key where the bucket differs from what the table says, with both bodies.
fn differences(
    bucket: &BTreeMap<String, Vec<u8>>,
    table: &BTreeMap<String, Vec<u8>>,
) -> Vec<String> {
    let text = |body: Option<&Vec<u8>>| {
        body.map_or_else(
            || "nothing".to_owned(),
            |b| String::from_utf8_lossy(b).into_owned(),
        )
    };
    bucket
        .keys()
        .chain(table.keys())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .filter(|key| bucket.get(*key) != table.get(*key))
        .map(|key| {
            format!(
                "{key}: the bucket holds {}, the table says {}",
                text(bucket.get(key)),
                text(table.get(key))
            )
        })
        .collect()
}

#[tokio::test]
async fn the_reconcile_can_be_spawned_and_names_a_stack_it_cannot_read() {
    // `tokio::spawn` needs the future to be `Send`: `dev` runs the reconcile as a task.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let target = crate::target::Target::for_endpoint(&format!("http://{closed}"), "us-east-1");
    let task =
        tokio::spawn(
            async move { super::reconcile(&target, "gone", &options(), &mut |_| {}).await },
        );
    let err = task.await.unwrap().unwrap_err();
    assert!(
        matches!(err, ReconcileError::Mirror(_)),
        "{}",
        crate::errors::chain(&err)
    );
    assert!(
        crate::errors::chain(&err).contains("describe stack gone"),
        "{err}"
    );
}

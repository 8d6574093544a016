//! `cargo xtask reconcile`'s exit codes, through the real binary: 0 in step or everything
//! repaired, 3 drift found without `--repair`, 1 a repair failed (or the reports cannot be
//! merged), 2 bad usage. The reports are those of `--share` runs, merged with `--merge`, which
//! reads no AWS.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use deployer::reconcile::etag::BucketEncryption;
use deployer::reconcile::{Examples, ReconcileReport, Share};
use usersync_function::DeleteScope;

const XTASK: &str = env!("CARGO_BIN_EXE_xtask");

fn dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("reconcile_exit_codes")
        .join(name);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn report(index: u32) -> ReconcileReport {
    ReconcileReport {
        stack_name: "usersync".into(),
        table: "users".into(),
        bucket: "data".into(),
        key_prefix: String::new(),
        object_name: "userdata".into(),
        delete_scope: DeleteScope::Object,
        segments: 4,
        shares: vec![Share { index, count: 2 }],
        repair: false,
        resumed: false,
        bucket_encryption: BucketEncryption::SseS3,
        table_items: 10,
        objects: 10,
        missing: 0,
        stale: 0,
        orphaned: 0,
        foreign: 0,
        unmirrorable: 0,
        drifted_users: 0,
        repaired: 0,
        failed: 0,
        body_reads: 0,
        presence_checks: 0,
        seconds: 0.5,
        examples: Examples::default(),
    }
}

/// Writes both shares' reports, the second changed by `change`, and merges them.
fn merge(name: &str, change: impl Fn(&mut ReconcileReport), extra: &[&str]) -> Output {
    let dir = dir(name);
    let mut second = report(1);
    change(&mut second);
    let mut files = Vec::new();
    for (i, report) in [report(0), second].iter().enumerate() {
        let path = dir.join(format!("share-{i}.json"));
        std::fs::write(&path, serde_json::to_string(report).unwrap()).unwrap();
        files.push(path);
    }
    run(&dir, &files, extra)
}

fn run(dir: &Path, files: &[PathBuf], extra: &[&str]) -> Output {
    let config = dir.join("empty.toml");
    std::fs::write(&config, "").unwrap();
    Command::new(XTASK)
        .arg("reconcile")
        .arg("--config")
        .arg(&config)
        .args(extra)
        .arg("--merge")
        .args(files)
        .output()
        .expect("xtask runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn in_step_exits_0() {
    let output = merge("in_step", |_| {}, &[]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    assert!(stdout.contains("20 items in table users"), "{stdout}");
    assert!(stdout.contains("in step"), "{stdout}");
}

#[test]
fn drift_without_repair_exits_3_and_lists_it() {
    let output = merge(
        "drift",
        |r| {
            r.missing = 1;
            r.drifted_users = 1;
            r.examples
                .missing
                .push(deployer::reconcile::report::Example {
                    key: "cy/userdata".into(),
                    user: Some("cy".into()),
                });
        },
        &[],
    );
    assert_eq!(output.status.code(), Some(3), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    assert!(stdout.contains("missing      cy/userdata"), "{stdout}");
    assert!(stdout.contains("--repair"), "{stdout}");
}

#[test]
fn everything_repaired_exits_0_and_a_failed_repair_exits_1() {
    let repaired = |failed: u64| {
        move |r: &mut ReconcileReport| {
            r.repair = true;
            r.missing = 2;
            r.drifted_users = 2;
            r.repaired = 2 - failed;
            r.failed = failed;
        }
    };
    // Both shares must have repaired for the merged run to count as repaired.
    let dir0 = dir("repaired");
    let mut first = report(0);
    first.repair = true;
    let mut second = report(1);
    repaired(0)(&mut second);
    let files: Vec<PathBuf> = [first.clone(), second]
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let path = dir0.join(format!("share-{i}.json"));
            std::fs::write(&path, serde_json::to_string(r).unwrap()).unwrap();
            path
        })
        .collect();
    let output = run(&dir0, &files, &["--output", "json"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["repaired"], 2);
    assert_eq!(json["missing"], 2);

    let mut failing = report(1);
    repaired(1)(&mut failing);
    let dir1 = dir("failed");
    let files: Vec<PathBuf> = [first, failing]
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let path = dir1.join(format!("share-{i}.json"));
            std::fs::write(&path, serde_json::to_string(r).unwrap()).unwrap();
            path
        })
        .collect();
    let output = run(&dir1, &files, &[]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output.stderr).contains("1 user(s) could not be repaired"),
        "{}",
        text(&output.stderr)
    );
}

#[test]
fn reports_that_do_not_cover_every_share_exit_1() {
    let output = merge(
        "same_share",
        |r| r.shares = vec![Share { index: 0, count: 2 }],
        &[],
    );
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(
        stderr.starts_with("error: failed to merge the reconcile reports: ")
            && stderr.contains("missing 1/2"),
        "{stderr}"
    );
}

#[test]
fn bad_usage_exits_2() {
    let config = dir("usage").join("empty.toml");
    std::fs::write(&config, "").unwrap();
    for args in [
        &["--share", "2/2"][..],
        &["--share", "1/8"],
        &["--segments", "0"],
        &["--merge", "a.json", "--repair"],
    ] {
        let output = Command::new(XTASK)
            .arg("reconcile")
            .arg("--config")
            .arg(&config)
            .args(args)
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .output()
            .unwrap();
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&output.stderr)
        );
        assert!(text(&output.stderr).starts_with("error: "), "{args:?}");
    }
}

//! The pipeline under faults: S3 failing at a rate, S3 unreachable for a while (shorter and
//! longer than the mapping's retry budget, then `replay-failures`), the function killed in the
//! middle of a batch, and the emulator restarted in the middle of a deploy.
//!
//! Each test starts its own emulator, deploys its own stack with settings suited to it, and
//! runs the real `bootstrap` in a local pipeline whose S3 traffic (and only that) goes through
//! a fault-injecting proxy (`usersync_local::emulator::faults`): the function's
//! `AWS_ENDPOINT_URL_S3` names the proxy. The harness is `itests::faults`. Waits are bounded
//! and polled. The stack is torn down, the function stopped and the emulator killed also when a
//! test fails. Each test prints what it injected and what the mapping did (`--nocapture` shows
//! it); the function's output and the poller's events are in
//! `target/usersync/itests/<stack>.function.log`.
//!
//! With the `soak` feature (`cargo xtask test --soak`), `soak_ten_thousand_users_under_faults`
//! runs the 30% case scaled to 10,000 users inserted and 3,000 deleted (about two minutes).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use deployer::console::RecordingConsole;
use deployer::replay::{self, compare_sequence_numbers, Outcome, ReplayOptions};
use deployer::settings::StackSettings;
use deployer::stack::{ResourceStatus, StackStatus};
use deployer::target::Target;
use deployer::template::output;
use deployer::workflow::{self, DeployResult};
use itests::emulator::REGION;
use itests::faults::{artifact, user, DeployPhase, MappingNumbers, RestartDuringDeploy, Setup};
use itests::test_stack::{n, s, unique_stack_name, CONVERGE_TIMEOUT};
use usersync_local::emulator::faults::{FaultConfig, FaultRates};
use usersync_local::mapping::batch::{InvocationReport, Verdict};

/// `users` users inserted and `deleted` of them deleted with `rate` of
/// the function's S3 requests failing: the bucket ends exactly like the table, nothing reaches
/// the failure queue, and the faults and the batch item failures happened.
async fn inserts_and_deletes_under_faults(
    label: &'static str,
    users: usize,
    deleted: usize,
    rate: f64,
    seed: u64,
) -> Result<()> {
    // Below about 20% a user's request rarely fails all three of the SDK's attempts, so a
    // batch item failure may not happen at all.
    let item_failures_expected = rate >= 0.2;
    let mut setup = Setup::new(label, FaultConfig::new(seed, FaultRates::failing(rate)));
    setup.settings.batch_size = 100;
    setup.settings.maximum_batching_window_seconds = 1;
    let test = setup.start().await?;

    let names: Vec<String> = (0..users).map(|i| format!("user-{i:05}")).collect();
    test.stack
        .batch_put(names.iter().map(|name| user(name, "free", 1)).collect())
        .await?;
    // Every third user, then the ones after those, as far as needed.
    let doomed: Vec<String> = names
        .iter()
        .step_by(3)
        .chain(names.iter().skip(1).step_by(3))
        .take(deleted)
        .cloned()
        .collect();
    test.stack.batch_delete(&doomed).await?;

    // Every record applied or given up on; then the bucket must be exactly the table.
    let limit = CONVERGE_TIMEOUT.max(Duration::from_millis(100) * users as u32);
    let settled = test
        .wait_settled_within("the inserts and deletes", limit)
        .await;
    test.report(label);
    let settled = settled.with_context(|| {
        format!(
            "the mapping so far: {}; faults: {:?}",
            MappingNumbers::of(&test.events),
            test.counts()
        )
    })?;
    eprintln!(
        "{label}: the mapping finished {:.1}s after the last write",
        settled.as_secs_f64()
    );
    let discards = test.events.discards();
    ensure!(
        discards.is_empty(),
        "{} batches ({} records) were given up on and sent to the failure queue: {discards:?}",
        discards.len(),
        discards.iter().map(|d| d.records).sum::<usize>()
    );
    let diff = test.diff().await?;
    ensure!(diff.in_step(), "the bucket is not the table: {diff}");
    ensure!(
        diff.users == users - deleted && diff.objects == users - deleted,
        "{diff}"
    );

    let counts = test.counts();
    let failed_share = counts.failed() as f64 / counts.requests as f64;
    ensure!(
        (failed_share - rate).abs() < 0.05,
        "{:.1}% of S3 requests failed, {:.0}% asked for: {counts:?}",
        failed_share * 100.0,
        rate * 100.0
    );
    let numbers = MappingNumbers::of(&test.events);
    ensure!(
        numbers.reported_batch_item_failures > 0 || !item_failures_expected,
        "no batch item failure was reported: the faults did not reach the mapping: {numbers}"
    );
    ensure!(
        test.queue_depth().await? == 0,
        "the failure queue is not empty"
    );
    test.finish().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_percent_of_s3_requests_failing_lose_nothing() -> Result<()> {
    inserts_and_deletes_under_faults("rate10", 1000, 300, 0.10, 0x5EED_0010).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_percent_of_s3_requests_failing_lose_nothing() -> Result<()> {
    inserts_and_deletes_under_faults("rate30", 1000, 300, 0.30, 0x5EED_0030).await
}

#[cfg(feature = "soak")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_ten_thousand_users_under_faults() -> Result<()> {
    inserts_and_deletes_under_faults("soak", 10_000, 3_000, 0.30, 0x5EED_50A4).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_unreachable_for_less_than_the_retry_budget_recovers_without_discards() -> Result<()> {
    let mut setup = Setup::new("outage", FaultConfig::new(2, FaultRates::NONE));
    setup.settings.maximum_retry_attempts = 10;
    let test = setup.start().await?;
    test.faults.injector().set_unreachable(true);
    let outage = Instant::now();

    let names: Vec<String> = (0..40).map(|i| format!("outage-{i:02}")).collect();
    test.stack
        .batch_put(names.iter().map(|name| user(name, "pro", 1)).collect())
        .await?;
    // S3 comes back after three failed attempts of a batch: well inside 10 retries.
    test.stack
        .wait_for("three failed invocations", || {
            let failed = test.events.fully_failed().len();
            async move { Ok(failed >= 3) }
        })
        .await?;
    test.faults.injector().set_unreachable(false);
    let outage = outage.elapsed();

    test.stack.wait_in_step("S3 came back").await?;
    test.wait_settled("S3 came back").await?;
    test.report("outage");
    eprintln!("outage: S3 unreachable for {:.1}s", outage.as_secs_f64());

    // Every failed invocation reported every user of its batch (each appears once), by its
    // sequence number, as a batch item failure, and none failed as a whole.
    let failed = test.events.fully_failed();
    for invocation in &failed {
        ensure!(
            invocation.verdict
                == Verdict::PartialFailure {
                    first_failed: 0,
                    reported: invocation.records
                },
            "{invocation:?}"
        );
    }
    let retried = failed.iter().map(|i| i.attempt).max().unwrap_or(0);
    ensure!(retried <= 10, "attempts beyond the budget: {failed:?}");
    ensure!(test.counts().unreachable > 0, "{:?}", test.counts());
    ensure!(
        test.events.discards().is_empty(),
        "{:?}",
        test.events.discards()
    );
    ensure!(
        test.queue_depth().await? == 0,
        "the failure queue is not empty"
    );
    ensure!(test.diff().await?.users == 40);
    test.finish().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_down_longer_than_the_retry_budget_queues_exactly_the_unapplied_records_and_replay_repairs_their_users(
) -> Result<()> {
    let mut setup = Setup::new("replay", FaultConfig::new(3, FaultRates::NONE));
    setup.settings.batch_size = 10;
    setup.settings.maximum_retry_attempts = 2;
    setup.settings.bisect_batch_on_function_error = false;
    let test = setup.start().await?;
    let stack = &test.stack;

    // Ten users applied while S3 is fine.
    let pre: Vec<String> = (0..10).map(|i| format!("pre-{i}")).collect();
    stack
        .batch_put(pre.iter().map(|name| user(name, "free", 1)).collect())
        .await?;
    stack.wait_in_step("the first users").await?;
    test.wait_settled("the first users").await?;

    // S3 down for longer than three attempts of every batch: 20 new users, 3 modified, 3
    // deleted; 26 records given up on.
    test.faults.injector().set_unreachable(true);
    let lost: Vec<String> = (0..20).map(|i| format!("lost-{i:02}")).collect();
    stack
        .batch_put(lost.iter().map(|name| user(name, "pro", 1)).collect())
        .await?;
    for name in &pre[0..3] {
        stack
            .put_user(name, &[("plan", s("team")), ("version", n(2))])
            .await?;
    }
    for name in &pre[3..6] {
        stack.delete_user(name).await?;
    }
    test.wait_settled("the outage").await?;
    test.faults.injector().set_unreachable(false);
    let discards = test.events.discards();
    ensure!(
        discards.iter().map(|d| d.records).sum::<usize>() == 26,
        "{discards:?}"
    );

    // The shard moved on: later records are applied, among them a newer version of lost-00.
    for i in 0..5 {
        stack
            .put_user(&format!("after-{i}"), &[("plan", s("free"))])
            .await?;
    }
    stack
        .put_user(&lost[0], &[("plan", s("enterprise")), ("version", n(3))])
        .await?;
    test.wait_settled("S3 came back").await?;

    let diff = test.diff().await?;
    let keys = |names: &[String]| -> Vec<String> {
        names
            .iter()
            .map(|name| format!("{name}/userdata"))
            .collect()
    };
    ensure!(diff.missing == keys(&lost[1..]), "{diff}");
    ensure!(diff.stale == keys(&pre[0..3]), "{diff}");
    ensure!(diff.orphaned == keys(&pre[3..6]), "{diff}");

    // The queue holds one message per discarded batch, with exactly its coordinates, and
    // together they cover exactly the 26 records written while S3 was down.
    let messages = test.peek_queue().await?;
    let infos: BTreeSet<(String, String, String, u64)> = messages
        .iter()
        .map(|m| {
            let info = &m["DDBStreamBatchInfo"];
            (
                info["shardId"].as_str().unwrap_or_default().to_owned(),
                info["startSequenceNumber"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                info["endSequenceNumber"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                info["batchSize"].as_u64().unwrap_or_default(),
            )
        })
        .collect();
    let expected: BTreeSet<(String, String, String, u64)> = discards
        .iter()
        .map(|d| {
            (
                d.shard_id.clone(),
                d.first_sequence.clone(),
                d.last_sequence.clone(),
                d.records as u64,
            )
        })
        .collect();
    ensure!(messages.len() == discards.len(), "{messages:#?}");
    ensure!(infos == expected, "{infos:?} != {expected:?}");
    ensure!(messages
        .iter()
        .all(|m| m["requestContext"]["condition"] == "RetryAttemptsExhausted"));
    let stream = test.stream().await?;
    let covered: BTreeSet<(String, String)> = stream
        .iter()
        .flat_map(|(shard, records)| {
            let infos = &infos;
            records
                .iter()
                .filter(move |(seq, ..)| {
                    infos.iter().any(|(s, start, end, _)| {
                        s == shard
                            && compare_sequence_numbers(seq, start).is_ge()
                            && compare_sequence_numbers(seq, end).is_le()
                    })
                })
                .map(|(_, user, event)| (user.clone(), event.clone()))
        })
        .collect();
    let outage_records: BTreeSet<(String, String)> = lost
        .iter()
        .map(|name| (name.clone(), "INSERT".to_owned()))
        .chain(
            pre[0..3]
                .iter()
                .map(|name| (name.clone(), "MODIFY".to_owned())),
        )
        .chain(
            pre[3..6]
                .iter()
                .map(|name| (name.clone(), "REMOVE".to_owned())),
        )
        .collect();
    ensure!(covered == outage_records, "{covered:?}");

    // A dry run reports and changes nothing.
    let dry = replay::replay_failures(
        test.target(),
        &stack.settings.stack_name,
        ReplayOptions {
            dry_run: true,
            reconcile_expired: false,
        },
        &mut |line| eprintln!("replay: {line}"),
    )
    .await?;
    eprintln!("replay (dry run): {}", dry.summary());
    ensure!(dry.messages.len() == messages.len(), "{dry:#?}");
    ensure!(dry
        .messages
        .iter()
        .all(|m| m.outcome == Outcome::WouldReplay && !m.deleted));
    ensure!(
        dry.messages.iter().map(|m| m.records).sum::<usize>() == 26,
        "{dry:#?}"
    );
    // Each of the 26 records is a different user's.
    ensure!(dry.users_named() == 26, "{dry:#?}");
    ensure!(dry.users_repaired() == 0, "{dry:#?}");
    ensure!(test.queue_depth().await? == messages.len() as u64);
    ensure!(test.diff().await? == diff, "a dry run changed the bucket");

    // The replay repairs the 26 users from the table's current state (lost-00 from its later
    // version, which must survive, not from its insert in the batch), and deletes every
    // message.
    let replayed = replay::replay_failures(
        test.target(),
        &stack.settings.stack_name,
        ReplayOptions::default(),
        &mut |line| eprintln!("replay: {line}"),
    )
    .await?;
    eprintln!("replay: {}", replayed.summary());
    for message in &replayed.messages {
        eprintln!("replay: {message:?}");
    }
    ensure!(
        replayed
            .messages
            .iter()
            .all(|m| m.outcome == Outcome::Replayed && m.deleted),
        "{replayed:#?}"
    );
    ensure!(replayed.users_repaired() == 26, "{replayed:#?}");
    ensure!(
        test.queue_depth().await? == 0,
        "messages left after the replay"
    );
    let after = test.diff().await?;
    ensure!(after.in_step(), "after the replay: {after}");
    ensure!(after.users == 10 - 3 + 20 + 5, "{after}");
    let objects = stack.objects().await?;
    ensure!(
        objects[&format!("{}/userdata", lost[0])]["plan"] == "enterprise",
        "the replay overwrote a newer version: {:?}",
        objects[&format!("{}/userdata", lost[0])]
    );
    // Nothing left to do: a second run finds an empty queue.
    let again = replay::replay_failures(
        test.target(),
        &stack.settings.stack_name,
        ReplayOptions::default(),
        &mut |_| {},
    )
    .await?;
    ensure!(again.messages.is_empty(), "{again:#?}");
    test.report("replay");
    test.finish().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_function_in_the_middle_of_a_batch_retries_it_and_ends_correct() -> Result<()> {
    // Every S3 request takes 150 ms and four users are worked on at once: the 50-user batch
    // takes about two seconds, and the kill lands inside it.
    let mut setup = Setup::new(
        "kill",
        FaultConfig::new(4, FaultRates::NONE).with_latency(Duration::from_millis(150)),
    );
    setup.settings.batch_size = 50;
    setup.settings.maximum_batching_window_seconds = 2;
    setup.settings.max_concurrency = Some(4);
    let test = setup.start().await?;
    let host = test.pipeline().host();

    let names: Vec<String> = (0..50).map(|i| format!("kill-{i:02}")).collect();
    test.stack
        .batch_put(names.iter().map(|name| user(name, "pro", 1)).collect())
        .await?;
    // Some users applied, others in flight.
    test.stack
        .wait_for("the batch half-way", || {
            let counts = test.counts();
            let in_flight = test.faults.injector().in_flight();
            async move { Ok(counts.requests >= 12 && in_flight > 0) }
        })
        .await?;
    let pid = host.pid().context("the function runs")?;
    let applied_before = test.counts().requests;
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()?;
    ensure!(killed.success(), "kill -KILL {pid} failed");

    test.stack.wait_in_step("the kill").await?;
    test.wait_settled("the kill").await?;
    test.report("kill");
    eprintln!("kill: killed pid {pid} after {applied_before} S3 requests of the batch");

    let invocations = test.events.invocations();
    let crashed = invocations
        .iter()
        .position(|i| {
            matches!(&i.verdict, Verdict::Failure { error_type, .. } if error_type == "Runtime.ExitError")
        })
        .with_context(|| format!("no invocation crashed: {invocations:#?}"))?;
    let killed_records = invocations[crashed].records;
    ensure!(
        killed_records > 1,
        "the kill landed in a batch: {invocations:#?}"
    );
    // The crashed run comes back whole or, bisected, in halves; a split is not a retry, so the
    // halves may still carry the first attempt's number. What counts is that every record of
    // the crashed run was invoked again, to success.
    let crash = &invocations[crashed];
    let within_crash = |i: &InvocationReport| {
        i.shard_id == crash.shard_id
            && compare_sequence_numbers(&i.first_sequence, &crash.first_sequence).is_ge()
            && compare_sequence_numbers(&i.last_sequence, &crash.last_sequence).is_le()
    };
    let retried: usize = invocations[crashed + 1..]
        .iter()
        .filter(|i| i.verdict == Verdict::Success && within_crash(i))
        .map(|i| i.records)
        .sum();
    ensure!(
        retried == killed_records,
        "the killed batch was retried to success: {invocations:#?}"
    );
    ensure!(host.pid() != Some(pid), "a new process took over");
    ensure!(test.events.discards().is_empty());
    ensure!(test.queue_depth().await? == 0);
    test.finish().await?;
    Ok(())
}

/// Deploys a new stack per phase with the emulator restarted in that phase, then deploys it
/// again; returns each phase's error message (as `cargo xtask deploy` prints it) and fails if a
/// deploy that saw a restart reported success, or the second deploy did not create the stack.
async fn deploys_with_a_restart() -> Result<Vec<(DeployPhase, String, String)>> {
    let artifact = artifact().await;
    let (restarter, proxy) = RestartDuringDeploy::start(itests::emulator::start().await).await?;
    let target = Target::for_endpoint(&proxy.url(), REGION);
    let restarts = || restarter.restarts();

    let mut messages = Vec::new();
    for phase in [
        DeployPhase::Upload,
        DeployPhase::ChangeSet,
        DeployPhase::Execution,
    ] {
        let settings = StackSettings {
            stack_name: unique_stack_name("faults-restart"),
            ..StackSettings::default()
        };
        let stack = settings.stack_name.clone();
        restarter.arm(phase, &stack);
        let before = restarts();
        let mut console = RecordingConsole::agreeing();
        let outcome = workflow::deploy_built(&target, &settings, artifact, &mut console).await;
        restarter.disarm();
        ensure!(
            restarts() == before + 1,
            "{phase:?}: the emulator was not restarted"
        );
        let message = match outcome {
            Ok(report) => bail!(
                "{phase:?}: the deploy reported success although the emulator lost the stack: {report:?}"
            ),
            // As `cargo xtask deploy` prints it.
            Err(err) => format!(
                "{:#}",
                anyhow::Error::new(err).context(format!("failed to deploy stack {stack}"))
            ),
        };
        eprintln!("restart during {phase:?}: error: {message}");

        // The emulator has forgotten everything: the second deploy creates it all again.
        let mut console = RecordingConsole::agreeing();
        let report = workflow::deploy_built(&target, &settings, artifact, &mut console)
            .await
            .with_context(|| format!("{phase:?}: the second deploy failed"))?;
        ensure!(
            report.result == DeployResult::Created,
            "{phase:?}: {report:?}"
        );
        ensure!(report.artifact_uploaded, "{phase:?}: {report:?}");
        for name in output::ALL {
            ensure!(
                report.outputs.contains_key(name),
                "{phase:?}: no output {name}: {report:?}"
            );
        }
        let status = deployer::stack::status(&target, &stack)
            .await?
            .context("the stack exists after the second deploy")?;
        ensure!(
            status.status == StackStatus::CreateComplete,
            "{phase:?}: {status:?}"
        );
        ensure!(
            status
                .resources
                .iter()
                .all(|r| r.status == Some(ResourceStatus::CreateComplete)),
            "{phase:?}: {status:?}"
        );
        messages.push((phase, stack, message));
    }
    Ok(messages)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emulator_restarted_during_deploy_fails_it_naming_the_step_and_a_second_deploy_converges(
) -> Result<()> {
    let started = Instant::now();
    for (phase, stack, message) in deploys_with_a_restart().await? {
        ensure!(
            message.starts_with(&format!("failed to deploy stack {stack}: ")),
            "{phase:?}: {message}"
        );
        let names_the_step = match phase {
            DeployPhase::Upload => {
                message.contains("upload") && message.contains("usersync-assets-")
            }
            DeployPhase::ChangeSet => message.contains("change set"),
            // Named by the stack in the prefix checked above.
            DeployPhase::Execution => true,
        };
        ensure!(
            names_the_step,
            "{phase:?} does not name the step: {message}"
        );
    }
    eprintln!("restart: {:.1}s", started.elapsed().as_secs_f64());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emulator_restarted_during_deploy_is_named_as_the_cause_with_the_fix() -> Result<()> {
    for (phase, _stack, message) in deploys_with_a_restart().await? {
        let lowered = message.to_lowercase();
        ensure!(
            lowered.contains("disappeared") && lowered.contains("run the deploy again"),
            "{phase:?}: the message names neither the cause nor the fix: {message}"
        );
    }
    Ok(())
}

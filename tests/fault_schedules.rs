//! Randomized fault schedules with an oracle (see tests/faults): primary, replica, the leader
//! proxy, the follower proxy and PostgreSQL are killed, frozen and stopped under concurrent
//! writers; afterwards every
//! instance must be identical, hold every acknowledged write, and resurrect no acknowledged
//! delete, and no log entry may be stuck.
//!
//! CI runs seeds 1 to 3, and seed 26, which found a bug, and one reset schedule. The long version is `scripts/fault-schedules.sh [N] [FIRST_SEED]`,
//! which runs `many_schedules` and prints the summary line. A failing seed prints its schedule;
//! repeat it with `scripts/fault-schedules.sh 1 SEED`.

mod faults;
mod support;

fn assert_clean(seed: u64, resets: bool) {
    let report = faults::run(seed, resets);
    assert!(report.clean(), "seed {seed}:\n{}", report.problems());
    assert!(
        report.acknowledged > 100,
        "seed {seed}: only {} writes acknowledged",
        report.acknowledged
    );
}

#[test]
fn seed_1() {
    assert_clean(1, false);
}

#[test]
fn seed_2() {
    assert_clean(2, false);
}

#[test]
fn seed_3() {
    assert_clean(3, false);
}

/// Regression: a collection deleted through the proxy while the primary still owed that
/// collection's record writes stranded them there as failed entries.
#[test]
fn seed_26() {
    assert_clean(26, false);
}

/// A schedule with resets: every writer pauses, the proxy is reset, and the writers go on in
/// fresh collections; nothing written before a reset may be left anywhere.
/// Regression: a reset sent to an instance that still owed collection writes ran there before
/// them; they then failed for good ("no instance has collection") and stayed stuck. A reset now
/// waits until its target owes nothing.
#[test]
fn reset_schedule_seed_1() {
    assert_clean(1, true);
}

/// `FAULT_SCHEDULES` seeds (default 100) from `FAULT_FIRST_SEED` (default 1), one after another;
/// reset schedules with `FAULT_RESETS=1`.
#[test]
#[ignore = "long: run by scripts/fault-schedules.sh"]
fn many_schedules() {
    let number = std::env::var("FAULT_SCHEDULES").ok().and_then(|n| n.parse().ok()).unwrap_or(100);
    let first: u64 =
        std::env::var("FAULT_FIRST_SEED").ok().and_then(|n| n.parse().ok()).unwrap_or(1);
    let resets = std::env::var("FAULT_RESETS").is_ok_and(|r| r == "1");
    let (mut acknowledged, mut uncertain) = (0, 0);
    let (mut lost, mut divergent, mut resurrected, mut stuck, mut refused) = (0, 0, 0, 0, 0);
    let mut failing = Vec::new();
    // Faults of the proxy tier and of the store: leader kill -9, leader SIGSTOP, follower, store.
    let mut tier = [0; 4];
    for seed in first..first + number {
        use faults::schedule::{Fault, Schedule, Target};
        for step in Schedule::draw(seed).steps {
            for fault in step.faults {
                match fault {
                    (Target::Proxy, Fault::Kill) => tier[0] += 1,
                    (Target::Proxy, Fault::Pause) => tier[1] += 1,
                    (Target::Follower, _) => tier[2] += 1,
                    (Target::Postgres, _) => tier[3] += 1,
                    _ => {}
                }
            }
        }
        let started = std::time::Instant::now();
        let report = faults::run(seed, resets);
        eprintln!(
            "{} | acknowledged {}, uncertain {}, {} in {:.0}s",
            faults::schedule::Schedule::draw(seed),
            report.acknowledged,
            report.uncertain,
            if report.clean() {
                "clean".to_string()
            } else {
                format!("FAILED:\n{}", report.problems())
            },
            started.elapsed().as_secs_f64()
        );
        acknowledged += report.acknowledged;
        uncertain += report.uncertain;
        lost += report.lost.len();
        divergent += report.divergent.len();
        resurrected += report.resurrected.len();
        stuck += report.stuck.len();
        refused += report.refused.len();
        if !report.clean() {
            failing.push(seed);
        }
        // After every schedule, so an interrupted run still tells what it saw.
        println!(
            "schedules: {}, acknowledged writes: {acknowledged}, uncertain: {uncertain}, lost: {lost}, divergent: {divergent}, resurrected: {resurrected}, stuck: {stuck}, refused: {refused}; faults: leader kill -9 {}, leader SIGSTOP {}, follower {}, PostgreSQL stop {}",
            seed - first + 1,
            tier[0],
            tier[1],
            tier[2],
            tier[3]
        );
    }
    assert!(failing.is_empty(), "failing seeds: {failing:?}");
}

//! Fault schedules drawn from a seed: the same seed gives the same schedule on every machine.
//! Never reads a clock or the environment: a schedule is a pure function of its seed.

use std::fmt;
use std::time::Duration;

/// splitmix64: small, seedable and good enough to draw schedules and workloads.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        ((self.next() >> 11) as f64 / (1u64 << 53) as f64) < p
    }

    /// A duration in `lo..hi` milliseconds.
    pub fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.next() % (hi - lo))
    }
}

/// A process the schedule can hit. `Proxy` is the proxy that leads when the fault comes,
/// `Follower` the other one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Primary,
    Replica,
    Proxy,
    Postgres,
    Follower,
}

const TARGETS: [Target; 4] = [Target::Primary, Target::Replica, Target::Proxy, Target::Postgres];

/// What happens to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// `kill -9` (PostgreSQL: `pg_ctl stop -m immediate`), then a restart on the same data.
    Kill,
    /// `SIGSTOP`, then `SIGCONT` (PostgreSQL: `pg_ctl stop -m fast`, then start).
    Pause,
}

/// One step: wait `pause`, hit one or two processes, hold for `hold`, heal them.
pub struct Step {
    pub pause: Duration,
    pub faults: Vec<(Target, Fault)>,
    pub hold: Duration,
}

/// The faults of one run.
pub struct Schedule {
    pub seed: u64,
    pub steps: Vec<Step>,
}

impl Schedule {
    /// Three steps of one or two faults each, held 0.3 to 4 s, 0.5 to 2.5 s apart; a step
    /// hits the follower proxy too a quarter of the time. The follower is drawn from a stream
    /// of its own, so the other faults of a seed are those it drew before the proxy tier came.
    pub fn draw(seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let mut tier = Rng::new(seed ^ 0xf011_0e4e);
        let steps = (0..3)
            .map(|_| {
                let first = TARGETS[rng.below(4)];
                let mut targets = vec![first];
                if rng.chance(0.4) {
                    let others: Vec<Target> = TARGETS.into_iter().filter(|t| *t != first).collect();
                    targets.push(others[rng.below(others.len())]);
                }
                let mut faults: Vec<(Target, Fault)> = targets
                    .into_iter()
                    .map(|t| (t, if rng.chance(0.5) { Fault::Kill } else { Fault::Pause }))
                    .collect();
                if tier.chance(0.25) {
                    let fault = if tier.chance(0.5) { Fault::Kill } else { Fault::Pause };
                    faults.push((Target::Follower, fault));
                }
                Step { pause: rng.millis(500, 2500), faults, hold: rng.millis(300, 4000) }
            })
            .collect();
        Self { seed, steps }
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "seed {}:", self.seed)?;
        for step in &self.steps {
            let faults: Vec<String> = step
                .faults
                .iter()
                .map(|(target, fault)| match (target, fault) {
                    (Target::Postgres, Fault::Kill) => "pg_ctl stop -m immediate postgres".into(),
                    (Target::Postgres, Fault::Pause) => "pg_ctl stop -m fast postgres".into(),
                    (Target::Proxy, Fault::Kill) => "kill -9 leader proxy".into(),
                    (Target::Proxy, Fault::Pause) => "SIGSTOP leader proxy".into(),
                    (Target::Follower, Fault::Kill) => "kill -9 follower proxy".into(),
                    (Target::Follower, Fault::Pause) => "SIGSTOP follower proxy".into(),
                    (t, Fault::Kill) => format!("kill -9 {t:?}"),
                    (t, Fault::Pause) => format!("SIGSTOP {t:?}"),
                })
                .collect();
            write!(
                f,
                " [after {:.1}s: {} for {:.1}s]",
                step.pause.as_secs_f64(),
                faults.join(" + "),
                step.hold.as_secs_f64()
            )?;
        }
        Ok(())
    }
}

#[test]
fn a_seed_always_draws_the_same_schedule() {
    assert_eq!(Schedule::draw(7).to_string(), Schedule::draw(7).to_string());
    assert_ne!(Schedule::draw(7).to_string(), Schedule::draw(8).to_string());
}

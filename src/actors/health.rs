//! HealthActor: one per instance. Decides whether the instance is usable, from active probes of
//! `GET /api/v2/healthcheck` (rise/fall), passive failure reports from the proxy (instant
//! mark-down), admin overrides that expire by themselves, and the seeder's verdict on the
//! instance's data (an instance that comes up serves only once its data is known to be there:
//! DESIGN 13). Every change is logged and pushed to its subscribers (the router, replay).
//!
//! It never routes requests and never retries them: it only judges and reports.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use chrono::{DateTime, Utc};
use log::{info, warn};
use serde::Serialize;

use super::guarded;
use crate::events::Events;
use crate::instance::{InstanceId, InstanceName, InstanceSpec, Role};
use crate::tls::UpstreamTls;
use crate::upstream;

/// Consecutive good probes before a down instance is used again.
pub const RISE: u32 = 2;
/// Consecutive failed probes before an up instance is taken out.
pub const FALL: u32 = 3;
/// Two seconds (or CHECK_INTERVAL if shorter). An idle Chroma answers its healthcheck in about
/// a millisecond, but one taking batches of 500 records on a core of its own answers it in
/// 365 ms median and 650 ms at worst (Chroma 1.5.9: BENCHMARKS.md, issue 17), and the proxy's own
/// core may be busy too; with one second, live primaries were marked down mid-ingest. A hung
/// instance is still found within three probes.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// While down, probe this often (or at CHECK_INTERVAL if shorter), to return quickly.
pub const FAST_REPROBE: Duration = Duration::from_millis(500);

/// Pushed to subscribers after every probe and every change of usability.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct HealthUpdate {
    /// The instance judged.
    pub instance: InstanceId,
    /// Whether requests may be sent to it now.
    pub usable: bool,
}

/// The proxy could not connect, or got no answer in time: mark the instance down at once.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct ReportFailure {
    /// What went wrong, for the log.
    pub reason: String,
}

/// A request to the instance broke off (possibly a stale keep-alive) or got no answer in time
/// (possibly a slow answer): the instance is suspect, not dead. Probe it now; if that probe
/// fails, it is marked down at once, without waiting for FALL probes in a row.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct RequestProbe {
    /// What went wrong, for the log.
    pub reason: String,
}

/// Whether a reachable instance's data lets it serve, as the seeder judges it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataGate {
    /// Its data is there (or seeding is off): it serves while it answers its probes.
    Open,
    /// It came up, and the seeder has not yet looked at its data.
    Checking,
    /// It is being seeded, or must be: it serves nothing until the copy is done.
    Seeding,
}

/// The seeder's verdict on the instance's data.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct SetGate(pub DataGate);

/// Sent to the seeder each time the instance comes up, while seeding is on: its data is
/// checked before it serves again (it may have come back empty).
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct CheckData(pub InstanceId);

/// Names the seeder that checks the instance's data each time it comes up.
#[derive(Message)]
#[rtype(result = "()")]
pub struct WatchData(pub Recipient<CheckData>);

/// Admin override: treat the instance as `healthy` for `duration`, whatever the probes say.
#[derive(Message, Debug)]
#[rtype(result = "DateTime<Utc>")]
pub struct ForceHealth {
    /// Forced state.
    pub healthy: bool,
    /// How long the override lasts.
    pub duration: Duration,
}

/// Admin: drop the override now; answers whether there was one.
#[derive(Message, Debug)]
#[rtype(result = "bool")]
pub struct ClearForce;

/// Adds a subscriber; it gets the current state at once, then every update.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Subscribe(pub Recipient<HealthUpdate>);

/// Asks for the instance's current health, for status pages.
#[derive(Message, Debug)]
#[rtype(result = "Option<HealthSnapshot>")]
pub struct GetHealth;

/// The health of one instance as shown by `/status` and `/admin/instances`.
#[derive(Debug, Clone, Serialize)]
pub struct HealthSnapshot {
    pub name: InstanceName,
    pub url: String,
    pub role: Role,
    /// Whether requests may be sent to it now (probes, reports and overrides combined).
    pub healthy: bool,
    /// `healthy`, `unhealthy`, `checking`, `seeding`, `forced_up` or `forced_down`.
    pub state: &'static str,
    pub forced_until: Option<DateTime<Utc>>,
    pub consecutive_failures: u32,
    pub last_check: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    /// Seconds since it went down, while it is down.
    pub down_for_seconds: Option<f64>,
}

/// Probe timing, from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct ProbeSettings {
    /// Between probes while up.
    pub interval: Duration,
    /// Between probes while down.
    pub fast_interval: Duration,
    /// Longest wait for one probe.
    pub timeout: Duration,
}

impl ProbeSettings {
    /// Settings for a CHECK_INTERVAL, with the design's defaults for the rest.
    pub fn from_interval(interval: Duration) -> Self {
        Self {
            interval,
            fast_interval: interval.min(FAST_REPROBE),
            timeout: PROBE_TIMEOUT.min(interval),
        }
    }
}

struct Forced {
    healthy: bool,
    until: DateTime<Utc>,
    expiry: SpawnHandle,
}

/// Judges one instance's health.
pub struct HealthActor {
    /// Where its transitions are kept for `/events`.
    events: Arc<Events>,
    spec: InstanceSpec,
    settings: ProbeSettings,
    subscribers: Vec<Recipient<HealthUpdate>>,
    client: awc::Client,
    probed_up: bool,
    successes: u32,
    failures: u32,
    last_check: Option<DateTime<Utc>>,
    last_error: Option<String>,
    down_since: Option<Instant>,
    forced: Option<Forced>,
    next_probe: Option<SpawnHandle>,
    probing: bool,
    /// Why a request made the instance suspect, until the next probe decides.
    suspect: Option<String>,
    /// The seeder's verdict on its data.
    gate: DataGate,
    /// The seeder, told each time the instance comes up.
    checker: Option<Recipient<CheckData>>,
}

impl HealthActor {
    /// A judge for `spec`, probing with `tls` if it is `https://`. The instance starts as
    /// up: the first probe runs at once, and a failed request marks it down before any client
    /// notices. It serves from the start unless `gate` holds it until the seeder has looked
    /// at its data.
    pub fn new(
        spec: InstanceSpec,
        settings: ProbeSettings,
        tls: &UpstreamTls,
        (events, gate): (Arc<Events>, DataGate),
    ) -> Self {
        Self {
            events,
            spec,
            settings,
            subscribers: Vec::new(),
            client: upstream::client(tls, settings.timeout),
            probed_up: true,
            successes: 0,
            failures: 0,
            last_check: None,
            last_error: None,
            down_since: None,
            forced: None,
            next_probe: None,
            probing: false,
            suspect: None,
            gate,
            checker: None,
        }
    }

    fn usable(&self) -> bool {
        self.forced.as_ref().map_or(self.probed_up && self.gate == DataGate::Open, |f| f.healthy)
    }

    fn state(&self) -> &'static str {
        match (&self.forced, self.probed_up, self.gate) {
            (Some(f), _, _) if f.healthy => "forced_up",
            (Some(_), _, _) => "forced_down",
            (None, false, _) => "unhealthy",
            (None, true, DataGate::Open) => "healthy",
            (None, true, DataGate::Checking) => "checking",
            (None, true, DataGate::Seeding) => "seeding",
        }
    }

    fn publish(&mut self) {
        let update = HealthUpdate { instance: self.spec.id, usable: self.usable() };
        // A subscriber whose worker has stopped is dropped here.
        self.subscribers.retain(|s| s.connected());
        for subscriber in &self.subscribers {
            subscriber.do_send(update);
        }
    }

    fn schedule_probe(&mut self, ctx: &mut Context<Self>, delay: Duration) {
        if let Some(handle) = self.next_probe.take() {
            ctx.cancel_future(handle);
        }
        self.next_probe = Some(ctx.run_later(delay, |act, ctx| act.probe(ctx)));
    }

    fn probe(&mut self, ctx: &mut Context<Self>) {
        self.next_probe = None;
        if self.probing {
            return;
        }
        self.probing = true;
        let request = self.client.get(format!("{}/api/v2/healthcheck", self.spec.url)).send();
        let check = async move {
            match request.await {
                Ok(response) if response.status().is_success() => Ok(()),
                Ok(response) => Err(format!("healthcheck answered {}", response.status())),
                Err(e) => Err(format!("healthcheck failed: {e}")),
            }
        };
        ctx.spawn(check.into_actor(self).map(|result, act, ctx| {
            act.probing = false;
            guarded("health", ctx, || act.on_probe(result));
            let delay =
                if act.probed_up { act.settings.interval } else { act.settings.fast_interval };
            act.schedule_probe(ctx, delay);
        }));
    }

    fn on_probe(&mut self, result: Result<(), String>) {
        self.last_check = Some(Utc::now());
        match result {
            Ok(()) => {
                if let Some(why) = self.suspect.take() {
                    info!(
                        "instance {} answers its probe: still usable after {why}",
                        self.spec.name
                    );
                }
                self.failures = 0;
                self.successes += 1;
                self.last_error = None;
                if !self.probed_up && self.successes >= RISE {
                    self.mark_up();
                }
            }
            Err(reason) => {
                self.successes = 0;
                self.failures += 1;
                if let Some(why) = self.suspect.take().filter(|_| self.probed_up) {
                    self.mark_down(&format!("{why}, then its probe failed: {reason}"));
                } else if self.probed_up && self.failures >= FALL {
                    self.mark_down(&format!(
                        "{} probes in a row failed, last: {reason}",
                        self.failures
                    ));
                }
                self.last_error = Some(reason);
            }
        }
        self.publish();
    }

    fn mark_down(&mut self, reason: &str) {
        let was_usable = self.usable();
        self.probed_up = false;
        self.successes = 0;
        self.down_since = Some(Instant::now());
        let effect = match (was_usable, self.usable()) {
            (true, false) => "no requests go to it until it is back",
            _ => "no effect while the admin override lasts",
        };
        warn!("instance {} ({}) is DOWN: {reason}; {effect}", self.spec.name, self.spec.url);
        self.events.record("down", self.spec.name.as_str(), format!("{reason}; {effect}"));
    }

    fn mark_up(&mut self) {
        self.probed_up = true;
        let down = self.down_since.take().map_or(0.0, |t| t.elapsed().as_secs_f64());
        info!(
            "instance {} ({}) is UP again after {down:.1}s down ({RISE} good probes)",
            self.spec.name, self.spec.url
        );
        let detail = format!("up again after {down:.1}s down ({RISE} good probes)");
        self.events.record("up", self.spec.name.as_str(), detail);
        if let Some(checker) = &self.checker {
            self.gate = DataGate::Checking;
            checker.do_send(CheckData(self.spec.id));
        }
    }

    fn snapshot(&self) -> HealthSnapshot {
        HealthSnapshot {
            name: self.spec.name.clone(),
            url: self.spec.url.clone(),
            role: self.spec.role,
            healthy: self.usable(),
            state: self.state(),
            forced_until: self.forced.as_ref().map(|f| f.until),
            consecutive_failures: self.failures,
            last_check: self.last_check,
            last_error: self.last_error.clone(),
            down_for_seconds: self.down_since.map(|t| t.elapsed().as_secs_f64()),
        }
    }
}

impl Actor for HealthActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.probe(ctx);
    }
}

impl Supervised for HealthActor {
    fn restarting(&mut self, _: &mut Context<Self>) {
        // Spawned timers died with the old context; forget their handles and re-judge from probes.
        self.forced = None;
        self.next_probe = None;
        self.probing = false;
        self.suspect = None;
        self.successes = 0;
        self.failures = 0;
    }
}

impl Handler<ReportFailure> for HealthActor {
    type Result = ();

    fn handle(&mut self, msg: ReportFailure, ctx: &mut Context<Self>) {
        guarded("health", ctx, || {
            self.failures += 1;
            self.last_error = Some(msg.reason.clone());
            if self.probed_up {
                self.mark_down(&format!("marked down by the proxy: {}", msg.reason));
                self.publish();
            }
        });
        let delay = self.settings.fast_interval;
        self.schedule_probe(ctx, delay);
    }
}

impl Handler<RequestProbe> for HealthActor {
    type Result = ();

    fn handle(&mut self, msg: RequestProbe, ctx: &mut Context<Self>) {
        info!("probing instance {} now: {}", self.spec.name, msg.reason);
        self.suspect = Some(msg.reason);
        self.schedule_probe(ctx, Duration::ZERO);
    }
}

impl Handler<ForceHealth> for HealthActor {
    type Result = MessageResult<ForceHealth>;

    fn handle(&mut self, msg: ForceHealth, ctx: &mut Context<Self>) -> Self::Result {
        if let Some(old) = self.forced.take() {
            ctx.cancel_future(old.expiry);
        }
        let until = Utc::now() + msg.duration;
        let expiry = ctx.run_later(msg.duration, |act, _| {
            act.forced = None;
            let detail = format!("admin override expired; {} by its probes", act.state());
            info!("instance {}: {detail}", act.spec.name);
            act.events.record("override_ended", act.spec.name.as_str(), detail);
            act.publish();
        });
        self.forced = Some(Forced { healthy: msg.healthy, until, expiry });
        let detail = format!(
            "forced {} by admin for {:.1}s (until {until})",
            if msg.healthy { "UP" } else { "DOWN" },
            msg.duration.as_secs_f64()
        );
        warn!("instance {} {detail}", self.spec.name);
        self.events.record("forced", self.spec.name.as_str(), detail);
        self.publish();
        MessageResult(until)
    }
}

impl Handler<ClearForce> for HealthActor {
    type Result = bool;

    fn handle(&mut self, _: ClearForce, ctx: &mut Context<Self>) -> bool {
        let Some(old) = self.forced.take() else {
            return false;
        };
        ctx.cancel_future(old.expiry);
        let detail = format!("admin override cleared; {} by its probes", self.state());
        info!("instance {}: {detail}", self.spec.name);
        self.events.record("override_ended", self.spec.name.as_str(), detail);
        self.publish();
        true
    }
}

impl Handler<SetGate> for HealthActor {
    type Result = ();

    fn handle(&mut self, msg: SetGate, _: &mut Context<Self>) {
        if self.gate != msg.0 {
            self.gate = msg.0;
            self.publish();
        }
    }
}

impl Handler<WatchData> for HealthActor {
    type Result = ();

    fn handle(&mut self, msg: WatchData, _: &mut Context<Self>) {
        self.checker = Some(msg.0);
    }
}

impl Handler<Subscribe> for HealthActor {
    type Result = ();

    fn handle(&mut self, msg: Subscribe, _: &mut Context<Self>) {
        msg.0.do_send(HealthUpdate { instance: self.spec.id, usable: self.usable() });
        // A restarted subscriber subscribes again with the same address.
        if !self.subscribers.contains(&msg.0) {
            self.subscribers.push(msg.0);
        }
    }
}

impl Handler<GetHealth> for HealthActor {
    type Result = Option<HealthSnapshot>;

    fn handle(&mut self, _: GetHealth, ctx: &mut Context<Self>) -> Self::Result {
        guarded("health", ctx, || self.snapshot())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Collects every update it is sent.
    struct Recorder(Vec<HealthUpdate>);

    impl Actor for Recorder {
        type Context = Context<Self>;
    }

    impl Handler<HealthUpdate> for Recorder {
        type Result = ();
        fn handle(&mut self, msg: HealthUpdate, _: &mut Context<Self>) {
            self.0.push(msg);
        }
    }

    #[derive(Message)]
    #[rtype(result = "Vec<bool>")]
    struct Seen;

    impl Handler<Seen> for Recorder {
        type Result = Vec<bool>;
        fn handle(&mut self, _: Seen, _: &mut Context<Self>) -> Vec<bool> {
            self.0.iter().map(|u| u.usable).collect()
        }
    }

    fn spec() -> InstanceSpec {
        // Port 9 on loopback: nothing listens, so every probe fails fast.
        InstanceSpec {
            id: InstanceId(0),
            name: InstanceName::new("primary".into()),
            role: Role::Primary,
            url: "http://127.0.0.1:9".into(),
        }
    }

    /// A judge of [`spec`] with [`slow_settings`], its data gate open.
    fn judge() -> Addr<HealthActor> {
        let events = Default::default();
        HealthActor::new(spec(), slow_settings(), &UpstreamTls::default(), (events, DataGate::Open))
            .start()
    }

    fn slow_settings() -> ProbeSettings {
        let hour = Duration::from_secs(3600);
        ProbeSettings { interval: hour, fast_interval: hour, timeout: Duration::from_millis(200) }
    }

    /// Slow is not dead: a request that timed out only makes the instance suspect, and the probe
    /// it triggers decides; here the probe fails, so it is down at once (not after FALL probes).
    #[actix::test]
    async fn a_suspect_instance_is_down_only_when_its_probe_fails() {
        let health = judge();
        let snap = health.send(GetHealth).await.unwrap().unwrap();
        assert!(snap.healthy, "one failed background probe is not FALL");
        health.send(RequestProbe { reason: "POST /x: no answer within 1s".into() }).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let snap = health.send(GetHealth).await.unwrap().unwrap();
            if !snap.healthy {
                break;
            }
            assert!(Instant::now() < deadline, "the failed probe did not mark it down");
            actix_web::rt::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[actix::test]
    async fn passive_report_marks_down_at_once_and_override_expires() {
        let recorder = Recorder(Vec::new()).start();
        let health = judge();
        health.send(Subscribe(recorder.clone().recipient())).await.unwrap();

        health.send(ReportFailure { reason: "connection refused".into() }).await.unwrap();
        let snap = health.send(GetHealth).await.unwrap().unwrap();
        assert!(!snap.healthy);
        assert_eq!(snap.state, "unhealthy");

        health
            .send(ForceHealth { healthy: true, duration: Duration::from_millis(300) })
            .await
            .unwrap();
        let snap = health.send(GetHealth).await.unwrap().unwrap();
        assert!(snap.healthy);
        assert_eq!(snap.state, "forced_up");
        assert!(snap.forced_until.is_some());

        actix::clock::sleep(Duration::from_millis(500)).await;
        let snap = health.send(GetHealth).await.unwrap().unwrap();
        assert_eq!(snap.state, "unhealthy");
        assert!(snap.forced_until.is_none());

        let seen = recorder.send(Seen).await.unwrap();
        assert_eq!(seen.last(), Some(&false));
        assert!(seen.contains(&true), "the override was published: {seen:?}");
    }

    #[actix::test]
    async fn clearing_an_override_restores_the_probed_state() {
        let health = judge();
        assert!(!health.send(ClearForce).await.unwrap());
        health
            .send(ForceHealth { healthy: false, duration: Duration::from_secs(60) })
            .await
            .unwrap();
        assert_eq!(health.send(GetHealth).await.unwrap().unwrap().state, "forced_down");
        assert!(health.send(ClearForce).await.unwrap());
        let snap = health.send(GetHealth).await.unwrap().unwrap();
        assert!(snap.forced_until.is_none());
        assert_eq!(snap.state, "healthy", "one failed probe is below FALL");
    }
}

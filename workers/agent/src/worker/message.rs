//! One delivery's handling: what its fate depends on, learned in the order
//! [`disposition`](super::disposition) asks for it, the rollout under a lease heartbeat,
//! the commit of its record, and the fate carried out on the queue.

use super::disposition::{Admission, Disposition, Facts, Fate, Outcome, Standing, disposition};
use super::{Shared, WorkerEvent};
use crate::rollout::{Interrupted, RolloutEvent, Rollouts};
use chrono::Utc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use synthfleet_core::error_chain;
use synthfleet_core::message::{ResultKey, TaskMessage};
use synthfleet_core::metrics::{DataPoint, Metric};
use synthfleet_core::ports::{CommitOutcome, DeadLetter, Delivery, Queue, StoreError};
use synthfleet_core::sampling::{self, Settled, Verdict};
use synthfleet_core::store::TrajectoryStoreError;
use synthfleet_core::trajectory::{ExitStatus, TrajectoryRecord};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, error, info, info_span, warn};

/// Why a delivery was left in flight: it is redelivered after its visibility timeout.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HandleError {
    #[error("reading the item of campaign `{campaign}` failed")]
    Campaign {
        campaign: String,
        #[source]
        source: StoreError,
    },
    #[error("looking up the result of sample {key} failed")]
    Result {
        key: ResultKey,
        #[source]
        source: StoreError,
    },
    #[error("committing trajectory {trajectory_id} of sample {key} failed")]
    Commit {
        key: ResultKey,
        trajectory_id: String,
        #[source]
        source: TrajectoryStoreError,
    },
    /// Carrying out the message's fate on the queue failed.
    #[error("{operation} failed")]
    Queue {
        operation: &'static str,
        #[source]
        source: StoreError,
    },
    #[error("deciding the sampling round of sample {key} failed")]
    Sampling {
        key: ResultKey,
        #[source]
        source: StoreError,
    },
    #[error(
        "no fate was decided for the message on what is known of it (a bug in `worker::disposition`)"
    )]
    Undecided,
}

impl HandleError {
    fn queue(operation: &'static str) -> impl FnOnce(StoreError) -> HandleError {
        move |source| HandleError::Queue { operation, source }
    }
}

/// The data points of a rollout's `event` (none for a step: that is progress).
fn data_points(campaign: &str, event: RolloutEvent) -> impl Iterator<Item = DataPoint> {
    let at = |metric, value| DataPoint::now(metric, Some(campaign), value);
    let points = match event {
        RolloutEvent::Step { .. } => vec![],
        RolloutEvent::SandboxReady { took } => {
            vec![at(Metric::SandboxAcquireMs, took.as_secs_f64() * 1000.0)]
        }
        RolloutEvent::LlmCall { cost, error } => {
            let mut points = vec![
                at(Metric::LlmRequests, 1.0),
                at(Metric::SpendMicroUsd, cost.0 as f64),
            ];
            points.extend(error.map(|class| DataPoint::llm_error(campaign, class)));
            points
        }
    };
    points.into_iter()
}

impl Shared {
    /// Once a sample of an adaptive campaign has its outcome and before its message goes:
    /// decides its round if it completed one, and sends the next round
    /// ([`sampling::after_outcome`]). An error leaves the message to be redelivered, and
    /// the redelivery finishes the decision. `Some(wait)`: another delivery is sending the
    /// next round; the message is left for `wait`, then settled again.
    async fn settle_round(&self, message: &TaskMessage) -> Result<Option<Duration>, HandleError> {
        // A campaign this worker cannot load has no sampling to settle here.
        let Ok(rollouts) = self.campaigns.rollouts(&message.campaign).await else {
            return Ok(None);
        };
        let settled = sampling::after_outcome(
            &rollouts.campaign.config,
            message,
            self.queue.as_ref(),
            self.metadata.as_ref(),
        )
        .await
        .map_err(|source| HandleError::Sampling {
            key: message.result_key(),
            source,
        })?;
        match settled {
            Settled::Decided(decision) => {
                match decision.verdict {
                    Verdict::Continue { first, samples } => {
                        info!(round = %decision.round, first, samples, resolved = decision.resolved, judged = decision.judged, "mixed outcomes: another round")
                    }
                    Verdict::Stop { reason } => {
                        info!(round = %decision.round, reason = reason.as_str(), resolved = decision.resolved, judged = decision.judged, "task sampling stopped")
                    }
                }
                self.emit(WorkerEvent::RoundDecided { decision });
                Ok(None)
            }
            // A round another delivery decided was told of there.
            Settled::Open | Settled::Done => Ok(None),
            Settled::BeingSent { wait } => {
                info!(
                    wait_s = wait.as_secs_f64(),
                    "another delivery is sending this round's next samples; the message comes back to check they were sent"
                );
                Ok(Some(wait))
            }
        }
    }

    /// Leaves a delivery in flight for `wait` (its round's next samples are being sent).
    async fn come_back(&self, delivery: &Delivery, wait: Duration) -> Result<(), HandleError> {
        self.queue
            .extend(&delivery.receipt, wait)
            .await
            .map_err(HandleError::queue("leaving the message in flight"))
    }

    /// Dead-letters a delivery; for a task message of the campaign, with its record (and
    /// its sampling round settled: a round whose last sample is given up on is decided on
    /// the others).
    async fn dead_letter(
        &self,
        delivery: &Delivery,
        message: Option<&TaskMessage>,
        reason: String,
    ) {
        let key = message.map(TaskMessage::result_key);
        if let Some(message) = message {
            let letter = DeadLetter::of(message, message.attempt(), &reason);
            if let Err(e) = self.metadata.record_dead_letter(&letter).await {
                warn!(error = %error_chain(&e), "recording a dead letter failed");
            }
            match self.settle_round(message).await {
                Ok(None) => {}
                Ok(Some(wait)) => {
                    // Dead-lettered again, and its round settled, when it comes back.
                    if let Err(e) = self.come_back(delivery, wait).await {
                        warn!(error = %error_chain(&e), "the message will be redelivered");
                    }
                    return;
                }
                Err(e) => {
                    // Left in flight: its redelivery dead-letters it again and settles the round.
                    warn!(error = %error_chain(&e), "the message will be redelivered");
                    return;
                }
            }
        }
        match self.queue.dead_letter(delivery, &reason).await {
            Ok(()) => {
                error!(message = %delivery.message_id, %reason, "message dead-lettered");
                self.counters.dead_lettered.fetch_add(1, Ordering::Relaxed);
                self.emit(WorkerEvent::DeadLettered { key, reason });
            }
            Err(e) => {
                warn!(error = %error_chain(&e), "dead-lettering failed; the queue's redrive policy will")
            }
        }
    }

    pub(super) async fn handle(&self, delivery: Delivery) {
        let message = match TaskMessage::parse(&delivery.body) {
            Ok(m) => m,
            // A body that is no task message names no sample to record.
            Err(e) => return self.dead_letter(&delivery, None, e.to_string()).await,
        };
        let key = message.result_key();
        if let Some(sent) = delivery.sent_at {
            let age = (Utc::now() - sent).num_milliseconds().max(0) as f64 / 1000.0;
            self.publish(DataPoint::now(Metric::QueueAgeS, Some(&key.campaign), age));
        }
        let span = info_span!("task", campaign = %key.campaign, instance = %key.instance_id, sample = key.sample_index);
        async {
            let settled = match self.decide(&delivery, &message).await {
                Ok(fate) => self.apply(&delivery, &message, fate).await,
                Err(e) => Err(e),
            };
            if let Err(e) = settled {
                // The message stays in flight and is redelivered after its visibility timeout.
                warn!(error = %error_chain(&e), "handling a message failed; it will be redelivered");
            }
        }
        .instrument(span)
        .await;
    }

    /// The fate [`disposition`] gives `facts`, once it gives one.
    fn decided(&self, facts: &Facts<'_>) -> Option<Fate> {
        match disposition(facts, &self.config) {
            Disposition::Fate(fate) => Some(fate),
            Disposition::Next | Disposition::Commit => None,
        }
    }

    /// Learns what the fate of `message` depends on, in the order [`disposition`] asks for
    /// it — its campaign, the campaign's item, the sample's result, the rollout — and
    /// commits a finished record; returns the fate. `Err`: a store could not be read (the
    /// message stays in flight and is redelivered).
    async fn decide(
        &self,
        delivery: &Delivery,
        message: &TaskMessage,
    ) -> Result<Fate, HandleError> {
        let key = message.result_key();
        let mut facts = Facts::new(message, delivery.receive_count);
        let rollouts = match self.campaigns.rollouts(&key.campaign).await {
            Ok(rollouts) => {
                facts.admission = Some(Admission::of(rollouts.campaign.admits(&key)));
                rollouts
            }
            Err(e) => {
                facts.admission = Some(Admission::from(e));
                return self.decided(&facts).ok_or(HandleError::Undecided);
            }
        };
        if let Some(fate) = self.decided(&facts) {
            return Ok(fate);
        }
        let item = self
            .metadata
            .campaign(&key.campaign)
            .await
            .map_err(|source| HandleError::Campaign {
                campaign: key.campaign.clone(),
                source,
            })?;
        facts.campaign = Some(Standing::of(item));
        if let Some(fate) = self.decided(&facts) {
            return Ok(fate);
        }
        let result = self
            .metadata
            .result(&key)
            .await
            .map_err(|source| HandleError::Result {
                key: key.clone(),
                source,
            })?;
        facts.has_result = Some(result.is_some());
        if let Some(fate) = self.decided(&facts) {
            return Ok(fate);
        }
        let (outcome, lease_lost) = self.roll_out(delivery, message, &rollouts).await;
        // Cut off by the worker (an interrupt, or a stop handing it back at a step
        // boundary) unless its lease was lost: then the message may be another's already.
        let signalled = self.interrupt.is_cancelled() || (self.stop.is_cancelled() && !lease_lost);
        facts.rollout = Some(Outcome::of(&outcome, signalled));
        match (disposition(&facts, &self.config), outcome) {
            (Disposition::Fate(fate), _) => Ok(fate),
            (Disposition::Commit, Ok(record)) => self.commit(&rollouts, &record).await,
            (Disposition::Commit | Disposition::Next, _) => Err(HandleError::Undecided),
        }
    }

    /// Runs the rollout of `message` while a heartbeat extends the message's lease. Once an
    /// extension fails twice in a row the message may already be another worker's, so the
    /// rollout stops rather than race a duplicate (the conditional commit would keep one
    /// anyway). Also says whether the lease was lost.
    async fn roll_out(
        &self,
        delivery: &Delivery,
        message: &TaskMessage,
        rollouts: &Rollouts,
    ) -> (Result<TrajectoryRecord, Interrupted>, bool) {
        self.emit(WorkerEvent::Started {
            key: message.result_key(),
            attempt: message.attempt(),
        });
        let lease = self.interrupt.child_token();
        // Ends with the rollout, however it ends (a panic included).
        let _heartbeat = AbortOnDrop(tokio::spawn(extend_lease(
            self.queue.clone(),
            delivery.receipt.clone(),
            self.config.visibility,
            lease.clone(),
        )));
        let events = self.events.clone();
        let metrics = self.metrics.clone();
        let campaign = message.campaign.clone();
        let on_step = move |event: RolloutEvent| match event {
            RolloutEvent::Step { key, step, action } => {
                events(WorkerEvent::Step { key, step, action })
            }
            measured => {
                if let Some(sink) = &metrics {
                    data_points(&campaign, measured).for_each(|p| sink.publish(p));
                }
            }
        };
        let outcome = rollouts.run(message, &lease, &self.stop, &on_step).await;
        (
            outcome,
            lease.is_cancelled() && !self.interrupt.is_cancelled(),
        )
    }

    /// Commits a finished record (object, then the conditional metadata item) and removes
    /// the sample's checkpoints; the message is then deleted, as a duplicate when another
    /// attempt committed first.
    async fn commit(
        &self,
        rollouts: &Rollouts,
        record: &TrajectoryRecord,
    ) -> Result<Fate, HandleError> {
        let key = ResultKey {
            campaign: record.campaign.clone(),
            instance_id: record.instance_id.clone(),
            sample_index: record.sample_index,
        };
        let outcome = match rollouts.store.commit(record).await {
            Ok(outcome) => outcome,
            Err(source) => {
                return Err(HandleError::Commit {
                    key,
                    trajectory_id: record.trajectory_id.clone(),
                    source,
                });
            }
        };
        if let Err(e) = rollouts.store.discard_checkpoints(record).await {
            warn!(error = %error_chain(&e), "removing the sample's checkpoints failed; they expire with the failed records");
        }
        match outcome {
            CommitOutcome::Committed => {
                self.counters.committed.fetch_add(1, Ordering::Relaxed);
                self.publish(DataPoint::now(
                    Metric::RolloutsCompleted,
                    Some(&record.campaign),
                    1.0,
                ));
                info!(trajectory = %record.trajectory_id, status = record.status().as_str(),
                    exit_status = %record.exit_status.as_ref().map(ToString::to_string).unwrap_or_default(),
                    resolved = record.verification.as_ref().map(|v| v.resolved),
                    cost_usd = record.totals.cost_usd, steps = record.totals.n_steps, "trajectory committed");
                self.emit(WorkerEvent::Finished {
                    key,
                    trajectory_id: record.trajectory_id.clone(),
                    status: record.status(),
                    exit_status: record.exit_status.clone().unwrap_or(ExitStatus::Submitted),
                    resolved: record.verification.as_ref().map(|v| v.resolved),
                    cost_usd: record.totals.cost_usd,
                });
                Ok(Fate::Delete { duplicate: false })
            }
            CommitOutcome::AlreadyCommitted(_) => Ok(Fate::Delete { duplicate: true }),
        }
    }

    /// Carries out a delivery's fate on the queue (and the metadata store, for a dead
    /// letter), counting it and telling the event sink.
    async fn apply(
        &self,
        delivery: &Delivery,
        message: &TaskMessage,
        fate: Fate,
    ) -> Result<(), HandleError> {
        match fate {
            Fate::DeadLetter { reason, sample } => {
                self.dead_letter(delivery, sample.then_some(message), reason)
                    .await;
                Ok(())
            }
            Fate::HandBack { reason, delay } => {
                warn!(%reason, "cannot serve the campaign on this worker; the task is handed back");
                self.queue
                    .defer(delivery, delay)
                    .await
                    .map_err(HandleError::queue("handing the message back"))
            }
            Fate::Release => self
                .queue
                .defer(delivery, Duration::ZERO)
                .await
                .map_err(HandleError::queue("releasing the message")),
            Fate::Defer {
                reason,
                delay,
                stop_worker,
            } => {
                self.counters.deferred.fetch_add(1, Ordering::Relaxed);
                self.queue
                    .defer(delivery, delay)
                    .await
                    .map_err(HandleError::queue("deferring the message"))?;
                self.emit(WorkerEvent::CampaignStopped {
                    reason: reason.clone(),
                });
                if stop_worker {
                    self.stop_all(reason);
                }
                Ok(())
            }
            Fate::Retry {
                attempt,
                error,
                delay,
            } => {
                warn!(attempt, %error, "infrastructure failure; the sample will be retried");
                self.counters.retried.fetch_add(1, Ordering::Relaxed);
                self.emit(WorkerEvent::Retrying {
                    key: message.result_key(),
                    attempt,
                    error,
                });
                self.queue
                    .requeue(delivery, &message.after_failure().to_body(), delay)
                    .await
                    .map_err(HandleError::queue("requeueing the message for a retry"))
            }
            Fate::Leave => {
                warn!(
                    "the message's lease was lost; the rollout stopped and the sample runs again"
                );
                Ok(())
            }
            Fate::Delete { duplicate } => {
                // A duplicate too: the delivery that committed may have died before this.
                if let Some(wait) = self.settle_round(message).await? {
                    return self.come_back(delivery, wait).await;
                }
                if duplicate {
                    self.counters.duplicates.fetch_add(1, Ordering::Relaxed);
                    self.emit(WorkerEvent::Duplicate {
                        key: message.result_key(),
                    });
                }
                self.queue
                    .delete(&delivery.receipt)
                    .await
                    .map_err(HandleError::queue("deleting the message"))
            }
        }
    }
}

/// Extends the visibility of the message `receipt` names every third of `visibility`;
/// after two failures in a row, cancels `lease` and ends.
async fn extend_lease(
    queue: Arc<dyn Queue>,
    receipt: String,
    visibility: Duration,
    lease: CancellationToken,
) {
    let mut failures = 0;
    loop {
        tokio::time::sleep(visibility / 3).await;
        match queue.extend(&receipt, visibility).await {
            Ok(()) => failures = 0,
            Err(e) => {
                failures += 1;
                warn!(error = %error_chain(&e), failures, "visibility heartbeat failed");
                if failures >= 2 {
                    lease.cancel();
                    return;
                }
            }
        }
    }
}

/// A background task aborted when this is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::{
        self, CAMPAIGN, MemorySandboxes, PATCH, RecordedMetrics, START_COMMIT, ScriptedChat,
        TestBed, message, task_row,
    };
    use crate::worker::{WorkerEvent, WorkerSummary};
    use std::sync::Arc;
    use std::time::Duration;
    use synthfleet_core::budget::CampaignState;
    use synthfleet_core::message::TaskMessage;
    use synthfleet_core::metrics::{ErrorClass, Metric};
    use synthfleet_core::ports::{MetadataStore, Queue};
    use synthfleet_core::trajectory::ExitStatus;

    #[tokio::test]
    async fn a_worker_rolls_out_every_message_and_commits_its_record() {
        let bed = TestBed::submitted(&[task_row("t1"), task_row("t2")], 2).await;
        let sandboxes = MemorySandboxes::new();
        let rollouts = bed.rollouts(
            ScriptedChat::running(&["ls", "echo fixed > fix.txt"]),
            Arc::new(sandboxes.clone()),
        );
        let worker = bed.worker(rollouts, testing::config());
        let (summary, events) = bed.run(&worker).await;

        assert_eq!(
            summary,
            WorkerSummary {
                committed: 4,
                ..WorkerSummary::default()
            }
        );
        let metas = bed.metadata.trajectories(CAMPAIGN).await.expect("records");
        assert_eq!(metas.len(), 4);
        let mut spent = 0.0;
        for meta in &metas {
            let record = bed.store.load(meta).await.expect("a committed record");
            assert_eq!(record.exit_status, Some(ExitStatus::Submitted));
            assert_eq!(record.patch, PATCH);
            assert_eq!(
                record.environment.and_then(|e| e.start_commit).as_deref(),
                Some(START_COMMIT)
            );
            let actions: Vec<_> = record.steps.iter().map(|s| s.action.as_deref()).collect();
            assert_eq!(
                actions,
                [Some("ls"), Some("echo fixed > fix.txt"), None],
                "two commands, then submit"
            );
            assert_eq!((record.totals.n_steps, record.totals.llm_calls), (3, 3));
            assert_eq!(record.totals.input_tokens, 300);
            assert!(record.totals.cost_usd > 0.0);
            spent += record.totals.cost_usd;
            assert_eq!(record.verification.map(|v| v.resolved), Some(true));
        }
        let campaign = bed
            .metadata
            .campaign(CAMPAIGN)
            .await
            .expect("campaign")
            .expect("its item");
        assert!(
            (campaign.ledger.spent.as_usd() - spent).abs() < 1e-9,
            "the ledger books what the records cost"
        );
        assert!(campaign.ledger.reserved.0 == 0, "every lease settled");
        assert_eq!(
            bed.queue.stats().await.expect("stats"),
            Default::default(),
            "every message deleted"
        );
        let log = sandboxes.log();
        assert_eq!(log.created, 8, "an agent's and a verifier's sandbox each");
        assert_eq!(log.destroyed, log.created, "every sandbox removed");
        let finished = events
            .iter()
            .filter(|e| matches!(e, WorkerEvent::Finished { .. }))
            .count();
        assert_eq!(finished, 4);
    }

    /// Runs a worker of `bed` on `chat` and memory sandboxes, publishing its metrics; returns
    /// its summary and what it published.
    async fn run_publishing(
        bed: &TestBed,
        chat: ScriptedChat,
    ) -> (WorkerSummary, Arc<RecordedMetrics>) {
        let rollouts = bed.rollouts(chat, Arc::new(MemorySandboxes::new()));
        let metrics = Arc::new(RecordedMetrics::default());
        let worker = bed
            .worker(rollouts, testing::config())
            .publishing_metrics(metrics.clone());
        let (summary, _) = bed.run(&worker).await;
        (summary, metrics)
    }

    #[tokio::test]
    async fn a_worker_publishes_its_rollouts_calls_spend_sandboxes_and_queue_ages() {
        let bed = TestBed::submitted(&[task_row("t1"), task_row("t2")], 2).await;
        let (summary, metrics) = run_publishing(&bed, ScriptedChat::running(&["ls"])).await;
        assert_eq!(summary.committed, 4);

        let total = |metric| -> f64 { metrics.of(metric).iter().map(|p| p.value).sum() };
        let records = bed.metadata.trajectories(CAMPAIGN).await.expect("records");
        // One call a step: `ls`, then submit.
        let calls: u32 = records.iter().map(|r| r.summary.n_steps).sum();
        assert_eq!(calls, 8);
        assert_eq!(total(Metric::RolloutsCompleted), 4.0);
        assert_eq!(total(Metric::LlmRequests), f64::from(calls));
        assert!(metrics.of(Metric::LlmErrors).is_empty());
        let campaign = bed
            .metadata
            .campaign(CAMPAIGN)
            .await
            .expect("campaign")
            .expect("its item");
        assert!(campaign.ledger.spent.0 > 0);
        assert_eq!(
            total(Metric::SpendMicroUsd),
            campaign.ledger.spent.0 as f64,
            "the spend published is what the ledger booked"
        );
        assert_eq!(
            metrics.of(Metric::SandboxAcquireMs).len(),
            4,
            "one agent sandbox a rollout"
        );
        let ages = metrics.of(Metric::QueueAgeS);
        assert_eq!(ages.len(), 4, "one per delivery");
        assert!(ages.iter().all(|p| p.value >= 0.0));
        for point in metrics.0.lock().expect("metrics log").iter() {
            let fleet_wide = point.metric == Metric::WorkerHeartbeat;
            assert_eq!(point.campaign.is_none(), fleet_wide, "{point:?}");
            if !fleet_wide {
                assert_eq!(point.campaign.as_deref(), Some(CAMPAIGN));
            }
        }
        assert!(!metrics.of(Metric::WorkerHeartbeat).is_empty());
    }

    #[tokio::test]
    async fn every_failed_call_is_published_once_with_its_class() {
        let bed = TestBed::submitted(&[task_row("t1")], 1).await;
        let (summary, metrics) = run_publishing(&bed, ScriptedChat::unavailable()).await;
        assert_eq!(summary.dead_lettered, 1, "after max_attempts attempts");

        let attempts = testing::config().max_attempts as usize;
        assert_eq!(metrics.of(Metric::LlmRequests).len(), attempts);
        let errors = metrics.of(Metric::LlmErrors);
        assert_eq!(errors.len(), attempts, "one per failed call");
        assert!(
            errors
                .iter()
                .all(|p| p.error_class == Some(ErrorClass::Unavailable))
        );
        assert!(metrics.of(Metric::RolloutsCompleted).is_empty());
    }

    #[tokio::test]
    async fn poison_messages_are_dead_lettered_and_the_rest_served() {
        let bed = TestBed::submitted(&[task_row("t1")], 1).await;
        let stranger = TaskMessage {
            sample_index: 7,
            ..message(0)
        };
        for body in ["not json".to_owned(), stranger.to_body()] {
            bed.queue.send(&body, Duration::ZERO).await.expect("send");
        }
        let rollouts = bed.rollouts(ScriptedChat::running(&[]), Arc::new(MemorySandboxes::new()));
        let worker = bed.worker(rollouts, testing::config());
        let (summary, events) = bed.run(&worker).await;

        assert_eq!((summary.committed, summary.dead_lettered), (1, 2));
        let mut reasons: Vec<String> = bed
            .queue
            .dead_messages()
            .await
            .expect("dead letters")
            .into_iter()
            .map(|d| d.reason)
            .collect();
        reasons.sort();
        assert!(
            reasons[0].starts_with("message is not a valid task message"),
            "{reasons:?}"
        );
        assert!(
            reasons[1].starts_with("sample 7 of `t1` is outside"),
            "{reasons:?}"
        );
        for event in &events {
            if let WorkerEvent::DeadLettered { key, .. } = event {
                assert_eq!(*key, None, "neither names a sample of the campaign");
            }
        }
    }

    #[tokio::test]
    async fn a_paused_campaigns_message_is_deferred_and_the_local_runner_stops() {
        let bed = TestBed::submitted(&[task_row("t1")], 1).await;
        bed.metadata
            .set_state(CAMPAIGN, CampaignState::Paused, Some("by alice".into()))
            .await
            .expect("pause");
        let sandboxes = MemorySandboxes::new();
        let rollouts = bed.rollouts(ScriptedChat::running(&[]), Arc::new(sandboxes.clone()));
        let worker = bed.worker(rollouts, testing::config());
        let (summary, _) = bed.run(&worker).await;

        assert_eq!(
            summary,
            WorkerSummary {
                deferred: 1,
                stop_reason: Some("campaign `demo` is paused: by alice".into()),
                ..WorkerSummary::default()
            }
        );
        assert_eq!(sandboxes.log().created, 0, "nothing ran");
        // The message is back, visible at once — unless the receive loop took it again in
        // the instant the stop arrived (a receive that completes as the worker stops is
        // dropped, though its transaction may still commit just after `run` returns; the
        // delivery comes back after its visibility timeout, or at once when `run` starts
        // again and recovers its predecessor's deliveries). So receive first, then look.
        let again = bed
            .queue
            .receive(1, Duration::from_secs(1))
            .await
            .expect("receive");
        let stats = bed.queue.stats().await.expect("stats");
        assert_eq!(stats.dead, 0);
        assert_eq!(stats.visible + stats.in_flight, 1, "{stats:?}");
        match again.first() {
            Some(delivery) => {
                assert_eq!(delivery.receive_count, 1, "a deferral costs no delivery")
            }
            None => assert_eq!(stats.in_flight, 1, "taken as the worker stopped: {stats:?}"),
        }
    }

    #[tokio::test]
    async fn an_infrastructure_failure_is_retried_with_its_count_then_dead_lettered() {
        let bed = TestBed::submitted(&[task_row("t1")], 1).await;
        let sandboxes = MemorySandboxes::new();
        let rollouts = bed.rollouts(ScriptedChat::unavailable(), Arc::new(sandboxes.clone()));
        let worker = bed.worker(rollouts, testing::config());
        let (summary, events) = bed.run(&worker).await;

        assert_eq!(
            summary,
            WorkerSummary {
                retried: 2,
                dead_lettered: 1,
                ..WorkerSummary::default()
            }
        );
        let attempts: Vec<u32> = events
            .iter()
            .filter_map(|e| match e {
                WorkerEvent::Started { attempt, .. } => Some(*attempt),
                _ => None,
            })
            .collect();
        assert_eq!(attempts, [1, 2, 3], "each retry carries one more failure");
        let letters = bed.metadata.dead_letters(CAMPAIGN).await.expect("records");
        assert_eq!(letters.len(), 1);
        assert_eq!(letters[0].attempts, 3);
        assert!(
            letters[0]
                .error
                .starts_with("gave up after 3 attempts; last error: error:llm_unavailable"),
            "{}",
            letters[0].error
        );
        let dead = bed.queue.dead_messages().await.expect("dead messages");
        let body = TaskMessage::parse(&dead[0].body).expect("a task message");
        assert_eq!(body.failures, 2, "the dead copy carries its failures");
        assert_eq!(dead[0].receive_count, 1, "each attempt was a fresh copy");
        assert!(
            bed.metadata
                .trajectories(CAMPAIGN)
                .await
                .expect("records")
                .is_empty()
        );
        let log = sandboxes.log();
        assert_eq!(log.destroyed, log.created, "every sandbox removed");
    }

    /// A failure's text reaches the dead letter (and the record) as it always read: its
    /// typed errors are rendered once, where the text is stored.
    #[tokio::test]
    async fn a_failure_is_stored_with_its_whole_chain() {
        let bed = TestBed::submitted(&[task_row("t1")], 1).await;
        let sandboxes = MemorySandboxes::answering(|command| {
            command
                .contains("diff --cached")
                .then(|| testing::exited(128, "fatal: bad revision"))
        });
        let rollouts = bed.rollouts(ScriptedChat::running(&[]), Arc::new(sandboxes));
        let worker = bed.worker(rollouts, testing::config());
        let (summary, _) = bed.run(&worker).await;

        assert_eq!((summary.retried, summary.dead_lettered), (2, 1));
        let letters = bed.metadata.dead_letters(CAMPAIGN).await.expect("records");
        let workdir = &bed.campaign.tasks[0].workdir;
        assert_eq!(
            letters[0].error,
            format!(
                "gave up after 3 attempts; last error: error:sandbox: reading the final patch failed: git diff in {workdir} exited with 128: fatal: bad revision"
            )
        );
    }

    /// A round decided moments ago and not yet sent is its decider's to send: a
    /// redelivery of its last sample sends nothing and is told how long to wait. Once the
    /// grace is over the decider is taken for dead, and the redelivery sends the round,
    /// once.
    #[tokio::test]
    async fn a_round_its_decider_is_sending_is_left_to_it_for_the_grace() {
        use chrono::Utc;
        use synthfleet_core::campaign::Campaign;
        use synthfleet_core::lifecycle::Trigger;
        use synthfleet_core::message::ResultKey;
        use synthfleet_core::sampling::{
            RoundDecision, RoundKey, SEND_GRACE, SamplePlan, Settled, Verdict, after_outcome,
        };
        use synthfleet_core::testing::sample_meta;

        let bed = TestBed::submitted(&[task_row("t1"), task_row("t2")], 1).await;
        // The bed's own messages are not this test's.
        for delivery in bed
            .queue
            .receive(10, Duration::from_secs(60))
            .await
            .expect("receive")
        {
            bed.queue.delete(&delivery.receipt).await.expect("delete");
        }
        let config = Campaign::parse(
            std::path::Path::new("campaign.toml"),
            &format!(
            "name = \"{CAMPAIGN}\"\ntasks = [\"t.jsonl\"]\nsamples_per_task = 4\nbudget_usd = 1\n[sampling]\nstrategy = \"adaptive\"\nround_size = 2\nmax_per_task = 4\n[[models]]\nname = \"m\"\nprovider = \"replay\"\n"
            ),
        )
        .expect("an adaptive campaign");
        bed.metadata
            .submit_campaign(
                CAMPAIGN,
                bed.campaign.budget(),
                &SamplePlan::of(&config, 2),
                &Trigger::Request,
            )
            .await
            .expect("submit");
        let tasks = &bed.campaign.tasks;
        // Both tasks' first rounds are complete, with mixed outcomes.
        for task in tasks {
            for sample in 0..2 {
                let key = ResultKey {
                    campaign: CAMPAIGN.into(),
                    instance_id: task.instance_id.clone(),
                    sample_index: sample,
                };
                let mut meta = sample_meta(&key, &format!("{}-{sample}", task.instance_id));
                meta.resolved = Some(sample == 0);
                bed.metadata.commit(&meta).await.expect("commit");
            }
        }
        // Each round was decided by a delivery that has not marked it sent: t1's just
        // now, t2's two minutes ago.
        let ago = |task: &str, seconds: i64| RoundDecision {
            round: RoundKey {
                campaign: CAMPAIGN.into(),
                instance_id: task.into(),
                round: 0,
            },
            verdict: Verdict::Continue {
                first: 2,
                samples: 2,
            },
            resolved: 1,
            judged: 2,
            decided_at: Utc::now() - chrono::Duration::seconds(seconds),
            sent: false,
        };
        bed.metadata
            .decide_round(&ago("t1", 0))
            .await
            .expect("decide t1");
        bed.metadata
            .decide_round(&ago("t2", 120))
            .await
            .expect("decide t2");
        let last = |task: &synthfleet_core::task::Task| TaskMessage::new(CAMPAIGN, task, 1);
        let settle = |message: TaskMessage| {
            let config = config.clone();
            let (queue, metadata) = (bed.queue.clone(), bed.metadata.clone());
            async move {
                after_outcome(&config, &message, queue.as_ref(), metadata.as_ref())
                    .await
                    .expect("settle")
            }
        };
        // The samples sent since the last look.
        let sent = || async {
            let mut samples = Vec::new();
            for delivery in bed
                .queue
                .receive(10, Duration::from_secs(60))
                .await
                .expect("receive")
            {
                let m = TaskMessage::parse(&delivery.body).expect("a task message");
                samples.push((m.task.instance_id, m.sample_index));
                bed.queue.delete(&delivery.receipt).await.expect("delete");
            }
            samples.sort();
            samples
        };

        match settle(last(&tasks[0])).await {
            Settled::BeingSent { wait } => assert!(
                wait > SEND_GRACE - Duration::from_secs(10) && wait <= SEND_GRACE,
                "{wait:?}"
            ),
            other => panic!("t1's round is its decider's to send: {other:?}"),
        }
        assert_eq!(sent().await, [], "nothing sent for t1");

        assert_eq!(settle(last(&tasks[1])).await, Settled::Done);
        assert_eq!(sent().await, [("t2".to_owned(), 2), ("t2".to_owned(), 3)]);
        // Sent and marked so: settling again sends nothing more.
        assert_eq!(settle(last(&tasks[1])).await, Settled::Done);
        assert_eq!(sent().await, []);
    }
}

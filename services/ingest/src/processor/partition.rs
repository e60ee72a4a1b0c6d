//! The owner of one partition: restores it from the log, claims it, then answers its commands
//! in batches, one log record per command record.

use super::schemas::BatchSchemas;
use super::window::{self, Remembering};
use super::{ProcessorError, Restored, Shared, SnapshotWritten};
use super::{dead_letter, intake, metrics};
use crate::stages::Stage;
use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Instant;
use tally_core::log::{LogRecord, Replica, Verdict};
use tally_core::memory;
use tally_core::projection::RowKey;
use tally_core::{Actor, Command, CommandBody, CommandId, CommandRecord, LedgerId, TenantId, TxId, decide};
use tally_kafka::{Assignment, Headers, LogTail, Outgoing, Record, trace_context};
use tally_runtime::now_ms;
use tally_store::bridge::blocking;
use tally_store::snapshot::{self, ResumePoint, Snapshot};
use tokio::sync::mpsc;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// How often a new owner claims again after losing a claim race before it gives up (and the
/// group thread restarts it).
const CLAIM_ATTEMPTS_MAX: u32 = 5;

/// Restores the partition, claims it, and answers commands until cancelled or the intake closes.
pub(super) async fn own(
    shared: Arc<Shared>,
    assignment: Assignment,
    mut records: mpsc::Receiver<Record>,
) -> Result<(), ProcessorError> {
    let partition = assignment.partition;
    let (replica, claim, forgotten_upto) = match take_over(&shared, partition, true).await {
        Err(TakeOver::SnapshotAhead { covers, claim }) => {
            tracing::warn!(
                partition,
                covers,
                claim,
                "the snapshot covers more than the log holds; ignoring snapshots"
            );
            take_over(&shared, partition, false).await
        }
        other => other,
    }
    .map_err(TakeOver::into_error)?;
    let start = replica.reader.next_command_offset();
    tracing::info!(partition, epoch = replica.reader.epoch(), start, "partition restored and claimed");
    assignment.start_at(start);
    let cancel = assignment.cancel.clone();
    let remembering = (shared.config.window.clone())
        .map(|config| Remembering::restored(config, partition, &replica.state, forgotten_upto, claim));
    let mut owner = Owner {
        shared,
        assignment,
        partition,
        replica,
        remembering,
        expiring: HashSet::new(),
        log_end: Some(claim),
        since_snapshot: 0,
        last_snapshot: Instant::now(),
        snapshotting: None,
    };
    let mut batch = Vec::with_capacity(owner.shared.config.batch_max);
    let mut expiry = tokio::time::interval(owner.shared.config.expiry_interval);
    expiry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => return Ok(()),
            n = records.recv_many(&mut batch, owner.shared.config.batch_max) => {
                if n == 0 {
                    return Ok(());
                }
                owner.answer(&mut batch).await?;
            }
            _ = expiry.tick() => owner.request_expiries().await?,
        }
    }
}

enum TakeOver {
    Failed(ProcessorError),
    /// The newest snapshot covers offsets the log does not have (the topic was recreated, or
    /// the store belongs to another cluster): restore from the log alone.
    SnapshotAhead {
        covers: i64,
        claim: i64,
    },
}

impl From<ProcessorError> for TakeOver {
    fn from(e: ProcessorError) -> Self {
        TakeOver::Failed(e)
    }
}

impl TakeOver {
    fn into_error(self) -> ProcessorError {
        match self {
            TakeOver::Failed(e) => e,
            TakeOver::SnapshotAhead { covers, claim } => ProcessorError::Restore(format!(
                "a snapshot covers offset {covers}, beyond the claim at {claim}"
            )),
        }
    }
}

/// Restores the replica from the newest valid snapshot (if `use_snapshot` and there is a
/// store), reads the partition on to its end, appends a claim with the next epoch, and reads on
/// to the claim. The claim wins if it reads as a new epoch there; otherwise another owner
/// claimed the same epoch first, and this one claims again above it. Returns the replica, the
/// offset of its winning claim and what the snapshot it started from had forgotten (-1:
/// nothing).
async fn take_over(
    shared: &Arc<Shared>,
    partition: i32,
    use_snapshot: bool,
) -> Result<(Replica, i64, i64), TakeOver> {
    let mut resume = if use_snapshot { resume_point(shared, partition).await? } else { ResumePoint::start() };
    if resume.forgotten_upto >= 0 && shared.config.window.is_none() {
        // A processor without a window keeps everything and reads nothing back: a snapshot of a
        // state that forgot cannot give it that, the log from its start can.
        tracing::info!(
            partition,
            forgotten_upto = resume.forgotten_upto,
            "the newest snapshot forgot transactions and command ids, and no window is set: reading the log from its start"
        );
        resume = ResumePoint::start();
    }
    let (covers, from, forgotten_upto, mut replica) =
        (resume.snapshot, resume.next, resume.forgotten_upto, resume.replica);
    let (kafka, topic) = (shared.config.kafka.clone(), shared.config.topics.events.clone());
    let mut tail =
        blocking(move || Ok::<_, ProcessorError>(LogTail::open_at(&kafka, &topic, partition, from)?)).await?;
    let end = {
        let codec = shared.codec.clone();
        let recall = recall_for_replay(shared, partition, forgotten_upto);
        let (t, r, end) = blocking(move || {
            let end = tail.end()?;
            tail.read_until(&codec, &mut replica, end, recall)??;
            Ok::<_, ProcessorError>((tail, replica, end))
        })
        .await?;
        (tail, replica) = (t, r);
        end
    };
    tracing::debug!(partition, end, epoch = replica.reader.epoch(), "log read");
    for _ in 0..CLAIM_ATTEMPTS_MAX {
        let claim =
            LogRecord::Claim { epoch: replica.reader.epoch() + 1, owner: shared.config.owner.clone() };
        let at = shared.log.append(partition, &claim).await.map_err(ProcessorError::from)?;
        if let Some(covers) = covers.filter(|_| at < tail.position()) {
            return Err(TakeOver::SnapshotAhead { covers, claim: at });
        }
        let codec = shared.codec.clone();
        let recall = recall_for_replay(shared, partition, forgotten_upto);
        let (t, r, last) = blocking(move || {
            let last = tail.read_until(&codec, &mut replica, at + 1, recall)??;
            Ok::<_, ProcessorError>((tail, replica, last))
        })
        .await?;
        (tail, replica) = (t, r);
        if last == Some((at, Verdict::NewEpoch)) {
            let restored = Restored {
                partition,
                snapshot: covers,
                records_read: tail.records_read(),
                epoch: replica.reader.epoch(),
            };
            tracing::info!(partition, snapshot = ?covers, records_read = restored.records_read, "restored");
            shared.restores.lock().expect("not poisoned").push(restored);
            return Ok((replica, at, forgotten_upto));
        }
        tracing::warn!(partition, at, epoch = replica.reader.epoch(), "lost a claim race; claiming again");
    }
    Err(TakeOver::Failed(ProcessorError::Restore(format!(
        "partition {partition}: lost {CLAIM_ATTEMPTS_MAX} claim races in a row"
    ))))
}

/// What a replay does when an event names a transaction the restored state lacks (its
/// snapshot's owner forgot it): read it from the live projection once that covers everything
/// the snapshot's state forgot.
/// Without a window configured nothing can be read, and the restore fails with the keys named.
fn recall_for_replay(
    shared: &Shared,
    partition: i32,
    forgotten_upto: i64,
) -> impl FnMut(&mut Replica, Vec<RowKey>) -> Result<(), ProcessorError> + Send + 'static {
    let store = shared.config.window.as_ref().map(|w| w.projections.clone());
    move |replica, keys| {
        let Some(store) = &store else {
            return Err(ProcessorError::Recall(format!(
                "partition {partition}: the snapshot lacks {keys:?}, and no projection is configured to read them from"
            )));
        };
        let rows = window::recall_rows(store.as_ref(), partition, forgotten_upto, &keys)?;
        memory::recall(&mut replica.state, rows);
        Ok(())
    }
}

/// After the newest usable snapshot of the partition, if snapshots are kept (read off the
/// async workers: the store does file I/O).
async fn resume_point(shared: &Arc<Shared>, partition: i32) -> Result<ResumePoint, ProcessorError> {
    let store = shared.config.snapshots.clone();
    let log = shared.config.topics.events.clone();
    blocking(move || Ok(snapshot::resume_point(store.as_deref(), &log, partition, i64::MAX))).await
}

/// A pending transaction, as the expiry timer tracks it.
type TxKey = (TenantId, LedgerId, TxId);

struct Owner {
    shared: Arc<Shared>,
    /// For telling the group how far this owner has answered.
    assignment: Assignment,
    partition: i32,
    replica: Replica,
    /// What of the state stays in memory, if a window is configured.
    remembering: Option<Remembering>,
    /// Expiries requested and not yet seen answered (so each is requested once per owner).
    expiring: HashSet<TxKey>,
    /// The offset of the last record of the log, while this owner knows the replica equals the
    /// log's fold up to it: its own records landed right after its claim and each other, so no
    /// other writer's record is among them. `None` once that is not known (then no snapshots).
    log_end: Option<i64>,
    /// Records appended since the last snapshot.
    since_snapshot: u64,
    last_snapshot: Instant,
    /// The snapshot being written, if any.
    snapshotting: Option<tokio::task::JoinHandle<()>>,
}

impl Owner {
    /// Answers a batch of command records, in order, a round at a time (see [`Owner::answer_round`]).
    async fn answer(&mut self, batch: &mut Vec<Record>) -> Result<(), ProcessorError> {
        let mut waiting: VecDeque<Record> = batch.drain(..).collect();
        while !waiting.is_empty() {
            self.answer_round(&mut waiting).await?;
        }
        Ok(())
    }

    /// Answers records from the front of `waiting`: one log record per command record not
    /// answered yet. Dead letters are durable before the markers that answer them; the records
    /// are durable before the command offsets are stored. A repeat of a command answered in the
    /// same round ends the round before it: the repeat's event names the first answer's offset,
    /// known only once that answer is appended.
    async fn answer_round(&mut self, waiting: &mut VecDeque<Record>) -> Result<(), ProcessorError> {
        let started = Instant::now();
        let now = now_ms();
        let epoch = self.replica.reader.epoch();
        let mut records = Vec::with_capacity(waiting.len());
        let mut traces = Vec::with_capacity(waiting.len());
        let mut dead_letters = Vec::new();
        // One allow-list for the whole batch, even if it is reloaded meanwhile.
        let producers = self.shared.config.producers.as_ref().map(|p| p.current_arc());
        let schemas = match &self.shared.config.schemas {
            None => BatchSchemas::default(),
            Some(lookup) => {
                let cancel = &self.assignment.cancel;
                match lookup.batch(&self.shared.codec, waiting.iter(), self.partition, cancel).await {
                    Some(schemas) => schemas,
                    None => {
                        waiting.clear(); // given up while the registry was unavailable: unanswered
                        return Ok(());
                    }
                }
            }
        };
        let classified: Vec<_> = (waiting.iter())
            .map(|message| intake::classify(&self.shared.codec, message, producers.as_deref(), &schemas))
            .collect();
        if let Some(remembering) = &mut self.remembering {
            let commands = classified.iter().filter_map(|c| c.as_ref().ok());
            remembering.recall(&mut self.replica.state, commands).await?;
        }
        let mut classified = classified.into_iter();
        while let Some(message) = waiting.pop_front() {
            let command = classified.next().expect("one per waiting record");
            let command_offset = message.offset;
            if command_offset < self.replica.reader.next_command_offset() {
                continue; // delivered again (a seek, a restart): already answered
            }
            if let Some(produced_ms) = message.timestamp_ms {
                Stage::HandOver.observe_since(produced_ms, now);
            }
            let (record, trace) = match command {
                Ok(command) if self.answered_this_round(&command) => {
                    debug_assert!(!records.is_empty(), "an unplaced answer outside a round");
                    waiting.push_front(message);
                    break;
                }
                Ok(command) => {
                    let trace = answer_trace(&message, &command.command_id);
                    let event = decide(&self.replica.state, &command, now);
                    (LogRecord::Event { epoch, command_offset, event }, trace)
                }
                Err(why) => {
                    // The record could not be read as a command: its place and key name it.
                    let key = message.key_text();
                    tracing::warn!(
                        partition = self.partition,
                        command_offset,
                        key = key.as_deref().unwrap_or(""),
                        code = why.reason.code(),
                        "dead-lettered: {}",
                        why.detail
                    );
                    let reason = why.marker_reason();
                    dead_letters.push((message, why));
                    (LogRecord::DeadLettered { epoch, command_offset, reason }, None)
                }
            };
            // Folds the answer exactly as every reader of the log will (its offset comes below).
            let verdict = self.replica.read_unplaced(&record);
            debug_assert_eq!(verdict, Verdict::Apply);
            records.push(record);
            traces.push(trace);
        }
        if records.is_empty() {
            return Ok(());
        }
        tracing::trace!(partition = self.partition, records = records.len(), "answering a batch");
        Stage::Decide.observe(started.elapsed());
        let appending = Instant::now();
        let dead_letter_topic = &self.shared.config.topics.dead_letter;
        for (message, why) in &dead_letters {
            dead_letter::send(self.shared.producer(), dead_letter_topic, message, why).await?;
        }
        let offsets = self.shared.log.append_all(self.partition, &records, &traces).await?;
        Stage::Append.observe(appending.elapsed());
        for (record, offset) in records.iter().zip(&offsets) {
            self.replica.place(record, *offset);
            if let Some(remembering) = &mut self.remembering {
                remembering.changed(*offset, record);
            }
        }
        // Counted once durable (a failed append is answered again by the next owner).
        for record in &records {
            if let LogRecord::Event { event, .. } = record {
                metrics::answered(event);
            }
        }
        for (_, why) in &dead_letters {
            metrics::DEAD_LETTERS.with_label_values(&[why.reason.code()]).inc();
        }
        metrics::BATCH_RECORDS.observe(records.len() as f64);
        metrics::BATCH_SECONDS.observe(started.elapsed().as_secs_f64());
        let next_offset = self.replica.reader.next_command_offset();
        self.assignment.done_before(next_offset);
        self.extend_log_end(&offsets);
        self.snapshot_if_due();
        if let (Some(remembering), Some(&end)) = (&mut self.remembering, offsets.last()) {
            remembering.forget_due(&mut self.replica.state, end).await?;
        }
        Ok(())
    }

    /// Whether `command` repeats a command id whose first answer is in the round being decided
    /// (folded, not yet appended, so its offset is not known).
    fn answered_this_round(&self, command: &Command) -> bool {
        let known = self.replica.state.command(&command.tenant, &command.body.stream(), &command.command_id);
        known.is_some_and(|first| first.offset == CommandRecord::UNPLACED)
    }

    /// Follows the log's end through this owner's own appends, for as long as they are
    /// contiguous (see [`Owner::log_end`]).
    fn extend_log_end(&mut self, offsets: &[i64]) {
        let Some(end) = self.log_end else { return };
        let contiguous = offsets.iter().zip(end + 1..).all(|(offset, expected)| *offset == expected);
        self.since_snapshot += offsets.len() as u64;
        self.log_end = if contiguous {
            Some(end + offsets.len() as i64)
        } else {
            tracing::warn!(
                partition = self.partition,
                "another writer's records are in the log: no more snapshots from this owner"
            );
            None
        };
    }

    /// Writes a snapshot when enough records or time passed, in the background (encoding and
    /// storing a large state takes seconds; only the copy of the state is paid here), one at a
    /// time per partition. A failed snapshot is only a lost shortcut: it is logged, and
    /// processing goes on.
    fn snapshot_if_due(&mut self) {
        let config = &self.shared.config;
        let (Some(store), Some(covers)) = (config.snapshots.clone(), self.log_end) else { return };
        let due = self.since_snapshot >= config.snapshot_every
            || (self.since_snapshot > 0 && self.last_snapshot.elapsed() >= config.snapshot_interval);
        if !due || self.snapshotting.as_ref().is_some_and(|task| !task.is_finished()) {
            return;
        }
        let (log, partition) = (config.topics.events.clone(), self.partition);
        let forgotten_upto = self.remembering.as_ref().map_or(-1, Remembering::forgotten_upto);
        let taken = Snapshot { covers, replica: self.replica.clone(), forgotten_upto };
        let written = self.shared.snapshots_written.clone();
        self.snapshotting = Some(tokio::task::spawn_blocking(move || {
            match snapshot::save(store.as_ref(), &log, partition, &taken) {
                Ok(()) => {
                    tracing::debug!(partition, covers, "snapshot written");
                    let at = std::time::SystemTime::now();
                    let newest = SnapshotWritten { partition, covers, at };
                    let unix = at.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
                    metrics::SNAPSHOT_WRITTEN.with_label_values(&[&partition.to_string()]).set(unix);
                    written.lock().expect("not poisoned").insert(partition, newest);
                }
                Err(e) => tracing::warn!(partition, covers, "writing a snapshot: {e}"),
            }
        }));
        self.since_snapshot = 0;
        self.last_snapshot = Instant::now();
    }

    /// Pending transactions expire on time even when no command arrives for their ledger: the
    /// owner sends `ExpirePending` through the commands partition like any other command, so
    /// expiry is answered exactly once like everything else.
    async fn request_expiries(&mut self) -> Result<(), ProcessorError> {
        let due = self.replica.state.expired_pending(now_ms());
        let due_set: HashSet<TxKey> = due.iter().cloned().collect();
        self.expiring.retain(|k| due_set.contains(k));
        for key in due {
            if self.expiring.contains(&key) {
                continue;
            }
            let command = expiry_command(&key);
            let payload = self.shared.codec.encode_command(&command);
            let record_key = command.kafka_key();
            let record = Outgoing::to(&self.shared.config.topics.commands, &payload)
                .partition(self.partition)
                .key(record_key.as_bytes());
            self.shared.producer().send(record, None).await?;
            self.expiring.insert(key);
        }
        Ok(())
    }
}

/// The command that expires a pending transaction. Its id is derived from the transaction, so
/// a repeated request (another owner, a restart) is recognisably the same.
fn expiry_command((tenant, ledger, tx_id): &TxKey) -> Command {
    let digest = xxhash_rust::xxh3::xxh3_128(format!("{ledger}/{tx_id}").as_bytes());
    Command {
        tenant: tenant.clone(),
        command_id: CommandId::parse(format!("expire-{digest:032x}")).expect("hex is a valid id"),
        actor: Actor::parse("tally-expiry").expect("a valid actor"),
        body: CommandBody::ExpirePending { ledger: ledger.clone(), tx_id: tx_id.clone() },
    }
}

/// The trace headers of the event that answers a traced command: the context of a span for
/// the processor's answer, a child of the command's. Untraced commands cost nothing here.
fn answer_trace(message: &Record, command_id: &CommandId) -> Option<Headers> {
    let headers = &message.headers;
    if !trace_context::is_traced(headers) {
        return None;
    }
    let span = tracing::info_span!("process command", command_id = %command_id);
    let _ = span.set_parent(trace_context::context_of(headers));
    Some(trace_context::headers_of(&span.context()))
}

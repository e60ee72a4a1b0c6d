//! What a partition owner keeps in memory: its state's transactions and command ids last
//! changed within a window of recent events, and those the live projection does not cover yet.
//! Older ones are forgotten and read back from the projection when a command names them
//! (`tally_core::memory` has the rules and why they keep every answer the same).

use super::ProcessorError;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tally_core::log::LogRecord;
use tally_core::memory::{self, Window};
use tally_core::projection::{Row, RowKey};
use tally_core::{Command, State};
use tally_store::bridge::blocking;
use tally_store::projections::ProjectionStore;

/// How the processor bounds its memory: configured with [`super::ProcessorConfig::window`].
#[derive(Clone)]
pub struct StateWindow {
    /// The projection that holds what is forgotten (the live version is read).
    pub projections: Arc<dyn ProjectionStore>,
    /// Transactions and command ids last changed in the newest this-many events of a
    /// partition stay in memory (if the projection is behind, more do: only what it covers is
    /// forgotten).
    pub events: u64,
}

impl std::fmt::Debug for StateWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateWindow").field("events", &self.events).finish_non_exhaustive()
    }
}

/// How often the live projection's checkpoint is read to move the horizon on.
const CHECKPOINT_READ_EVERY: Duration = Duration::from_secs(1);
/// How long a recall waits for the projection to cover what was forgotten before the
/// partition task fails (and starts over).
const RECALL_WAIT_MAX: Duration = Duration::from_secs(60);

/// One partition's window (see the module).
pub(super) struct Remembering {
    config: StateWindow,
    partition: i32,
    window: Window,
    /// The live projection's checkpoint for this partition as read one read before the last
    /// (at least [`CHECKPOINT_READ_EVERY`] ago), and as last read. Forgetting goes up to the
    /// older one: on Cassandra and Scylla the logged batch that moved a checkpoint is atomic but
    /// not isolated, so its rows may still be landing when the checkpoint is first seen.
    projected: (Option<i64>, Option<i64>),
    read_at: Option<Instant>,
}

impl Remembering {
    /// The window of a state just restored, with its claim at `claim`: everything it holds
    /// counts as changed there, and what its snapshot's owner forgot (up to `forgotten_upto`;
    /// -1: nothing) is read back when named.
    pub(super) fn restored(
        config: StateWindow,
        partition: i32,
        state: &State,
        forgotten_upto: i64,
        claim: i64,
    ) -> Self {
        let mut window = Window::after(forgotten_upto);
        window.changed_all(claim, state);
        Remembering { config, partition, window, projected: (None, None), read_at: None }
    }

    /// Puts back into `state` what deciding `commands` reads and the state forgot.
    pub(super) async fn recall<'a>(
        &mut self,
        state: &mut State,
        commands: impl Iterator<Item = &'a Command>,
    ) -> Result<(), ProcessorError> {
        if self.window.forgotten_upto() < 0 {
            return Ok(()); // nothing forgotten: whatever the state lacks was never used
        }
        let mut keys: Vec<RowKey> = commands.flat_map(|c| memory::keys_read_by_command(state, c)).collect();
        if keys.is_empty() {
            return Ok(());
        }
        keys.sort();
        keys.dedup();
        let (store, partition, covered) =
            (self.config.projections.clone(), self.partition, self.window.forgotten_upto());
        let rows = blocking(move || recall_rows(store.as_ref(), partition, covered, &keys)).await?;
        self.window.recalled(rows.iter().map(|(key, _)| key));
        memory::recall(state, rows);
        Ok(())
    }

    /// The highest offset whose changes were forgotten (-1: none), for snapshots.
    pub(super) fn forgotten_upto(&self) -> i64 {
        self.window.forgotten_upto()
    }

    /// Notes what the record appended at `offset` changed.
    pub(super) fn changed(&mut self, offset: i64, record: &LogRecord) {
        self.window.changed(offset, record);
    }

    /// Forgets from `state` what was last changed more than the window's events before `end`
    /// (the offset of the newest record) and is covered by the live projection (as read at
    /// least a second ago).
    pub(super) async fn forget_due(&mut self, state: &mut State, end: i64) -> Result<(), ProcessorError> {
        if self.read_at.is_none_or(|at| at.elapsed() >= CHECKPOINT_READ_EVERY) {
            let (store, partition) = (self.config.projections.clone(), self.partition);
            let latest = blocking(move || {
                let version = store.live_version()?;
                Ok::<_, ProcessorError>(store.checkpoint(version, partition)?)
            })
            .await?;
            self.projected = (self.projected.1, latest);
            self.read_at = Some(Instant::now());
        }
        let Some(projected) = self.projected.0 else { return Ok(()) };
        let horizon = projected.min(end.saturating_sub(self.config.events as i64));
        let forgotten = self.window.forget_upto(horizon, state);
        super::metrics::FORGOTTEN.inc_by(forgotten as u64);
        Ok(())
    }
}

/// Reads `keys` from the live projection of `partition` once its checkpoint covers offset
/// `covered` (so every record forgotten up to there is among its rows, and a key it lacks was
/// never used), waiting up to [`RECALL_WAIT_MAX`] for it. Blocking.
pub(super) fn recall_rows(
    store: &dyn ProjectionStore,
    partition: i32,
    covered: i64,
    keys: &[RowKey],
) -> Result<Vec<(RowKey, Row)>, ProcessorError> {
    let deadline = Instant::now() + RECALL_WAIT_MAX;
    loop {
        let version = store.live_version()?;
        if covered < 0 || store.checkpoint(version, partition)?.is_some_and(|c| c >= covered) {
            let rows = store.rows_named(version, keys)?;
            // A switch meanwhile may have dropped the version's rows under the read: read again.
            if store.live_version()? == version {
                super::metrics::RECALLED.inc_by(rows.len() as u64);
                return Ok(rows);
            }
            continue;
        }
        if Instant::now() >= deadline {
            return Err(ProcessorError::Recall(format!(
                "partition {partition}: the live projection does not reach offset {covered}, which \
                 forgotten transactions and command ids need (waited {RECALL_WAIT_MAX:?})"
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

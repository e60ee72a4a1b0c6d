//! Rebuilding the projections: a new version folded from offset 0 beside the live one, then
//! switched to (DESIGN.md section 2).
//!
//! A rebuild is a projector of its own ([`Target::Version`], its own consumer group) writing a
//! version above the live one, so it inherits the projector's guarantees: checkpoints written
//! with their rows, crash and rebalance safety. An interrupted rebuild resumes from its own
//! checkpoints when started again. Readers keep reading the live version meanwhile.
//!
//! It is caught up when, in every partition, its checkpoint has reached the live version's.
//! Then it stops, switches the live version ([`ProjectionStore::switch_live`], refused if
//! someone else switched first), and drops the old version: from the switch on, commits to the
//! old version are refused, so a live projector that has not noticed yet starts over on the new
//! version instead of writing a frozen one. At the switch the new version may be a batch or two
//! behind what the old one showed; the live projector folds that gap within moments.
//!
//! Replaying the log runs no side effects: folding only computes rows. The sinks
//! (`tally-sink`) read the log themselves with positions of their own, so a rebuild sends
//! nothing again (tested in `tests/sinks.rs`).

use crate::{Projector, ProjectorConfig, ProjectorError, Target};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tally_store::bridge::blocking;
use tally_store::projections::{ProjectionStore, Version};
use tokio_util::sync::CancellationToken;

/// How often a running rebuild looks at its progress.
const POLL: Duration = Duration::from_millis(200);

/// Where a rebuild stands. Positions are log records (offset + 1, summed over partitions).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RebuildProgress {
    /// The version being built.
    pub version: Version,
    /// The version readers read until the switch.
    pub live: Version,
    /// Log records the new version covers.
    pub done: u64,
    /// Log records the live version covers: what the new version must reach.
    pub target: u64,
    /// Records folded per second since this rebuild started.
    pub rate: f64,
    /// Every partition has reached the live version's checkpoint.
    pub caught_up: bool,
}

/// A running rebuild.
pub struct Rebuild {
    store: Arc<dyn ProjectionStore>,
    partitions: i32,
    version: Version,
    live: Version,
    projector: tally_runtime::Handle<crate::ProjectorStatus>,
    started: Instant,
    /// Records covered when this run started (a resumed rebuild), for the rate.
    done_at_start: u64,
}

impl Rebuild {
    /// Starts building the next version of the projections of `partitions` events partitions.
    /// `template` is the live projector's configuration; the rebuild writes its own version in
    /// its own consumer group. An unfinished rebuild (a version above the live one) is resumed.
    pub async fn start(template: ProjectorConfig, partitions: i32) -> Result<Rebuild, ProjectorError> {
        let store = template.store.clone();
        let (live, versions) = {
            let store = store.clone();
            blocking(move || Ok::<_, ProjectorError>((store.live_version()?, store.versions()?))).await?
        };
        let newest = versions.iter().copied().max().unwrap_or(live);
        let version = if newest > live { newest } else { live + 1 };
        let mut config = template;
        config.target = Target::Version(version);
        config.group_id = format!("{}.rebuild-v{version}", config.group_id);
        let projector = Projector::build(config)?.run(CancellationToken::new());
        let mut rebuild = Rebuild {
            store,
            partitions,
            version,
            live,
            projector,
            started: Instant::now(),
            done_at_start: 0,
        };
        rebuild.done_at_start = rebuild.progress().await?.done;
        tracing::info!(version, live, resumed_at = rebuild.done_at_start, "projection rebuild started");
        Ok(rebuild)
    }

    /// The version being built.
    pub fn version(&self) -> Version {
        self.version
    }

    /// Reads where the new version and the live one stand.
    pub async fn progress(&self) -> Result<RebuildProgress, ProjectorError> {
        let (store, partitions, version, live) =
            (self.store.clone(), self.partitions, self.version, self.live);
        let (done, target, caught_up) = blocking(move || {
            let (mut done, mut target, mut caught_up) = (0, 0, true);
            for partition in 0..partitions {
                let built = store.checkpoint(version, partition)?;
                let serving = store.checkpoint(live, partition)?;
                caught_up &= built >= serving;
                done += built.map_or(0, |c| c as u64 + 1);
                target += serving.map_or(0, |c| c as u64 + 1);
            }
            Ok::<_, ProjectorError>((done, target, caught_up))
        })
        .await?;
        let elapsed = self.started.elapsed().as_secs_f64().max(1e-3);
        let rate = done.saturating_sub(self.done_at_start) as f64 / elapsed;
        Ok(RebuildProgress { version, live, done, target, rate, caught_up })
    }

    /// Waits until the new version has caught up (telling `report` where it stands every
    /// [`POLL`]), switches readers to it and drops the old version. Returns the new version.
    pub async fn finish(self, mut report: impl FnMut(&RebuildProgress)) -> Result<Version, ProjectorError> {
        loop {
            let progress = self.progress().await?;
            report(&progress);
            if progress.caught_up {
                break;
            }
            tokio::time::sleep(POLL).await;
        }
        if let Err(e) = self.projector.stop().await {
            tracing::warn!("the rebuild's projector: {e}");
        }
        let (store, live, version) = (self.store, self.live, self.version);
        blocking(move || {
            store.switch_live(live, version)?;
            tracing::info!(from = live, to = version, "live projection version switched");
            store.drop_version(live)?;
            Ok::<_, ProjectorError>(())
        })
        .await?;
        Ok(version)
    }

    /// Stops building without switching; the next rebuild resumes from where this one stopped.
    pub async fn abandon(self) {
        if let Err(e) = self.projector.stop().await {
            tracing::warn!("the rebuild's projector: {e}");
        }
    }
}

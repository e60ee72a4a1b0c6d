//! Stopping: waiting for the signal, and a bound on how long stopping may take.

use std::time::Duration;

/// Resolves on Ctrl-C or SIGTERM.
pub async fn signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("a SIGTERM handler can be installed");
    tokio::select! {
        _ = ctrl_c => tracing::info!("ctrl-c: stopping"),
        _ = term.recv() => tracing::info!("sigterm: stopping"),
    }
}

#[derive(clap::Args, Debug, Clone)]
pub struct ShutdownOptions {
    /// After SIGTERM or Ctrl-C, the longest time (milliseconds) to stop intake, drain and
    /// checkpoint; past it the process exits with an error (nothing is lost: the next owner of
    /// each partition resumes from the log and its checkpoints). Keep it under the platform's
    /// grace period (Kubernetes: 30 s by default).
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(100..=600_000), env = "TALLY_SHUTDOWN_TIMEOUT_MS")]
    pub shutdown_timeout_ms: u64,
}

impl ShutdownOptions {
    /// Runs `stopping`, bounded by the timeout.
    pub async fn within(&self, stopping: impl Future<Output = ()>) -> anyhow::Result<()> {
        let limit = Duration::from_millis(self.shutdown_timeout_ms);
        let started = std::time::Instant::now();
        match tokio::time::timeout(limit, stopping).await {
            Ok(()) => {
                tracing::info!(took_ms = started.elapsed().as_millis() as u64, "stopped");
                Ok(())
            }
            Err(_) => anyhow::bail!("stopping took longer than {limit:?}; exiting without waiting further"),
        }
    }
}

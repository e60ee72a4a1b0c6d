//! Stopping: waiting for the signal, and the bound on how long stopping may take (the
//! [`crate::runner::Runner`] keeps it).

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

/// How long stopping may take.
#[derive(clap::Args, Debug, Clone)]
pub struct ShutdownOptions {
    /// After SIGTERM or Ctrl-C, the longest time (milliseconds) to stop intake, drain and
    /// checkpoint; past it the process exits with an error (nothing is lost: the next owner of
    /// each partition resumes from the log and its checkpoints). Keep it under the platform's
    /// grace period (Kubernetes: 30 s by default).
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(100..=600_000), env = "TALLY_SHUTDOWN_TIMEOUT_MS")]
    pub shutdown_timeout_ms: u64,
}

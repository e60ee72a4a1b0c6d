//! Waiting for the signal to stop.

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

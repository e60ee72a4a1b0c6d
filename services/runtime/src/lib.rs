//! # tally-runtime
//!
//! What every Tally service shares at run time, and nothing else:
//!
//! - The service recipe. Each service (the processor, the outcome watcher, the projector, and
//!   the HTTP listeners of the front door and the query API) is built from its options, then
//!   started with `run(self, cancel) -> Handle`. HTTP services are bound by
//!   `tally_http::serve::HttpServer::bind`, then run the same way. The [`Handle`] ends when
//!   `cancel` fires (after the service drained and stopped) or when the service fails;
//!   [`Handle::stop`] does both steps. The `tally` binary's runner starts services in order, stops them in reverse, and
//!   stops everything when one ends on its own.
//! - The clock Tally decides and measures lag by ([`now_ms`]).
//! - Retry waits spread at random ([`jittered`]), and errors written with their causes
//!   ([`error_chain`]).

use std::future::Future;
use std::ops::Deref;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Milliseconds since the Unix epoch: the clock of Kafka's record timestamps and of the times
/// the processor decides at.
pub fn now_ms() -> i64 {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or(std::time::Duration::ZERO);
    since_epoch.as_millis() as i64
}

/// Why a service ended: its name and what went wrong (`"stopped on its own"` when it ended
/// without being told to).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{service}: {message}")]
pub struct ServiceError {
    pub service: &'static str,
    pub message: String,
}

/// A running service: its name, the token that stops it, its task, and a view of its state
/// (`status`, reachable through `Deref`) that stays usable while it runs. Dropping a handle
/// tells the service to stop (without waiting for it): a service nobody supervises does not run
/// on.
#[must_use = "a service stops when its handle is dropped; keep the handle while it should run"]
pub struct Handle<S = ()> {
    running: Running,
    status: S,
}

/// The service's side of a handle; fires its token when dropped.
struct Running {
    name: &'static str,
    cancel: CancellationToken,
    /// `None` once awaited.
    task: Option<JoinHandle<Result<(), String>>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl<S> Handle<S> {
    /// Runs `service` as a task until `cancel` fires and it returns; an error it returns is the
    /// handle's failure.
    pub fn spawn<E: std::fmt::Display>(
        name: &'static str,
        cancel: CancellationToken,
        status: S,
        service: impl Future<Output = Result<(), E>> + Send + 'static,
    ) -> Handle<S> {
        let task = tokio::spawn(async move { service.await.map_err(|e| e.to_string()) });
        Handle { running: Running { name, cancel, task: Some(task) }, status }
    }

    /// Runs `service` on tokio's blocking pool (a loop around librdkafka's blocking calls) until
    /// it sees `cancel` fired and returns.
    pub fn spawn_blocking<E: std::fmt::Display>(
        name: &'static str,
        cancel: CancellationToken,
        status: S,
        service: impl FnOnce() -> Result<(), E> + Send + 'static,
    ) -> Handle<S> {
        let task = tokio::task::spawn_blocking(move || service().map_err(|e| e.to_string()));
        Handle { running: Running { name, cancel, task: Some(task) }, status }
    }

    /// The service's name, for logs and errors.
    pub fn name(&self) -> &'static str {
        self.running.name
    }

    /// Whether the service has ended (stopped, failed or panicked).
    pub fn is_finished(&self) -> bool {
        self.running.task.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Kills the service's task at its next await point, without letting it drain (what a
    /// crash does; for tests of what notices one). A task on the blocking pool runs on.
    pub fn abort(&self) {
        if let Some(task) = &self.running.task {
            task.abort();
        }
    }

    /// Tells the service to stop and waits until it has: `Ok` when it drained and stopped
    /// cleanly, the failure otherwise.
    pub async fn stop(self) -> Result<(), ServiceError> {
        self.running.cancel.cancel();
        self.ended().await
    }

    /// Waits until the service ends by itself (a failure, or a stop through its token) and says
    /// how: `Ok` only when it was told to stop and did.
    pub async fn ended(mut self) -> Result<(), ServiceError> {
        let name = self.running.name;
        let failed = |message: String| ServiceError { service: name, message };
        let Some(task) = self.running.task.take() else { return Err(failed("already awaited".into())) };
        let joined = task.await;
        match joined {
            Ok(Ok(())) if self.running.cancel.is_cancelled() => Ok(()),
            Ok(Ok(())) => Err(failed("stopped on its own".into())),
            Ok(Err(message)) => Err(failed(message)),
            Err(e) if e.is_panic() => Err(failed("panicked".into())),
            Err(e) if e.is_cancelled() => Err(failed("killed (its task was aborted)".into())),
            Err(e) => Err(failed(e.to_string())),
        }
    }

    /// The handle without its status view (for a list of services of different kinds).
    pub fn erase(self) -> Handle {
        Handle { running: self.running, status: () }
    }
}

impl<S> Deref for Handle<S> {
    type Target = S;

    fn deref(&self) -> &S {
        &self.status
    }
}

/// `wait` spread over its upper half: `draw` in [0, 1) picks the point ("equal jitter", so that
/// tasks that failed together do not all retry together, and none retries at once).
pub fn spread(wait: std::time::Duration, draw: f64) -> std::time::Duration {
    wait / 2 + wait.mul_f64(draw.clamp(0.0, 1.0) / 2.0)
}

/// [`spread`] with a random draw.
pub fn jittered(wait: std::time::Duration) -> std::time::Duration {
    spread(wait, rand::random::<f64>())
}

/// An error and its causes, `: `-separated (an HTTP client's own message names only the
/// outermost).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_handle_tells_a_clean_stop_from_a_failure_a_panic_and_an_early_end() {
        let cancel = CancellationToken::new();
        let token = cancel.clone();
        let clean = Handle::spawn("clean", cancel, (), async move {
            token.cancelled().await;
            Ok::<_, String>(())
        });
        assert_eq!(clean.stop().await, Ok(()));

        let failing = Handle::spawn("failing", CancellationToken::new(), (), async { Err("broken") });
        let error = failing.ended().await.unwrap_err();
        assert_eq!((error.service, error.message.as_str()), ("failing", "broken"));

        let early = Handle::spawn("early", CancellationToken::new(), (), async { Ok::<_, String>(()) });
        assert_eq!(early.ended().await.unwrap_err().message, "stopped on its own");

        let panicking =
            Handle::spawn_blocking("panicking", CancellationToken::new(), 7, || -> Result<(), String> {
                panic!("on purpose")
            });
        assert_eq!(*panicking, 7, "the status view is reachable");
        assert_eq!(panicking.ended().await.unwrap_err().message, "panicked");

        let cancel = CancellationToken::new();
        let token = cancel.clone();
        let dropped = Handle::spawn("dropped", cancel.clone(), (), async move {
            token.cancelled().await;
            Ok::<_, String>(())
        });
        drop(dropped);
        assert!(cancel.is_cancelled(), "dropping a handle stops its service");
    }
}

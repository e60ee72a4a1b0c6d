//! The runner every subcommand that serves uses: starts a process's services in order, stops
//! them in reverse on SIGTERM or Ctrl-C within the shutdown deadline, and stops everything,
//! with an error naming the service (the process then exits non-zero), as soon as any service
//! ends on its own. A process never runs on half-alive.

use crate::shutdown::ShutdownOptions;
use std::time::{Duration, Instant};
use tally_runtime::{Handle, ServiceError};
use tokio_util::sync::CancellationToken;

/// How often the runner looks for a service that ended.
const WATCH_INTERVAL: Duration = Duration::from_millis(50);

/// The services of one process, in the order they started.
pub struct Runner {
    running: Vec<Handle>,
    deadline: Duration,
}

impl Runner {
    pub fn new(shutdown: &ShutdownOptions) -> Runner {
        Runner { running: Vec::new(), deadline: Duration::from_millis(shutdown.shutdown_timeout_ms) }
    }

    /// Starts a service with a token of its own (`run` is the service's `run`), keeps its
    /// handle, and returns the status view it reports.
    pub fn start<S: Clone>(&mut self, run: impl FnOnce(CancellationToken) -> Handle<S>) -> S {
        let handle = run(CancellationToken::new());
        let status = (*handle).clone();
        tracing::debug!(service = handle.name(), "started");
        self.running.push(handle.erase());
        status
    }

    /// The names of the services running, in the order they started.
    #[cfg(test)]
    pub fn services(&self) -> Vec<&'static str> {
        self.running.iter().map(Handle::name).collect()
    }

    /// Kills the task of the service named `name` where it stands (as a crash would); says
    /// whether one was running.
    #[cfg(test)]
    pub fn kill(&self, name: &str) -> bool {
        let service = self.running.iter().find(|h| h.name() == name);
        service.inspect(|h| h.abort()).is_some()
    }

    /// Runs until `stop` completes or a service ends, then stops every service in reverse
    /// order. `started` is how starting went: an error stops what did start and is returned.
    /// Errors: a service that ended or failed (while running or while stopping), or stopping
    /// past the deadline.
    pub async fn run_until(
        mut self,
        started: anyhow::Result<()>,
        stop: impl Future<Output = ()>,
    ) -> anyhow::Result<()> {
        let failed = match started {
            Err(e) => Some(e),
            Ok(()) => tokio::select! {
                () = stop => None,
                ended = self.first_to_end() => Some(anyhow::Error::new(ended).context("a service stopped")),
            },
        };
        let stopped = self.stop_all().await;
        match (failed, stopped) {
            (Some(failed), _) => Err(failed.context("stopped every service")),
            (None, stopped) => stopped,
        }
    }

    /// Waits until a service ends, takes it out, and says how it ended (a service that ends
    /// while it was not told to stop has failed, whatever it returned).
    async fn first_to_end(&mut self) -> ServiceError {
        loop {
            if let Some(i) = self.running.iter().position(Handle::is_finished) {
                let handle = self.running.remove(i);
                let name = handle.name();
                let error = handle.ended().await.err();
                let error = error.unwrap_or(ServiceError { service: name, message: "stopped".into() });
                tracing::error!("{error}; stopping every service");
                return error;
            }
            tokio::time::sleep(WATCH_INTERVAL).await;
        }
    }

    /// Stops every service, newest first, within the deadline.
    async fn stop_all(&mut self) -> anyhow::Result<()> {
        let started = Instant::now();
        let mut first_error = None;
        let handles = std::mem::take(&mut self.running);
        let mut left: Vec<&str> = handles.iter().map(Handle::name).collect();
        let stopping = async {
            for handle in handles.into_iter().rev() {
                let name = handle.name();
                match handle.stop().await {
                    Ok(()) => tracing::debug!(service = name, "stopped"),
                    Err(e) => {
                        tracing::error!("while stopping: {e}");
                        first_error.get_or_insert(e);
                    }
                }
                left.pop();
            }
        };
        if tokio::time::timeout(self.deadline, stopping).await.is_err() {
            anyhow::bail!(
                "stopping took longer than {:?} (still running: {}); exiting",
                self.deadline,
                left.join(", ")
            );
        }
        tracing::info!(took_ms = started.elapsed().as_millis() as u64, "stopped");
        match first_error {
            Some(e) => Err(anyhow::Error::new(e).context("a service failed while stopping")),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(ms: u64) -> ShutdownOptions {
        ShutdownOptions { shutdown_timeout_ms: ms }
    }

    /// A service that runs until told to stop, and records the order services stopped in.
    fn waiting(
        name: &'static str,
        stopped: std::sync::Arc<std::sync::Mutex<Vec<&'static str>>>,
    ) -> impl FnOnce(CancellationToken) -> Handle {
        move |cancel: CancellationToken| {
            Handle::spawn(name, cancel.clone(), (), async move {
                cancel.cancelled().await;
                stopped.lock().unwrap().push(name);
                Ok::<_, String>(())
            })
        }
    }

    #[tokio::test]
    async fn a_signal_stops_every_service_newest_first() {
        let stopped = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut runner = Runner::new(&options(5_000));
        for name in ["processor", "watcher", "front door"] {
            runner.start(waiting(name, stopped.clone()));
        }
        runner.run_until(Ok(()), async {}).await.unwrap();
        assert_eq!(*stopped.lock().unwrap(), ["front door", "watcher", "processor"]);
    }

    #[tokio::test]
    async fn a_service_that_fails_stops_the_others_and_is_named_in_the_error() {
        let stopped = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut runner = Runner::new(&options(5_000));
        runner.start(waiting("processor", stopped.clone()));
        runner.start(|cancel| {
            Handle::spawn("front door", cancel, (), async { Err::<(), _>("listener closed") })
        });
        runner.start(waiting("query", stopped.clone()));
        let error = runner.run_until(Ok(()), std::future::pending()).await.unwrap_err();
        assert!(format!("{error:#}").contains("front door: listener closed"), "{error:#}");
        assert_eq!(*stopped.lock().unwrap(), ["query", "processor"]);
    }

    #[tokio::test]
    async fn a_service_that_ends_on_its_own_is_a_failure_and_a_failed_start_stops_what_started() {
        let mut runner = Runner::new(&options(5_000));
        runner.start(|cancel| Handle::spawn("watcher", cancel, (), async { Ok::<(), String>(()) }));
        let error = runner.run_until(Ok(()), std::future::pending()).await.unwrap_err();
        assert!(format!("{error:#}").contains("watcher: stopped on its own"), "{error:#}");

        let stopped = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut runner = Runner::new(&options(5_000));
        runner.start(waiting("processor", stopped.clone()));
        let error =
            runner.run_until(Err(anyhow::anyhow!("port taken")), std::future::pending()).await.unwrap_err();
        assert!(format!("{error:#}").contains("port taken"), "{error:#}");
        assert_eq!(*stopped.lock().unwrap(), ["processor"]);
    }

    #[tokio::test]
    async fn stopping_past_the_deadline_is_an_error() {
        let mut runner = Runner::new(&options(100));
        runner
            .start(|cancel| Handle::spawn("stuck", cancel, (), std::future::pending::<Result<(), String>>()));
        let error = runner.run_until(Ok(()), async {}).await.unwrap_err();
        assert!(error.to_string().contains("still running: stuck"), "{error}");
    }
}

//! Projection administration: the admin HTTP routes of the process that owns the store
//! (`tally dev`, `tally project`), and `tally projections`, the operator command that drives them.
//!
//! The embedded store belongs to one process, so a rebuild runs inside that process; the
//! command asks for it over HTTP and follows its progress. The routes need the admin role.

use crate::admin::AdminClient;
use anyhow::bail;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use reqwest::Method;
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tally_http::Problem;
use tally_projector::rebuild::{Rebuild, RebuildProgress};
use tally_projector::{Progress, ProgressView, ProjectorConfig};
use tally_store::projections::Version;

/// Where the projections stand: `GET /admin/projections`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Status {
    pub live_version: Version,
    pub versions: Vec<Version>,
    /// The partitions this process projects.
    pub partitions: Vec<Progress>,
    /// The last rebuild this process ran, if any.
    pub rebuild: Option<RebuildState>,
}

/// Where the last rebuild of this process stands (`GET /admin/projections`, `rebuild`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum RebuildState {
    Starting,
    Running(RebuildProgress),
    Switched { version: Version, seconds: f64 },
    Failed { error: String },
}

/// What the admin routes act on: the live projector and how to start a rebuild beside it.
#[derive(Clone)]
pub struct Admin {
    inner: Arc<AdminInner>,
}

struct AdminInner {
    projector: ProgressView,
    /// The live projector's configuration: a rebuild copies it.
    template: ProjectorConfig,
    partitions: i32,
    rebuild: Mutex<Option<RebuildState>>,
}

impl Admin {
    /// Admin routes over the live projector whose progress `projector` reports, started from
    /// `template`, projecting `partitions` events partitions.
    pub fn new(projector: ProgressView, template: ProjectorConfig, partitions: i32) -> Admin {
        let inner = AdminInner { projector, template, partitions, rebuild: Mutex::new(None) };
        Admin { inner: Arc::new(inner) }
    }

    /// `GET /admin/projections` and `POST /admin/projections/rebuild`; errors are problem
    /// details (RFC 9457) like every other route's.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/admin/projections", get(status))
            .route("/admin/projections/rebuild", post(start_rebuild))
            .with_state(self.clone())
            .layer(axum::middleware::map_response(tally_http::as_problem))
    }

    fn set_rebuild(&self, state: RebuildState) {
        *self.inner.rebuild.lock().expect("not poisoned") = Some(state);
    }

    /// Runs a rebuild to its switch, recording where it stands for `GET /admin/projections`.
    async fn run_rebuild(self) {
        let started = Instant::now();
        let outcome = async {
            let rebuild = Rebuild::start(self.inner.template.clone(), self.inner.partitions).await?;
            rebuild.finish(|progress| self.set_rebuild(RebuildState::Running(progress.clone()))).await
        }
        .await;
        self.set_rebuild(match outcome {
            Ok(version) => RebuildState::Switched { version, seconds: started.elapsed().as_secs_f64() },
            // The error's text is about the server (the store, the broker): it goes to the log,
            // and the client is told where to look.
            Err(e) => {
                tracing::error!("projection rebuild failed: {e}");
                RebuildState::Failed { error: "the rebuild failed; the server's log says why".into() }
            }
        });
    }
}

async fn status(State(admin): State<Admin>) -> Response {
    let store = admin.inner.template.store.clone();
    let versions = tally_store::bridge::blocking(move || {
        Ok::<_, anyhow::Error>((store.live_version()?, store.versions()?))
    })
    .await;
    match versions {
        Ok((live_version, versions)) => Json(Status {
            live_version,
            versions,
            partitions: admin.inner.projector.get(),
            rebuild: admin.inner.rebuild.lock().expect("not poisoned").clone(),
        })
        .into_response(),
        Err(e) => {
            tracing::error!("reading the projection versions: {e:#}");
            Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily unavailable",
                "the projections could not be read right now; retry",
            )
            .into_response()
        }
    }
}

/// Starts a rebuild unless one is running: 202, or 409.
async fn start_rebuild(State(admin): State<Admin>) -> Response {
    {
        let mut state = admin.inner.rebuild.lock().expect("not poisoned");
        if matches!(*state, Some(RebuildState::Starting | RebuildState::Running(_))) {
            return Problem::new(StatusCode::CONFLICT, "rebuild running", "a rebuild is already running")
                .into_response();
        }
        *state = Some(RebuildState::Starting);
    }
    tokio::spawn(admin.clone().run_rebuild());
    (StatusCode::ACCEPTED, Json(RebuildState::Starting)).into_response()
}

#[derive(clap::Args, Debug)]
pub struct ProjectionsOptions {
    #[command(subcommand)]
    command: ProjectionsCommand,
    #[command(flatten)]
    admin: crate::admin::AdminConnection,
}

#[derive(clap::Subcommand, Debug)]
enum ProjectionsCommand {
    /// Print the live version, the versions in the store and each partition's checkpoint and lag.
    Status,
    /// Build a new version of the projections from offset 0 beside the live one (which keeps
    /// serving), then switch readers to it and drop the old one. Shows progress and rate.
    Rebuild,
}

pub async fn run(opts: ProjectionsOptions) -> anyhow::Result<()> {
    let client = AdminClient::new(&opts.admin)?;
    match opts.command {
        ProjectionsCommand::Status => {
            let status: serde_json::Value =
                client.call(Method::GET, "/admin/projections", None, StatusCode::OK).await?;
            println!("{}", serde_json::to_string_pretty(&status)?);
            Ok(())
        }
        ProjectionsCommand::Rebuild => rebuild(&client).await,
    }
}

/// Asks for a rebuild and follows it to the switch with a progress bar (plain lines when not
/// on a terminal).
async fn rebuild(client: &AdminClient) -> anyhow::Result<()> {
    let _: serde_json::Value =
        client.call(Method::POST, "/admin/projections/rebuild", None, StatusCode::ACCEPTED).await?;
    let bar = indicatif::ProgressBar::new(0).with_style(
        indicatif::ProgressStyle::with_template(
            "{msg} [{bar:40}] {human_pos}/{human_len} records ({per_sec}, eta {eta})",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    let terminal = !bar.is_hidden();
    let mut last_line = Instant::now();
    loop {
        let status: Status = client.call(Method::GET, "/admin/projections", None, StatusCode::OK).await?;
        match status.rebuild {
            Some(RebuildState::Running(p)) => {
                bar.set_message(format!("version {} (live {})", p.version, p.live));
                bar.set_length(p.target.max(p.done));
                bar.set_position(p.done);
                if !terminal && last_line.elapsed() >= Duration::from_secs(2) {
                    println!(
                        "version {}: {}/{} records, {:.0} records/s",
                        p.version, p.done, p.target, p.rate
                    );
                    last_line = Instant::now();
                }
            }
            Some(RebuildState::Switched { version, seconds }) => {
                bar.finish_and_clear();
                println!("rebuilt: version {version} is live ({seconds:.1} s); the old version is dropped");
                return Ok(());
            }
            Some(RebuildState::Failed { error }) => {
                bar.abandon();
                bail!("the rebuild failed: {error} (run it again to resume it)");
            }
            Some(RebuildState::Starting) | None => {}
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

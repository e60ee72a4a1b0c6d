//! `tally destinations`: the sink's destinations through a running `tally dev` or `tally
//! project` (the admin routes `/admin/destinations`, docs/consumers.md). Prints JSON.

use crate::admin::{AdminClient, AdminConnection};
use axum::http::StatusCode;
use reqwest::Method;
use serde_json::{Value, json};

#[derive(clap::Args, Debug)]
pub struct DestinationsOptions {
    #[command(subcommand)]
    command: DestinationsCommand,
    #[command(flatten)]
    admin: AdminConnection,
}

#[derive(clap::Subcommand, Debug)]
enum DestinationsCommand {
    /// The tenant's destinations, with each lane's position and parked event.
    List,
    /// One destination, with each lane's position and the event it is parked on, if any.
    Show { id: String },
    /// Create one from a JSON body (docs/consumers.md), e.g.
    /// '{"id":"fraud","webhook":{"url":"https://fraud.example.com/tally"}}'. A webhook's
    /// answer holds its signing secret, shown this once.
    Create { body: String },
    /// Stop delivering (nothing is skipped; a resume goes on from there).
    Pause { id: String },
    /// Unpause, and send the parked events again (a replay).
    Resume { id: String },
    /// A new signing secret; the old ones keep signing for --overlap-seconds.
    RotateSecret {
        id: String,
        #[arg(long, default_value_t = tally_sink::api::ROTATION_OVERLAP_DEFAULT_S)]
        overlap_seconds: u64,
    },
    /// Delete one (created again under the same id, it starts afresh).
    Delete { id: String },
}

pub async fn run(opts: DestinationsOptions) -> anyhow::Result<()> {
    let client = AdminClient::new(&opts.admin)?;
    let path = |id: &str, action: &str| format!("/admin/destinations/{}{action}", encode(id));
    let answer: Value = match opts.command {
        DestinationsCommand::List => {
            client.call(Method::GET, "/admin/destinations", None, StatusCode::OK).await?
        }
        DestinationsCommand::Show { id } => {
            client.call(Method::GET, &path(&id, ""), None, StatusCode::OK).await?
        }
        DestinationsCommand::Create { body } => {
            let body: Value =
                serde_json::from_str(&body).map_err(|e| anyhow::anyhow!("the body is not JSON: {e}"))?;
            client.call(Method::POST, "/admin/destinations", Some(&body), StatusCode::CREATED).await?
        }
        DestinationsCommand::Pause { id } => {
            client.call(Method::POST, &path(&id, "/pause"), None, StatusCode::OK).await?
        }
        DestinationsCommand::Resume { id } => {
            client.call(Method::POST, &path(&id, "/resume"), None, StatusCode::OK).await?
        }
        DestinationsCommand::RotateSecret { id, overlap_seconds } => {
            let body = json!({ "overlap_seconds": overlap_seconds });
            client.call(Method::POST, &path(&id, "/rotate-secret"), Some(&body), StatusCode::OK).await?
        }
        DestinationsCommand::Delete { id } => {
            client.call(Method::DELETE, &path(&id, ""), None, StatusCode::NO_CONTENT).await?
        }
    };
    if !answer.is_null() {
        println!("{}", serde_json::to_string_pretty(&answer)?);
    }
    Ok(())
}

/// A destination id as one path segment (ids are plain, but an operator's typo must not walk
/// the path).
fn encode(id: &str) -> String {
    url::form_urlencoded::byte_serialize(id.as_bytes()).collect()
}

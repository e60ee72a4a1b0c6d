//! The operator commands' side of the admin routes (`tally projections`, `tally
//! destinations`): where the routes are, the credential, and a small HTTP client.

use anyhow::{Context, bail};
use axum::http::StatusCode;
use reqwest::Method;
use std::time::Duration;

/// Where the admin routes are and how to call them.
#[derive(clap::Args, Debug)]
pub struct AdminConnection {
    /// Admin address of the process that runs the projector and the sink (`tally dev`: its
    /// HTTP address; `tally project`: its --admin-listen).
    #[arg(long, global = true, default_value = "http://127.0.0.1:8080", env = "TALLY_ADMIN_URL")]
    url: String,
    /// An API key or JWT with the admin role.
    #[arg(long, global = true, env = "TALLY_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// PEM certificate of a private CA to trust for an https:// --url (beside the usual roots).
    #[arg(long, global = true, env = "TALLY_CA_CERT")]
    ca_cert: Option<std::path::PathBuf>,
}

/// A small HTTP client for the admin routes.
pub struct AdminClient {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl AdminClient {
    pub fn new(connection: &AdminConnection) -> anyhow::Result<AdminClient> {
        let mut http = reqwest::Client::builder().timeout(Duration::from_secs(30));
        if let Some(path) = &connection.ca_cert {
            let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            http = http.add_root_certificate(reqwest::Certificate::from_pem(&pem).context("--ca-cert")?);
        }
        let base = connection.url.trim_end_matches('/').to_owned();
        Ok(AdminClient { base, token: connection.token.clone(), http: http.build()? })
    }

    /// `method path` with an optional JSON body; the answer's JSON when its status is
    /// `expected` (or JSON null for an empty body), else an error with the status and body.
    pub async fn call<T: serde::de::DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
        expected: StatusCode,
    ) -> anyhow::Result<T> {
        let url = format!("{}{path}", self.base);
        let mut request = self.http.request(method.clone(), &url);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.header("content-type", "application/json").body(body.to_string());
        }
        let response = request.send().await.with_context(|| format!("{method} {url}"))?;
        let status = response.status().as_u16();
        let bytes = response.bytes().await?;
        if status != expected.as_u16() {
            bail!("{method} {path}: {status}: {}", String::from_utf8_lossy(&bytes));
        }
        let bytes = if bytes.is_empty() { &b"null"[..] } else { &bytes[..] };
        serde_json::from_slice(bytes).with_context(|| format!("reading the answer of {method} {path}"))
    }
}

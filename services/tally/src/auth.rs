//! Security settings of every HTTP listener (credentials, policy, limits, CORS, TLS) and of the
//! processor (the producer allow-list); `tally keys new`. The rules are in `tally_auth`, the
//! HTTP gate in `tally_http::gate`.

use anyhow::{Context, bail};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tally_auth::jwt::{JwtConfig, JwtVerifier, Keys};
use tally_auth::keys::KeyRing;
use tally_auth::policy::Policy;
use tally_auth::producers::ProducerTenants;
use tally_auth::reload::{Reloading, Source};
use tally_auth::{Authenticator, Role, Roles};
use tally_core::TenantId;
use tally_http::gate::{Gate, GateConfig};
use tally_http::serve::{HttpServer, Tls};
use tokio_util::sync::CancellationToken;

#[derive(clap::Args, Debug, Clone)]
pub struct AuthOptions {
    /// API keys file (TOML `[[key]]` entries: id, tenant, sha256, roles; `tally keys new` makes
    /// them). Re-read when it changes and on SIGHUP.
    #[arg(long, env = "TALLY_API_KEYS")]
    pub api_keys: Option<PathBuf>,
    /// JWKS of the identity provider whose JWTs are accepted, as a file (re-read when it
    /// changes)...
    #[arg(long, env = "TALLY_JWKS_FILE", conflicts_with = "jwks_url")]
    pub jwks_file: Option<PathBuf>,
    /// ... or as a URL (fetched at start, then every --jwks-refresh-s and when a token names an
    /// unknown key).
    #[arg(long, env = "TALLY_JWKS_URL")]
    pub jwks_url: Option<String>,
    /// How often (seconds) the JWKS URL is fetched again.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(10..=86_400), env = "TALLY_JWKS_REFRESH_S")]
    pub jwks_refresh_s: u64,
    /// The `iss` every JWT must have (required with a JWKS).
    #[arg(long, env = "TALLY_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// The `aud` every JWT must have (required with a JWKS).
    #[arg(long, env = "TALLY_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
    /// Clock skew (seconds) tolerated on a JWT's `exp` and `nbf`.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(0..=600), env = "TALLY_JWT_LEEWAY_S")]
    pub jwt_leeway_s: u64,
    /// The JWT claim that names the caller's tenant.
    #[arg(long, default_value = "tenant", env = "TALLY_JWT_TENANT_CLAIM")]
    pub jwt_tenant_claim: String,
    /// The JWT claim with the caller's roles (a list, or a space-separated string).
    #[arg(long, default_value = "roles", env = "TALLY_JWT_ROLES_CLAIM")]
    pub jwt_roles_claim: String,
    /// Rego policy (package `tally`) asked about every request after the role check; only what
    /// `data.tally.allow` allows passes. If it defines `data.tally.response`, that judges every
    /// answer to a read: deny it, or remove named fields (docs/security.md). Re-read when it
    /// changes.
    #[arg(long, env = "TALLY_POLICY")]
    pub policy: Option<PathBuf>,
    /// How often (milliseconds) the keys, JWKS and policy files are looked at for changes.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(100..=3_600_000), env = "TALLY_AUTH_RELOAD_MS")]
    pub auth_reload_ms: u64,
    /// Requests per second each caller (API key, or JWT subject) may make on average; 0 = no limit.
    #[arg(long, default_value_t = 0, env = "TALLY_RATE_LIMIT")]
    pub rate_limit: u32,
    /// Requests a caller may make at once above that average.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..), env = "TALLY_RATE_BURST")]
    pub rate_burst: u32,
    /// Largest total size (bytes) of a request's headers; larger requests get 431.
    #[arg(long, default_value_t = 16 * 1024, value_parser = clap::value_parser!(u64).range(1024..=1024 * 1024), env = "TALLY_HEADER_LIMIT_BYTES")]
    pub header_limit_bytes: u64,
    /// Browser origins allowed to call the APIs (comma-separated, `*` for any); none by default.
    #[arg(long, value_delimiter = ',', env = "TALLY_CORS_ORIGINS")]
    pub cors_origins: Vec<String>,
    /// PEM certificate chain: serve every HTTP listener over TLS (with --tls-key).
    #[arg(long, env = "TALLY_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "TALLY_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

/// The gate and TLS every listener of one process shares.
#[derive(Clone)]
pub struct Security {
    pub gate: Gate,
    pub tls: Option<Tls>,
    /// The certificate and key files of `tls` (the gRPC listener reads them itself).
    tls_files: Option<(PathBuf, PathBuf)>,
}

impl Security {
    /// The HTTP service serving `app` behind the gate (and over TLS when configured) on
    /// `address`, bound; prints `<name>: <address>` (`tally dev`'s tests read it).
    pub async fn server(
        &self,
        name: &'static str,
        address: std::net::SocketAddr,
        app: axum::Router,
    ) -> anyhow::Result<HttpServer> {
        let server = HttpServer::bind(name, address, self.gate.protect(app), self.tls.clone())
            .await
            .with_context(|| format!("listening on {address} ({name})"))?;
        println!("{name}: {}", server.local_addr()?);
        Ok(server)
    }

    /// The gRPC listener (`tally.v1.Commands` over `commands`, `tally.v1.Queries` over
    /// `queries`, each behind the gate; reflection, health, grpc-web) on `address`, bound, over
    /// TLS when configured; prints `grpc: <address>`.
    pub async fn grpc(
        &self,
        address: std::net::SocketAddr,
        commands: Option<axum::Router>,
        queries: Option<axum::Router>,
    ) -> anyhow::Result<tally_grpc::GrpcServer> {
        let mut apis = Vec::new();
        apis.extend(commands.map(|r| tally_grpc::Api::Commands(self.gate.protect(r))));
        apis.extend(queries.map(|r| tally_grpc::Api::Queries(self.gate.protect(r))));
        let tls = match &self.tls_files {
            Some((cert, key)) => Some(tally_grpc::Tls {
                cert_pem: std::fs::read(cert).with_context(|| format!("reading {}", cert.display()))?,
                key_pem: std::fs::read(key).with_context(|| format!("reading {}", key.display()))?,
            }),
            None => None,
        };
        let server = tally_grpc::GrpcServer::bind(address, apis, tls, self.gate.grpc_cors())
            .await
            .with_context(|| format!("listening on {address} (grpc)"))?;
        println!("grpc: {}", server.local_addr()?);
        Ok(server)
    }
}

impl AuthOptions {
    /// Whether any credential is configured (API keys, or a JWKS to check JWTs against).
    pub fn credentials_configured(&self) -> bool {
        self.api_keys.is_some() || self.jwks_file.is_some() || self.jwks_url.is_some()
    }

    /// Loads the credentials, policy and certificate, and keeps the reloadable ones fresh
    /// until `stop`. `fallback` (the dev key) is used only when no credential is configured.
    pub async fn security(
        &self,
        fallback: Option<KeyRing>,
        stop: &CancellationToken,
    ) -> anyhow::Result<Security> {
        let reload = Duration::from_millis(self.auth_reload_ms);
        let mut auth = Authenticator::new();
        if let Some(path) = &self.api_keys {
            let keys = open("API keys", Source::File(path.clone()), KeyRing::parse).await?;
            keys.watch(reload, stop.clone());
            auth = auth.with_keys(keys);
        }
        if let Some(jwt) = self.jwt(stop).await? {
            auth = auth.with_jwt(jwt);
        }
        if !self.credentials_configured() {
            match fallback {
                Some(keys) => auth = auth.with_keys(Reloading::fixed("API keys", keys)),
                None => bail!(
                    "no credentials are configured, so no request could be served: give --api-keys \
                     (see `tally keys new`) or a JWKS (--jwks-file or --jwks-url)"
                ),
            }
        }
        if let Some(path) = &self.policy {
            let policy = open("policy", Source::File(path.clone()), Policy::parse).await?;
            policy.watch(reload, stop.clone());
            auth = auth.with_policy(policy);
        }
        let config = GateConfig {
            rate_per_second: self.rate_limit,
            rate_burst: self.rate_burst,
            header_bytes_max: self.header_limit_bytes as usize,
            cors_origins: self.cors_origins.clone(),
        };
        let gate = Gate::new(auth, &config).map_err(anyhow::Error::msg)?;
        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(Tls::load(cert, key).map_err(anyhow::Error::msg)?),
            _ => None,
        };
        let tls_files = self.tls_cert.clone().zip(self.tls_key.clone());
        Ok(Security { gate, tls, tls_files })
    }

    async fn jwt(&self, stop: &CancellationToken) -> anyhow::Result<Option<Arc<JwtVerifier>>> {
        let (source, every) = match (&self.jwks_file, &self.jwks_url) {
            (Some(path), _) => (Source::File(path.clone()), Duration::from_millis(self.auth_reload_ms)),
            (None, Some(url)) => (Source::Url(url.clone()), Duration::from_secs(self.jwks_refresh_s)),
            (None, None) => return Ok(None),
        };
        let (Some(issuer), Some(audience)) = (&self.jwt_issuer, &self.jwt_audience) else {
            bail!("a JWKS needs --jwt-issuer and --jwt-audience: tokens are checked against both");
        };
        let keys = open("JWKS", source, Keys::parse).await?;
        keys.watch(every, stop.clone());
        let config = JwtConfig {
            issuer: issuer.clone(),
            audience: audience.clone(),
            leeway: Duration::from_secs(self.jwt_leeway_s),
            tenant_claim: self.jwt_tenant_claim.clone(),
            roles_claim: self.jwt_roles_claim.clone(),
        };
        Ok(Some(Arc::new(JwtVerifier::new(config, keys))))
    }
}

async fn open<T: Send + Sync + 'static>(
    what: &'static str,
    source: Source,
    parse: fn(&[u8]) -> Result<T, String>,
) -> anyhow::Result<Arc<Reloading<T>>> {
    Reloading::open(what, source, parse).await.map_err(anyhow::Error::msg)
}

/// The processor's producer allow-list.
#[derive(clap::Args, Debug, Clone)]
pub struct ProducerOptions {
    /// Which tenants each producer of the commands topic may send commands for (TOML
    /// `[producers]` table: name = ["tenant", "prefix-*", "*"]); producers name themselves in
    /// the `tally-producer` record header. Commands outside the list are dead-lettered. Without
    /// it, any producer may send for any tenant. Re-read when it changes.
    #[arg(long, env = "TALLY_PRODUCER_ALLOW_LIST")]
    pub producer_allow_list: Option<PathBuf>,
}

impl ProducerOptions {
    pub async fn allow_list(
        &self,
        stop: &CancellationToken,
    ) -> anyhow::Result<Option<Arc<Reloading<ProducerTenants>>>> {
        let Some(path) = &self.producer_allow_list else { return Ok(None) };
        let list = open("producer allow-list", Source::File(path.clone()), ProducerTenants::parse).await?;
        list.watch(Duration::from_secs(1), stop.clone());
        Ok(Some(list))
    }
}

#[derive(clap::Args, Debug)]
pub struct KeysOptions {
    #[command(subcommand)]
    command: KeysCommand,
}

#[derive(clap::Subcommand, Debug)]
enum KeysCommand {
    /// Make an API key: prints the secret (give it to the client; it is not stored anywhere)
    /// and the entry to add to the --api-keys file.
    New {
        /// The tenant the key acts for.
        #[arg(long)]
        tenant: String,
        /// Roles, comma-separated: read, write, admin.
        #[arg(long, value_delimiter = ',', default_value = "read,write")]
        roles: Vec<String>,
        /// The key's id (letters, digits, '-'): it is in the secret and in every event the key
        /// causes (`key:<id>`). Default: a random one.
        #[arg(long)]
        id: Option<String>,
    },
}

pub fn keys(opts: KeysOptions) -> anyhow::Result<()> {
    let KeysCommand::New { tenant, roles, id } = opts.command;
    let tenant = TenantId::parse(tenant).context("--tenant")?;
    let roles = Roles::parse(&roles).map_err(anyhow::Error::msg)?;
    let id = id.unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string()[..12].to_owned());
    let key = tally_auth::keys::generate(&id, &tenant, &roles).map_err(anyhow::Error::msg)?;
    println!("{}", key.secret);
    eprintln!("The line above is the secret: give it to the client, it is shown only now.");
    eprintln!("Add this to the --api-keys file (reloaded within a second):\n");
    print!("\n{}", key.entry);
    Ok(())
}

/// The key `tally dev` serves with when none is configured: for tenant `demo`, every role.
/// With a data directory it is kept there, so it survives restarts.
pub fn dev_key(data_dir: Option<&std::path::Path>) -> anyhow::Result<(String, KeyRing)> {
    let tenant = TenantId::parse("demo").expect("a valid tenant");
    let roles = Roles::of(&[Role::Read, Role::Write, Role::Admin]);
    let path = data_dir.map(|dir| dir.join("dev-api-key.toml"));
    if let Some(path) = path.as_ref().filter(|p| p.exists()) {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let (secret, entry) = text.split_once('\n').context("the dev key file is damaged; delete it")?;
        let keys =
            KeyRing::parse(entry.as_bytes()).map_err(anyhow::Error::msg).context("the dev key file")?;
        return Ok((secret.to_owned(), keys));
    }
    let key = tally_auth::keys::generate("dev", &tenant, &roles).map_err(anyhow::Error::msg)?;
    if let Some(path) = &path {
        std::fs::create_dir_all(path.parent().expect("in the data directory"))?;
        write_private(path, &format!("{}\n{}", key.secret, key.entry))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok((key.secret, KeyRing::parse(key.entry.as_bytes()).map_err(anyhow::Error::msg)?))
}

/// Writes a file only its owner can read.
fn write_private(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    file.write_all(text.as_bytes())
}

//! # tally-registry
//!
//! A client of a schema registry that serves the Confluent Schema Registry REST API (Confluent's
//! own, Apicurio Registry 3 at `/apis/ccompat/v7`, Redpanda, Karapace). Producers that use a
//! registry frame each Avro record as `00`, a 4-byte big-endian schema id, then the datum; to read
//! such a record, Tally needs the writer schema that id stands for.
//!
//! - At start, [`SchemaRegistry::register_tally_schemas`] registers Tally's command and event
//!   schemas under the topic-name subjects (`<topic>-value`) after checking that they are
//!   compatible with what the subject already holds, and refuses to start otherwise.
//! - While running, [`SchemaRegistry::schema_by_id`] fetches a writer schema; the processor
//!   caches it (bounded) in its codec.
//!
//! Errors tell apart what is the record's fault (the registry has no such id:
//! [`RegistryError::NotFound`]) from what is not (the registry cannot be reached, answers 5xx,
//! refuses our credentials: [`RegistryError::Unavailable`]); a record is dead-lettered only for
//! the first.

mod metrics;

use serde::Deserialize;
use std::time::Duration;
use tally_codec::{Codec, Kind};
use url::Url;

/// The media type of the registry's requests and answers.
const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";
/// Confluent's error codes for "subject not found", "version not found", "schema not found".
const NOT_FOUND_CODES: [i64; 3] = [40401, 40402, 40403];

/// Where the registry is and how to reach it.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// Base URL of the Confluent-compatible API, for example `http://registry:8081` or
    /// `https://registry/apis/ccompat/v7`; request paths are appended to it.
    pub url: Url,
    /// HTTP basic authentication: user name and password.
    pub basic_auth: Option<(String, String)>,
    /// PEM certificates (one or more) trusted for HTTPS besides the system's roots, for a
    /// registry with a private CA.
    pub ca_pem: Option<Vec<u8>>,
    /// Longest wait for one answer, connecting included.
    pub timeout: Duration,
}

impl RegistryConfig {
    /// A registry at `url` without credentials, with a 10 s timeout.
    pub fn new(url: Url) -> Self {
        RegistryConfig { url, basic_auth: None, ca_pem: None, timeout: Duration::from_secs(10) }
    }
}

/// Why a request to the registry did not give what was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// The registry answered that it has no such subject, version or schema id (HTTP 404 with
    /// Confluent error code 40401, 40402 or 40403).
    #[error("the schema registry has no {what}: {message}")]
    NotFound { what: String, message: String },
    /// The registry answered, and refused the request for a reason of the request: HTTP 409
    /// (incompatible schema) or 422 (invalid schema), with its error code and message.
    #[error("the schema registry refused {request}: HTTP {status} ({code}) {message}")]
    Refused { request: String, status: u16, code: i64, message: String },
    /// No usable answer: the registry could not be reached or timed out, answered 5xx or 401/403,
    /// answered 404 without a registry error code (a wrong URL), or sent a body that is not the
    /// API's. None of it is the fault of a record being read.
    #[error("the schema registry is unavailable for {request}: {why}")]
    Unavailable { request: String, why: String },
}

/// A schema the registry holds under an id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisteredSchema {
    /// The schema's text: for Avro, its JSON.
    pub schema: String,
    /// `AVRO`, `PROTOBUF` or `JSON` (the API leaves it out for Avro).
    pub schema_type: String,
    /// How many other schemas it refers to (Confluent schema references), which this client
    /// does not fetch.
    pub references: usize,
}

/// What the registry holds under a subject, newest version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectVersion {
    pub version: i64,
    pub id: u32,
    pub schema: String,
}

/// One of Tally's schemas as registered at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registered {
    pub subject: String,
    pub kind: Kind,
    pub id: u32,
}

/// The subject of a topic's record values under the registry's default naming (Confluent's
/// `TopicNameStrategy`): `<topic>-value`.
pub fn value_subject(topic: &str) -> String {
    format!("{topic}-value")
}

/// A client of one registry. Cheap to clone (the HTTP client is shared).
#[derive(Debug, Clone)]
pub struct SchemaRegistry {
    config: RegistryConfig,
    http: reqwest::Client,
}

#[derive(Deserialize)]
struct SchemaAnswer {
    schema: String,
    #[serde(rename = "schemaType")]
    schema_type: Option<String>,
    #[serde(default)]
    references: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
struct VersionAnswer {
    version: i64,
    id: u32,
    schema: String,
}

#[derive(Deserialize)]
struct CompatibilityAnswer {
    is_compatible: bool,
    #[serde(default)]
    messages: Vec<String>,
}

#[derive(Deserialize)]
struct IdAnswer {
    id: u32,
}

#[derive(Deserialize)]
struct ErrorAnswer {
    error_code: i64,
    #[serde(default)]
    message: String,
}

impl SchemaRegistry {
    /// A client for the registry `config` names. Makes no request; fails with
    /// [`RegistryError::Unavailable`] when the CA certificates do not parse or the URL cannot
    /// be a base.
    pub fn new(config: RegistryConfig) -> Result<Self, RegistryError> {
        let setup = |why: String| RegistryError::Unavailable { request: "setting up".into(), why };
        if config.url.cannot_be_a_base() {
            return Err(setup(format!("{} cannot be a base URL", config.url)));
        }
        let mut http = reqwest::Client::builder().timeout(config.timeout).connect_timeout(config.timeout);
        if let Some(pem) = &config.ca_pem {
            for cert in
                reqwest::Certificate::from_pem_bundle(pem).map_err(|e| setup(format!("CA file: {e}")))?
            {
                http = http.add_root_certificate(cert);
            }
        }
        let http = http.build().map_err(|e| setup(e.to_string()))?;
        Ok(SchemaRegistry { config, http })
    }

    /// The registry's base URL (without credentials), for messages.
    pub fn url(&self) -> &Url {
        &self.config.url
    }

    /// The schema the registry holds under `id` (`GET /schemas/ids/{id}`).
    pub async fn schema_by_id(&self, id: u32) -> Result<RegisteredSchema, RegistryError> {
        let request = format!("schema id {id}");
        let answer: SchemaAnswer =
            self.send(&request, "schema_by_id", self.get(&["schemas", "ids", &id.to_string()])).await?;
        Ok(RegisteredSchema {
            schema: answer.schema,
            schema_type: answer.schema_type.unwrap_or_else(|| "AVRO".into()),
            references: answer.references.len(),
        })
    }

    /// The newest version under `subject` (`GET /subjects/{subject}/versions/latest`), or `None`
    /// when the subject has none.
    pub async fn latest(&self, subject: &str) -> Result<Option<SubjectVersion>, RegistryError> {
        let request = format!("the latest version of {subject}");
        let get = self.get(&["subjects", subject, "versions", "latest"]);
        match self.send::<VersionAnswer>(&request, "latest", get).await {
            Ok(v) => Ok(Some(SubjectVersion { version: v.version, id: v.id, schema: v.schema })),
            Err(RegistryError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Whether the registry, by the compatibility level set for `subject`, would accept the Avro
    /// `schema` as its next version (`POST /compatibility/subjects/{subject}/versions/latest`):
    /// `Ok(Ok(()))`, or `Ok(Err(messages))` with the registry's reasons. A subject without
    /// versions accepts anything.
    pub async fn check_compatible(
        &self,
        subject: &str,
        schema: &str,
    ) -> Result<Result<(), Vec<String>>, RegistryError> {
        let request = format!("a compatibility check against {subject}");
        let post = self.post(&["compatibility", "subjects", subject, "versions", "latest"], schema);
        match self.send::<CompatibilityAnswer>(&request, "compatibility", post).await {
            Ok(a) if a.is_compatible => Ok(Ok(())),
            Ok(a) => Ok(Err(a.messages)),
            Err(RegistryError::NotFound { .. }) => Ok(Ok(())),
            Err(e) => Err(e),
        }
    }

    /// Registers the Avro `schema` under `subject` (`POST /subjects/{subject}/versions`) and
    /// returns its id; registering a schema the subject already has returns the existing id.
    pub async fn register(&self, subject: &str, schema: &str) -> Result<u32, RegistryError> {
        let request = format!("registering a version of {subject}");
        let post = self.post(&["subjects", subject, "versions"], schema);
        Ok(self.send::<IdAnswer>(&request, "register", post).await?.id)
    }

    /// Registers the current command schema under `commands_subject` and the current event
    /// schema under `events_subject`. Before each, checks that the subject's newest version (if
    /// any) can be read with Tally's schema (Avro schema resolution: records other producers
    /// wrote with it stay readable) and that the registry accepts Tally's schema by the
    /// subject's compatibility level. Fails with [`StartError`] naming the subject and why;
    /// nothing later is registered then.
    pub async fn register_tally_schemas(
        &self,
        codec: &Codec,
        commands_subject: &str,
        events_subject: &str,
    ) -> Result<Vec<Registered>, StartError> {
        let mut registered = Vec::new();
        for (subject, kind) in [(commands_subject, Kind::Command), (events_subject, Kind::Event)] {
            registered.push(self.register_tally_schema(codec, subject, kind).await?);
        }
        Ok(registered)
    }

    /// Registers Tally's `kind` schema under `subject` after the checks
    /// [`SchemaRegistry::register_tally_schemas`] makes (also for a sink's destination topic).
    pub async fn register_tally_schema(
        &self,
        codec: &Codec,
        subject: &str,
        kind: Kind,
    ) -> Result<Registered, StartError> {
        let ours = tally_codec::source(kind);
        if let Some(latest) = self.latest(subject).await? {
            codec.readable_as_current(kind, &latest.schema).map_err(|e| StartError::Incompatible {
                subject: subject.to_owned(),
                why: format!("its version {} (id {}) is {}", latest.version, latest.id, e),
            })?;
        }
        if let Err(messages) = self.check_compatible(subject, ours).await? {
            return Err(StartError::Incompatible {
                subject: subject.to_owned(),
                why: format!(
                    "the registry finds Tally's {kind} schema incompatible with it: {}",
                    messages.join("; ")
                ),
            });
        }
        let id = self.register(subject, ours).await?;
        tracing::info!(subject, %kind, id, "schema registered");
        Ok(Registered { subject: subject.to_owned(), kind, id })
    }

    fn endpoint(&self, segments: &[&str]) -> Url {
        let mut url = self.config.url.clone();
        url.path_segments_mut().expect("checked in new").pop_if_empty().extend(segments);
        url
    }

    fn get(&self, segments: &[&str]) -> reqwest::RequestBuilder {
        self.authorized(self.http.get(self.endpoint(segments)))
    }

    fn post(&self, segments: &[&str], schema: &str) -> reqwest::RequestBuilder {
        let body = serde_json::json!({ "schema": schema, "schemaType": "AVRO" }).to_string();
        self.authorized(self.http.post(self.endpoint(segments)))
            .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE)
            .body(body)
    }

    fn authorized(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        let request = request.header(reqwest::header::ACCEPT, CONTENT_TYPE);
        match &self.config.basic_auth {
            Some((user, password)) => request.basic_auth(user, Some(password)),
            None => request,
        }
    }

    /// Sends `request`, reads the whole answer and classifies it ([`classify`]); counts it in
    /// `tally_schema_registry_requests_total` under `kind`.
    async fn send<T: serde::de::DeserializeOwned>(
        &self,
        what: &str,
        kind: &'static str,
        request: reqwest::RequestBuilder,
    ) -> Result<T, RegistryError> {
        let result = match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                match response.bytes().await {
                    Ok(body) => classify(what, status, &body),
                    Err(e) => Err(unavailable(what, format!("reading the answer: {e}"))),
                }
            }
            Err(e) => Err(unavailable(what, tally_runtime::error_chain(&e))),
        };
        metrics::count(kind, &result);
        result
    }
}

/// Why Tally's schemas could not be registered at start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The subject holds a schema Tally's cannot follow; the message says which and why.
    #[error(
        "subject {subject}: {why}. Tally refuses to start rather than register a schema that \
         breaks the subject's readers or writers; see docs/schema-registry.md"
    )]
    Incompatible { subject: String, why: String },
    /// The registry failed a request.
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

/// An answer of `status` with `body` to the request `what`, as the API's JSON (`T`) or the
/// error it stands for: 2xx with a body of the expected shape is `Ok`; 404 with a not-found
/// error code is [`RegistryError::NotFound`]; 409 or 422 with an error code is
/// [`RegistryError::Refused`]; anything else (5xx, 401, 403, a 404 without an error code, a body
/// that is not the API's) is [`RegistryError::Unavailable`].
pub fn classify<T: serde::de::DeserializeOwned>(
    what: &str,
    status: u16,
    body: &[u8],
) -> Result<T, RegistryError> {
    if (200..300).contains(&status) {
        return serde_json::from_slice(body)
            .map_err(|e| unavailable(what, format!("HTTP {status} with a body that is not the API's: {e}")));
    }
    let error: Option<ErrorAnswer> = serde_json::from_slice(body).ok();
    match (status, error) {
        (404, Some(e)) if NOT_FOUND_CODES.contains(&e.error_code) => {
            Err(RegistryError::NotFound { what: what.to_owned(), message: e.message })
        }
        (409 | 422, Some(e)) => Err(RegistryError::Refused {
            request: what.to_owned(),
            status,
            code: e.error_code,
            message: e.message,
        }),
        (_, Some(e)) => Err(unavailable(what, format!("HTTP {status} ({}) {}", e.error_code, e.message))),
        (_, None) => {
            let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
            Err(unavailable(what, format!("HTTP {status}: {text}")))
        }
    }
}

fn unavailable(what: &str, why: String) -> RegistryError {
    RegistryError::Unavailable { request: what.to_owned(), why }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(status: u16, body: &str) -> Result<SchemaAnswer, RegistryError> {
        classify("schema id 7", status, body.as_bytes())
    }

    #[test]
    fn answers_are_told_apart_by_status_and_error_code() {
        let ok = schema(200, r#"{"schema":"\"long\""}"#).unwrap();
        assert_eq!((ok.schema.as_str(), ok.schema_type), ("\"long\"", None));
        for code in NOT_FOUND_CODES {
            let body = format!(r#"{{"error_code":{code},"message":"gone"}}"#);
            assert!(matches!(schema(404, &body), Err(RegistryError::NotFound { .. })), "{code}");
        }
        assert!(matches!(
            schema(409, r#"{"error_code":409,"message":"incompatible"}"#),
            Err(RegistryError::Refused { status: 409, code: 409, .. })
        ));
        assert!(matches!(
            schema(422, r#"{"error_code":42201,"message":"invalid"}"#),
            Err(RegistryError::Refused { status: 422, code: 42201, .. })
        ));
        // Not the record's fault: these must never read as "no such schema".
        let unavailable = [
            (404, ""),                                          // a wrong base URL
            (404, "<html>Not Found</html>"),                    // a proxy's page
            (404, r#"{"error_code":40400,"message":"x"}"#),     // another 404 code
            (500, r#"{"error_code":50001,"message":"store"}"#), // the registry's store failed
            (503, ""),
            (401, r#"{"error_code":401,"message":"Unauthorized"}"#),
            (403, ""),
            (200, "not json"),
            (200, r#"{"no_schema":1}"#),
            (409, "conflict"), // no error code: not the API's answer
        ];
        for (status, body) in unavailable {
            assert!(
                matches!(schema(status, body), Err(RegistryError::Unavailable { .. })),
                "{status} {body}"
            );
        }
    }

    #[test]
    fn paths_are_appended_to_the_base_with_or_without_a_trailing_slash() {
        for base in
            ["http://r:8081", "http://r:8081/", "http://r/apis/ccompat/v7", "http://r/apis/ccompat/v7/"]
        {
            let registry = SchemaRegistry::new(RegistryConfig::new(base.parse().unwrap())).unwrap();
            let url = registry.endpoint(&["subjects", "t.commands-value", "versions"]);
            assert_eq!(
                url.as_str(),
                format!("{}/subjects/t.commands-value/versions", base.trim_end_matches('/'))
            );
        }
        let registry = SchemaRegistry::new(RegistryConfig::new("http://r".parse().unwrap())).unwrap();
        // A subject is one path segment whatever it holds.
        assert_eq!(registry.endpoint(&["subjects", "a/b?c"]).as_str(), "http://r/subjects/a%2Fb%3Fc");
        assert!(SchemaRegistry::new(RegistryConfig::new("mailto:x@y".parse().unwrap())).is_err());
    }
}

//! The HTTP front door against the real pipeline: requests become commands on the in-process
//! broker, the processor answers them, the watcher hands the answers back.

mod support;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use std::collections::HashMap;
use std::time::Duration;
use support::*;
use tally_auth::keys::{KeyRing, ring_for};
use tally_auth::reload::Reloading;
use tally_auth::{Authenticator, Role, Roles};
use tally_http::gate::{Gate, GateConfig};
use tally_ingest::http::{Front, HttpConfig};
use tally_ingest::outcomes::{OutcomeWatcher, Outcomes};
use tally_ingest::processor::{Processor, ProcessorStatus};
use tally_runtime::Handle;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// What a test looks at in a response.
struct Reply {
    status: StatusCode,
    content_type: String,
    location: Option<String>,
    position: Option<String>,
    body: serde_json::Value,
}

async fn request(app: &axum::Router, method: &str, uri: &str, headers: &[(&str, &str)], body: &str) -> Reply {
    let mut request = Request::builder().method(method).uri(uri).header("content-type", "application/json");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = app.clone().oneshot(request.body(Body::from(body.to_owned())).unwrap()).await.unwrap();
    let header = |name: &str| response.headers().get(name).map(|v| v.to_str().unwrap().to_owned());
    let (status, content_type) = (response.status(), header("content-type").unwrap_or_default());
    let (location, position) = (header("location"), header("tally-position"));
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let body = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    Reply { status, content_type, location, position, body }
}

async fn call(
    app: &axum::Router,
    method: &str,
    uri: &str,
    tenant: Option<&str>,
    body: &str,
) -> (StatusCode, serde_json::Value) {
    let headers: Vec<(&str, &str)> = tenant.map(|t| ("authorization", bearer(t))).into_iter().collect();
    let reply = request(app, method, uri, &headers, body).await;
    (reply.status, reply.body)
}

/// An API key for each test tenant, every role.
static KEYS: std::sync::LazyLock<(KeyRing, HashMap<String, String>)> = std::sync::LazyLock::new(|| {
    ring_for(&["acme", "globex"], Roles::of(&[Role::Read, Role::Write, Role::Admin]))
});

/// The `Authorization` value of `tenant`'s key.
fn bearer(tenant: &str) -> &'static str {
    KEYS.1[tenant].as_str()
}

/// A processor, the outcome watcher and a front door with `config` on a fresh harness.
struct Service {
    h: Harness,
    processor: Handle<ProcessorStatus>,
    outcomes: std::sync::Arc<Outcomes>,
    watcher: Handle,
}

impl Service {
    async fn start() -> Service {
        let h = Harness::start(2).await;
        let processor = Processor::build(h.processor("p1")).unwrap().run(CancellationToken::new());
        let outcomes = Outcomes::new(10_000);
        let (events, partitions) = (h.topics.events.clone(), h.partitions);
        let watcher = OutcomeWatcher::build(h.kafka.clone(), events, partitions, outcomes.clone(), None)
            .run(CancellationToken::new());
        Service { h, processor, outcomes, watcher }
    }

    fn front(&self, config: HttpConfig) -> axum::Router {
        let producer = tally_kafka::Producer::new(&self.h.kafka, "http").unwrap();
        let front =
            Front::new(producer, self.h.topics.commands.clone(), self.outcomes.clone(), config).router();
        let keys = Reloading::fixed("API keys", KEYS.0.clone());
        Gate::new(Authenticator::new().with_keys(keys), &GateConfig::default()).unwrap().protect(front)
    }

    async fn stop(self) {
        self.watcher.stop().await.unwrap();
        self.processor.stop().await.unwrap();
    }
}

const LONG_WAIT: HttpConfig = HttpConfig { wait: Duration::from_secs(30), body_limit: 4096, batch_max: 3 };

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_are_answered_from_the_log() {
    let service = Service::start().await;
    let app = service.front(LONG_WAIT);

    let (status, body) =
        call(&app, "POST", "/v1/ledgers/main/assets", Some("acme"), r#"{"asset":"USD/2"}"#).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["status"], "ACCEPTED");
    let pay = r#"{"tx_id":"t1","postings":[{"source":"world","destination":"alice","asset":"USD/2","amount":500}]}"#;
    let (status, body) = call(&app, "POST", "/v1/ledgers/main/transactions", Some("acme"), pay).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert!(body["position"].as_str().unwrap().contains('-'));
    // The same request again: the first outcome, not a second effect.
    let (status, again) = call(&app, "POST", "/v1/ledgers/main/transactions", Some("acme"), pay).await;
    assert_eq!((status, &again["position"]), (StatusCode::CREATED, &body["position"]));
    let overdraw =
        r#"{"tx_id":"t2","postings":[{"source":"alice","destination":"bob","asset":"USD/2","amount":501}]}"#;
    let (status, problem) = call(&app, "POST", "/v1/ledgers/main/transactions", Some("acme"), overdraw).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert_eq!(problem["reason"], "INSUFFICIENT_FUNDS");
    let (status, _) = call(&app, "GET", "/v1/commands/tx:t1", Some("acme"), "").await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = call(&app, "GET", "/v1/commands/tx:t1", Some("globex"), "").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "another tenant's command is unknown");

    // An amount is any JSON form of an integer, read exactly (JSON Schema's integers); a
    // fraction, or a value beyond i128, is malformed.
    let amount_as = |tx: &str, amount: &str| {
        format!(
            r#"{{"tx_id":"{tx}","postings":[{{"source":"world","destination":"alice","asset":"USD/2","amount":{amount}}}]}}"#
        )
    };
    for (tx, amount, expected) in [("t3", "5e1", Some(50)), ("t4", "0.7e2", Some(70))].into_iter().chain([
        ("t5", "2.5", None),
        ("t6", "1e39", None),
        ("t7", "170141183460469231731687303715884105728", None),
    ]) {
        let (status, body) =
            call(&app, "POST", "/v1/ledgers/main/transactions", Some("acme"), &amount_as(tx, amount)).await;
        match expected {
            Some(minor_units) => {
                assert_eq!(status, StatusCode::CREATED, "{amount}: {body}");
                let postings = &body["event"]["body"]["TransactionPosted"]["postings"];
                assert_eq!(postings[0]["amount"], minor_units, "{amount}: {body}");
            }
            None => assert_eq!(status, StatusCode::BAD_REQUEST, "{amount}: {body}"),
        }
    }

    // A pending timeout the log cannot carry (an Avro long) is malformed, not lost on the way.
    let hold = r#"{"tx_id":"t8","postings":[{"source":"world","destination":"alice","asset":"USD/2","amount":1}],"pending_timeout_ms":9223372036854775808}"#;
    let (status, problem) = call(&app, "POST", "/v1/ledgers/main/transactions", Some("acme"), hold).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
    // Documents are JSON that readers can read as values: numbers that fit a double, 32 levels.
    let nested = |levels: usize| format!("{}1{}", r#"{"a":"#.repeat(levels), "}".repeat(levels));
    for (document, expected) in [
        (r#"{"n":1e400}"#.to_owned(), StatusCode::BAD_REQUEST),
        (nested(33), StatusCode::BAD_REQUEST),
        (nested(32), StatusCode::OK),
    ] {
        let (status, problem) = call(&app, "PUT", "/v1/state/deep/d1", Some("acme"), &document).await;
        assert_eq!(status, expected, "{problem}");
    }
    // Both conditions must hold (RFC 9110): only If-Match 0 goes with If-None-Match *.
    let acme = [("authorization", bearer("acme"))];
    let with = |conditions: &[(&'static str, &'static str)]| [&acme[..], conditions].concat();
    for (conditions, expected) in [
        (with(&[("if-match", "\"1\""), ("if-none-match", "*")]), StatusCode::PRECONDITION_FAILED),
        (with(&[("if-none-match", "W/\"1\"")]), StatusCode::BAD_REQUEST),
        (with(&[("if-match", "0"), ("if-none-match", "*")]), StatusCode::OK),
    ] {
        let reply = request(&app, "PUT", "/v1/state/cond/c1", &conditions, "{}").await;
        assert_eq!(reply.status, expected, "{conditions:?}: {}", reply.body);
    }

    // Bad input: clear 4xx, nothing produced.
    let (status, problem) = call(&app, "POST", "/v1/ledgers/main/transactions", None, pay).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{problem}");
    for (tenant, body) in [(Some("acme"), "{not json"), (Some("acme"), r#"{"tx_id":"bad/id","postings":[]}"#)]
    {
        let (status, problem) = call(&app, "POST", "/v1/ledgers/main/transactions", tenant, body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
        assert!(!problem["detail"].as_str().unwrap().is_empty());
    }
    let (status, doc) = call(&app, "GET", "/openapi.json", None, "").await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["paths"]["/v1/ledgers/{ledger}/transactions"]["post"].is_object(), "{doc}");
    // The document declares this instance's batch limit, and the ledger's rules on single
    // transactions only: a batch answers a transaction that breaks them in its results.
    let schemas = &doc["components"]["schemas"];
    assert_eq!(schemas["BatchBody"]["properties"]["transactions"]["maxItems"], 3, "{doc}");
    assert_eq!(schemas["PostingBody"]["properties"]["amount"]["minimum"], 1);
    assert!(schemas["BatchPostingBody"]["properties"]["amount"]["minimum"].as_f64().unwrap() < 0.0);

    let log = service.h.log().await;
    assert_eq!(
        log.outcomes().len(),
        7,
        "define, t1, t2, t3, t4, d1, c1: the repeated request produced nothing"
    );
    service.stop().await;
}

static ACME: std::sync::LazyLock<[(&str, &str); 1]> =
    std::sync::LazyLock::new(|| [("authorization", bearer("acme"))]);

fn with<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    ACME.iter().chain(extra).copied().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_write_endpoint_answers_with_its_outcome() {
    let service = Service::start().await;
    let app = service.front(LONG_WAIT);
    let post = |uri: &'static str, body: &'static str| request(&app, "POST", uri, &*ACME, body);

    assert_eq!(post("/v1/ledgers/main/assets", r#"{"asset":"USD/2"}"#).await.status, StatusCode::CREATED);
    // Accounts: open (twice is a conflict), update, close (only when empty).
    let open = r#"{"account":"dave","limits":[{"asset":"USD/2","min_balance":-100}],"metadata":{"k":"v"}}"#;
    let opened = post("/v1/ledgers/main/accounts", open).await;
    assert_eq!(opened.status, StatusCode::CREATED, "{}", opened.body);
    assert!(opened.position.is_some(), "the position is in the Tally-Position header");
    let again =
        request(&app, "POST", "/v1/ledgers/main/accounts", &with(&[("idempotency-key", "open-again")]), open)
            .await;
    assert_eq!((again.status, &again.body["reason"]), (StatusCode::CONFLICT, &"ACCOUNT_EXISTS".into()));
    assert_eq!(again.content_type, "application/problem+json");
    let updated =
        request(&app, "PUT", "/v1/ledgers/main/accounts/dave", &*ACME, r#"{"metadata":{"k":"w"}}"#).await;
    assert_eq!(updated.status, StatusCode::OK, "{}", updated.body);

    // Transactions: a posted one, a pending one committed, another voided, a reversal.
    let pay = post("/v1/ledgers/main/transactions", r#"{"tx_id":"t1","postings":[{"source":"world","destination":"alice","asset":"USD/2","amount":500}]}"#).await;
    assert_eq!(pay.status, StatusCode::CREATED);
    let hold = r#"{"tx_id":"p1","pending_timeout_ms":600000,"postings":[{"source":"alice","destination":"bob","asset":"USD/2","amount":100}]}"#;
    assert_eq!(post("/v1/ledgers/main/transactions", hold).await.status, StatusCode::CREATED);
    let committed = post("/v1/ledgers/main/transactions/p1/commit", "").await;
    assert_eq!(committed.status, StatusCode::OK, "{}", committed.body);
    let hold = r#"{"tx_id":"p2","pending_timeout_ms":600000,"postings":[{"source":"alice","destination":"bob","asset":"USD/2","amount":50}]}"#;
    assert_eq!(post("/v1/ledgers/main/transactions", hold).await.status, StatusCode::CREATED);
    assert_eq!(post("/v1/ledgers/main/transactions/p2/void", "").await.status, StatusCode::OK);
    let void_again = request(
        &app,
        "POST",
        "/v1/ledgers/main/transactions/p2/void",
        &with(&[("idempotency-key", "void-2")]),
        "",
    )
    .await;
    assert_eq!(
        void_again.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "a voided transaction is no longer pending"
    );
    let reversed = post("/v1/ledgers/main/transactions/p1/reverse", r#"{"tx_id":"r1"}"#).await;
    assert_eq!(reversed.status, StatusCode::CREATED, "{}", reversed.body);
    let close_alice = post("/v1/ledgers/main/accounts/alice/close", "").await;
    assert_eq!(close_alice.body["reason"], "ACCOUNT_NOT_EMPTY", "{}", close_alice.body);
    assert_eq!(post("/v1/ledgers/main/accounts/dave/close", "").await.status, StatusCode::OK);

    // A batch: each transaction its own command, answered in order.
    let batch = r#"{"transactions":[
        {"tx_id":"b1","postings":[{"source":"alice","destination":"carol","asset":"USD/2","amount":1}]},
        {"tx_id":"b2","postings":[{"source":"alice","destination":"carol","asset":"USD/2","amount":1000000}]},
        {"tx_id":"t1","postings":[{"source":"world","destination":"alice","asset":"USD/2","amount":500}]}]}"#;
    let answered = post("/v1/ledgers/main/transactions/batch", batch).await;
    let statuses: Vec<_> =
        answered.body["results"].as_array().unwrap().iter().map(|r| r["status"].as_u64().unwrap()).collect();
    assert_eq!(statuses, [201, 422, 201], "posted, insufficient funds, t1's first answer: {}", answered.body);
    assert_eq!(answered.body["results"][2]["outcome"]["position"].as_str(), pay.position.as_deref());
    let too_many = format!(r#"{{"transactions":[{}]}}"#, [r#"{"tx_id":"x","postings":[]}"#; 4].join(","));
    let refused = request(&app, "POST", "/v1/ledgers/main/transactions/batch", &*ACME, &too_many).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    let empty = post("/v1/ledgers/main/transactions/batch", r#"{"transactions":[]}"#).await;
    assert_eq!(empty.status, StatusCode::BAD_REQUEST);
    // A batch's transactions take effect in request order: the second spends what the first
    // brought (this failed about two times in three when the items were produced concurrently).
    for round in 0..5 {
        let chained = format!(
            r#"{{"transactions":[
            {{"tx_id":"in-{round}","postings":[{{"source":"world","destination":"erin-{round}","asset":"USD/2","amount":7}}]}},
            {{"tx_id":"out-{round}","postings":[{{"source":"erin-{round}","destination":"bob","asset":"USD/2","amount":7}}]}}]}}"#
        );
        let answered = request(&app, "POST", "/v1/ledgers/main/transactions/batch", &*ACME, &chained).await;
        let statuses: Vec<_> = answered.body["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["status"].as_u64().unwrap())
            .collect();
        assert_eq!(statuses, [201, 201], "round {round}: {}", answered.body);
    }
    // Batch items take their transactions' ids: a key is refused, not silently replaced.
    let keyed = with(&[("idempotency-key", "bk-1")]);
    let one = r#"{"transactions":[{"tx_id":"k1","postings":[]}]}"#;
    let refused = request(&app, "POST", "/v1/ledgers/main/transactions/batch", &keyed, one).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.body);
    // Two keys on one request name no one command.
    let two_keys = with(&[("idempotency-key", "k-a"), ("idempotency-key", "k-b")]);
    let refused = request(&app, "POST", "/v1/ledgers/main/assets", &two_keys, r#"{"asset":"EUR/2"}"#).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.body);

    // State documents with expected versions.
    let doc = |method: &'static str, headers: Vec<(&'static str, &'static str)>, body: &'static str| {
        let app = app.clone();
        async move { request(&app, method, "/v1/state/profile/u1", &headers, body).await }
    };
    let create_only = with(&[("if-none-match", "*")]);
    assert_eq!(doc("PUT", create_only.clone(), r#"{"name":"a"}"#).await.status, StatusCode::OK);
    let exists =
        doc("PUT", with(&[("if-none-match", "*"), ("idempotency-key", "put-2")]), r#"{"name":"b"}"#).await;
    assert_eq!((exists.status, &exists.body["reason"]), (StatusCode::CONFLICT, &"VERSION_MISMATCH".into()));
    assert_eq!(
        doc("PUT", with(&[("if-match", "\"1\""), ("idempotency-key", "put-3")]), r#"{"name":"c"}"#)
            .await
            .status,
        StatusCode::OK
    );
    let stale = doc("PUT", with(&[("if-match", "1"), ("idempotency-key", "put-4")]), r#"{"name":"d"}"#).await;
    assert_eq!(stale.status, StatusCode::CONFLICT);
    assert_eq!(doc("DELETE", with(&[("if-match", "2")]), "").await.status, StatusCode::OK);
    let bad_version = doc("PUT", with(&[("if-match", "two")]), "{}").await;
    assert_eq!(bad_version.status, StatusCode::BAD_REQUEST);
    let not_an_object = doc("PUT", with(&[("idempotency-key", "put-5")]), "[1, 2]").await;
    assert_eq!(not_an_object.status, StatusCode::BAD_REQUEST, "documents are JSON objects");

    // Limits and shapes of errors: every error is a problem document.
    let huge = format!(r#"{{"asset":"{}"}}"#, "X".repeat(5000));
    let too_large = request(&app, "POST", "/v1/ledgers/main/assets", &*ACME, &huge).await;
    assert_eq!(too_large.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(too_large.content_type, "application/problem+json", "{}", too_large.body);
    let wrong_method = request(&app, "DELETE", "/v1/ledgers/main/assets", &*ACME, "").await;
    assert_eq!(
        (wrong_method.status, wrong_method.content_type.as_str()),
        (StatusCode::METHOD_NOT_ALLOWED, "application/problem+json")
    );
    let nowhere = request(&app, "GET", "/nowhere", &*ACME, "").await;
    assert_eq!(
        (nowhere.status, nowhere.content_type.as_str()),
        (StatusCode::NOT_FOUND, "application/problem+json")
    );

    let log = service.h.log().await;
    let outcomes = log.outcomes();
    assert!(outcomes.contains_key("acme/tx:r1") && outcomes.contains_key("acme/tx:b2"));
    assert!(!outcomes.contains_key("acme/tx:x"), "a refused batch produced nothing");
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_answer_is_202_with_a_place_to_poll() {
    let service = Service::start().await;
    // A wait far shorter than a trip through the processor.
    let app = service.front(HttpConfig { wait: Duration::from_millis(1), ..LONG_WAIT });
    while !service.outcomes.caught_up() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let asset = request(
        &app,
        "POST",
        "/v1/ledgers/main/assets",
        &with(&[("idempotency-key", "slow-1")]),
        r#"{"asset":"USD/2"}"#,
    )
    .await;
    assert_eq!(asset.status, StatusCode::ACCEPTED, "{}", asset.body);
    let poll = asset.location.expect("Location");
    assert!(poll.starts_with("/v1/commands/slow-1?stream=main&fingerprint="), "{poll}");
    assert_eq!(asset.body["poll"], poll);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let answered = loop {
        let reply = request(&app, "GET", &poll, &*ACME, "").await;
        if reply.status != StatusCode::ACCEPTED {
            break reply;
        }
        assert!(std::time::Instant::now() < deadline, "never answered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!((answered.status, &answered.body["status"]), (StatusCode::OK, &"ACCEPTED".into()));
    let unknown = request(&app, "GET", "/v1/commands/never-sent", &*ACME, "").await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    service.stop().await;
}

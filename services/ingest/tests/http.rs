//! The HTTP front door against the real pipeline: requests become commands on the in-process
//! broker, the processor answers them, the watcher hands the answers back.

mod support;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use std::time::Duration;
use support::*;
use tally_ingest::http::{Front, HttpConfig};
use tally_ingest::outcomes::{Outcomes, watch};
use tally_ingest::processor::Processor;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

async fn call(
    app: &axum::Router,
    method: &str,
    uri: &str,
    tenant: Option<&str>,
    body: &str,
) -> (StatusCode, serde_json::Value) {
    let mut request = Request::builder().method(method).uri(uri).header("content-type", "application/json");
    if let Some(t) = tenant {
        request = request.header("tally-tenant", t);
    }
    let response = app.clone().oneshot(request.body(Body::from(body.to_owned())).unwrap()).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_are_answered_from_the_log() {
    let h = Harness::start(2).await;
    let processor = Processor::start(h.processor("p1")).unwrap();
    let outcomes = Outcomes::new(10_000);
    let stop = CancellationToken::new();
    let watcher =
        watch(h.kafka.clone(), h.topics.events.clone(), h.partitions, outcomes.clone(), stop.clone());
    let producer = h.kafka.producer("http").create().unwrap();
    let config = HttpConfig { wait: Duration::from_secs(30), ..HttpConfig::default() };
    let app = Front::new(producer, h.topics.commands.clone(), outcomes, config).router();

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
    let (status, _) = call(&app, "GET", "/v1/commands/t1", Some("acme"), "").await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = call(&app, "GET", "/v1/commands/t1", Some("globex"), "").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "another tenant's command is unknown");

    // Bad input: clear 400s, nothing produced.
    for (tenant, body) in
        [(None, pay), (Some("acme"), "{not json"), (Some("acme"), r#"{"tx_id":"bad/id","postings":[]}"#)]
    {
        let (status, problem) = call(&app, "POST", "/v1/ledgers/main/transactions", tenant, body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
        assert!(!problem["detail"].as_str().unwrap().is_empty());
    }
    let (status, doc) = call(&app, "GET", "/openapi.json", None, "").await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["paths"]["/v1/ledgers/{ledger}/transactions"]["post"].is_object(), "{doc}");

    let log = h.log().await;
    assert_eq!(log.outcomes().len(), 3, "define, t1, t2: the repeated request produced nothing");
    stop.cancel();
    processor.stop().await;
    let _ = tokio::task::spawn_blocking(move || watcher.join()).await;
}

//! The gRPC API against a running `tally dev`: every method answers as its HTTP route does
//! (amounts exact at the limits of i128), errors map to codes with their reasons, every method
//! is behind the gate, a followed stream resumes without gaps or repeats, and reflection,
//! health and grpc-web answer.

mod tally_dev;

use prost_reflect::{DescriptorPool, DynamicMessage, Value as Field};
use std::time::Duration;
use tally_dev::{ACME, ACME_READ_ONLY, Dev, GLOBEX};
use tally_grpc::v1::commands_client::CommandsClient;
use tally_grpc::v1::queries_client::QueriesClient;
use tally_grpc::v1::*;
use tonic::Code;
use tonic::transport::Channel;
use tonic_types::StatusExt;

const I128_MAX: &str = "170141183460469231731687303715884105727";

fn with_key<T>(message: T, key: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("authorization", key.parse().unwrap());
    request
}

async fn channel(dev: &Dev) -> Channel {
    Channel::from_shared(format!("http://{}", dev.grpc)).unwrap().connect().await.expect("the gRPC listener")
}

fn posting(source: &str, destination: &str, amount: &str) -> Posting {
    Posting {
        source: source.into(),
        destination: destination.into(),
        asset: "USD/2".into(),
        amount: amount.into(),
    }
}

/// A write to the front door with an idempotency key, as JSON text.
fn http_write(dev: &Dev, method: &str, path: &str, body: &str, key: &str) -> (u16, String) {
    let agent = ureq::Agent::config_builder().http_status_as_error(false).build().new_agent();
    let request = ureq::http::Request::builder()
        .method(method)
        .uri(format!("http://{}{path}", dev.http))
        .header("authorization", ACME)
        .header("idempotency-key", key)
        .body(body.to_owned())
        .unwrap();
    let mut response = agent.run(request).unwrap();
    (response.status().as_u16(), response.body_mut().read_to_string().unwrap())
}

/// An HTTP GET of the query API, as JSON text.
fn http_get(dev: &Dev, path: &str, key: &str) -> (u16, String) {
    let agent = ureq::Agent::config_builder().http_status_as_error(false).build().new_agent();
    let mut response =
        agent.get(format!("http://{}{path}", dev.query)).header("authorization", key).call().unwrap();
    (response.status().as_u16(), response.body_mut().read_to_string().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_method_answers_as_its_http_route_with_exact_amounts_and_mapped_errors() {
    let dev = Dev::start(&[]);
    let channel = channel(&dev).await;
    let (mut commands, mut queries) = (CommandsClient::new(channel.clone()), QueriesClient::new(channel));

    let asset = DefineAssetRequest { ledger: "main".into(), asset: "USD/2".into() };
    let defined = commands.define_asset(with_key(asset, ACME)).await.unwrap();
    assert_eq!(defined.get_ref().status(), CommandStatus::Accepted);
    let position = defined.metadata().get("tally-position").expect("the position in the metadata").clone();
    assert_eq!(position.to_str().unwrap(), defined.get_ref().position);
    let open = OpenAccountRequest {
        ledger: "main".into(),
        account: "alice".into(),
        limits: vec![Limit {
            asset: "USD/2".into(),
            min_balance: Some("-170141183460469231731687303715884105727".into()),
        }],
        metadata: [("email".to_owned(), "a@example.com".to_owned())].into(),
    };
    commands.open_account(with_key(open.clone(), ACME)).await.unwrap();
    commands
        .open_account(with_key(
            OpenAccountRequest { account: "bob".into(), limits: vec![], ..open.clone() },
            ACME,
        ))
        .await
        .unwrap();

    // The largest amount there is, both ways, exactly.
    let tx = PostTransactionRequest {
        ledger: "main".into(),
        tx_id: "t-max".into(),
        postings: vec![posting("world", "alice", I128_MAX)],
        metadata: Default::default(),
        pending_timeout_ms: None,
    };
    let posted = commands.post_transaction(with_key(tx.clone(), ACME)).await.unwrap().into_inner();
    assert_eq!(posted.status(), CommandStatus::Accepted, "{posted:?}");
    assert!(posted.event.contains(I128_MAX), "the event keeps every digit: {}", posted.event);
    // A retry (the same command id: `tx:t-max`) gets the first answer.
    let again = commands.post_transaction(with_key(tx.clone(), ACME)).await.unwrap().into_inner();
    assert_eq!(again, posted);

    let mut read = GetAccountRequest { ledger: "main".into(), account: "alice".into() };
    let mut request = with_key(read.clone(), ACME);
    request.metadata_mut().insert("tally-position", posted.position.parse().unwrap());
    let alice = queries.get_account(request).await.unwrap().into_inner();
    assert_eq!(alice.balances[0].posted, I128_MAX);
    assert_eq!(alice.limits[0].min_balance.as_deref(), Some("-170141183460469231731687303715884105727"));
    assert_eq!(alice.metadata["email"], "a@example.com");
    let (status, json) = http_get(&dev, "/v1/ledgers/main/accounts/alice", ACME);
    assert_eq!(status, 200);
    assert!(json.contains(&format!("\"posted\":{I128_MAX}")), "{json}");

    // Rejections: the reason decides the code, and rides in an ErrorInfo.
    let overflow = PostTransactionRequest {
        tx_id: "t-overflow".into(),
        postings: vec![posting("world", "alice", "1")],
        ..tx.clone()
    };
    let refused = commands.post_transaction(with_key(overflow, ACME)).await.unwrap_err();
    assert_eq!(refused.code(), Code::OutOfRange, "alice holds i128::MAX already: {refused:?}");
    assert_eq!(refused.get_error_details().error_info().unwrap().reason, "OVERFLOW");
    let overdraw = PostTransactionRequest {
        tx_id: "t-over".into(),
        postings: vec![posting("bob", "world", "1")],
        ..tx.clone()
    };
    let refused = commands.post_transaction(with_key(overdraw, ACME)).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    let info = refused.get_error_details().error_info().cloned().expect("an ErrorInfo");
    assert_eq!((info.reason.as_str(), info.domain.as_str()), ("INSUFFICIENT_FUNDS", "tally"));
    assert_eq!(info.metadata["http_status"], "422");
    assert!(info.metadata.contains_key("command_id") && info.metadata.contains_key("position"));
    let conflicting = PostTransactionRequest { postings: vec![posting("world", "alice", "2")], ..tx.clone() };
    let conflict = commands.post_transaction(with_key(conflicting, ACME)).await.unwrap_err();
    assert_eq!(conflict.code(), Code::AlreadyExists);
    assert_eq!(conflict.get_error_details().error_info().unwrap().reason, "ID_CONFLICT");
    let bad_amount = PostTransactionRequest {
        tx_id: "t-bad".into(),
        postings: vec![posting("world", "bob", "1.5x")],
        ..tx.clone()
    };
    let invalid = commands.post_transaction(with_key(bad_amount, ACME)).await.unwrap_err();
    assert_eq!(invalid.code(), Code::InvalidArgument, "{invalid:?}");
    let too_big = PostTransactionRequest {
        tx_id: "t-big".into(),
        postings: vec![posting("world", "bob", "170141183460469231731687303715884105728")],
        ..tx.clone()
    };
    assert_eq!(
        commands.post_transaction(with_key(too_big, ACME)).await.unwrap_err().code(),
        Code::InvalidArgument
    );

    // Holds, commits, reversals and statements.
    let hold = PostTransactionRequest {
        tx_id: "t-hold".into(),
        postings: vec![posting("alice", "bob", "300")],
        pending_timeout_ms: Some(60_000),
        ..tx.clone()
    };
    commands.post_transaction(with_key(hold, ACME)).await.unwrap();
    let commit =
        CommitPendingRequest { ledger: "main".into(), tx_id: "t-hold".into(), amounts: vec!["200".into()] };
    let committed = commands.commit_pending(with_key(commit, ACME)).await.unwrap().into_inner();
    assert_eq!(committed.status(), CommandStatus::Accepted, "{committed:?}");
    let reverse = ReverseRequest {
        ledger: "main".into(),
        original_tx_id: "t-hold".into(),
        tx_id: "t-back".into(),
        metadata: Default::default(),
    };
    let reversed = commands.reverse(with_key(reverse, ACME)).await.unwrap().into_inner();
    let mut request = with_key(GetTransactionRequest { ledger: "main".into(), tx_id: "t-hold".into() }, ACME);
    request.metadata_mut().insert("tally-position", reversed.position.parse().unwrap());
    let held = queries.get_transaction(request).await.unwrap().into_inner();
    assert_eq!((held.status.as_str(), held.reversed_by.as_str()), ("POSTED", "t-back"));
    assert_eq!(held.postings[0].amount, "200");
    let statement = GetStatementRequest {
        ledger: "main".into(),
        account: "bob".into(),
        asset: "USD/2".into(),
        limit: 1,
        cursor: String::new(),
    };
    let page = queries.get_statement(with_key(statement.clone(), ACME)).await.unwrap().into_inner();
    assert_eq!(page.items.len(), 1);
    // Newest first: the reversal, then the commit.
    assert_eq!((page.items[0].amount.as_str(), page.items[0].balance_after.as_str()), ("-200", "0"));
    let next = GetStatementRequest { cursor: page.next_cursor.clone(), ..statement };
    let page = queries.get_statement(with_key(next, ACME)).await.unwrap().into_inner();
    assert_eq!((page.items[0].amount.as_str(), page.items[0].balance_after.as_str()), ("200", "200"));
    let (status, json) = http_get(&dev, "/v1/ledgers/main/accounts/bob/statement?asset=USD/2", ACME);
    assert!(status == 200 && json.contains("\"balance_after\":0"), "{json}");

    // Documents: a put under conditions, a read, a search by field.
    let value: prost_types::Struct = prost_types::Struct {
        fields: [(
            "city".to_owned(),
            prost_types::Value { kind: Some(prost_types::value::Kind::StringValue("Oslo".into())) },
        )]
        .into(),
    };
    let put = PutDocumentRequest { doc_type: "profile".into(), key: "p-1".into(), value: Some(value) };
    let mut request = with_key(put.clone(), ACME);
    request.metadata_mut().insert("if-none-match", "*".parse().unwrap());
    let written = commands.put_document(request).await.unwrap().into_inner();
    let mut request = with_key(put.clone(), ACME);
    request.metadata_mut().insert("if-none-match", "*".parse().unwrap());
    let exists = commands.put_document(request).await.unwrap_err();
    assert_eq!(exists.code(), Code::Aborted, "a create-only put of an existing document: {exists:?}");
    let mut request = with_key(GetDocumentRequest { doc_type: "profile".into(), key: "p-1".into() }, ACME);
    request.metadata_mut().insert("tally-position", written.position.parse().unwrap());
    let document = queries.get_document(request).await.unwrap();
    assert_eq!(document.metadata().get("etag").unwrap(), "\"1\"");
    assert_eq!(document.get_ref().version, 1);
    let search = ListDocumentsRequest {
        doc_type: "profile".into(),
        field: [("city".to_owned(), "Oslo".to_owned())].into(),
        ..Default::default()
    };
    let found = queries.list_documents(with_key(search.clone(), ACME)).await.unwrap().into_inner();
    assert_eq!(found.items.len(), 1);
    let elsewhere = ListDocumentsRequest { field: [("city".to_owned(), "Rome".to_owned())].into(), ..search };
    assert!(queries.list_documents(with_key(elsewhere, ACME)).await.unwrap().into_inner().items.is_empty());

    // The same document over HTTP and over gRPC under one idempotency key is one command (the
    // same text: keys in order, whole numbers as integers); a gRPC retry is the same command.
    let (status, first) = http_write(
        &dev,
        "PUT",
        "/v1/state/profile/p-2",
        r#"{"city":"Oslo","n":1,"z":[2.5,null,true]}"#,
        "same-doc",
    );
    assert_eq!(status, 200, "{first}");
    let number = |n: f64| prost_types::Value { kind: Some(prost_types::value::Kind::NumberValue(n)) };
    let list = prost_types::ListValue {
        values: vec![
            number(2.5),
            prost_types::Value { kind: Some(prost_types::value::Kind::NullValue(0)) },
            prost_types::Value { kind: Some(prost_types::value::Kind::BoolValue(true)) },
        ],
    };
    let fields = [
        ("z".to_owned(), prost_types::Value { kind: Some(prost_types::value::Kind::ListValue(list)) }),
        ("n".to_owned(), number(1.0)),
        (
            "city".to_owned(),
            prost_types::Value { kind: Some(prost_types::value::Kind::StringValue("Oslo".into())) },
        ),
    ];
    let put = PutDocumentRequest {
        doc_type: "profile".into(),
        key: "p-2".into(),
        value: Some(prost_types::Struct { fields: fields.into() }),
    };
    for _ in 0..3 {
        let mut request = with_key(put.clone(), ACME);
        request.metadata_mut().insert("idempotency-key", "same-doc".parse().unwrap());
        let again =
            commands.put_document(request).await.expect("the same command, not a conflict").into_inner();
        assert!(first.contains(&again.position), "{first} / {again:?}");
    }
    // A document 32 levels deep (the most the front door takes) reads over gRPC too; a read
    // answers in full whatever If-None-Match says.
    let deep = format!("{}1{}", r#"{"a":"#.repeat(32), "}".repeat(32));
    let (status, written) = http_write(&dev, "PUT", "/v1/state/deep/d32", &deep, "deep-doc");
    assert_eq!(status, 200, "{written}");
    let position: serde_json::Value = serde_json::from_str(&written).unwrap();
    let mut request = with_key(GetDocumentRequest { doc_type: "deep".into(), key: "d32".into() }, ACME);
    request.metadata_mut().insert("tally-position", position["position"].as_str().unwrap().parse().unwrap());
    request.metadata_mut().insert("if-none-match", "\"1\"".parse().unwrap());
    assert_eq!(queries.get_document(request).await.expect("a deep document").into_inner().version, 1);

    // Refusals made behind the gate: an empty path field, no postings (the ledger's NO_POSTINGS,
    // as `[]` over HTTP), a method that does not exist.
    let nameless = queries
        .get_account(with_key(GetAccountRequest { ledger: String::new(), account: "a".into() }, ACME))
        .await
        .unwrap_err();
    assert_eq!(nameless.code(), Code::InvalidArgument, "{nameless:?}");
    assert!(nameless.message().starts_with("ledger: "), "{nameless:?}");
    let empty = PostTransactionRequest { tx_id: "t-empty".into(), postings: vec![], ..tx.clone() };
    let refused = commands.post_transaction(with_key(empty, ACME)).await.unwrap_err();
    assert_eq!(refused.get_error_details().error_info().unwrap().reason, "NO_POSTINGS", "{refused:?}");

    // Events, outcomes, balance at an instant.
    let events = SearchEventsRequest { stream: "main".into(), limit: 100, ..Default::default() };
    let events = queries.search_events(with_key(events, ACME)).await.unwrap().into_inner();
    assert!(events.items.iter().any(|e| e.kind == "TransactionPosted" && e.event.contains(I128_MAX)));
    let outcome = GetOutcomeRequest { command_id: "tx:t-max".into(), stream: "main".into() };
    let outcome = queries.get_command(with_key(outcome, ACME)).await.unwrap().into_inner();
    assert_eq!(outcome.status(), CommandStatus::Accepted);
    let at = GetBalanceAtRequest {
        ledger: "main".into(),
        account: "alice".into(),
        at: "2999-01-01T00:00:00Z".into(),
        asset: String::new(),
    };
    let at = queries.get_balance_at(with_key(at, ACME)).await.unwrap().into_inner();
    assert!(!at.balances.is_empty());

    // Another tenant sees nothing of it.
    read.account = "alice".into();
    let hidden = queries.get_account(with_key(read.clone(), GLOBEX)).await.unwrap_err();
    assert_eq!(hidden.code(), Code::NotFound);
    assert_eq!(http_get(&dev, "/v1/ledgers/main/accounts/alice", GLOBEX).0, 404);
}

/// A request of `message` type with every id field set to `text` (a valid id).
fn filled(message: prost_reflect::MessageDescriptor, text: &str) -> DynamicMessage {
    const IDS: [&str; 8] =
        ["ledger", "account", "tx_id", "original_tx_id", "doc_type", "key", "command_id", "stream"];
    let mut request = DynamicMessage::new(message.clone());
    for field in message.fields() {
        if IDS.contains(&field.name()) {
            request.set_field(&field, Field::String(text.to_owned()));
        }
    }
    request
}

/// Calls `path` with `request` encoded, as `key` (none: no credentials); the status, or OK.
async fn call_raw(channel: Channel, path: &str, request: &DynamicMessage, key: Option<&str>) -> Code {
    call_answer(channel, path, request, key).await.0
}

/// [`call_raw`], with the first answer's bytes when there is one.
async fn call_answer(
    channel: Channel,
    path: &str,
    request: &DynamicMessage,
    key: Option<&str>,
) -> (Code, Option<bytes::Bytes>) {
    use prost::Message;
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let mut call = tonic::Request::new(bytes::Bytes::from(request.encode_to_vec()));
    if let Some(key) = key {
        call.metadata_mut().insert("authorization", key.parse().unwrap());
    }
    let path = http::uri::PathAndQuery::try_from(path).unwrap();
    let codec = RawCodec;
    match grpc.server_streaming(call, path, codec).await {
        Ok(mut stream) => {
            // A unary answer arrives as a stream of one; a live stream is cut after its start.
            match tokio::time::timeout(Duration::from_millis(300), stream.get_mut().message()).await {
                Ok(Err(status)) => (status.code(), None),
                Ok(Ok(answer)) => (Code::Ok, answer),
                Err(_) => (Code::Ok, None),
            }
        }
        Err(status) => (status.code(), None),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_method_is_behind_the_gate() {
    let dev = Dev::start(&[]);
    let channel = channel(&dev).await;
    let pool = DescriptorPool::decode(tally_grpc::DESCRIPTOR_SET).unwrap();
    // acme has data under every id `x` the calls below name: another tenant must see none of it.
    let mut commands = CommandsClient::new(channel.clone());
    commands
        .define_asset(with_key(DefineAssetRequest { ledger: "x".into(), asset: "USD/2".into() }, ACME))
        .await
        .unwrap();
    let open = OpenAccountRequest { ledger: "x".into(), account: "x".into(), ..Default::default() };
    commands.open_account(with_key(open, ACME)).await.unwrap();
    let tx = PostTransactionRequest {
        ledger: "x".into(),
        tx_id: "x".into(),
        postings: vec![posting("world", "x", "5")],
        ..Default::default()
    };
    commands.post_transaction(with_key(tx, ACME)).await.unwrap();
    let put = PutDocumentRequest { doc_type: "x".into(), key: "x".into(), value: Some(Default::default()) };
    let last = commands.put_document(with_key(put, ACME)).await.unwrap().into_inner();
    let mut queries = QueriesClient::new(channel.clone());
    let mut settled = with_key(GetDocumentRequest { doc_type: "x".into(), key: "x".into() }, ACME);
    settled.metadata_mut().insert("tally-position", last.position.parse().unwrap());
    queries.get_document(settled).await.unwrap();
    let (mut checked, mut checked_own) = (0, 0);
    for service in ["tally.v1.Commands", "tally.v1.Queries"] {
        for method in pool.get_service_by_name(service).unwrap().methods() {
            let path = format!("/{service}/{}", method.name());
            let request = filled(method.input(), "x");
            let none = call_raw(channel.clone(), &path, &request, None).await;
            assert_eq!(none, Code::Unauthenticated, "{path} without credentials");
            let wrong = call_raw(channel.clone(), &path, &request, Some("Bearer tly_nobody_xxxxxxxx")).await;
            assert_eq!(wrong, Code::Unauthenticated, "{path} with an unknown key");
            let read_only = call_raw(channel.clone(), &path, &request, Some(ACME_READ_ONLY)).await;
            let is_write = service == "tally.v1.Commands" && method.name() != "GetCommand";
            match is_write {
                true => assert_eq!(read_only, Code::PermissionDenied, "{path} by a read-only key"),
                false => assert!(
                    !matches!(
                        read_only,
                        Code::PermissionDenied | Code::Unauthenticated | Code::Internal | Code::Unknown
                    ),
                    "{path} by a read-only key: {read_only:?}"
                ),
            }
            // Another tenant, with the same ids, reads nothing of what acme reads there.
            if !is_write {
                let text =
                    |answer: Option<bytes::Bytes>| answer.map(|b| String::from_utf8_lossy(&b).into_owned());
                let own = text(call_answer(channel.clone(), &path, &request, Some(ACME)).await.1);
                let (code, other) = call_answer(channel.clone(), &path, &request, Some(GLOBEX)).await;
                let other = text(other).unwrap_or_default();
                assert!(!other.contains("acme"), "{path} as globex: {code:?} {other}");
                if let Some(own) = own.filter(|own| own.contains("x")) {
                    assert_ne!(own, other, "{path}: globex read what acme reads");
                    checked_own += 1;
                }
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 22, "every method of both services");
    // The reads that answered acme with its own data (events, outcomes, documents): the check
    // above had something to find.
    assert!(checked_own >= 6, "{checked_own} reads showed acme its data");
    let nothing = DynamicMessage::new(pool.get_message_by_name("tally.v1.GetAccountRequest").unwrap());
    for path in ["/tally.v1.Queries/Nope", "/tally.v1.Nope/GetAccount"] {
        assert_eq!(
            call_raw(channel.clone(), path, &nothing, Some(ACME)).await,
            Code::Unimplemented,
            "{path}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_followed_stream_resumes_without_gaps_or_repeats_while_writes_go_on() {
    use futures::StreamExt;
    let dev = Dev::start(&[]);
    let channel = channel(&dev).await;
    let (mut commands, mut queries) = (CommandsClient::new(channel.clone()), QueriesClient::new(channel));
    commands
        .define_asset(with_key(DefineAssetRequest { ledger: "live".into(), asset: "USD/2".into() }, ACME))
        .await
        .unwrap();
    let writer = {
        let mut commands = commands.clone();
        tokio::spawn(async move {
            for i in 0..40 {
                let tx = PostTransactionRequest {
                    ledger: "live".into(),
                    tx_id: format!("t-{i}"),
                    postings: vec![Posting {
                        source: "world".into(),
                        destination: format!("a-{}", i % 3),
                        asset: "USD/2".into(),
                        amount: "1".into(),
                    }],
                    ..Default::default()
                };
                let _ = commands.post_transaction(with_key(tx.clone(), ACME)).await;
            }
        })
    };
    // Open, take a few, drop; resume after the last one seen; repeat until the writes are in.
    let (mut seen, mut after) = (Vec::new(), None);
    // The asset's event, then one per transaction (accepted or refused: each is an event).
    let expected = 1 + 40;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while seen.len() < expected && std::time::Instant::now() < deadline {
        let follow = FollowEventsRequest { stream: "live".into(), after, ..Default::default() };
        let mut stream = queries.follow_events(with_key(follow, ACME)).await.unwrap().into_inner();
        for _ in 0..7 {
            match tokio::time::timeout(Duration::from_secs(2), stream.next()).await {
                Ok(Some(Ok(event))) => {
                    after = Some(event.stream_version as u64);
                    seen.push(event.stream_version);
                }
                Ok(Some(Err(status))) => panic!("the stream failed: {status:?}"),
                _ => break,
            }
        }
    }
    writer.await.unwrap();
    let versions: Vec<i64> = (1..=seen.len() as i64).collect();
    assert_eq!(seen, versions, "every version once, in order, across {} resumptions", seen.len() / 7);
    assert!(seen.len() >= 41, "{} events", seen.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_health_and_grpc_web_answer() {
    let dev = Dev::start(&[]);
    let channel = channel(&dev).await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    for service in ["tally.v1.Commands", "tally.v1.Queries"] {
        let request = tonic_health::pb::HealthCheckRequest { service: service.into() };
        let answer = health.check(request).await.unwrap().into_inner();
        assert_eq!(answer.status(), tonic_health::pb::health_check_response::ServingStatus::Serving);
    }
    let mut reflection =
        tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient::new(channel.clone());
    let ask = tonic_reflection::pb::v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            tonic_reflection::pb::v1::server_reflection_request::MessageRequest::ListServices(String::new()),
        ),
    };
    let mut answers =
        reflection.server_reflection_info(futures::stream::iter([ask])).await.unwrap().into_inner();
    let listed = format!("{:?}", answers.message().await.unwrap().unwrap());
    assert!(listed.contains("tally.v1.Commands") && listed.contains("tally.v1.Queries"), "{listed}");

    // grpc-web over HTTP/1.1, as a browser sends it: a framed message, trailers in the body.
    use prost::Message;
    let request = GetAccountRequest { ledger: "main".into(), account: "world".into() }.encode_to_vec();
    let mut framed = vec![0u8];
    framed.extend((request.len() as u32).to_be_bytes());
    framed.extend(request);
    let agent = ureq::Agent::config_builder().http_status_as_error(false).build().new_agent();
    let mut answer = agent
        .post(format!("http://{}/tally.v1.Queries/GetAccount", dev.grpc))
        .header("content-type", "application/grpc-web+proto")
        .header("x-grpc-web", "1")
        .header("authorization", GLOBEX)
        .send(&framed[..])
        .unwrap();
    assert_eq!(answer.status().as_u16(), 200);
    assert_eq!(answer.headers()["content-type"], "application/grpc-web+proto");
    // globex has no ledger `main`: NOT_FOUND (5), in the headers of a trailers-only answer.
    let status = answer.headers().get("grpc-status").map(|v| v.to_str().unwrap().to_owned());
    let body = answer.body_mut().read_to_vec().unwrap();
    let trailer = String::from_utf8_lossy(&body).contains("grpc-status:5");
    assert!(status.as_deref() == Some("5") || trailer, "{:?} {body:?}", answer.headers());
}

/// A browser page on an allowed origin can call the gRPC listener with grpc-web: its preflight
/// is answered with grpc-web's headers allowed, and the answer lets it read gRPC's status and
/// Tally's position; another origin gets no CORS headers, nor does anyone without
/// `--cors-origins`.
#[test]
fn browsers_on_allowed_origins_may_call_grpc_web() {
    const APP: &str = "https://app.example";
    let agent = ureq::Agent::config_builder().http_status_as_error(false).build().new_agent();
    let preflight = |dev: &Dev, origin: &str| {
        let request = ureq::http::Request::builder()
            .method("OPTIONS")
            .uri(format!("http://{}/tally.v1.Commands/DefineAsset", dev.grpc))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "authorization,content-type,idempotency-key,x-grpc-web")
            .body(())
            .unwrap();
        agent.run(request).unwrap()
    };
    let header = |answer: &ureq::http::Response<ureq::Body>, name: &str| {
        answer.headers().get(name).map(|v| v.to_str().unwrap().to_ascii_lowercase())
    };

    let dev = Dev::start(&["--cors-origins", APP]);
    let allowed = preflight(&dev, APP);
    assert!(allowed.status().is_success(), "{allowed:?}");
    assert_eq!(header(&allowed, "access-control-allow-origin").as_deref(), Some(APP));
    let headers = header(&allowed, "access-control-allow-headers").unwrap_or_default();
    for name in ["authorization", "idempotency-key", "x-grpc-web", "tally-position"] {
        assert!(headers.contains(name), "{name} not allowed: {headers}");
    }
    assert_eq!(header(&preflight(&dev, "https://evil.example"), "access-control-allow-origin"), None);

    // The call itself: a grpc-web DefineAsset from the page.
    use prost::Message;
    let request = DefineAssetRequest { ledger: "web".into(), asset: "USD/2".into() }.encode_to_vec();
    let mut framed = vec![0u8];
    framed.extend((request.len() as u32).to_be_bytes());
    framed.extend(request);
    let answer = agent
        .post(format!("http://{}/tally.v1.Commands/DefineAsset", dev.grpc))
        .header("origin", APP)
        .header("content-type", "application/grpc-web+proto")
        .header("x-grpc-web", "1")
        .header("authorization", ACME)
        .send(&framed[..])
        .unwrap();
    assert_eq!(answer.status().as_u16(), 200);
    assert_eq!(header(&answer, "access-control-allow-origin").as_deref(), Some(APP));
    let exposed = header(&answer, "access-control-expose-headers").unwrap_or_default();
    for name in ["grpc-status", "grpc-status-details-bin", "tally-position"] {
        assert!(exposed.contains(name), "{name} not readable by the page: {exposed}");
    }
    assert!(header(&answer, "tally-position").is_some(), "{answer:?}");
    drop(dev);

    let closed = Dev::start(&[]);
    assert_eq!(header(&preflight(&closed, APP), "access-control-allow-origin"), None);
}

/// FollowEvents is a live stream like the HTTP one and takes its place among them: beyond the
/// tenant's most, RESOURCE_EXHAUSTED; a cancelled call frees its place at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_events_counts_against_the_live_stream_limits() {
    let dev = Dev::start(&["--live-streams-per-tenant-max", "1"]);
    let mut queries = QueriesClient::new(channel(&dev).await);
    let follow = || with_key(FollowEventsRequest { stream: "main".into(), ..Default::default() }, ACME);
    let first = queries.follow_events(follow()).await.unwrap().into_inner();
    let refused = queries.follow_events(follow()).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    drop(first);
    let started = std::time::Instant::now();
    loop {
        match queries.follow_events(follow()).await {
            Ok(_) => break,
            Err(e) => assert_eq!(e.code(), Code::ResourceExhausted),
        }
        assert!(started.elapsed() < Duration::from_secs(10), "the cancelled call kept its place");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Requests and answers as bytes (the gate test sends messages built from descriptors).
#[derive(Clone, Copy)]
struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = bytes::Bytes;
    type Decode = bytes::Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }
    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = bytes::Bytes;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: bytes::Bytes,
        buf: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        use bytes::BufMut;
        buf.put(item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = bytes::Bytes;
    type Error = tonic::Status;
    fn decode(
        &mut self,
        buf: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<bytes::Bytes>, tonic::Status> {
        use bytes::Buf;
        Ok(Some(buf.copy_to_bytes(buf.remaining())))
    }
}

/// The response policy of docs/security.md's example, cut to what this test reads.
const RESPONSE_POLICY: &str = r#"
package tally

default allow := true

read_only if not "write" in input.roles

response := {"deny": true} if {
    read_only
    input.response.doc_type == "payroll"
}

response := {"remove": [["**", "metadata", "email"]]} if {
    read_only
    not input.response.doc_type
}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_response_policy_filters_grpc_answers_as_it_does_http_ones() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.rego");
    std::fs::write(&policy, RESPONSE_POLICY).unwrap();
    let dev = Dev::start(&["--policy", policy.to_str().unwrap()]);
    let channel = channel(&dev).await;
    let (mut commands, mut queries) = (CommandsClient::new(channel.clone()), QueriesClient::new(channel));
    commands
        .define_asset(with_key(DefineAssetRequest { ledger: "main".into(), asset: "USD/2".into() }, ACME))
        .await
        .unwrap();
    let open = OpenAccountRequest {
        ledger: "main".into(),
        account: "alice".into(),
        limits: vec![],
        metadata: [("email".to_owned(), "a@example.com".to_owned()), ("note".to_owned(), "kept".to_owned())]
            .into(),
    };
    let opened = commands.open_account(with_key(open, ACME)).await.unwrap().into_inner();
    let salary = prost_types::Struct {
        fields: [(
            "salary".to_owned(),
            prost_types::Value { kind: Some(prost_types::value::Kind::NumberValue(1.0)) },
        )]
        .into(),
    };
    let payroll = PutDocumentRequest { doc_type: "payroll".into(), key: "p-1".into(), value: Some(salary) };
    let put = commands.put_document(with_key(payroll, ACME)).await.unwrap().into_inner();

    let account = |key: &str, position: &str| {
        let mut request = with_key(GetAccountRequest { ledger: "main".into(), account: "alice".into() }, key);
        request.metadata_mut().insert("tally-position", position.parse().unwrap());
        request
    };
    let admin = queries.get_account(account(ACME, &opened.position)).await.unwrap().into_inner();
    assert_eq!(admin.metadata.get("email").map(String::as_str), Some("a@example.com"));
    let reader = queries.get_account(account(ACME_READ_ONLY, &opened.position)).await.unwrap().into_inner();
    assert_eq!(reader.metadata.get("email"), None, "{reader:?}");
    assert_eq!(reader.metadata.get("note").map(String::as_str), Some("kept"));

    let document = |key: &str| {
        let mut request = with_key(GetDocumentRequest { doc_type: "payroll".into(), key: "p-1".into() }, key);
        request.metadata_mut().insert("tally-position", put.position.parse().unwrap());
        request
    };
    assert_eq!(queries.get_document(document(ACME)).await.unwrap().into_inner().version, 1);
    let denied = queries.get_document(document(ACME_READ_ONLY)).await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn following_a_document_type_across_streams_resumes_with_its_token() {
    use futures::StreamExt;
    let dev = Dev::start(&[]);
    let channel = channel(&dev).await;
    let (mut commands, mut queries) = (CommandsClient::new(channel.clone()), QueriesClient::new(channel));
    for key in 0..6 {
        let value = prost_types::Struct::default();
        let put = PutDocumentRequest { doc_type: "g".into(), key: format!("k-{key}"), value: Some(value) };
        commands.put_document(with_key(put, ACME)).await.unwrap();
        let other = PutDocumentRequest {
            doc_type: "h".into(),
            key: format!("k-{key}"),
            value: Some(Default::default()),
        };
        commands.put_document(with_key(other, ACME)).await.unwrap();
    }
    let (mut seen, mut resume) = (Vec::new(), String::new());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while seen.len() < 6 && std::time::Instant::now() < deadline {
        let follow =
            FollowEventsRequest { doc_type: "g".into(), resume: resume.clone(), ..Default::default() };
        let mut stream = queries.follow_events(with_key(follow, ACME)).await.unwrap().into_inner();
        for _ in 0..2 {
            match tokio::time::timeout(Duration::from_secs(2), stream.next()).await {
                Ok(Some(Ok(event))) => {
                    assert!(!event.resume.is_empty(), "{event:?}");
                    resume = event.resume.clone();
                    seen.push(event.event_id);
                }
                Ok(Some(Err(status))) => panic!("{status:?}"),
                _ => break,
            }
        }
    }
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), seen.len(), "nothing twice: {seen:?}");
    let expected: Vec<String> = (0..6).map(|k| format!("acme/state/g/k-{k}@1")).collect();
    assert_eq!(unique, expected, "every document of type g, none of h");
    // A token made for another filter is refused.
    let other = FollowEventsRequest { doc_type: "h".into(), resume, ..Default::default() };
    let refused = queries.follow_events(with_key(other, ACME)).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
}

//! Multi-tenancy and security end to end, on the real binary: who may call which endpoint,
//! that one tenant never sees another's data, producers held to their tenants, keys rotated
//! without a restart, the actor in every event, and the limits around the gate.

mod tally_dev;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use tally_dev::{ACME, ACME_READ_ONLY, Dev, GLOBEX, tally};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures");
const ISSUER: &str = "https://id.tally.test";
const AUDIENCE: &str = "tally";

fn fixture(name: &str) -> String {
    format!("{FIXTURES}/{name}")
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

/// A JWT signed with the fixture key, for tenant `acme` as `jwt-alice`, changed by `change`.
fn jwt(change: impl FnOnce(&mut Value)) -> String {
    let mut claims = json!({"sub": "jwt-alice", "iss": ISSUER, "aud": AUDIENCE, "exp": now() + 600,
        "tenant": "acme", "roles": ["read", "write"]});
    change(&mut claims);
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some("test-1".into());
    let key =
        EncodingKey::from_ed_pem(std::fs::read(fixture("jwt-signing-key.pem")).unwrap().as_slice()).unwrap();
    format!("Bearer {}", jsonwebtoken::encode(&header, &claims, &key).unwrap())
}

/// The same token with one character of its signature changed.
fn tampered(bearer: &str) -> String {
    let mut bytes = bearer.as_bytes().to_vec();
    let i = bytes.len() - 5;
    bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
    String::from_utf8(bytes).unwrap()
}

struct Reply {
    status: u16,
    body: String,
}

/// One request; `None` sends no credentials. The body of an event stream is not read.
fn call(base: &str, method: &str, path: &str, auth: Option<&str>, body: Option<&Value>) -> Reply {
    let mut request = ureq::http::Request::builder().method(method).uri(format!("http://{base}{path}"));
    if let Some(auth) = auth {
        request = request.header("authorization", auth);
    }
    let agent = tally_dev::http_client(Duration::from_secs(30));
    let payload = body.map(Value::to_string).unwrap_or_default();
    let mut response =
        agent.run(request.header("content-type", "application/json").body(payload).unwrap()).unwrap();
    let status = response.status().as_u16();
    let streaming = path.starts_with("/v1/events/live");
    let body = if streaming { String::new() } else { response.body_mut().read_to_string().unwrap() };
    Reply { status, body }
}

fn write_ok(dev: &Dev, method: &str, path: &str, body: Value) -> Value {
    let reply = call(&dev.http, method, path, Some(ACME), Some(&body));
    assert!((200..300).contains(&reply.status), "{method} {path}: {} {}", reply.status, reply.body);
    serde_json::from_str(&reply.body).unwrap()
}

fn transfer(tx_id: &str, to: &str, amount: i64, hold: bool) -> Value {
    transfer_in("USD/2", tx_id, to, amount, hold)
}

fn transfer_in(asset: &str, tx_id: &str, to: &str, amount: i64, hold: bool) -> Value {
    let mut tx = json!({"tx_id": tx_id, "postings": [{"source": "world", "destination": to, "asset": asset, "amount": amount}]});
    if hold {
        tx["pending_timeout_ms"] = json!(600_000);
    }
    tx
}

/// Strings that only tenant acme's data holds, and that no other caller ever sends (ids that
/// globex names in its own requests come back in its own rejections, so they are not here).
const ACME_ONLY: [&str; 3] = ["acme", "acme-private-note", "acme-doc-secret"];

/// What acme has before the matrix runs; returns the position of the last write.
fn seed_acme(dev: &Dev) -> String {
    write_ok(dev, "POST", "/v1/ledgers/main/assets", json!({"asset": "USD/2"}));
    write_ok(
        dev,
        "POST",
        "/v1/ledgers/main/accounts",
        json!({"account": "zz-one", "metadata": {"note": "acme-private-note"}}),
    );
    write_ok(dev, "POST", "/v1/ledgers/main/accounts", json!({"account": "empty-1"}));
    write_ok(dev, "POST", "/v1/ledgers/main/transactions", transfer("t-1", "zz-one", 500, false));
    write_ok(dev, "POST", "/v1/ledgers/main/transactions", transfer("hold-1", "zz-one", 10, true));
    write_ok(dev, "POST", "/v1/ledgers/main/transactions", transfer("hold-2", "zz-one", 10, true));
    write_ok(dev, "PUT", "/v1/state/profile/doc-keep", json!({"secret": "acme-doc-secret"}));
    write_ok(dev, "PUT", "/v1/state/profile/doc-gone", json!({"n": 1}))["position"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Who {
    AcmeKey,
    GlobexKey,
    NoKey,
    ExpiredJwt,
    WrongAudienceJwt,
    TamperedJwt,
    ReadOnlyKey,
}

impl Who {
    const ALL: [Who; 7] = [
        Who::AcmeKey,
        Who::GlobexKey,
        Who::NoKey,
        Who::ExpiredJwt,
        Who::WrongAudienceJwt,
        Who::TamperedJwt,
        Who::ReadOnlyKey,
    ];

    fn credentials(self) -> Option<String> {
        match self {
            Who::AcmeKey => Some(ACME.into()),
            Who::GlobexKey => Some(GLOBEX.into()),
            Who::NoKey => None,
            Who::ExpiredJwt => Some(jwt(|c| c["exp"] = json!(now() - 3600))),
            Who::WrongAudienceJwt => Some(jwt(|c| c["aud"] = json!("someone-else"))),
            Who::TamperedJwt => Some(tampered(&jwt(|_| ()))),
            Who::ReadOnlyKey => Some(ACME_READ_ONLY.into()),
        }
    }
}

/// An endpoint of the matrix, and the status each caller gets.
struct Case {
    service: Service,
    method: &'static str,
    path: &'static str,
    body: Option<Value>,
    /// For acme's own key (and the read-only key on reads).
    acme: u16,
    /// For globex's key: acme's ids do not exist in globex's tenant.
    globex: u16,
}

#[derive(Clone, Copy)]
enum Service {
    Http,
    Query,
}

impl Case {
    fn write(method: &'static str, path: &'static str, body: Option<Value>, acme: u16, globex: u16) -> Case {
        Case { service: Service::Http, method, path, body, acme, globex }
    }

    fn read(service: Service, path: &'static str, acme: u16, globex: u16) -> Case {
        Case { service, method: "GET", path, body: None, acme, globex }
    }

    fn expected(&self, who: Who) -> u16 {
        let is_read = self.method == "GET";
        let admin = self.path.starts_with("/admin/");
        match who {
            Who::NoKey | Who::ExpiredJwt | Who::WrongAudienceJwt | Who::TamperedJwt => 401,
            Who::AcmeKey => self.acme,
            Who::ReadOnlyKey if is_read && !admin => self.acme,
            Who::ReadOnlyKey => 403,
            Who::GlobexKey if admin => 403,
            Who::GlobexKey => self.globex,
        }
    }
}

/// Every write and read endpoint. Each caller's writes name its own new ids where they create
/// something, and acme's existing ids where they act on something, so that globex's attempts
/// on acme's things are refused as unknown (422) rather than as forbidden: to globex they do
/// not exist.
fn cases() -> Vec<Case> {
    use Service::*;
    vec![
        Case::write("POST", "/v1/ledgers/main/assets", Some(json!({"asset": "EUR/2"})), 201, 201),
        Case::write(
            "PUT",
            "/v1/ledgers/main/accounts/zz-one",
            Some(json!({"metadata": {"k": "v"}})),
            200,
            422,
        ),
        Case::write("POST", "/v1/ledgers/main/accounts/empty-1/close", None, 200, 422),
        Case::write("POST", "/v1/ledgers/main/transactions/hold-1/commit", None, 200, 422),
        Case::write("POST", "/v1/ledgers/main/transactions/hold-2/void", None, 200, 422),
        Case::write(
            "POST",
            "/v1/ledgers/main/transactions/t-1/reverse",
            Some(json!({"tx_id": "rev-1"})),
            201,
            422,
        ),
        Case::write("DELETE", "/v1/state/profile/doc-gone", None, 200, 422),
        Case::read(Http, "/v1/commands/tx:t-1", 200, 404),
        Case::read(Query, "/v1/ledgers/main/accounts/zz-one", 200, 404),
        Case::read(Query, "/v1/ledgers/main/accounts?prefix=zz", 200, 200),
        Case::read(Query, "/v1/ledgers/main/accounts/zz-one/statement", 200, 404),
        Case::read(Query, "/v1/ledgers/main/accounts/zz-one/balance?at=2100-01-01T00:00:00Z", 200, 404),
        Case::read(Query, "/v1/ledgers/main/transactions/t-1", 200, 404),
        Case::read(Query, "/v1/commands/tx:t-1", 200, 404),
        Case::read(Query, "/v1/state/profile/doc-keep", 200, 404),
        Case::read(Query, "/v1/state/profile?prefix=doc", 200, 200),
        Case::read(Query, "/v1/events?stream=main", 200, 200),
        Case::read(Query, "/v1/events/live?stream=main", 200, 200),
        Case::read(Http, "/admin/projections", 200, 403),
        Case::read(Http, "/admin/destinations", 200, 403),
        Case::read(Http, "/admin/destinations/no-such-hook", 404, 403),
        Case::write(
            "POST",
            "/admin/destinations",
            Some(json!({"id": "matrix-hook", "webhook": {"url": "https://hooks.example.com/matrix"}})),
            201,
            403,
        ),
        Case::write("POST", "/admin/destinations/matrix-hook/pause", None, 200, 403),
        // Last: acme's key starts a rebuild (the live version keeps serving meanwhile).
        Case::write("POST", "/admin/projections/rebuild", None, 202, 403),
    ]
}

/// Writes that create, per caller (their ids are the caller's own): accepted for anyone who
/// may write, in their own tenant. They run after the matrix, whose first write defined EUR/2
/// in the caller's own ledger.
fn creating_writes(who: Who) -> Vec<(&'static str, String, Value, u16)> {
    let tag = format!("{who:?}").to_lowercase();
    vec![
        ("POST", "/v1/ledgers/main/accounts".into(), json!({"account": format!("acct-{tag}")}), 201),
        (
            "POST",
            "/v1/ledgers/main/transactions".into(),
            transfer_in("EUR/2", &format!("m-{tag}"), &format!("payee-{tag}"), 1, false),
            201,
        ),
        (
            "POST",
            "/v1/ledgers/main/transactions/batch".into(),
            json!({"transactions": [transfer_in("EUR/2", &format!("b-{tag}"), &format!("payee-{tag}"), 1, false)]}),
            200,
        ),
        ("PUT", format!("/v1/state/profile/doc-{tag}"), json!({"who": tag}), 200),
    ]
}

fn matrix_dev(extra: &[&str]) -> Dev {
    let keys = fixture("api-keys.toml");
    let jwks = fixture("jwks.json");
    let mut args =
        vec!["--api-keys", &keys, "--jwks-file", &jwks, "--jwt-issuer", ISSUER, "--jwt-audience", AUDIENCE];
    args.extend_from_slice(extra);
    Dev::start(&args)
}

#[test]
fn every_endpoint_answers_each_kind_of_caller_as_it_should_and_tenants_never_see_each_other() {
    let dev = matrix_dev(&["--kafka-fetch-wait-ms", "5"]);
    let position = seed_acme(&dev);
    // The projection has every seeded write before the reads run.
    let reply = call_as(&dev.query, "/v1/ledgers/main/transactions/t-1", ACME, &position);
    assert_eq!(reply.status, 200, "{}", reply.body);

    let mut failures = Vec::new();
    // The refused callers first, so acme's own writes (which change things) come last.
    let order = [5, 3, 4, 2, 6, 1, 0].map(|i| Who::ALL[i]);
    for who in order {
        let credentials = who.credentials();
        for case in cases() {
            let base = match case.service {
                Service::Http => &dev.http,
                Service::Query => &dev.query,
            };
            let reply = call(base, case.method, case.path, credentials.as_deref(), case.body.as_ref());
            if reply.status != case.expected(who) {
                failures.push(format!(
                    "{who:?} {} {}: {} (expected {}) {}",
                    case.method,
                    case.path,
                    reply.status,
                    case.expected(who),
                    reply.body
                ));
            }
            if who == Who::GlobexKey {
                for secret in ACME_ONLY {
                    assert!(
                        !reply.body.contains(secret),
                        "globex saw {secret:?} in {} {}: {}",
                        case.method,
                        case.path,
                        reply.body
                    );
                }
            }
        }
        for (method, path, body, created) in creating_writes(who) {
            let expected = match who {
                Who::AcmeKey | Who::GlobexKey => created,
                Who::ReadOnlyKey => 403,
                _ => 401,
            };
            let reply = call(&dev.http, method, &path, credentials.as_deref(), Some(&body));
            if reply.status != expected {
                failures.push(format!(
                    "{who:?} {method} {path}: {} (expected {expected}) {}",
                    reply.status, reply.body
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{} cells differ:\n{}", failures.len(), failures.join("\n"));

    // Globex's list of acme's account prefix is empty: its own ledger has no such accounts.
    let listed = call(&dev.query, "GET", "/v1/ledgers/main/accounts?prefix=zz", Some(GLOBEX), None);
    assert_eq!(serde_json::from_str::<Value>(&listed.body).unwrap()["items"], json!([]), "{}", listed.body);
    // And the other way round: once globex's document is projected, acme still cannot see it.
    let deadline = Instant::now() + Duration::from_secs(30);
    while call(&dev.query, "GET", "/v1/state/profile/doc-globexkey", Some(GLOBEX), None).status != 200 {
        assert!(Instant::now() < deadline, "globex's document was never projected");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(call(&dev.query, "GET", "/v1/state/profile/doc-globexkey", Some(ACME), None).status, 404);
}

/// A read as `auth` once the projection has `position`.
fn call_as(base: &str, path: &str, auth: &str, position: &str) -> Reply {
    let agent = tally_dev::http_client(Duration::from_secs(30));
    let mut response = agent
        .get(format!("http://{base}{path}"))
        .header("authorization", auth)
        .header("tally-position", position)
        .call()
        .unwrap();
    Reply { status: response.status().as_u16(), body: response.body_mut().read_to_string().unwrap() }
}

/// Every event of `stream` as acme, once the projection has `position`.
fn events(dev: &Dev, stream: &str, position: &str) -> Vec<Value> {
    let reply = call_as(&dev.query, &format!("/v1/events?stream={stream}&limit=1000"), ACME, position);
    assert_eq!(reply.status, 200, "{}", reply.body);
    let page: Value = serde_json::from_str(&reply.body).unwrap();
    page["items"].as_array().unwrap().clone()
}

#[test]
fn the_authenticated_subject_is_the_actor_of_the_events_it_causes() {
    let dev = matrix_dev(&["--kafka-fetch-wait-ms", "5"]);
    write_ok(&dev, "POST", "/v1/ledgers/main/assets", json!({"asset": "USD/2"}));
    let by_jwt = call(
        &dev.http,
        "POST",
        "/v1/ledgers/main/transactions",
        Some(&jwt(|_| ())),
        Some(&transfer("j-1", "bob", 5, false)),
    );
    assert_eq!(by_jwt.status, 201, "{}", by_jwt.body);
    // A header claiming another actor changes nothing: the actor is who authenticated.
    let agent = tally_dev::http_client(Duration::from_secs(30));
    let mut by_key = agent
        .post(format!("http://{}/v1/ledgers/main/transactions", dev.http))
        .header("authorization", ACME)
        .header("tally-actor", "someone-else")
        .header("content-type", "application/json")
        .send(transfer("k-1", "bob", 5, false).to_string())
        .unwrap();
    assert_eq!(by_key.status().as_u16(), 201);
    let position: Value = serde_json::from_str(&by_key.body_mut().read_to_string().unwrap()).unwrap();
    let events = events(&dev, "main", position["position"].as_str().unwrap());
    let actor_of = |tx: &str| {
        let event = events
            .iter()
            .find(|e| e["event"].to_string().contains(tx))
            .unwrap_or_else(|| panic!("{tx}: {events:?}"));
        event["event"]["actor"].as_str().unwrap().to_owned()
    };
    assert_eq!(actor_of("j-1"), "jwt-alice");
    assert_eq!(actor_of("k-1"), "key:acme-admin");
    assert!(events.iter().all(|e| e["event"]["actor"].as_str().is_some_and(|a| !a.is_empty())), "{events:?}");
}

#[test]
fn kafka_commands_for_a_tenant_their_producer_may_not_use_are_dead_lettered() {
    let dir = tempfile::tempdir().unwrap();
    let allow_list = dir.path().join("producers.toml");
    std::fs::write(&allow_list, "[producers]\npayments = [\"acme\"]\n").unwrap();
    let dev = matrix_dev(&["--producer-allow-list", allow_list.to_str().unwrap()]);
    let send = |producer: Option<&str>, tenant: &str, id: &str| {
        let body = r#"{"DefineAsset":{"ledger":"main","asset":"USD/2"}}"#;
        let mut args = vec!["send", "--kafka", &dev.kafka, "--tenant", tenant, "--command-id", id];
        if let Some(producer) = producer {
            args.extend(["--producer", producer]);
        }
        args.push(body);
        tally(&args);
    };
    send(Some("payments"), "acme", "allowed-1");
    send(Some("payments"), "globex", "other-tenant-1");
    send(Some("stranger"), "acme", "unknown-producer-1");
    send(None, "acme", "no-producer-1");
    // The HTTP front door still writes for any tenant its callers authenticate as.
    let front =
        call(&dev.http, "POST", "/v1/ledgers/main/assets", Some(GLOBEX), Some(&json!({"asset": "EUR/2"})));
    assert_eq!(front.status, 201, "{}", front.body);

    let deadline = Instant::now() + Duration::from_secs(60);
    let dead = loop {
        let dead = tail(&dev, "tally.dead-letter");
        if dead.len() >= 3 || Instant::now() > deadline {
            break dead;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let mut reasons: Vec<(String, String)> = dead
        .iter()
        .map(|r| {
            (
                r["record"]["command_id"].as_str().unwrap().to_owned(),
                r["headers"]["tally-dead-letter-reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    reasons.sort();
    assert_eq!(
        reasons,
        [
            ("no-producer-1".to_owned(), "PRODUCER_UNKNOWN".to_owned()),
            ("other-tenant-1".into(), "TENANT_NOT_ALLOWED".into()),
            ("unknown-producer-1".into(), "PRODUCER_UNKNOWN".into()),
        ]
    );
    // The allowed command and the front door's were answered with events; the others were not.
    let answered: Vec<String> = tail(&dev, "tally.events")
        .iter()
        .filter_map(|r| r["record"]["event"]["command_id"].as_str().map(str::to_owned))
        .collect();
    assert!(answered.contains(&"allowed-1".to_owned()), "{answered:?}");
    assert_eq!(answered.len(), 2, "the allowed command and the front door's: {answered:?}");
}

fn tail(dev: &Dev, topic: &str) -> Vec<Value> {
    let out = tally(&["tail", "--kafka", &dev.kafka, "--topic", topic, "--to-end"]);
    String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// A new key for `tenant`: (its `Authorization` value, its keys-file entry), from `tally keys new`.
fn new_key(id: &str, tenant: &str) -> (String, String) {
    let out = tally(&["keys", "new", "--id", id, "--tenant", tenant, "--roles", "read"]);
    let text = String::from_utf8(out.stdout).unwrap();
    let (secret, entry) = text.split_once('\n').unwrap();
    (format!("Bearer {secret}"), entry.to_owned())
}

fn status_until(dev: &Dev, auth: &str, expected: u16, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let status = call(&dev.query, "GET", "/v1/state/profile?prefix=x", Some(auth), None).status;
        if status == expected {
            return started.elapsed();
        }
        assert!(started.elapsed() < within, "still {status}, not {expected}, after {within:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn keys_rotate_without_a_restart_on_file_change_and_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys.toml");
    let (old, old_entry) = new_key("old", "acme");
    let (new, new_entry) = new_key("new", "acme");
    std::fs::write(&keys, &old_entry).unwrap();
    let dev = Dev::start(&["--api-keys", keys.to_str().unwrap(), "--auth-reload-ms", "100"]);
    status_until(&dev, &old, 200, Duration::from_secs(5));
    assert_eq!(call(&dev.query, "GET", "/v1/state/profile", Some(&new), None).status, 401);
    // Add the new key, then retire the old one: each takes effect within the reload interval.
    std::fs::write(&keys, format!("{old_entry}{new_entry}")).unwrap();
    status_until(&dev, &new, 200, Duration::from_secs(5));
    std::fs::write(&keys, &new_entry).unwrap();
    status_until(&dev, &old, 401, Duration::from_secs(5));
    // A broken file keeps the last good keys.
    std::fs::write(&keys, "[[key]]\nid = ").unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(call(&dev.query, "GET", "/v1/state/profile", Some(&new), None).status, 200);
    drop(dev);

    // With a long interval, SIGHUP reloads at once.
    std::fs::write(&keys, &old_entry).unwrap();
    let dev = Dev::start(&["--api-keys", keys.to_str().unwrap(), "--auth-reload-ms", "3600000"]);
    status_until(&dev, &old, 200, Duration::from_secs(5));
    std::fs::write(&keys, &new_entry).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        call(&dev.query, "GET", "/v1/state/profile", Some(&old), None).status,
        200,
        "no reload before the signal"
    );
    assert!(
        std::process::Command::new("kill").args(["-HUP", &dev.pid().to_string()]).status().unwrap().success()
    );
    status_until(&dev, &new, 200, Duration::from_secs(5));
    status_until(&dev, &old, 401, Duration::from_secs(5));
}

#[test]
fn limits_policy_and_cors_guard_the_gate() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.rego");
    std::fs::write(
        &policy,
        "package tally\n\ndefault allow := false\n\nallow if input.action == \"read\"\nallow if {\n    input.action == \"write\"\n    not startswith(input.path, \"/v1/ledgers/locked/\")\n}\n",
    )
    .unwrap();
    let dev = Dev::start(&[
        "--policy",
        policy.to_str().unwrap(),
        "--rate-limit",
        "5",
        "--rate-burst",
        "5",
        "--cors-origins",
        "https://app.example",
    ]);
    // The policy: writes to the locked ledger are denied, others pass; admin is not allowed.
    let asset = json!({"asset": "USD/2"});
    assert_eq!(call(&dev.http, "POST", "/v1/ledgers/locked/assets", Some(GLOBEX), Some(&asset)).status, 403);
    assert_eq!(call(&dev.http, "POST", "/v1/ledgers/open/assets", Some(GLOBEX), Some(&asset)).status, 201);

    // The rate limit: acme's burst runs out; another caller's allowance is its own.
    let statuses: Vec<u16> =
        (0..20).map(|_| call(&dev.query, "GET", "/v1/state/profile", Some(ACME), None).status).collect();
    assert!(statuses.contains(&429) && statuses[..5].iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(call(&dev.query, "GET", "/v1/state/profile", Some(tally_dev::FUZZ), None).status, 200);
    // Probes are never limited or authenticated.
    assert_eq!(call(&dev.query, "GET", "/healthz", None, None).status, 200);

    // Headers larger than the limit (16 KiB by default) are refused before anything else.
    let agent = tally_dev::http_client(Duration::from_secs(10));
    let big = "x".repeat(20 * 1024);
    let response = agent.get(format!("http://{}/healthz", dev.query)).header("x-big", &big).call().unwrap();
    assert_eq!(response.status().as_u16(), 431);

    // CORS: the allowed origin gets the headers, another does not; every request header of
    // Tally's is allowed (a conditional document write sends if-match).
    let preflight = |origin: &str| {
        let request = ureq::http::Request::builder()
            .method("OPTIONS")
            .uri(format!("http://{}/v1/state/profile/p-1", dev.http))
            .header("origin", origin)
            .header("access-control-request-method", "PUT")
            .header("access-control-request-headers", "authorization,content-type,if-match,idempotency-key")
            .body(())
            .unwrap();
        let response = agent.run(request).unwrap();
        let header =
            |name: &str| response.headers().get(name).map(|v| v.to_str().unwrap().to_ascii_lowercase());
        (header("access-control-allow-origin"), header("access-control-allow-headers").unwrap_or_default())
    };
    let (origin, headers) = preflight("https://app.example");
    assert_eq!(origin.as_deref(), Some("https://app.example"));
    for name in
        ["authorization", "if-match", "if-none-match", "idempotency-key", "tally-position", "tracestate"]
    {
        assert!(headers.contains(name), "{name} not allowed: {headers}");
    }
    assert_eq!(preflight("https://evil.example").0, None);
}

#[test]
fn every_listener_serves_tls_when_given_a_certificate() {
    let (cert, key) = (fixture("tls-cert.pem"), fixture("tls-key.pem"));
    let dev = Dev::start(&["--tls-cert", &cert, "--tls-key", &key]);
    // The operator command speaks TLS to the admin routes, trusting the test certificate.
    let token = ACME.trim_start_matches("Bearer ");
    let url = format!("https://{}", dev.http);
    let ca = fixture("tls-ca.pem");
    let out = tally(&["projections", "status", "--url", &url, "--token", token, "--ca-cert", &ca]);
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(status["live_version"].is_number(), "{status}");
    // Without the CA it is refused, and plain HTTP gets no answer.
    let untrusted = std::process::Command::new(tally_dev::TALLY)
        .args(["projections", "status", "--url", &url, "--token", token])
        .output()
        .unwrap();
    assert!(!untrusted.status.success());
    let plain =
        tally_dev::http_client(Duration::from_secs(5)).get(format!("http://{}/healthz", dev.query)).call();
    assert!(plain.is_err() || plain.unwrap().status().as_u16() >= 400);
}

#[test]
fn production_services_refuse_to_start_without_credentials() {
    let out = std::process::Command::new(tally_dev::TALLY)
        .args(["query", "--store", "scylla", "--scylla-nodes", "127.0.0.1:1"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && said.contains("no credentials are configured"), "{said}");
}

/// A JWT signed with the second fixture key (`kid` test-2), as after the provider rotated keys.
fn jwt_with_rotated_key() -> String {
    let claims = json!({"sub": "jwt-bob", "iss": ISSUER, "aud": AUDIENCE, "exp": now() + 600,
        "tenant": "acme", "roles": "read"});
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some("test-2".into());
    let pem = std::fs::read(fixture("jwt-signing-key-2.pem")).unwrap();
    let key = EncodingKey::from_ed_pem(&pem).unwrap();
    format!("Bearer {}", jsonwebtoken::encode(&header, &claims, &key).unwrap())
}

/// An identity provider's JWKS endpoint: answers every request with what `served` holds, and
/// counts the requests.
fn jwks_server(
    served: std::sync::Arc<std::sync::Mutex<String>>,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicU32>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/.well-known/jwks.json", listener.local_addr().unwrap());
    let fetches = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let counted = fetches.clone();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().map_while(Result::ok) {
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request);
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let body = served.lock().unwrap().clone();
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(format!("{head}{body}").as_bytes());
        }
    });
    (url, fetches)
}

#[test]
fn a_jwks_url_is_fetched_again_when_a_token_names_a_key_it_has_not_seen() {
    let served =
        std::sync::Arc::new(std::sync::Mutex::new(std::fs::read_to_string(fixture("jwks.json")).unwrap()));
    let (url, fetches) = jwks_server(served.clone());
    let dev = Dev::start(&["--jwks-url", &url, "--jwt-issuer", ISSUER, "--jwt-audience", AUDIENCE]);
    let read = |auth: &str| call(&dev.query, "GET", "/v1/state/profile", Some(auth), None);
    assert_eq!(read(&jwt(|_| ())).status, 200, "a token of the fetched key set");
    let rotated = jwt_with_rotated_key();
    let unknown = read(&rotated);
    assert_eq!(unknown.status, 401);
    assert!(unknown.body.contains("unknown key"), "{}", unknown.body);
    // The provider rotates: the next token naming the new key makes Tally fetch again (at most
    // every 5 s), and from then on it is accepted, with the old key still valid.
    *served.lock().unwrap() = std::fs::read_to_string(fixture("jwks-rotated.json")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while read(&rotated).status != 200 {
        assert!(Instant::now() < deadline, "the rotated key was never fetched");
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(read(&jwt(|_| ())).status, 200);
    // Many tokens with unknown keys do not make it fetch back to back.
    let before = fetches.load(std::sync::atomic::Ordering::SeqCst);
    let stranger = jwt_with_rotated_key().replace("Bearer ", "");
    let (head, rest) = stranger.split_once('.').unwrap();
    let mut header: Value = serde_json::from_slice(&base64_url(head)).unwrap();
    header["kid"] = json!("nobody");
    let forged = format!("Bearer {}.{rest}", base64_url_encode(&serde_json::to_vec(&header).unwrap()));
    for _ in 0..50 {
        assert_eq!(read(&forged).status, 401);
    }
    let fetched = fetches.load(std::sync::atomic::Ordering::SeqCst) - before;
    assert!(fetched <= 1, "{fetched} fetches for 50 tokens with an unknown key");
}

fn base64_url(text: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text).unwrap()
}

fn base64_url_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[test]
fn tally_dev_without_credentials_prints_a_key_that_works_and_keeps_it_in_its_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let dev = Dev::start_with_its_own_key(&["--data-dir", data]);
    let token = format!("Bearer {}", dev.token.clone().expect("tally dev printed a token"));
    let asset = json!({"asset": "USD/2"});
    let reply = call(&dev.http, "POST", "/v1/ledgers/main/assets", Some(&token), Some(&asset));
    assert_eq!(reply.status, 201, "{}", reply.body);
    assert_eq!(call(&dev.http, "POST", "/v1/ledgers/main/assets", None, Some(&asset)).status, 401);
    let key_file = dir.path().join("dev-api-key.toml");
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&key_file).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "the dev key file is the owner's only");
    drop(dev);
    let again = Dev::start_with_its_own_key(&["--data-dir", data]);
    assert_eq!(
        again.token.as_ref().map(|t| format!("Bearer {t}")),
        Some(token),
        "the same key after a restart"
    );
}

/// A response policy (`data.tally.response`) hides one metadata key from read-only callers in
/// every read that would show it (an account, a page of accounts, a transaction, events, the
/// live stream, a command's outcome) and refuses one document type to them; an admin of the
/// same tenant sees everything. The amounts around the removed fields keep every digit.
#[test]
fn a_response_policy_hides_a_metadata_key_from_read_only_callers() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.rego");
    std::fs::write(&policy, RESPONSE_POLICY).unwrap();
    let dev = Dev::start(&["--policy", policy.to_str().unwrap(), "--kafka-fetch-wait-ms", "5"]);
    let private = json!({"email": "alice@example.com", "note": "kept-note"});
    write_ok(&dev, "POST", "/v1/ledgers/main/assets", json!({"asset": "USD/2"}));
    write_ok(&dev, "POST", "/v1/ledgers/main/accounts", json!({"account": "alice", "metadata": private}));
    let mut pay = transfer("t-1", "alice", 1, false);
    pay["postings"][0]["amount"] = json!(u64::MAX); // not a double: 2^64 - 1 has 64 significant bits
    pay["metadata"] = private.clone();
    write_ok(&dev, "POST", "/v1/ledgers/main/transactions", pay);
    // Refused for funds: the failed transaction's event keeps its request, metadata included.
    let overdraw = json!({"tx_id": "t-2", "metadata": private,
        "postings": [{"source": "bob", "destination": "alice", "asset": "USD/2", "amount": 5}]});
    let failed = call(&dev.http, "POST", "/v1/ledgers/main/transactions", Some(ACME), Some(&overdraw));
    assert_eq!(failed.status, 422, "{}", failed.body);
    let payroll = write_ok(&dev, "PUT", "/v1/state/payroll/p-1", json!({"salary": 1}));
    let payroll_command = payroll["command_id"].as_str().unwrap().to_owned();
    // A put refused for its expected version: its event names the payroll stream only.
    let stale = ureq::http::Request::builder()
        .method("PUT")
        .uri(format!("http://{}/v1/state/payroll/p-1", dev.http))
        .header("authorization", ACME)
        .header("if-match", "\"7\"")
        .body(r#"{"salary": 3}"#.to_owned())
        .unwrap();
    assert_eq!(tally_dev::http_client(Duration::from_secs(30)).run(stale).unwrap().status().as_u16(), 409);
    let last = write_ok(&dev, "PUT", "/v1/state/contacts/c-1", json!({"email": "carol@example.com"}));
    let position = last["position"].as_str().unwrap().to_owned();

    let reads = [
        (&dev.query, "/v1/ledgers/main/accounts/alice"),
        (&dev.query, "/v1/ledgers/main/accounts"),
        (&dev.query, "/v1/ledgers/main/transactions/t-1"),
        (&dev.query, "/v1/events?stream=main"),
        (&dev.http, "/v1/commands/tx:t-1"),
    ];
    for (base, path) in reads {
        let admin = call_as(base, path, ACME, &position);
        assert_eq!(admin.status, 200, "{path}: {}", admin.body);
        assert!(admin.body.contains("alice@example.com") && admin.body.contains("kept-note"), "{path}");
        let reader = call_as(base, path, ACME_READ_ONLY, &position);
        assert_eq!(reader.status, 200, "{path}: {}", reader.body);
        assert!(!reader.body.contains("example.com"), "{path}: {}", reader.body);
        assert!(reader.body.contains("kept-note"), "{path}: {}", reader.body);
        serde_json::from_str::<Value>(&reader.body).unwrap();
    }
    let balance = call_as(&dev.query, "/v1/ledgers/main/accounts/alice", ACME_READ_ONLY, &position);
    assert!(balance.body.contains(&u64::MAX.to_string()), "{}", balance.body);

    // The live stream, event by event.
    let events = live_data(&dev, ACME_READ_ONLY, 3);
    assert!(events.iter().all(|e| !e.contains("example.com")), "{events:?}");
    assert!(events.iter().any(|e| e.contains("kept-note")), "{events:?}");
    assert!(live_data(&dev, ACME, 3).iter().any(|e| e.contains("alice@example.com")));

    // A denied answer is a 403, for the reader only, wherever the payroll document shows: read
    // directly (under a percent-encoded path too), in a page, in events, in a command's outcome;
    // and a filter on the hidden field is refused.
    let outcome = format!("/v1/commands/{payroll_command}?stream=state/payroll/p-1");
    let denied = [
        (&dev.query, "/v1/state/payroll/p-1"),
        (&dev.query, "/v1/state/%70ayroll/p-1"),
        (&dev.query, "/v1/state/payroll"),
        (&dev.query, "/v1/events?stream=state/payroll/p-1"),
        (&dev.query, "/v1/events?type=DocumentPut"),
        (&dev.query, "/v1/events?type=CommandRejected"),
        (&dev.query, &outcome),
        (&dev.http, &outcome),
        (&dev.query, "/v1/state/contacts?field.email=carol%40example.com"),
        (&dev.query, "/v1/state/contacts?field.metadata=%7B%7D"),
    ];
    for (base, path) in denied {
        assert_eq!(call_as(base, path, ACME_READ_ONLY, &position).status, 403, "{path}");
        assert_eq!(call_as(base, path, ACME, &position).status, 200, "{path}");
    }
    let agent = tally_dev::http_client(Duration::from_secs(30));
    let conditional = |auth: &str| {
        let url = format!("http://{}/v1/state/payroll/p-1", dev.query);
        let sent = agent.get(url).header("authorization", auth).header("if-none-match", "\"1\"").call();
        sent.unwrap().status().as_u16()
    };
    assert_eq!((conditional(ACME_READ_ONLY), conditional(ACME)), (403, 200));
    // A write's conditions are its own: If-None-Match still guards a create-only put.
    let again = agent
        .put(format!("http://{}/v1/state/payroll/p-1", dev.http))
        .header("authorization", ACME)
        .header("if-none-match", "*")
        .send(r#"{"salary": 2}"#)
        .unwrap();
    assert_eq!(again.status().as_u16(), 409, "the document exists");
    // A HEAD is answered as the judged GET: its status, and the length of what is left.
    let head = |path: &str| {
        let sent = agent.head(format!("http://{}{path}", dev.query)).header("authorization", ACME_READ_ONLY);
        let response = sent.call().unwrap();
        let length = response.headers().get("content-length").map(|v| v.to_str().unwrap().to_owned());
        (response.status().as_u16(), length)
    };
    assert_eq!(head("/v1/state/payroll/p-1").0, 403);
    let account = call_as(&dev.query, "/v1/ledgers/main/accounts/alice", ACME_READ_ONLY, &position);
    assert_eq!(head("/v1/ledgers/main/accounts/alice"), (200, Some(account.body.len().to_string())));
}

/// Read-only callers (no `write` role) get no `email` metadata and no payroll documents.
const RESPONSE_POLICY: &str = r#"
package tally

default allow := true

read_only if not "write" in input.roles

# Readers may not select documents by their fields: a filter would test what answers hide.
allow := false if {
    read_only
    some name, _ in input.query
    startswith(name, "field.")
}

# An answer that shows a payroll document, wherever it sits: the document, a page of them, an
# event of one (a search, the live stream), a command's outcome.
shows_payroll if {
    walk(input.response, [path, value])
    count(path) > 0
    path[count(path) - 1] == "doc_type"
    value == "payroll"
}

# A rejected command on a payroll document names only its stream.
shows_payroll if {
    walk(input.response, [path, value])
    count(path) > 0
    path[count(path) - 1] == "Document"
    value[0] == "payroll"
}

response := {"deny": true} if {
    read_only
    shows_payroll
}

# `**`: at any depth (an account, a page, an event's body, a failed transaction's request).
response := {"remove": [["**", "metadata", "email"]]} if {
    read_only
    not shows_payroll
}
"#;

/// The `data` of the first `count` events of the live stream of ledger `main`, as `auth` gets them.
fn live_data(dev: &Dev, auth: &str, count: usize) -> Vec<String> {
    use std::io::BufRead;
    let agent = tally_dev::http_client(Duration::from_secs(30));
    let response = agent
        .get(format!("http://{}/v1/events/live?stream=main", dev.query))
        .header("authorization", auth)
        .call();
    let lines = std::io::BufReader::new(response.unwrap().into_body().into_reader()).lines();
    lines.map(Result::unwrap).filter_map(|l| l.strip_prefix("data:").map(str::to_owned)).take(count).collect()
}

/// An open live stream is judged with the policy and the keys of the moment: a response rule
/// added while it is open applies to its next event, and a key revoked while it is open ends it
/// before the next event.
#[test]
fn an_open_live_stream_follows_policy_changes_and_revocations() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let (keys, policy) = (dir.path().join("keys.toml"), dir.path().join("policy.rego"));
    let (reader, reader_entry) = new_key("reader", "acme");
    let out = tally(&["keys", "new", "--id", "writer", "--tenant", "acme", "--roles", "read,write"]);
    let (secret, writer_entry) = String::from_utf8(out.stdout)
        .unwrap()
        .split_once('\n')
        .map(|(s, e)| (s.to_owned(), e.to_owned()))
        .unwrap();
    let writer = format!("Bearer {secret}");
    std::fs::write(&keys, format!("{reader_entry}{writer_entry}")).unwrap();
    std::fs::write(&policy, "package tally\n\nallow := true\n").unwrap();
    let dev = Dev::start(&[
        "--api-keys",
        keys.to_str().unwrap(),
        "--policy",
        policy.to_str().unwrap(),
        "--auth-reload-ms",
        "100",
        "--kafka-fetch-wait-ms",
        "5",
    ]);
    let open = |account: &str| {
        let body = json!({"account": account, "metadata": {"email": format!("{account}@example.com")}});
        let reply = call(&dev.http, "POST", "/v1/ledgers/main/accounts", Some(&writer), Some(&body));
        assert_eq!(reply.status, 201, "{}", reply.body);
    };
    open("a1");
    // The reader's stream, line by line over a channel; `None` when it ends.
    let (lines, received) = std::sync::mpsc::channel::<Option<String>>();
    let url = format!("http://{}/v1/events/live?stream=main", dev.query);
    let auth = reader.clone();
    std::thread::spawn(move || {
        let agent = tally_dev::http_client(Duration::from_secs(60));
        let response = agent.get(url).header("authorization", &auth).call().unwrap();
        for line in std::io::BufReader::new(response.into_body().into_reader()).lines() {
            match line {
                Ok(line) if line.starts_with("data:") => lines.send(Some(line)).unwrap(),
                Ok(_) => {}
                Err(_) => break,
            }
        }
        let _ = lines.send(None);
    });
    let next = || received.recv_timeout(Duration::from_secs(20)).unwrap();
    assert!(next().unwrap().contains("a1@example.com"), "no response rule yet: as it is");

    std::fs::write(
        &policy,
        "package tally\n\nallow := true\n\nresponse := {\"remove\": [[\"**\", \"email\"]]}\n",
    )
    .unwrap();
    let hidden = Instant::now() + Duration::from_secs(10);
    while call(&dev.query, "GET", "/v1/ledgers/main/accounts/a1", Some(&reader), None)
        .body
        .contains("a1@example.com")
    {
        assert!(Instant::now() < hidden, "the policy was never reloaded");
        std::thread::sleep(Duration::from_millis(50));
    }
    open("a2");
    let a2 = next().unwrap();
    assert!(a2.contains("\"a2\"") && !a2.contains("example.com"), "the open stream has the new rule: {a2}");

    std::fs::write(&keys, &writer_entry).unwrap();
    status_until(&dev, &reader, 401, Duration::from_secs(10));
    open("a3");
    assert_eq!(next(), None, "the revoked key's stream ends before the next event");
}

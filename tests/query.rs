//! The query API end to end: writes go through `tally dev`'s HTTP front door, the processor and
//! the projector on the in-process broker; reads come from the query API over the projections.

mod tally_dev;

use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::time::{Duration, Instant};
use tally_dev::Dev;

/// The tests' HTTP client (long enough a timeout for the live stream's reads).
fn client() -> ureq::Agent {
    tally_dev::http_client(Duration::from_secs(60))
}

/// An answer: status, the headers the tests look at, and the JSON body (Null when empty).
struct Answer {
    status: u16,
    position: Option<String>,
    etag: Option<String>,
    body: Value,
}

fn answer(mut response: ureq::http::Response<ureq::Body>) -> Answer {
    let header = |name: &str| response.headers().get(name).map(|v| v.to_str().unwrap().to_owned());
    let (position, etag) = (header("tally-position"), header("etag"));
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().unwrap();
    let body = if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap() };
    Answer { status, position, etag, body }
}

struct Api {
    dev: Dev,
    http: ureq::Agent,
}

impl Api {
    fn start() -> Api {
        Api::start_with(&["--kafka-fetch-wait-ms", "5", "--query-position-wait-ms", "300"])
    }

    /// A started API with USD/2 defined and 5 moved from `world` to `alice` (transaction
    /// `t-1`), and the position of that write.
    fn with_alice_funded() -> (Api, String) {
        let api = Api::start();
        api.write("POST", "/v1/ledgers/main/assets", json!({"asset": "USD/2"}));
        let funded = api.write("POST", "/v1/ledgers/main/transactions", transfer("t-1", "world", "alice", 5));
        let position = funded.position.unwrap();
        (api, position)
    }

    fn start_with(args: &[&str]) -> Api {
        Api { dev: Dev::start_on_test_broker(args), http: client() }
    }

    /// A write to the front door as tenant `acme`; expects it accepted (200 or 201).
    fn write(&self, method: &str, path: &str, body: Value) -> Answer {
        let url = format!("http://{}{path}", self.dev.http);
        let request =
            ureq::http::Request::builder().method(method).uri(url).header("authorization", tally_dev::ACME);
        let response = self.http.run(request.body(body.to_string()).unwrap()).unwrap();
        let answer = answer(response);
        assert!([200, 201].contains(&answer.status), "{method} {path}: {} {}", answer.status, answer.body);
        answer
    }

    /// A read of the query API with these headers.
    fn read_with(&self, path: &str, headers: &[(&str, &str)]) -> Answer {
        let mut request = self.http.get(format!("http://{}{path}", self.dev.query));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        answer(request.call().unwrap())
    }

    /// A read as `acme` after the write at `position` (read-your-writes); expects 200.
    fn read_after(&self, path: &str, position: &str) -> Value {
        let answer =
            self.read_with(path, &[("authorization", tally_dev::ACME), ("tally-position", position)]);
        assert_eq!(answer.status, 200, "GET {path}: {}", answer.body);
        answer.body
    }

    fn status_of(&self, path: &str, headers: &[(&str, &str)]) -> (u16, Value) {
        let answer = self.read_with(path, headers);
        (answer.status, answer.body)
    }

    /// The text of `/metrics` at `listener`.
    fn metrics(&self, listener: &str) -> String {
        self.http
            .get(format!("http://{listener}/metrics"))
            .call()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap()
    }

    /// Every item of a list, page by page (`limit` per page), following `next_cursor`.
    fn all_pages(&self, path: &str, limit: usize, position: &str) -> Vec<Value> {
        let (mut items, mut cursor) = (Vec::new(), None::<String>);
        loop {
            let sep = if path.contains('?') { '&' } else { '?' };
            let page_path = match &cursor {
                Some(c) => format!("{path}{sep}limit={limit}&cursor={c}"),
                None => format!("{path}{sep}limit={limit}"),
            };
            let page = self.read_after(&page_path, position);
            let got = page["items"].as_array().unwrap();
            assert!(got.len() <= limit, "{page}");
            items.extend(got.iter().cloned());
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => return items,
            }
        }
    }
}

fn transfer(tx_id: &str, source: &str, destination: &str, amount: i64) -> Value {
    json!({"tx_id": tx_id, "postings": [{"source": source, "destination": destination, "asset": "USD/2", "amount": amount}], "metadata": {"note": tx_id}})
}

const ACME: (&str, &str) = ("authorization", tally_dev::ACME);

#[test]
fn every_query_endpoint_answers_from_the_real_pipeline() {
    let api = Api::start();
    api.write("POST", "/v1/ledgers/main/assets", json!({"asset": "USD/2"}));
    let t1 = api.write("POST", "/v1/ledgers/main/transactions", transfer("t-1", "world", "alice", 1000));
    // Read-your-writes: straight after the write, with its position, never before it.
    let p1 = t1.position.unwrap();
    let alice = api.read_after("/v1/ledgers/main/accounts/alice", &p1);
    assert_eq!(alice["balances"][0]["posted"], 1000, "{alice}");
    let t1_time =
        api.read_after("/v1/ledgers/main/transactions/t-1", &p1)["created_at"].as_str().unwrap().to_owned();

    std::thread::sleep(Duration::from_millis(20)); // so that t-2 is stamped later than t-1
    let t2_written = api.write("POST", "/v1/ledgers/main/transactions", transfer("t-2", "alice", "bob", 250));
    let mut pending = transfer("t-3", "alice", "bob", 100);
    pending["pending_timeout_ms"] = json!(600_000);
    let p3 = api.write("POST", "/v1/ledgers/main/transactions", pending).position.unwrap();

    // One account: posted, held and available balances.
    let alice = api.read_after("/v1/ledgers/main/accounts/alice", &p3);
    let usd = &alice["balances"][0];
    assert_eq!(
        (usd["asset"].as_str(), usd["posted"].as_i64(), usd["pending_out"].as_i64()),
        (Some("USD/2"), Some(750), Some(100))
    );
    assert_eq!(usd["available"], 650);
    assert_eq!(alice["status"], "OPEN");

    // A pending transaction, then committed: status and timestamps follow.
    let t3 = api.read_after("/v1/ledgers/main/transactions/t-3", &p3);
    assert_eq!(
        (t3["status"].as_str(), t3["metadata"]["note"].as_str()),
        (Some("PENDING"), Some("t-3")),
        "{t3}"
    );
    assert!(t3["expires_at"].is_string(), "{t3}");
    let p4 = api.write("POST", "/v1/ledgers/main/transactions/t-3/commit", json!({})).position.unwrap();
    let t3 = api.read_after("/v1/ledgers/main/transactions/t-3", &p4);
    assert_eq!(t3["status"], "POSTED", "{t3}");
    assert!(t3["updated_at"].as_str() >= t3["created_at"].as_str(), "{t3}");
    let t2 = api.read_after("/v1/ledgers/main/transactions/t-2", &p4);
    assert_eq!(t2["postings"][0]["amount"], 250, "{t2}");

    // The statement: newest first, with the balance after each line.
    let lines = api.all_pages("/v1/ledgers/main/accounts/alice/statement", 2, &p4);
    let seen: Vec<(i64, i64)> =
        lines.iter().map(|l| (l["amount"].as_i64().unwrap(), l["balance_after"].as_i64().unwrap())).collect();
    assert_eq!(seen, vec![(-100, 650), (-250, 750), (1000, 1000)], "{lines:?}");
    let usd_only = api.all_pages("/v1/ledgers/main/accounts/alice/statement?asset=USD/2", 1, &p4);
    assert_eq!(usd_only, lines);

    // The balance at an instant: just after t-1, before t-2.
    let at = api.read_after(&format!("/v1/ledgers/main/accounts/alice/balance?at={t1_time}"), &p4);
    assert_eq!(at["balances"], json!([{"asset": "USD/2", "posted": 1000}]), "{at}");
    let before = api.read_after("/v1/ledgers/main/accounts/alice/balance?at=2000-01-01T00:00:00Z", &p4);
    assert_eq!(before["balances"][0]["posted"], 0, "{before}");

    // Accounts of the ledger, by prefix.
    let all: Vec<Value> =
        api.all_pages("/v1/ledgers/main/accounts", 1, &p4).iter().map(|a| a["account"].clone()).collect();
    assert_eq!(all, vec![json!("alice"), json!("bob"), json!("world")]);
    let b: Vec<Value> = api
        .all_pages("/v1/ledgers/main/accounts?prefix=b", 5, &p4)
        .iter()
        .map(|a| a["account"].clone())
        .collect();
    assert_eq!(b, vec![json!("bob")]);

    // Command outcomes by command id (a transaction's command id is tx:<tx_id> by default): the
    // query API answers with the very outcome the write was answered with.
    let outcome = api.read_after("/v1/commands/tx:t-2", &p4);
    assert_eq!(outcome, t2_written.body);
    assert_eq!(outcome["status"], "ACCEPTED", "{outcome}");
    // A refused command: both /v1/commands endpoints answer with the write's problem and status.
    let url = format!("http://{}/v1/ledgers/main/transactions", api.dev.http);
    let request =
        ureq::http::Request::builder().method("POST").uri(url).header("authorization", tally_dev::ACME);
    let overdraft = transfer("t-overdraft", "bob", "alice", 1_000_000).to_string();
    let refused = answer(api.http.run(request.body(overdraft).unwrap()).unwrap());
    assert_eq!(
        (refused.status, &refused.body["reason"]),
        (422, &json!("INSUFFICIENT_FUNDS")),
        "{}",
        refused.body
    );
    let p_refused = refused.position.clone().unwrap();
    let auth = [("authorization", tally_dev::ACME), ("tally-position", p_refused.as_str())];
    let from_query = api.read_with("/v1/commands/tx:t-overdraft", &auth);
    let front = format!("http://{}/v1/commands/tx:t-overdraft", api.dev.http);
    let from_front = answer(api.http.get(front).header("authorization", tally_dev::ACME).call().unwrap());
    for polled in [&from_query, &from_front] {
        assert_eq!((polled.status, &polled.body, &polled.position), (422, &refused.body, &refused.position));
    }

    // Documents: by key with an ETag (304 when unchanged), and listed with a field filter.
    api.write("PUT", "/v1/state/orders/o-1", json!({"status": "paid", "total": 30}));
    api.write("PUT", "/v1/state/orders/o-2", json!({"status": "open", "total": 30}));
    let p5 =
        api.write("PUT", "/v1/state/orders/x-3", json!({"status": "paid", "total": 7})).position.unwrap();
    let doc = api.read_with("/v1/state/orders/o-1", &[ACME, ("tally-position", &p5)]);
    assert_eq!((doc.status, doc.body["value"]["status"].as_str()), (200, Some("paid")));
    let etag = doc.etag.unwrap();
    assert_eq!(api.status_of("/v1/state/orders/o-1", &[ACME, ("if-none-match", &etag)]).0, 304);
    let paid = api.all_pages("/v1/state/orders?field.status=paid", 1, &p5);
    assert_eq!(paid.iter().map(|d| d["key"].as_str().unwrap()).collect::<Vec<_>>(), ["o-1", "x-3"]);
    let paid_o = api.all_pages("/v1/state/orders?prefix=o&field.status=paid&field.total=30", 5, &p5);
    assert_eq!(paid_o.iter().map(|d| d["key"].as_str().unwrap()).collect::<Vec<_>>(), ["o-1"]);

    // Events of a stream, by type and time.
    let posted = api.all_pages("/v1/events?stream=main&type=TransactionPosted,PendingCommitted", 2, &p5);
    let kinds: Vec<&str> = posted.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["TransactionPosted", "TransactionPosted", "PendingCommitted"]);
    let since_t2 = api.all_pages(
        &format!("/v1/events?stream=main&from={}", posted[1]["time"].as_str().unwrap()),
        10,
        &p5,
    );
    assert_eq!(since_t2.first().map(|e| e["event_id"].clone()), Some(posted[1]["event_id"].clone()));
    let doc_events = api.all_pages("/v1/events?stream=state/orders/o-1", 10, &p5);
    assert_eq!(doc_events.len(), 1);
    // Across the tenant's streams, in time order (the ledger's and the documents').
    let across =
        api.all_pages(&format!("/v1/events?from={t1_time}&type=TransactionPosted,DocumentPut"), 2, &p5);
    let mut kinds: Vec<&str> = across.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    let times: Vec<&str> = across.iter().map(|e| e["time"].as_str().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    kinds.sort();
    assert_eq!(
        kinds,
        ["DocumentPut", "DocumentPut", "DocumentPut", "TransactionPosted", "TransactionPosted"]
    );
    // Without `from`, the search starts at the tenant's first event: it finds the same events
    // as one from before them all, and the ledger's every event.
    let everything = api.all_pages("/v1/events?type=TransactionPosted,DocumentPut", 2, &p5);
    let before_t1 = everything.iter().filter(|e| e["time"].as_str().unwrap() < t1_time.as_str()).count();
    assert_eq!(everything[before_t1..], across[..], "{everything:?}");
    let ids = |events: &[Value]| -> BTreeSet<String> {
        events.iter().map(|e| e["event_id"].as_str().unwrap().to_owned()).collect()
    };
    let all_of_main = ids(&api.all_pages("/v1/events?stream=main", 100, &p5));
    let whole = ids(&api.all_pages("/v1/events", 3, &p5));
    assert!(all_of_main.is_subset(&whole) && whole.len() > all_of_main.len(), "{whole:?}");

    // Another tenant sees none of it.
    let globex = ("authorization", tally_dev::GLOBEX);
    assert_eq!(api.status_of("/v1/ledgers/main/accounts/alice", &[globex]).0, 404);
    assert_eq!(api.status_of("/v1/ledgers/main/transactions/t-1", &[globex]).0, 404);
    assert_eq!(api.status_of("/v1/state/orders/o-1", &[globex]).0, 404);
}

/// Each write read back at once with its position: never stale. The consumers' default fetch
/// wait (50 ms) makes the projector lag the write's answer, so without the wait reads would be
/// stale (a planted bug that skips the wait fails here).
#[test]
fn a_read_with_a_writes_position_sees_that_write() {
    let api = Api::start_with(&["--query-position-wait-ms", "5000"]);
    api.write("POST", "/v1/ledgers/main/assets", json!({"asset": "USD/2"}));
    for i in 1..=30 {
        let tx_id = format!("t-{i}");
        let position = api
            .write("POST", "/v1/ledgers/main/transactions", transfer(&tx_id, "world", "alice", 1))
            .position
            .unwrap();
        let alice = api.read_after("/v1/ledgers/main/accounts/alice", &position);
        assert_eq!(alice["balances"][0]["posted"], i, "read {i} was stale: {alice}");
        let tx = api.read_after(&format!("/v1/ledgers/main/transactions/{tx_id}"), &position);
        assert_eq!(tx["status"], "POSTED");
    }
}

/// Request headers, as name and value.
type Headers<'a> = Vec<(&'a str, &'a str)>;

#[test]
fn bad_input_is_a_clear_error_and_unknown_things_are_404() {
    let (api, p) = Api::with_alice_funded();
    api.read_after("/v1/ledgers/main/accounts/alice", &p);
    let cursor =
        api.read_after("/v1/ledgers/main/accounts?limit=1", &p)["next_cursor"].as_str().unwrap().to_owned();
    // A position of acme's, far ahead (a token is `<partition>-<offset>.<tenant tag>`).
    let far = format!("0-999999.{}", p.split_once('.').unwrap().1);
    let cases: Vec<(String, Headers, u16)> = vec![
        ("/v1/ledgers/main/accounts/alice".into(), vec![], 401), // no credentials
        ("/v1/ledgers/main/accounts/al%20ice".into(), vec![ACME], 400),
        ("/v1/ledgers/main/accounts/nobody".into(), vec![ACME], 404),
        ("/v1/ledgers/nowhere/accounts".into(), vec![ACME], 404),
        ("/v1/ledgers/main/accounts?limit=0".into(), vec![ACME], 400),
        ("/v1/ledgers/main/accounts?limit=-3".into(), vec![ACME], 400),
        ("/v1/ledgers/main/accounts?cursor=garbage".into(), vec![ACME], 400),
        (format!("/v1/ledgers/main/accounts?prefix=b&cursor={cursor}"), vec![ACME], 400), // another list's
        (
            format!("/v1/ledgers/main/accounts?cursor={cursor}"),
            vec![("authorization", tally_dev::GLOBEX)],
            400,
        ),
        ("/v1/ledgers/main/accounts?colour=red".into(), vec![ACME], 400),
        // A kind no event has would match nothing, for ever.
        ("/v1/events?stream=main&type=TransactionPosted,Transfered".into(), vec![ACME], 400),
        ("/v1/events/live?stream=main&type=NoSuchKind".into(), vec![ACME], 400),
        ("/v1/ledgers/main/accounts/alice/balance?at=yesterday".into(), vec![ACME], 400),
        ("/v1/ledgers/main/accounts/alice/balance".into(), vec![ACME], 400),
        ("/v1/ledgers/main/accounts/alice/statement?asset=dollars".into(), vec![ACME], 400),
        ("/v1/ledgers/main/transactions/t-9".into(), vec![ACME], 404),
        ("/v1/commands/nope".into(), vec![ACME], 404),
        ("/v1/state/orders/o-1".into(), vec![ACME], 404),
        ("/v1/state/orders?field.=x".into(), vec![ACME], 400),
        ("/v1/events?stream=state/orders".into(), vec![ACME], 400),
        ("/v1/events?stream=main&from=soon".into(), vec![ACME], 400),
        ("/v1/ledgers/main/accounts/alice".into(), vec![ACME, ("tally-position", "seven")], 400),
        // A position far ahead: the bounded wait runs out (300 ms here) and says how far it got.
        ("/v1/ledgers/main/accounts/alice".into(), vec![ACME, ("tally-position", &far)], 504),
        // Acme's position is no use to globex.
        (
            "/v1/ledgers/main/accounts/alice".into(),
            vec![("authorization", tally_dev::GLOBEX), ("tally-position", &p)],
            400,
        ),
        ("/v1/nothing".into(), vec![ACME], 404),
    ];
    for (path, headers, expected) in cases {
        let answer = api.read_with(&path, &headers);
        assert_eq!(answer.status, expected, "GET {path} {headers:?}: {}", answer.body);
        assert!(answer.body["detail"].as_str().is_some_and(|d| !d.is_empty()), "GET {path}: {}", answer.body);
    }
    // Blanks around kinds and empty items are allowed (as the documents' pattern says).
    let kinds = api.read_with("/v1/events?stream=main&type=%20TransactionPosted%09,,", &[ACME]);
    assert_eq!(kinds.status, 200, "{}", kinds.body);
    assert_eq!(kinds.body["items"][0]["kind"], "TransactionPosted", "{}", kinds.body);
    // Across streams any range is a search (from the first event, to no end, by default); one
    // that ends before it begins is empty.
    let ranges = [("", 2), ("?from=0001-01-01T00:00:00Z&to=9999-12-31T23:59:59Z", 2)];
    for (range, found) in
        ranges.into_iter().chain([("?from=2026-03-01T00:00:00Z&to=2026-01-01T00:00:00Z", 0)])
    {
        let answer = api.read_with(&format!("/v1/events{range}"), &[ACME]);
        assert_eq!(answer.status, 200, "{range}: {}", answer.body);
        assert_eq!(answer.body["items"].as_array().unwrap().len(), found, "{range}: {}", answer.body);
    }
}

#[test]
fn paging_visits_every_row_once_while_writes_continue() {
    let api = Api::start();
    api.write("POST", "/v1/ledgers/main/assets", json!({"asset": "USD/2"}));
    let mut position = String::new();
    for i in 0..30 {
        let tx = transfer(&format!("t-{i}"), "world", &format!("acct-{i:02}"), 1);
        position = api.write("POST", "/v1/ledgers/main/transactions", tx).position.unwrap();
    }
    for i in 0..10 {
        position = api
            .write(
                "POST",
                "/v1/ledgers/main/transactions",
                transfer(&format!("s-{i}"), "world", "acct-00", 1),
            )
            .position
            .unwrap();
    }
    let writer = {
        let (http, base) = (client(), api.dev.http.clone());
        std::thread::spawn(move || {
            for i in 0..40 {
                // New accounts on both sides of the pages already read, and new statement lines.
                let (tx, to) =
                    (format!("w-{i}"), if i % 2 == 0 { format!("acct-{i:02}x") } else { format!("a-{i}") });
                for body in
                    [transfer(&tx, "world", &to, 1), transfer(&format!("{tx}-b"), "world", "acct-00", 1)]
                {
                    let url = format!("http://{base}/v1/ledgers/main/transactions");
                    let response = http
                        .post(url)
                        .header("authorization", tally_dev::ACME)
                        .send(body.to_string())
                        .unwrap();
                    assert!(response.status().is_success());
                }
            }
        })
    };
    let accounts = api.all_pages("/v1/ledgers/main/accounts?prefix=acct", 4, &position);
    let lines = api.all_pages("/v1/ledgers/main/accounts/acct-00/statement", 3, &position);
    writer.join().unwrap();

    let ids: Vec<&str> = accounts.iter().map(|a| a["account"].as_str().unwrap()).collect();
    let mut unique = ids.clone();
    unique.dedup();
    assert_eq!(unique, ids, "an account was listed twice");
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "out of order: {ids:?}");
    for i in 0..30 {
        assert!(ids.contains(&format!("acct-{i:02}").as_str()), "acct-{i:02} was never listed: {ids:?}");
    }
    let places: Vec<&str> = lines.iter().map(|l| l["event_id"].as_str().unwrap()).collect();
    let mut unique = places.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), places.len(), "a statement line was listed twice");
    let from_before = |tx: &str| tx == "t-0" || tx.starts_with("s-");
    let before = lines.iter().filter(|l| from_before(l["tx_id"].as_str().unwrap())).count();
    assert_eq!(before, 11, "a line that was there before paging began was missed: {lines:?}");
}

/// Eight writers, one per ledger, write at once while a reader follows the tenant's timeline
/// (`/v1/events` by time, across streams) page by page, and at the end of each pass goes on with
/// its resume cursor. Partitions are projected independently, so events become readable out of
/// time order: the reader still gets every event once (it once missed 4 of 1,279 resuming from
/// its last item's time).
#[test]
fn following_the_timeline_across_streams_misses_nothing_and_repeats_nothing_while_writes_go_on() {
    let api = Api::start();
    // The range starts at the time of a first write (the server's clock, not the test's).
    let origin = api.write("POST", "/v1/ledgers/origin/assets", json!({"asset": "USD/2"}));
    let first = api.read_after("/v1/events?stream=origin", origin.position.as_deref().unwrap());
    let from = first["items"][0]["time"].as_str().unwrap().to_owned();
    let ledgers: Vec<String> = (0..8).map(|i| format!("tl-{i}")).collect();
    let writers: Vec<_> = ledgers
        .iter()
        .map(|ledger| {
            let (http, base, ledger) = (client(), api.dev.http.clone(), ledger.clone());
            std::thread::spawn(move || {
                let post = |path: String, body: Value| {
                    let url = format!("http://{base}{path}");
                    let response = http
                        .post(url)
                        .header("authorization", tally_dev::ACME)
                        .send(body.to_string())
                        .unwrap();
                    assert!(response.status().is_success(), "{}", response.status());
                    response.headers().get("tally-position").unwrap().to_str().unwrap().to_owned()
                };
                post(format!("/v1/ledgers/{ledger}/assets"), json!({"asset": "USD/2"}));
                let mut last = String::new();
                for i in 0..25 {
                    let tx = transfer(&format!("{ledger}-{i}"), "world", &format!("a-{i}"), 1);
                    last = post(format!("/v1/ledgers/{ledger}/transactions"), tx);
                }
                last
            })
        })
        .collect();
    let mut shown: Vec<String> = Vec::new();
    let mut cursor: Option<String> = None;
    let read_page = |cursor: &Option<String>| -> Value {
        let mut path = format!("/v1/events?from={from}&limit=7");
        if let Some(c) = cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let (status, page) = api.status_of(&path, &[("authorization", tally_dev::ACME)]);
        assert_eq!(status, 200, "{page}");
        page
    };
    let mut passes = 0;
    let mut follow = |cursor: &mut Option<String>, shown: &mut Vec<String>| {
        let page = read_page(cursor);
        shown.extend(
            page["items"].as_array().unwrap().iter().map(|e| e["event_id"].as_str().unwrap().to_owned()),
        );
        match (page["next_cursor"].as_str(), page["resume_cursor"].as_str()) {
            (Some(next), _) => *cursor = Some(next.to_owned()),
            (None, Some(resume)) => {
                passes += 1;
                *cursor = Some(resume.to_owned());
            }
            (None, None) => panic!("a search across streams always says where to resume: {page}"),
        }
    };
    while !writers.iter().all(|w| w.is_finished()) {
        follow(&mut cursor, &mut shown);
    }
    let positions: Vec<String> = writers.into_iter().map(|w| w.join().unwrap()).collect();
    // Every ledger's last write is projected; then the reader goes on until a pass adds nothing.
    let mut expected = Vec::new();
    for (ledger, position) in ledgers.iter().zip(&positions) {
        let events = api.all_pages(&format!("/v1/events?stream={ledger}"), 100, position);
        expected.extend(events.iter().map(|e| e["event_id"].as_str().unwrap().to_owned()));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        follow(&mut cursor, &mut shown);
        let mut ours: Vec<&String> = shown.iter().filter(|id| id.starts_with("acme/tl-")).collect();
        ours.sort();
        let total = ours.len();
        ours.dedup();
        assert_eq!(ours.len(), total, "an event was shown twice");
        if total >= expected.len() {
            break;
        }
        assert!(Instant::now() < deadline, "{} of {} events shown", total, expected.len());
    }
    let mut ours: Vec<String> = shown.into_iter().filter(|id| id.starts_with("acme/tl-")).collect();
    ours.sort();
    expected.sort();
    assert_eq!(ours, expected, "every event of the eight ledgers, once");
    assert!(passes >= 2, "the reader followed the timeline over several passes ({passes})");
}

/// One live event across streams: its SSE id (the resume token), and from its data the event
/// id, stream, stream version and `resume` field.
#[derive(Debug, Clone)]
struct Live {
    token: String,
    event_id: String,
    stream: String,
    version: u64,
    resume: String,
}

/// Follows `/v1/events/live?{query}` from `token` (`Last-Event-ID`) until `count` events have
/// come or the connection has been open `open_for`; returns them in arrival order.
fn follow_live(api: &Api, query: &str, token: Option<&str>, count: usize, open_for: Duration) -> Vec<Live> {
    let agent = tally_dev::http_client(open_for);
    let mut request = agent
        .get(format!("http://{}/v1/events/live?{query}", api.dev.query))
        .header("authorization", tally_dev::ACME);
    if let Some(token) = token {
        request = request.header("last-event-id", token);
    }
    let response = request.call().unwrap();
    assert_eq!(response.status(), 200);
    let mut reader = BufReader::new(response.into_body().into_reader());
    let (mut events, mut id, mut line) = (Vec::new(), None::<String>, String::new());
    while events.len() < count {
        line.clear();
        // The connection's time runs out (an error) or the stream ends: what came stands.
        if !matches!(reader.read_line(&mut line), Ok(n) if n > 0) {
            break;
        }
        let line = line.trim_end();
        if let Some(v) = line.strip_prefix("id: ") {
            id = Some(v.to_owned());
        } else if let Some(data) = line.strip_prefix("data: ") {
            let view: Value = serde_json::from_str(data).unwrap();
            let event_id = view["event_id"].as_str().unwrap().to_owned();
            let (stream, _) = event_id.strip_prefix("acme/").unwrap().rsplit_once('@').unwrap();
            events.push(Live {
                token: id.take().expect("an id before the data"),
                event_id: event_id.clone(),
                stream: stream.to_owned(),
                version: view["stream_version"].as_u64().unwrap(),
                resume: view["resume"].as_str().unwrap_or_default().to_owned(),
            });
        }
    }
    events
}

/// Two followers across streams, one of the whole tenant and one of a document type, each
/// dropped and resumed (with the last SSE id) every few events while ledgers and documents
/// on every partition are written at once: each gets every event it follows exactly once, and
/// every stream's events in stream order.
#[test]
fn live_streams_across_streams_resume_without_gaps_or_repeats_while_writes_go_on() {
    let api = Api::start();
    let base = api.dev.http.clone();
    let mut writers = Vec::new();
    for ledger in ["lv-a", "lv-b", "lv-c"] {
        let base = base.clone();
        writers.push(std::thread::spawn(move || {
            let http = client();
            let post = |path: String, body: Value| {
                let response = http
                    .post(format!("http://{base}{path}"))
                    .header("authorization", tally_dev::ACME)
                    .send(body.to_string())
                    .unwrap();
                assert!(response.status().is_success(), "{}", response.status());
                response.headers().get("tally-position").unwrap().to_str().unwrap().to_owned()
            };
            let mut last = post(format!("/v1/ledgers/{ledger}/assets"), json!({"asset": "USD/2"}));
            for i in 0..15 {
                last = post(
                    format!("/v1/ledgers/{ledger}/transactions"),
                    transfer(&format!("{ledger}-{i}"), "world", "a", 1),
                );
            }
            vec![(ledger.to_owned(), last)]
        }));
    }
    for doc_type in ["order", "note"] {
        let base = base.clone();
        writers.push(std::thread::spawn(move || {
            let http = client();
            let mut last = Vec::new();
            for key in 0..4 {
                let mut position = String::new();
                for n in 0..5 {
                    let url = format!("http://{base}/v1/state/{doc_type}/k-{key}");
                    let request = ureq::http::Request::builder()
                        .method("PUT")
                        .uri(url)
                        .header("authorization", tally_dev::ACME);
                    let response = http.run(request.body(json!({"n": n}).to_string()).unwrap()).unwrap();
                    assert!(response.status().is_success(), "{}", response.status());
                    position = response.headers().get("tally-position").unwrap().to_str().unwrap().to_owned();
                }
                last.push((format!("state/{doc_type}/k-{key}"), position));
            }
            last
        }));
    }
    let (mut everything, mut orders) = (Vec::<Live>::new(), Vec::<Live>::new());
    let follow = |query: &str, seen: &mut Vec<Live>, take: usize| {
        let token = seen.last().map(|l| l.token.clone());
        seen.extend(follow_live(&api, query, token.as_deref(), take, Duration::from_secs(2)));
    };
    while !writers.iter().all(|w| w.is_finished()) {
        follow("", &mut everything, 9);
        follow("doc_type=order", &mut orders, 4);
    }
    let streams: Vec<(String, String)> = writers.into_iter().flat_map(|w| w.join().unwrap()).collect();
    let mut expected_all = BTreeSet::new();
    for (stream, position) in &streams {
        for event in api.all_pages(&format!("/v1/events?stream={stream}"), 100, position) {
            expected_all.insert(event["event_id"].as_str().unwrap().to_owned());
        }
    }
    let expected_orders: BTreeSet<String> =
        expected_all.iter().filter(|id| id.starts_with("acme/state/order/")).cloned().collect();
    assert_eq!(expected_orders.len(), 20);
    let deadline = Instant::now() + Duration::from_secs(60);
    while everything.len() < expected_all.len() || orders.len() < expected_orders.len() {
        assert!(
            Instant::now() < deadline,
            "{} of {}, {} of {}",
            everything.len(),
            expected_all.len(),
            orders.len(),
            expected_orders.len()
        );
        follow("", &mut everything, 9);
        follow("doc_type=order", &mut orders, 4);
    }
    for (name, got, expected) in
        [("tenant", &everything, &expected_all), ("order", &orders, &expected_orders)]
    {
        let ids: Vec<&String> = got.iter().map(|l| &l.event_id).collect();
        let unique: BTreeSet<String> = ids.iter().map(|id| (*id).clone()).collect();
        assert_eq!(unique.len(), ids.len(), "{name}: an event came twice");
        assert_eq!(&unique, expected, "{name}: every event followed, and nothing else");
        let mut last_version: std::collections::BTreeMap<&str, u64> = Default::default();
        for live in got.iter() {
            let before = last_version.insert(&live.stream, live.version).unwrap_or(0);
            assert_eq!(live.version, before + 1, "{name}: {} out of stream order", live.event_id);
            assert_eq!(live.resume, live.token, "the data's resume field is the SSE id");
        }
    }
    // A token belongs to its filters: the order follower's is refused by the tenant's stream.
    let token = &orders.last().unwrap().token;
    let (status, body) =
        api.status_of(&format!("/v1/events/live?resume={token}"), &[("authorization", tally_dev::ACME)]);
    assert_eq!(status, 400, "{body}");
}

/// The store scans a query listener has made (`tally_store_operation_seconds_count` of `scan`).
fn scans(api: &Api) -> u64 {
    let text = api.metrics(&api.dev.query);
    let line =
        text.lines().find(|l| l.starts_with("tally_store_operation_seconds_count{operation=\"scan\"}"));
    line.map_or(0, |l| l.rsplit(' ').next().unwrap().parse().unwrap())
}

/// A caught-up follower across streams reads no rows while nothing is written: its cost does
/// not grow with the tenant's history (each poll read the whole timeline before the partition
/// index), and it still gets the next write.
#[test]
fn an_idle_follower_across_streams_reads_nothing_until_a_write() {
    let api = Api::start();
    let mut position = String::new();
    for ledger in ["idle-a", "idle-b", "idle-c"] {
        api.write("POST", &format!("/v1/ledgers/{ledger}/assets"), json!({"asset": "USD/2"}));
        for i in 0..10 {
            let tx = transfer(&format!("{ledger}-{i}"), "world", "a", 1);
            position = api.write("POST", &format!("/v1/ledgers/{ledger}/transactions"), tx).position.unwrap();
        }
    }
    api.read_after("/v1/ledgers/idle-c/accounts/a", &position);
    std::thread::scope(|scope| {
        let follower = scope.spawn(|| follow_live(&api, "", None, 34, Duration::from_secs(30)));
        // Caught up (33 events) well within this, then idle for 2 s: some 20 polls.
        std::thread::sleep(Duration::from_secs(3));
        let before = scans(&api);
        std::thread::sleep(Duration::from_secs(2));
        let idle = scans(&api) - before;
        api.write("POST", "/v1/ledgers/idle-a/transactions", transfer("idle-last", "world", "a", 1));
        let got = follower.join().unwrap();
        assert_eq!(idle, 0, "store scans by an idle follower in 2 s");
        assert_eq!(got.len(), 34, "every event, then the write made while it was idle");
        assert_eq!(got.last().unwrap().event_id, "acme/idle-a@12");
    });
}

/// Reads SSE events (`id`, `event` name) from `reader` until `count` have come.
fn sse_events(reader: &mut impl BufRead, count: usize) -> Vec<(u64, String)> {
    let (mut events, mut id, mut name) = (Vec::new(), None, None);
    let mut line = String::new();
    while events.len() < count {
        line.clear();
        assert!(reader.read_line(&mut line).unwrap() > 0, "the stream ended after {events:?}");
        let line = line.trim_end();
        if let Some(v) = line.strip_prefix("id: ") {
            id = Some(v.parse().unwrap());
        } else if let Some(v) = line.strip_prefix("event: ") {
            name = Some(v.to_owned());
        } else if line.is_empty() && id.is_some() {
            events.push((id.take().unwrap(), name.take().unwrap()));
        }
    }
    events
}

#[test]
fn a_live_stream_resumed_after_a_dropped_connection_misses_nothing_and_repeats_nothing() {
    let api = Api::start();
    api.write("POST", "/v1/ledgers/main/assets", json!({"asset": "USD/2"}));
    for i in 0..5 {
        api.write("POST", "/v1/ledgers/main/transactions", transfer(&format!("t-{i}"), "world", "alice", 1));
    }
    let url = format!("http://{}/v1/events/live?stream=main", api.dev.query);
    let open = |last: Option<u64>| {
        let mut request = client().get(&url).header("authorization", tally_dev::ACME);
        if let Some(last) = last {
            request = request.header("last-event-id", last.to_string());
        }
        let response = request.call().unwrap();
        assert_eq!(response.status(), 200);
        BufReader::new(response.into_body().into_reader())
    };
    // Catch up on 4 of the 6 events so far, then drop the connection.
    let first = sse_events(&mut open(None), 4);
    // More events while disconnected, then resume after the last one received.
    for i in 5..8 {
        api.write("POST", "/v1/ledgers/main/transactions", transfer(&format!("t-{i}"), "world", "alice", 1));
    }
    let mut resumed_reader = open(Some(first.last().unwrap().0));
    let resumed = sse_events(&mut resumed_reader, 4);
    // The one left from before, and one written while connected: followed live.
    let started = Instant::now();
    api.write("POST", "/v1/ledgers/main/transactions", transfer("t-8", "world", "alice", 1));
    let live = sse_events(&mut resumed_reader, 2);
    assert!(started.elapsed() < Duration::from_secs(30));
    let versions: Vec<u64> = first.iter().chain(&resumed).chain(&live).map(|(v, _)| *v).collect();
    assert_eq!(versions, (1..=10).collect::<Vec<u64>>(), "{first:?} {resumed:?} {live:?}");
    assert_eq!(first[0].1, "AssetDefined");
    assert!(resumed.iter().chain(&live).all(|(_, kind)| kind == "TransactionPosted"));
}

/// The series operators watch, named after traffic: HTTP by route and status, commands by
/// outcome and reason, processor batches, projection lag and checkpoints, store operations.
#[test]
fn metrics_name_the_traffic() {
    let (api, p) = Api::with_alice_funded();
    let url = format!("http://{}/v1/ledgers/main/transactions", api.dev.http);
    let overdraft = transfer("t-2", "alice", "bob", 500);
    let rejected =
        api.http.post(url).header("authorization", tally_dev::ACME).send(overdraft.to_string()).unwrap();
    assert_eq!(rejected.status(), 422);
    api.read_after("/v1/ledgers/main/accounts/alice", &p);
    // Consumer lag comes from librdkafka's statistics, every 5 s, for each group on its own
    // schedule (on a loaded machine the projector's can come seconds after the processor's).
    let deadline = Instant::now() + Duration::from_secs(30);
    // The groups are `tally-processor` and `tally-projector`, with a prefix of their own on a
    // shared real Kafka (tally_dev::Dev::start_on_test_broker).
    let lag = |text: &str, role: &str| {
        let suffix = format!(r#"{role}",partition="#);
        text.lines().any(|l| l.starts_with(r#"tally_consumer_lag_records{group=""#) && l.contains(&suffix))
    };
    loop {
        let text = api.metrics(&api.dev.http);
        if lag(&text, "processor") && lag(&text, "projector") {
            break;
        }
        assert!(Instant::now() < deadline, "no consumer lag of both groups after 30 s");
        std::thread::sleep(Duration::from_millis(500));
    }
    for listener in [&api.dev.http, &api.dev.query] {
        let mut response = api.http.get(format!("http://{listener}/metrics")).call().unwrap();
        assert_eq!(response.status(), 200);
        let text = response.body_mut().read_to_string().unwrap();
        for series in [
            r#"tally_http_requests_total{method="POST",route="/v1/ledgers/{ledger}/transactions",service="ingest",status="201"}"#,
            r#"tally_http_requests_total{method="POST",route="/v1/ledgers/{ledger}/transactions",service="ingest",status="422"}"#,
            r#"tally_http_requests_total{method="GET",route="/v1/ledgers/{ledger}/accounts/{account}",service="query",status="200"}"#,
            r#"tally_http_request_duration_seconds_bucket{method="GET",route="/v1/ledgers/{ledger}/accounts/{account}",service="query""#,
            r#"tally_commands_total{outcome="accepted",reason=""}"#,
            r#"tally_commands_total{outcome="rejected",reason="INSUFFICIENT_FUNDS"} 1"#,
            "tally_processor_batch_records_count",
            "tally_processor_batch_seconds_bucket",
            "tally_projection_lag_seconds_count",
            r#"tally_projection_checkpoint_offset{partition="#,
            "tally_projection_batch_rows_count",
            r#"tally_store_operation_seconds_count{operation="commit"}"#,
            r#"tally_store_operation_seconds_count{operation="row"}"#,
        ] {
            assert!(text.contains(series), "{listener}/metrics has no {series}:\n{text}");
        }
    }
}

/// Both `GET /v1/commands/{id}` endpoints (the front door's and the query API's) document the
/// one outcome view, so a client reads either with the same types.
#[test]
fn both_command_endpoints_document_one_outcome() {
    let front = tally_ingest::http::openapi(&tally_ingest::http::HttpConfig::default());
    let query = tally_query::openapi();
    assert_eq!(front["components"]["schemas"]["Outcome"], query["components"]["schemas"]["Outcome"]);
    assert!(front["components"]["schemas"]["Outcome"].is_object(), "{front}");
    for doc in [&front, &query] {
        let answers = &doc["paths"]["/v1/commands/{command_id}"]["get"]["responses"];
        for status in ["200", "404", "409", "422"] {
            assert!(answers[status].is_object(), "{status}: {answers}");
        }
        assert_eq!(
            answers["200"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/Outcome"
        );
    }
}

/// Live streams are bounded per tenant (429) and in all (503), and a stream's place comes back
/// when its client goes away (gRPC's FollowEvents counts against the same places: tests/grpc.rs).
#[test]
fn live_streams_are_bounded_per_tenant_and_in_all() {
    let dev = Dev::start(&["--live-streams-per-tenant-max", "1", "--live-streams-max", "2"]);
    let agent = tally_dev::http_client(Duration::from_secs(10));
    let open = |key: &str| {
        agent
            .get(format!("http://{}/v1/events/live?stream=main", dev.query))
            .header("authorization", key)
            .call()
            .unwrap()
    };
    let acme = open(tally_dev::ACME);
    assert_eq!(acme.status(), 200);
    let refused = open(tally_dev::ACME);
    assert_eq!(refused.status(), 429, "a second stream of the tenant");
    let globex = open(tally_dev::GLOBEX);
    assert_eq!(globex.status(), 200);
    assert_eq!(open(tally_dev::FUZZ).status(), 503, "a third stream in all");

    drop(refused);

    // The client goes away: the server notices when it next writes (the SSE keep-alive comes
    // every 15 s), and the place is free again.
    drop(acme);
    let started = Instant::now();
    loop {
        let again = open(tally_dev::ACME);
        if again.status() == 200 {
            break;
        }
        assert_eq!(again.status(), 429);
        assert!(started.elapsed() < Duration::from_secs(40), "acme's place did not come back");
        std::thread::sleep(Duration::from_millis(500));
    }
    drop(globex);
}

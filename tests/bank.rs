//! Many processes on real parts: 2 `tally ingest`, 2 `tally project` and 1 `tally query` over
//! real Kafka and Cassandra. A bank workload runs against them: transfers between a few accounts
//! from concurrent clients over HTTP to both front doors (retrying with the same transaction id
//! when an answer is lost, as a client does), and Avro transfer commands produced straight to
//! Kafka. Meanwhile a random process is killed with SIGKILL every few seconds and restarted.
//!
//! Afterwards, checked against the log and the clients' records:
//! - Cassandra holds exactly the rows of a fresh fold of the log, and the query API serves each
//!   account exactly as the fold has it;
//! - per asset, the balances sum to zero, and no account but `world` is below zero;
//! - every transfer a client was told was accepted is POSTED exactly once in the statements of
//!   both its accounts, and no refused transfer is in any statement.
//!
//! Needs `TALLY_TEST_KAFKA` and `TALLY_TEST_SCYLLA` (the README's test command sets both);
//! without them it prints that it skipped.

#[path = "../services/ingest/tests/support/mod.rs"]
mod support;
mod tally_dev;

use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::*;
use tally_core::projection::{Row, RowKey};
use tally_core::testkit;
use tally_kafka::topics::Topics;
use tally_store::projections::ProjectionStore;
use tally_store::{ScyllaConfig, ScyllaStore};

const ACCOUNTS: usize = 10;
const FUNDING: i64 = 1_000;
const PARTITIONS: i32 = 4;
/// How long the clients and the killer run.
const RUN: Duration = Duration::from_secs(40);
const HTTP_CLIENTS: usize = 4;
/// A client gives up on one transfer (and counts it as unknown) after this long.
const GIVE_UP: Duration = Duration::from_secs(30);

fn account(i: usize) -> String {
    format!("acct-{i}")
}

/// Two different accounts.
fn two_accounts(rng: &mut impl Rng) -> (usize, usize) {
    let from = rng.random_range(0..ACCOUNTS);
    (from, (from + rng.random_range(1..ACCOUNTS)) % ACCOUNTS)
}

/// A free port below Linux's ephemeral range (32768-60999). Each process keeps its port across
/// restarts, and a port the kernel hands out for outgoing connections (the Kafka and Cassandra
/// clients make many) could be taken between a kill and the restart: it happened once.
fn free_port() -> u16 {
    let mut rng = rand::rng();
    loop {
        let port = rng.random_range(20_000..32_000);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// One Tally process: how to start it, and the running child if any.
struct Process {
    name: String,
    args: Vec<String>,
    log: std::path::PathBuf,
    child: Option<Child>,
    starts: usize,
}

impl Process {
    fn start(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        let child = Command::new(tally_dev::TALLY)
            .args(&self.args)
            .env("TALLY_LOG_FORMAT", "text")
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", self.name));
        self.child = Some(child);
        self.starts += 1;
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill(); // SIGKILL
            let _ = child.wait();
        }
    }

    /// How it exited, if it exited on its own.
    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().unwrap())
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The five processes, their addresses, and where they write.
struct Deployment {
    processes: Mutex<Vec<Process>>,
    fronts: [String; 2],
    query: String,
}

impl Deployment {
    fn start(kafka: &str, cassandra: &str, keyspace: &str, topics: &Topics, dir: &std::path::Path) -> Self {
        let prefix = topics.commands.trim_end_matches("commands").to_owned();
        let common = |sub: &str| -> Vec<String> {
            [sub, "--api-keys", tally_dev::API_KEYS, "--store", "scylla", "--scylla-nodes", cassandra]
                .into_iter()
                .chain(["--scylla-keyspace", keyspace])
                .map(str::to_owned)
                .collect()
        };
        // Each service on the topics, in a consumer group of its own kind (`processor`, `projector`).
        let on_kafka = |mut args: Vec<String>, group: &str| {
            let partitions = PARTITIONS.to_string();
            args.extend(
                ["--kafka", kafka, "--topic-prefix", &prefix, "--partitions", &partitions].map(str::to_owned),
            );
            args.push(format!("--{group}-group={prefix}{group}"));
            args
        };
        let fronts = [free_port(), free_port()].map(|p| format!("127.0.0.1:{p}"));
        let query = format!("127.0.0.1:{}", free_port());
        let mut processes = Vec::new();
        let mut add = |name: &str, args: Vec<String>| {
            let log = dir.join(format!("{name}.log"));
            processes.push(Process { name: name.to_owned(), args, log, child: None, starts: 0 });
        };
        for (i, front) in fronts.iter().enumerate() {
            let mut args = on_kafka(common("ingest"), "processor");
            args.extend(["--http-listen", front, "--snapshot-every", "200"].map(str::to_owned));
            args.extend(["--state-window", tally_dev::TEST_STATE_WINDOW].map(str::to_owned));
            add(&format!("ingest-{i}"), args);
        }
        for i in 0..2 {
            let mut args = on_kafka(common("project"), "projector");
            // A projector serves the query API over its store too: on a port of its own.
            for flag in ["--admin-listen", "--query-listen"] {
                args.extend([flag.to_owned(), format!("127.0.0.1:{}", free_port())]);
            }
            add(&format!("project-{i}"), args);
        }
        let mut args = common("query");
        args.extend(["--query-listen", &query, "--query-position-wait-ms", "5000"].map(str::to_owned));
        add("query", args);
        for p in &mut processes {
            p.start();
        }
        Deployment { processes: Mutex::new(processes), fronts, query }
    }

    /// Kills a random process with SIGKILL and starts it again after a moment.
    fn kill_one(&self, rng: &mut impl Rng) -> String {
        let i = rng.random_range(0..self.processes.lock().unwrap().len());
        let name = {
            let mut processes = self.processes.lock().unwrap();
            processes[i].kill();
            processes[i].name.clone()
        };
        std::thread::sleep(Duration::from_millis(rng.random_range(200..1500)));
        self.processes.lock().unwrap()[i].start();
        name
    }

    /// Fails if a process exited on its own (a crash is a bug, not part of the workload).
    fn assert_running(&self) {
        for p in self.processes.lock().unwrap().iter_mut() {
            if let Some(status) = p.exited() {
                let log = std::fs::read_to_string(&p.log).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(30).collect();
                panic!("{} exited by itself ({status}); its log ends:\n{}", p.name, tail.join("\n"));
            }
        }
    }
}

/// What a client learned about one transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Told {
    Accepted,
    Refused,
    /// No answer before the client gave up: it may or may not have happened.
    Unknown,
}

/// Sends a transfer until a front door gives a final answer, alternating between them; the
/// same transaction id each time, so a retry of a transfer that did happen is deduplicated.
fn transfer_over_http(agent: &ureq::Agent, fronts: &[String; 2], body: &Value, first: usize) -> Told {
    let deadline = Instant::now() + GIVE_UP;
    for attempt in 0.. {
        if Instant::now() > deadline {
            return Told::Unknown;
        }
        let url = format!("http://{}/v1/ledgers/main/transactions", fronts[(first + attempt) % 2]);
        let sent = agent.post(url).header("authorization", tally_dev::ACME).send(body.to_string());
        if let Ok(mut response) = sent {
            let status = response.status().as_u16();
            let answer: Value = response.body_mut().read_json().unwrap_or(Value::Null);
            match status {
                // A retry of a transfer that happened is answered with its first outcome.
                200 | 201
                    if ["ACCEPTED", "DEDUPLICATED"].contains(&answer["status"].as_str().unwrap_or("")) =>
                {
                    return Told::Accepted;
                }
                422 if answer["reason"] == "INSUFFICIENT_FUNDS" => return Told::Refused,
                // Pending (202), a front door without partitions yet or shutting down (503),
                // anything else is retried: the transaction id makes the retry safe.
                _ => {}
            }
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    unreachable!()
}

/// A client: random transfers between the accounts until `stop`; what it was told of each.
fn http_client(
    deployment: Arc<Deployment>,
    client: usize,
    stop: Arc<AtomicBool>,
) -> Vec<(String, Told, Value)> {
    let agent = tally_dev::http_client(Duration::from_secs(10));
    let mut rng = rand::rngs::StdRng::seed_from_u64(client as u64);
    let mut told = Vec::new();
    for n in 0.. {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let (from, to) = two_accounts(&mut rng);
        let tx_id = format!("http-{client}-{n}");
        let body = json!({"tx_id": tx_id, "postings": [{"source": account(from), "destination": account(to), "asset": "USD/2", "amount": rng.random_range(1..400)}]});
        let answer = transfer_over_http(&agent, &deployment.fronts, &body, n);
        told.push((tx_id, answer, body));
    }
    told
}

fn get(agent: &ureq::Agent, url: &str) -> Value {
    let mut response = agent.get(url).header("authorization", tally_dev::ACME).call().unwrap();
    assert_eq!(response.status(), 200, "{url}");
    response.body_mut().read_json().unwrap()
}

/// Every item of a list of the query API, following `next_cursor`.
fn all_pages(agent: &ureq::Agent, url: &str) -> Vec<Value> {
    let (mut items, mut cursor) = (Vec::new(), None::<String>);
    loop {
        let sep = if url.contains('?') { '&' } else { '?' };
        let page_url = match &cursor {
            Some(c) => format!("{url}{sep}limit=500&cursor={c}"),
            None => format!("{url}{sep}limit=500"),
        };
        let page = get(agent, &page_url);
        items.extend(page["items"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return items,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bank_on_real_kafka_and_cassandra_survives_processes_killed_at_random() {
    let (Some(kafka), Ok(cassandra)) = (real_kafka(), std::env::var("TALLY_TEST_SCYLLA")) else {
        let notice = "skipped the many-process bank test: it needs TALLY_TEST_KAFKA and TALLY_TEST_SCYLLA\n";
        let _ = std::io::Write::write_all(&mut std::io::stderr(), notice.as_bytes());
        return;
    };
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    let keyspace = format!("tally_bank_{}_{nanos}", std::process::id());
    let replication = "{'class': 'SimpleStrategy', 'replication_factor': 1}";
    let schema = tally_dev::tally(&[
        "schema",
        "--scylla-nodes",
        &cassandra,
        "--scylla-keyspace",
        &keyspace,
        "--scylla-replication",
        replication,
    ]);
    assert!(String::from_utf8_lossy(&schema.stdout).contains("schema applied"));

    // The harness creates the topics (as Tally does) and is the Avro producer and log reader.
    let h = Harness::on(kafka.clone(), false, PARTITIONS).await;
    let deployment = Arc::new(Deployment::start(&kafka, &cassandra, &keyspace, &h.topics, dir.path()));

    // The asset and the opening balances, through the front doors.
    let agent = tally_dev::http_client(Duration::from_secs(10));
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let url = format!("http://{}/v1/ledgers/main/assets", deployment.fronts[0]);
        let sent = agent.post(url).header("authorization", tally_dev::ACME).send(r#"{"asset":"USD/2"}"#);
        if sent.is_ok_and(|r| [200, 201].contains(&r.status().as_u16())) {
            break;
        }
        deployment.assert_running();
        assert!(Instant::now() < deadline, "the asset was never defined");
        std::thread::sleep(Duration::from_millis(500));
    }
    for i in 0..ACCOUNTS {
        let body = json!({"tx_id": format!("fund-{i}"), "postings": [{"source": "world", "destination": account(i), "asset": "USD/2", "amount": FUNDING}]});
        assert_eq!(transfer_over_http(&agent, &deployment.fronts, &body, i), Told::Accepted);
    }

    // The workload and the killer.
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..HTTP_CLIENTS)
        .map(|c| {
            let (deployment, stop) = (deployment.clone(), stop.clone());
            std::thread::spawn(move || http_client(deployment, c, stop))
        })
        .collect();
    let killer = {
        let (deployment, stop) = (deployment.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut rng = rand::rngs::StdRng::seed_from_u64(99);
            let mut killed = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(rng.random_range(2000..4000)));
                deployment.assert_running();
                killed.push(deployment.kill_one(&mut rng));
            }
            killed
        })
    };
    let started = Instant::now();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut avro = 0;
    while started.elapsed() < RUN {
        let (from, to) = two_accounts(&mut rng);
        let amount = rng.random_range(1..400);
        h.send(&[transfer("acme", &format!("avro-{avro}"), &account(from), &account(to), amount)]).await;
        avro += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::SeqCst);
    let told: Vec<(String, Told, Value)> = clients.into_iter().flat_map(|c| c.join().unwrap()).collect();
    let killed = killer.join().unwrap();
    deployment.assert_running();
    let count = |t: Told| told.iter().filter(|(_, told, _)| *told == t).count();
    eprintln!(
        "bank: {} HTTP transfers ({} accepted, {} refused, {} unknown), {avro} Avro transfers; killed {:?}",
        told.len(),
        count(Told::Accepted),
        count(Told::Refused),
        count(Told::Unknown),
        killed
    );
    assert!(count(Told::Accepted) > 20 && killed.len() >= 5, "too little happened to prove anything");

    // Every command answered; the rest blocks (the store's client runs a runtime of its own).
    let log = h.settled(Duration::from_secs(180)).await;
    tokio::task::spawn_blocking(move || check(&log, &deployment, &told, &cassandra, &keyspace))
        .await
        .unwrap();
}

/// The checks of the module's doc against the settled log and what the clients were told.
fn check(
    log: &Log,
    deployment: &Deployment,
    told: &[(String, Told, Value)],
    cassandra: &str,
    keyspace: &str,
) {
    let agent = tally_dev::http_client(Duration::from_secs(10));
    // Every event projected.
    let store =
        ScyllaStore::connect(&ScyllaConfig::new(vec![cassandra.to_owned()], keyspace), false).unwrap();
    let version = store.live_version().unwrap();
    let ends: Vec<Option<i64>> =
        log.partitions.iter().map(|p| p.records.last().map(|(offset, _, _)| *offset)).collect();
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let checkpoints: Vec<Option<i64>> =
            (0..PARTITIONS).map(|p| store.checkpoint(version, p).unwrap()).collect();
        if checkpoints == ends {
            break;
        }
        deployment.assert_running();
        assert!(Instant::now() < deadline, "projections at {checkpoints:?}, the log ends at {ends:?}");
        std::thread::sleep(Duration::from_millis(500));
    }

    // Cassandra holds exactly a fresh fold of the log.
    let mut fresh = BTreeMap::new();
    for (p, part) in log.partitions.iter().enumerate() {
        testkit::fold_into(&mut fresh, part.records.iter().map(|(o, r, _)| (*o, r)), p as i32);
    }
    let stored = store.rows(version).unwrap();
    assert!(stored == fresh, "Cassandra's rows differ from a fresh fold of the log");

    // The query API serves each account as the fold has it; balances sum to zero per asset and
    // nobody but world is below zero.
    let query = |path: &str| format!("http://{}{path}", deployment.query);
    let served = all_pages(&agent, &query("/v1/ledgers/main/accounts"));
    let mut sums: BTreeMap<String, i64> = BTreeMap::new();
    for view in &served {
        let name = view["account"].as_str().unwrap();
        let key = RowKey::Account {
            tenant: tally_core::TenantId::parse("acme").unwrap(),
            ledger: tally_core::LedgerId::parse("main").unwrap(),
            account: tally_core::AccountId::parse(name).unwrap(),
        };
        let Some(Row::Account(row)) = fresh.get(&key) else { panic!("{name} is served but not in the log") };
        let expected =
            serde_json::to_value(tally_query::views::AccountView::of("main", name, row.clone())).unwrap();
        assert_eq!(view, &expected, "account {name}");
        for balance in view["balances"].as_array().unwrap() {
            let posted = balance["posted"].as_i64().unwrap();
            *sums.entry(balance["asset"].as_str().unwrap().to_owned()).or_default() += posted;
            assert!(name == "world" || posted >= 0, "{name} is below zero: {view}");
        }
    }
    assert_eq!(served.len(), ACCOUNTS + 1, "the accounts and world");
    assert!(sums.values().all(|&sum| sum == 0), "balances do not sum to zero: {sums:?}");

    // Every accepted transfer is POSTED exactly once on both sides; no refused one anywhere.
    let mut lines: BTreeMap<(String, String), Vec<i64>> = BTreeMap::new();
    for view in &served {
        let name = view["account"].as_str().unwrap();
        for line in all_pages(&agent, &query(&format!("/v1/ledgers/main/accounts/{name}/statement"))) {
            let tx = line["tx_id"].as_str().unwrap().to_owned();
            lines.entry((name.to_owned(), tx)).or_default().push(line["amount"].as_i64().unwrap());
        }
    }
    let posted_ids: BTreeSet<&str> = lines.keys().map(|(_, tx)| tx.as_str()).collect();
    for (tx_id, told, body) in told {
        let posting = &body["postings"][0];
        let (from, to) = (posting["source"].as_str().unwrap(), posting["destination"].as_str().unwrap());
        let amount = posting["amount"].as_i64().unwrap();
        match told {
            Told::Accepted => {
                let side = |account: &str| lines.get(&(account.to_owned(), tx_id.clone())).cloned();
                assert_eq!(side(from), Some(vec![-amount]), "{tx_id} in {from}'s statement");
                assert_eq!(side(to), Some(vec![amount]), "{tx_id} in {to}'s statement");
            }
            Told::Refused => assert!(!posted_ids.contains(tx_id.as_str()), "refused {tx_id} was posted"),
            Told::Unknown => {}
        }
    }
    store.drop_keyspace(keyspace).unwrap();
}

//! The projector as a process: killed with SIGKILL right after it commits a batch (rows and
//! checkpoint written, nothing else done yet) and restarted, three times, while the processor
//! keeps appending. At the end the stored rows equal a fresh fold of the log, row by row: no
//! event lost, none applied twice.

#[path = "../services/ingest/tests/support/mod.rs"]
mod support;
mod tally_dev;

use tally_dev::TALLY;
use tokio_util::sync::CancellationToken;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::*;
use tally_ingest::processor::Processor;
use tally_store::EmbeddedStore;
use tally_store::projections::ProjectionStore;

const TENANTS: [&str; 4] = ["acme", "globex", "initech", "umbrella"];

/// What a `tally project` process said on stderr so far.
#[derive(Default)]
struct Seen {
    commits: usize,
    /// The checkpoint per partition: restored, then committed.
    checkpoints: BTreeMap<i32, i64>,
    /// Partitions it took over from a stored checkpoint.
    resumed: usize,
}

/// A `tally project` process, killed (SIGKILL) when dropped, also when the test fails.
struct Project {
    child: Child,
    seen: Arc<Mutex<Seen>>,
}

impl Drop for Project {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn field(line: &str, name: &str) -> Option<i64> {
    let at = line.find(&format!("{name}="))? + name.len() + 1;
    let value = line[at..].trim_start_matches("Some(");
    value.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

fn project(h: &Harness, data_dir: &std::path::Path) -> Project {
    let mut child = Command::new(TALLY)
        .args(["project", "--kafka", &h.kafka.bootstrap_servers, "--api-keys", tally_dev::API_KEYS])
        .args(["--topic-prefix", h.topics.commands.trim_end_matches("commands")])
        .args(["--partitions", &h.partitions.to_string(), "--projector-batch-max", "20"])
        .args(["--projector-group", &format!("{}projector", h.topics.events)])
        .args(["--data-dir", data_dir.to_str().unwrap()])
        .env("RUST_LOG", "warn,tally_projector=trace")
        .env("NO_COLOR", "1")
        .env("TALLY_LOG_FORMAT", "text")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tally project starts");
    let seen = Arc::new(Mutex::new(Seen::default()));
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let shared = seen.clone();
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            let mut seen = shared.lock().unwrap();
            if line.contains("batch committed") {
                seen.commits += 1;
                let (partition, checkpoint) = (field(&line, "partition"), field(&line, "checkpoint"));
                seen.checkpoints.insert(partition.unwrap() as i32, checkpoint.unwrap());
                continue;
            }
            if line.contains("projection restored")
                && let (Some(partition), Some(checkpoint)) =
                    (field(&line, "partition"), field(&line, "checkpoint"))
            {
                seen.resumed += 1;
                seen.checkpoints.insert(partition as i32, checkpoint);
            }
            eprintln!("[project] {line}");
        }
    });
    Project { child, seen }
}

impl Project {
    async fn wait_for(&self, what: &str, done: impl Fn(&Seen) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(120);
        while !done(&self.seen.lock().unwrap()) {
            assert!(Instant::now() < deadline, "not within 120 s: {what}");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_projector_killed_after_a_commit_ends_with_the_rows_of_a_fresh_fold() {
    let h = Arc::new(Harness::start(2).await);
    let processor = Processor::build(h.processor("p1")).unwrap().run(CancellationToken::new());
    h.send(&TENANTS.map(|t| define_usd(t, &format!("def-{t}")))).await;
    let wave = |from: usize, to: usize| {
        let h = h.clone();
        async move { h.send_transfers(&TENANTS, from..to).await }
    };
    wave(0, 1000).await;
    let more = tokio::spawn(wave(1000, 2000));

    let data_dir = tempfile::tempdir().unwrap();
    let mut projector = project(&h, data_dir.path());
    let mut resumed = 0;
    for kill in 1..=3 {
        // SIGKILL right after the process logs a commit: rows and checkpoint are written,
        // the Kafka offset is not stored, the next batch is being folded.
        projector.wait_for("commits", |s| s.commits >= 15 * kill).await;
        drop(projector);
        projector = project(&h, data_dir.path());
        projector.wait_for("a restore", |s| s.resumed > 0).await;
        resumed += projector.seen.lock().unwrap().resumed;
    }
    more.await.unwrap();
    let log = h.settled(Duration::from_secs(180)).await;
    let ends: BTreeMap<i32, i64> =
        log.ends().into_iter().enumerate().filter_map(|(p, end)| Some((p as i32, end?))).collect();
    projector.wait_for("the log's end", |s| s.checkpoints == ends).await;
    drop(projector);
    processor.stop().await.unwrap();

    let store = EmbeddedStore::open(&data_dir.path().join("store").join("tally.redb")).unwrap();
    let (stored, fresh) = (store.rows(1).unwrap(), log.projection());
    println!("{} rows; partitions resumed from a checkpoint after kills: {resumed}", fresh.len());
    assert!(resumed >= 3, "each restart resumed from the killed process's checkpoints");
    for (key, row) in &fresh {
        assert_eq!(stored.get(key), Some(row), "row {key:?}");
    }
    assert_eq!(stored.len(), fresh.len(), "rows that a fresh fold does not have");
}

//! The processor as a process: killed with SIGKILL mid-batch and restarted, nothing is lost,
//! nothing is applied twice, and what the log said before the kill still holds after. The
//! processes keep snapshots in one data directory, so restarts restore from snapshots a killed
//! process wrote (possibly while it was being killed).

#[path = "../services/ingest/tests/support/mod.rs"]
mod support;
mod tally_dev;

use tally_dev::TALLY;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use support::*;
use tally_core::EventBody;
use tally_core::log::Verdict;

/// A `tally ingest` process, killed (SIGKILL) when dropped, also when the test fails.
struct Ingest {
    child: Child,
    /// Batches it has started to answer so far (from its trace lines).
    batches: Arc<AtomicUsize>,
    /// Partitions it restored from a snapshot.
    from_snapshots: Arc<AtomicUsize>,
}

impl Drop for Ingest {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ingest(h: &Harness, data_dir: &std::path::Path) -> Ingest {
    let mut child = Command::new(TALLY)
        .args(["ingest", "--kafka", &h.kafka.bootstrap_servers, "--api-keys", tally_dev::API_KEYS])
        .args(["--topic-prefix", h.topics.commands.trim_end_matches("commands")])
        .args(["--partitions", &h.partitions.to_string(), "--batch-max", "50"])
        .args(["--processor-group", &format!("{}group", h.topics.commands)])
        .args(["--snapshot-every", "100", "--data-dir", data_dir.to_str().unwrap()])
        .env("RUST_LOG", "warn,tally_ingest::processor::partition=trace")
        .env("TALLY_LOG_FORMAT", "text")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tally ingest starts");
    let (batches, from_snapshots) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let (counter, restores) = (batches.clone(), from_snapshots.clone());
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            if line.contains("answering a batch") {
                counter.fetch_add(1, Ordering::SeqCst);
                continue;
            }
            if line.contains(" restored ") && line.contains("snapshot=Some") {
                restores.fetch_add(1, Ordering::SeqCst);
            }
            eprintln!("[ingest] {line}");
        }
    });
    Ingest { child, batches, from_snapshots }
}

impl Ingest {
    /// Waits until the process has started to answer its `n`th batch.
    async fn wait_batches(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(120);
        while self.batches.load(Ordering::SeqCst) < n {
            assert!(Instant::now() < deadline, "fewer than {n} batches after 120 s");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_processor_killed_mid_batch_loses_nothing_and_applies_nothing_twice() {
    let h = Arc::new(Harness::start(2).await);
    let tenants = ["acme", "globex", "initech", "umbrella"];
    let setup: Vec<_> = tenants.iter().map(|t| define_usd(t, &format!("def-{t}"))).collect();
    h.send(&setup).await;
    let wave = |from: usize, to: usize| {
        let h = h.clone();
        async move { h.send_transfers(&tenants, from..to).await }
    };
    // A backlog first, so that the processor is busy with batches whenever it is killed; then
    // more commands while it is being killed and restarted.
    let per_tenant = 4000;
    wave(0, 3000).await;
    let second_wave = tokio::spawn(wave(3000, per_tenant));

    let data_dir = tempfile::tempdir().unwrap();
    let mut processor = ingest(&h, data_dir.path());
    let mut before_kills = Vec::new();
    let mut from_snapshots = 0;
    for kill in 1..=3 {
        // Kill the process right after it starts a batch (it logs, then produces the answers):
        // mid-batch, with answers in flight.
        processor.wait_batches(10 * kill).await;
        from_snapshots += processor.from_snapshots.load(Ordering::SeqCst);
        drop(processor); // SIGKILL
        // Everything the log says now is final for that process: it must still hold at the end.
        before_kills.push(h.log().await.outcomes());
        processor = ingest(&h, data_dir.path());
    }
    second_wave.await.unwrap();
    let log = h.settled(Duration::from_secs(180)).await;
    from_snapshots += processor.from_snapshots.load(Ordering::SeqCst);
    drop(processor);
    assert!(from_snapshots > 0, "restarted processes restored from the killed ones' snapshots");
    let answered: Vec<usize> = before_kills.iter().map(|o| o.len()).collect();
    println!("answered at each kill: {answered:?} of {}", tenants.len() * (per_tenant + 1));
    assert!(answered.windows(2).all(|w| w[0] < w[1]), "each process made progress before its kill");
    assert!(*answered.last().unwrap() < tenants.len() * per_tenant, "the last kill came before the end");

    let outcomes = log.outcomes(); // panics if any command is answered twice
    assert_eq!(outcomes.len(), tenants.len() * (per_tenant + 1), "every command answered");
    for (i, seen) in before_kills.iter().enumerate() {
        for (command_id, event) in seen {
            assert_eq!(outcomes.get(command_id), Some(event), "kill {}: {command_id} changed", i + 1);
        }
    }
    let posted = log.events().filter(|e| matches!(e.body, EventBody::TransactionPosted { .. })).count();
    assert_eq!(posted, tenants.len() * per_tenant, "each transfer applied once");
    for part in &log.partitions {
        tally_core::testkit::check_invariants(&part.replica.state).unwrap();
    }
    // Four processes owned every partition in turn: each claimed each partition.
    let claims = log.verdicts(Verdict::NewEpoch);
    assert!(claims >= 4 * h.partitions as usize, "claims: {claims}");
}

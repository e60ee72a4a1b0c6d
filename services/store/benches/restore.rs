//! Restore time: from the newest snapshot against a full replay of the log. Prints figures;
//! asserts nothing.
//!
//! `cargo bench -p tally-store --bench restore` (`TALLY_BENCH_EVENTS`, default 1,000,000)
//!
//! The log is a partition's records as the processor writes them (Avro, single-object), held in
//! memory: this measures the CPU side of a restore (decoding and folding), not reading from the
//! broker, which a full replay pays per record on top.

use std::time::Instant;
use tally_codec::Codec;
use tally_core::log::Replica;
use tally_core::testkit;
use tally_store::EmbeddedStore;
use tally_store::snapshot::{self, Snapshot};

fn main() {
    let n: usize = std::env::var("TALLY_BENCH_EVENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let codec = Codec::new();
    let started = Instant::now();
    let (log, replica) = partition_log(&codec, n);
    println!("restore benchmark: {n} events written in {:.1} s", started.elapsed().as_secs_f64());

    let started = Instant::now();
    let mut replayed = Replica::new();
    for (offset, bytes) in log.iter().enumerate() {
        replayed.read(offset as i64, &codec.decode_log_record(bytes).expect("decodes"));
    }
    let replay = started.elapsed();
    assert_eq!(replayed, replica, "the replay is the writer's fold");

    let store = EmbeddedStore::in_memory().unwrap();
    let covers = log.len() as i64 - 1;
    let started = Instant::now();
    snapshot::save(
        &store,
        "bench.events",
        0,
        &Snapshot { covers, replica: replica.clone(), forgotten_upto: -1 },
    )
    .unwrap();
    let save = started.elapsed();
    let size =
        snapshot::SnapshotStore::newest_first(&store, "bench.events", 0, i64::MAX, 1).unwrap()[0].1.len();
    let started = Instant::now();
    let restored = snapshot::newest_valid(&store, "bench.events", 0, i64::MAX).unwrap().expect("a snapshot");
    let restore = started.elapsed();
    assert_eq!(restored.replica, replica, "the snapshot is the fold");

    println!(
        "full replay of {n} events: {:.2} s ({:.0} events/s)",
        replay.as_secs_f64(),
        n as f64 / replay.as_secs_f64()
    );
    println!(
        "snapshot covering them: {:.1} MB, written in {:.2} s, restored (read, checked, decoded) in {:.2} s",
        size as f64 / 1e6,
        save.as_secs_f64(),
        restore.as_secs_f64()
    );
    println!(
        "restore from the snapshot is {:.1}x faster than the replay",
        replay.as_secs_f64() / restore.as_secs_f64()
    );
}

/// A partition's log of `n` records (see [`testkit::transfers_log`]), encoded, and the writer's
/// fold of it.
fn partition_log(codec: &Codec, n: usize) -> (Vec<Vec<u8>>, Replica) {
    let records = testkit::transfers_log("bench", n);
    let mut replica = Replica::new();
    for (offset, record) in records.iter().enumerate() {
        replica.read(offset as i64, record);
    }
    (records.iter().map(|record| codec.encode_log_record(record)).collect(), replica)
}

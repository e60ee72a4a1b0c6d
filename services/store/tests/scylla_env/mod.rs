//! The Scylla backend's test store: a keyspace of its own on the cluster that
//! `TALLY_TEST_SCYLLA` (comma-separated `host:port`) names, dropped afterwards. Without the
//! variable the calling test prints that it was skipped and passes: no Scylla runs on the
//! machines this suite usually runs on.

use tally_store::{ScyllaConfig, ScyllaStore};

/// Runs `test` against a fresh keyspace, or prints why it did not.
pub fn with_scylla(name: &str, test: impl FnOnce(&ScyllaStore)) {
    let Ok(nodes) = std::env::var("TALLY_TEST_SCYLLA") else {
        // Straight to stderr: the test harness captures print macros of passing tests.
        let notice = format!("skipped {name}: TALLY_TEST_SCYLLA is not set (no Scylla to test against)\n");
        let _ = std::io::Write::write_all(&mut std::io::stderr(), notice.as_bytes());
        return;
    };
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    let keyspace = format!("tally_test_{}_{nanos}", std::process::id());
    let mut config = ScyllaConfig::new(nodes.split(',').map(str::to_owned).collect(), &keyspace);
    config.replication = "{'class': 'SimpleStrategy', 'replication_factor': 1}".into();
    config.consistency = scylla::frame::types::Consistency::One;
    let store = ScyllaStore::connect(&config, true).expect("connecting to TALLY_TEST_SCYLLA");
    test(&store);
    store.drop_keyspace(&keyspace).expect("dropping the test keyspace");
}

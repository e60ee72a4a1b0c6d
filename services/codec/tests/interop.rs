//! The wire format read and written by an independent Avro implementation (Python's fastavro):
//! other teams produce commands with their own libraries. Runs when `python3 -c "import
//! fastavro"` works (`.ci/run` installs it); otherwise prints that it skipped.

use std::collections::BTreeMap;
use std::process::Command as Process;
use tally_codec::{Codec, Kind, source};
use tally_core::log::LogRecord;
use tally_core::testkit::{history, run};
use tally_core::*;

fn fastavro_available() -> bool {
    Process::new("python3").args(["-c", "import fastavro"]).output().is_ok_and(|o| o.status.success())
}

/// Every amount a body carries, in schema field order, as fastavro prints decimals.
fn amounts_of_command(c: &CommandBody) -> Vec<String> {
    match c {
        CommandBody::Transact { request: TxRequest::Transfer { postings, .. }, .. } => {
            postings.iter().map(|p| p.amount.to_string()).collect()
        }
        CommandBody::CommitPending { amounts: Some(a), .. } => a.iter().map(|x| x.to_string()).collect(),
        CommandBody::OpenAccount { limits, .. } | CommandBody::UpdateAccount { limits, .. } => {
            limits.iter().filter_map(|l| l.min_balance).map(|x| x.to_string()).collect()
        }
        _ => Vec::new(),
    }
}

fn amounts_of_event(e: &EventBody) -> Vec<String> {
    match e {
        EventBody::TransactionPosted { postings, .. } | EventBody::TransactionPending { postings, .. } => {
            postings.iter().map(|p| p.amount.to_string()).collect()
        }
        EventBody::TransactionFailed { request: TxRequest::Transfer { postings, .. }, .. } => {
            postings.iter().map(|p| p.amount.to_string()).collect()
        }
        EventBody::PendingCommitted { amounts, .. } => amounts.iter().map(|x| x.to_string()).collect(),
        EventBody::AccountOpened { limits, .. } | EventBody::AccountUpdated { limits, .. } => {
            limits.iter().filter_map(|l| l.min_balance).map(|x| x.to_string()).collect()
        }
        _ => Vec::new(),
    }
}

#[test]
fn fastavro_reads_and_writes_tally_records() {
    if !fastavro_available() {
        println!("skipped: python3 with fastavro is not available (pip install fastavro)");
        return;
    }
    let codec = Codec::new();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("command.avsc"), source(Kind::Command)).unwrap();
    std::fs::write(dir.path().join("event.avsc"), source(Kind::Event)).unwrap();

    // Records of every type, from random histories (deterministic seed).
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let (mut commands, mut events) = (BTreeMap::new(), BTreeMap::new());
    for _ in 0..50 {
        let h = proptest::strategy::ValueTree::current(
            &proptest::strategy::Strategy::new_tree(&history(), &mut runner).unwrap(),
        );
        for (c, _) in &h {
            commands.entry(c.body.kind()).or_insert_with(|| c.clone());
        }
        for e in run(&h, |_, _| {}).1 {
            events.entry(e.body.kind()).or_insert(e);
        }
    }
    assert_eq!((commands.len(), events.len()), (10, 14), "every command and event type is sampled");
    for (kind, c) in &commands {
        std::fs::write(dir.path().join(format!("{kind}.command.avro")), codec.encode_command(c)).unwrap();
    }
    for (kind, e) in &events {
        std::fs::write(
            dir.path().join(format!("{kind}.event.avro")),
            codec.encode_log_record(&LogRecord::Event { epoch: 1, command_offset: 0, event: e.clone() }),
        )
        .unwrap();
    }

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/fastavro_check.py");
    let out = Process::new("python3").arg(script).arg(dir.path()).output().unwrap();
    assert!(out.status.success(), "fastavro check failed: {}", String::from_utf8_lossy(&out.stderr));
    let reports: Vec<serde_json::Value> =
        String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(reports.len(), 24);
    for r in &reports {
        let file = r["file"].as_str().unwrap();
        let (kind, family) = {
            let mut parts = file.split('.');
            (parts.next().unwrap(), parts.next().unwrap())
        };
        assert_eq!(
            r["header_ok"], true,
            "{file}: the header must carry fastavro's fingerprint of the schema"
        );
        assert_eq!(r["body"], kind, "{file}: fastavro sees another union branch");
        let reencoded = std::fs::read(dir.path().join(format!("{kind}.{family}.fastavro"))).unwrap();
        let expected_amounts: Vec<String> = if family == "command" {
            let c = &commands[kind];
            assert_eq!(r["tenant"], c.tenant.as_str());
            assert_eq!(
                &codec.decode_command(&reencoded).unwrap(),
                c,
                "{file}: fastavro's encoding decodes differently"
            );
            amounts_of_command(&c.body)
        } else {
            let e = &events[kind];
            assert_eq!(r["tenant"], e.tenant.as_str());
            assert_eq!(
                codec.decode_log_record(&reencoded).unwrap(),
                LogRecord::Event { epoch: 1, command_offset: 0, event: e.clone() },
                "{file}: fastavro's encoding decodes differently"
            );
            amounts_of_event(&e.body)
        };
        let seen: Vec<String> =
            r["amounts"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_owned()).collect();
        assert_eq!(seen, expected_amounts, "{file}: amounts as fastavro reads them");
    }
}

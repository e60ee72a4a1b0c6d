//! A `tally dev` process for end-to-end tests (the real binary, the real Kafka protocol).

#![allow(dead_code, reason = "each test crate uses its own part of this")]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

pub const TALLY: &str = env!("CARGO_BIN_EXE_tally");

/// The API keys every `tally dev` of the tests accepts (unless a test gives its own).
pub const API_KEYS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/api-keys.toml");
/// The processor's `--state-window` in every `tally dev` a test starts (unless it gives one):
/// a few events, so that forgetting and recalling run under every test.
pub const TEST_STATE_WINDOW: &str = "16";
/// `Authorization` values of those keys (test secrets: their digests are in the file above).
pub const ACME: &str = "Bearer tly_acme-admin_v69TGnbccX9NOKYRSVqmkehBlZBXIwRNu5atK53F7zo";
pub const ACME_READ_ONLY: &str = "Bearer tly_acme-ro_q07UDEOKYjGMDTnbkUbrGWaoe8kgt7ocurYM79lZjZw";
pub const GLOBEX: &str = "Bearer tly_globex-rw_88u-Qd3mL9nrdb7U2xlcgbCDg2XOh-R6bjFtgLglosE";
pub const FUZZ: &str = "Bearer tly_fuzz-rw_2LnJbwMvO0odU_3iKBFQHkTJvNFH97kzZjMv7QDfvKk";

/// The lines `tally dev` prints with its addresses, and with its own key when it makes one.
const ADDRESSES: [&str; 4] = ["kafka: ", "http: ", "query: ", "grpc: "];
const TOKEN: &str = "token: ";

/// A running `tally dev`, killed (SIGKILL) when dropped. When dropped by a failing test, it
/// prints the warnings and errors the process logged (its stderr is kept in a temp file).
pub struct Dev {
    child: Child,
    /// The process's stderr (`None` with `TALLY_TEST_STDERR`, which shows it as it comes).
    log: Option<tempfile::NamedTempFile>,
    pub kafka: String,
    /// The HTTP front door's address.
    pub http: String,
    /// The query API's address.
    pub query: String,
    /// The gRPC API's address.
    pub grpc: String,
    /// The development key `tally dev` printed (only from [`Dev::start_with_its_own_key`]).
    pub token: Option<String>,
}

impl Dev {
    /// Starts `tally dev` on free ports (the broker's too, unless `args` name one) with `args`
    /// and the test keys (unless `args` give credentials); returns once it has printed its
    /// addresses.
    pub fn start(args: &[&str]) -> Dev {
        let own_credentials = args.iter().any(|a| ["--api-keys", "--jwks-file", "--jwks-url"].contains(a));
        let keys = if own_credentials { &[][..] } else { &["--api-keys", API_KEYS][..] };
        Dev::launch(&[keys, args].concat(), &ADDRESSES)
    }

    /// Like [`Dev::start`], but on the real Kafka that `TALLY_TEST_KAFKA` names (`host:port`),
    /// with topics of a fresh prefix, when it is set; else on `tally dev`'s in-process broker.
    /// The README's test command sets it for a second run of the broker-facing suites.
    pub fn start_on_test_broker(args: &[&str]) -> Dev {
        let args = on_test_broker(args);
        let dev = Dev::start(&args.iter().map(String::as_str).collect::<Vec<_>>());
        if std::env::var("TALLY_TEST_KAFKA").is_ok_and(|s| !s.is_empty()) {
            dev.wait_until_writes_are_answered();
        }
        dev
    }

    /// Waits (at most a minute) until a write is answered rather than left pending, and then
    /// until the projection has it: on real Kafka the processor and the projector own their
    /// partitions only once their consumer groups have formed, each a few seconds after start
    /// (the projector's can come later), and until then writes are honestly answered 202 and
    /// reads after them 504. The probe writes to tenant globex's ledger `warm-up`, which no test
    /// reads.
    pub fn wait_until_writes_are_answered(&self) {
        let agent = http_client(Duration::from_secs(10));
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let position = loop {
            let url = format!("http://{}/v1/ledgers/warm-up/assets", self.http);
            let probe = agent.post(url).header("authorization", GLOBEX).send(r#"{"asset":"USD/2"}"#);
            if let Ok(response) = probe
                && response.status() != 202
                && !response.status().is_server_error()
                && let Some(position) = response.headers().get("tally-position")
            {
                break position.to_str().unwrap().to_owned();
            }
            assert!(std::time::Instant::now() < deadline, "tally dev answered no write within a minute");
            std::thread::sleep(Duration::from_millis(500));
        };
        loop {
            let url = format!("http://{}/v1/ledgers/warm-up/accounts/world", self.query);
            let read =
                agent.get(url).header("authorization", GLOBEX).header("tally-position", &position).call();
            if read.is_ok_and(|r| r.status() != 504) {
                return;
            }
            assert!(std::time::Instant::now() < deadline, "the projection had no write within a minute");
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Starts `tally dev` without credentials, so that it makes and prints its own key.
    pub fn start_with_its_own_key(args: &[&str]) -> Dev {
        Dev::launch(args, &[&ADDRESSES[..], &[TOKEN]].concat())
    }

    /// Starts `tally dev` with `args` and waits until it has printed a line starting with each
    /// of `lines`.
    fn launch(args: &[&str], lines: &[&'static str]) -> Dev {
        let broker_port = if args.contains(&"--kafka-port") { &[][..] } else { &["--kafka-port", "0"][..] };
        // A window of a few events, so that every test also runs a processor that forgets its
        // older transactions and command ids and reads them back from the projection.
        let window = if args.contains(&"--state-window") {
            &[][..]
        } else {
            &["--state-window", TEST_STATE_WINDOW][..]
        };
        let log = match std::env::var_os("TALLY_TEST_STDERR") {
            Some(_) => None,
            None => Some(tempfile::NamedTempFile::new().expect("a temp file for the log")),
        };
        let stderr = match &log {
            // TALLY_TEST_STDERR=1 shows the process's logs as they come (for debugging a test).
            None => Stdio::inherit(),
            Some(file) => Stdio::from(file.reopen().expect("the log file reopens")),
        };
        let mut child = Command::new(TALLY)
            .arg("dev")
            .args(broker_port)
            .args(window)
            .args([
                "--http-listen",
                "127.0.0.1:0",
                "--query-listen",
                "127.0.0.1:0",
                "--grpc-listen",
                "127.0.0.1:0",
            ])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("tally dev starts");
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let (tx, rx) = std::sync::mpsc::channel();
        // Keep reading stdout on a thread so the child never blocks on a full pipe.
        let wanted = lines.to_vec();
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                for &prefix in &wanted {
                    if let Some(addr) = line.strip_prefix(prefix) {
                        let _ = tx.send((prefix, addr.to_owned()));
                    }
                }
            }
        });
        let mut found = std::collections::HashMap::new();
        while found.len() < lines.len() {
            let (prefix, addr) =
                rx.recv_timeout(Duration::from_secs(60)).expect("tally dev prints its addresses");
            found.insert(prefix, addr);
        }
        let token = found.remove(TOKEN);
        let mut address = |prefix| found.remove(prefix).unwrap();
        let (kafka, http, query, grpc) =
            (address("kafka: "), address("http: "), address("query: "), address("grpc: "));
        Dev { kafka, http, query, grpc, token, child, log }
    }

    /// Sends SIGTERM and waits for the exit, at most `deadline`; how it exited and how long it
    /// took (`None`: still running at the deadline, then killed).
    pub fn terminate(mut self, deadline: Duration) -> (Option<std::process::ExitStatus>, Duration) {
        let started = std::time::Instant::now();
        let pid = self.child.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        while started.elapsed() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (Some(status), started.elapsed());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        (None, started.elapsed())
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            self.print_problems();
        }
    }
}

impl Dev {
    /// Prints the last warnings and errors of the process's log (librdkafka's configuration
    /// notices left out), to explain a failing test.
    fn print_problems(&self) {
        const SHOWN: usize = 60;
        let Some(text) = self.log.as_ref().and_then(|f| std::fs::read_to_string(f.path()).ok()) else {
            return;
        };
        let problems: Vec<&str> = text
            .lines()
            .filter(|l| l.contains(r#""level":"WARN""#) || l.contains(r#""level":"ERROR""#))
            .filter(|l| !l.contains("CONFWARN"))
            .collect();
        println!(
            "--- tally dev (pid {}): its last {SHOWN} warnings and errors of {}",
            self.child.id(),
            problems.len()
        );
        for line in &problems[problems.len().saturating_sub(SHOWN)..] {
            println!("{line}");
        }
    }
}

/// `args` for a `tally dev` on the real Kafka that `TALLY_TEST_KAFKA` names, when it is set:
/// topics and consumer groups of a fresh prefix (tests run side by side on one Kafka, and
/// processes of one group rebalance together even when they read different topics, so every
/// start would stall the other tests' processors for seconds). Unchanged without it. Starting
/// twice with the same result restarts the same deployment.
pub fn on_test_broker(args: &[&str]) -> Vec<String> {
    let mut all: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let Some(kafka) = std::env::var("TALLY_TEST_KAFKA").ok().filter(|s| !s.is_empty()) else {
        return all;
    };
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let prefix = format!("dev-{}-{nanos}.", std::process::id());
    all.extend(["--kafka".into(), kafka, "--topic-prefix".into(), prefix.clone()]);
    for role in ["processor", "projector", "sink"] {
        all.extend([format!("--{role}-group"), format!("{prefix}{role}")]);
    }
    all
}

/// Runs `tally ARGS` to completion; fails the test when it fails.
pub fn tally(args: &[&str]) -> Output {
    let out = Command::new(TALLY).args(args).stderr(Stdio::piped()).output().unwrap();
    assert!(out.status.success(), "tally {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    out
}

/// A plain HTTP client that hands back every status instead of failing on 4xx and 5xx, and
/// gives up on a request after `timeout`.
pub fn http_client(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder().http_status_as_error(false).timeout_global(Some(timeout)).build().into()
}

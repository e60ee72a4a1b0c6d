//! The client SDKs in `sdks/`: each is generated from the current API files (a stale SDK fails
//! its regeneration check) and passes its own tests against this `tally dev` binary. A
//! language whose tools are missing is skipped with a printed notice (`.ci/test` installs them).

use std::path::{Path, PathBuf};
use std::process::Command;

fn sdk(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../sdks").join(name)
}

/// Whether `python3` can import every one of `modules`.
fn python_has(modules: &[&str]) -> bool {
    let import = format!("import {}", modules.join(", "));
    Command::new("python3").args(["-c", &import]).output().is_ok_and(|out| out.status.success())
}

fn skipped(what: &str, why: &str) {
    println!("SKIPPED {what}: {why}");
}

#[test]
fn the_python_sdk_is_generated_from_the_current_proto_files() {
    if !python_has(&["grpc_tools"]) {
        return skipped("the Python SDK's regeneration check", "no grpcio-tools for python3");
    }
    let out = Command::new("bash").arg(sdk("python").join("generate.sh")).arg("--check").output().unwrap();
    assert!(
        out.status.success(),
        "sdks/python/tally_client/_gen is stale: run sdks/python/generate.sh\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_python_sdk_passes_its_tests_against_tally_dev() {
    if !python_has(&["grpc", "google.protobuf", "google.rpc.status_pb2", "pytest"]) {
        return skipped(
            "the Python SDK's tests",
            "grpcio, protobuf, googleapis-common-protos or pytest missing",
        );
    }
    let out = Command::new("python3")
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"])
        .current_dir(sdk("python"))
        .env("TALLY_BIN", env!("CARGO_BIN_EXE_tally"))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .unwrap();
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    println!("{report}");
    assert!(out.status.success(), "the Python SDK's tests failed:\n{report}");
    assert!(!report.contains("skipped"), "no SDK test may skip here (TALLY_BIN is set):\n{report}");
}

/// Whether the TypeScript SDK's packages are installed (`npm ci` in sdks/typescript) and `node`
/// runs.
fn typescript_ready() -> Result<(), &'static str> {
    if !Command::new("node").arg("--version").output().is_ok_and(|out| out.status.success()) {
        return Err("no node");
    }
    if !sdk("typescript").join("node_modules/.bin/buf").exists() {
        return Err("its packages are not installed (npm ci in sdks/typescript)");
    }
    Ok(())
}

#[test]
fn the_typescript_sdk_is_generated_from_the_current_proto_files() {
    if let Err(why) = typescript_ready() {
        return skipped("the TypeScript SDK's regeneration check", why);
    }
    let out =
        Command::new("bash").arg(sdk("typescript").join("generate.sh")).arg("--check").output().unwrap();
    assert!(
        out.status.success(),
        "sdks/typescript/src/gen is stale: run sdks/typescript/generate.sh\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Its tests run every call over gRPC and over grpc-web (HTTP/1.1, as a browser speaks it).
#[test]
fn the_typescript_sdk_passes_its_tests_against_tally_dev_over_grpc_and_grpc_web() {
    if let Err(why) = typescript_ready() {
        return skipped("the TypeScript SDK's tests", why);
    }
    let out = Command::new("npm")
        .args(["test", "--silent"])
        .current_dir(sdk("typescript"))
        .env("TALLY_BIN", env!("CARGO_BIN_EXE_tally"))
        .output()
        .unwrap();
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    println!("{report}");
    assert!(out.status.success(), "the TypeScript SDK's tests failed:\n{report}");
    assert!(report.contains("# fail 0"), "no test may fail:\n{report}");
    assert!(report.contains("# skipped 0"), "no SDK test may skip here (TALLY_BIN is set):\n{report}");
    assert!(!report.contains("# pass 0\n"), "some test must run:\n{report}");
}

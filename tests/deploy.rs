//! The deployment files, checked with the real tools: docker-compose.yml with docker-compose's
//! own validation, the Helm chart with `helm lint` and `helm template`, the rendered manifests
//! against Kubernetes' schemas (kubernetes-validate) and against what operators rely on
//! (`.ci/check_manifests.py`: probes, resource requests, pinned images, non-root). Each tool
//! that is missing makes its check print that it skipped; `.ci/test` installs them all.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// Straight to stderr: the test harness captures print macros of passing tests.
fn skipped(what: &str, why: &str) {
    let notice = format!("skipped {what}: {why}\n");
    let _ = std::io::stderr().write_all(notice.as_bytes());
}

fn runs(program: &Path, args: &[&str]) -> bool {
    Command::new(program).args(args).output().is_ok_and(|o| o.status.success())
}

/// Helm: `$TALLY_HELM`, else `helm` on the PATH, else where `.ci/test` puts it.
fn helm() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("TALLY_HELM").map(PathBuf::from),
        Some(PathBuf::from("helm")),
        std::env::var_os("HOME").map(|home| Path::new(&home).join(".cache/tally-tools/helm")),
    ];
    candidates.into_iter().flatten().find(|helm| runs(helm, &["version"]))
}

fn run(program: &Path, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(program)
        .args(args)
        .current_dir(repo())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or_default()).unwrap();
    drop(input);
    child.wait_with_output().unwrap()
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[test]
fn the_compose_file_is_valid() {
    let compose = Path::new("docker-compose");
    if !runs(compose, &["version"]) {
        return skipped(
            "docker-compose.yml",
            "docker-compose is not installed (apt-get install docker-compose)",
        );
    }
    let out = run(compose, &["-f", "docker-compose.yml", "config", "-q"], None);
    assert!(out.status.success(), "{}", text(&out));
}

/// Values every install must give.
const REQUIRED: [&str; 6] = [
    "--set",
    "kafka.bootstrapServers=kafka:9092",
    "--set",
    "scylla.nodes={scylla:9042}",
    "--set",
    "auth.apiKeysSecret=tally-api-keys",
];

#[test]
fn the_helm_chart_lints_renders_and_passes_the_manifest_checks() {
    let Some(helm) = helm() else {
        return skipped("the Helm chart", "no helm binary (TALLY_HELM, PATH, ~/.cache/tally-tools/helm)");
    };
    let lint = run(&helm, &[&["lint", "helm/tally", "--strict"][..], &REQUIRED].concat(), None);
    assert!(lint.status.success(), "{}", text(&lint));
    // values.schema.json refuses an install without Kafka or Scylla, or with a `latest` tag.
    let without = run(&helm, &["template", "t", "helm/tally"], None);
    assert!(!without.status.success() && text(&without).contains("bootstrapServers"), "{}", text(&without));
    let latest = run(
        &helm,
        &[&["template", "t", "helm/tally"][..], &REQUIRED, &["--set", "image.tag=latest"]].concat(),
        None,
    );
    assert!(!latest.status.success(), "a latest tag was accepted: {}", text(&latest));
    // ... and one without any credentials: the services would refuse to start.
    let open = run(&helm, &[&["template", "t", "helm/tally"][..], &REQUIRED[..4]].concat(), None);
    assert!(!open.status.success() && text(&open).contains("auth"), "{}", text(&open));

    // Every credential file mounted (the policy and the ingest's producer allow-list too), and
    // the schema registry with its credentials.
    let files = [
        "--set",
        "auth.policyConfigMap=tally-policy",
        "--set",
        "auth.producerAllowListConfigMap=tally-producers",
        "--set",
        "schemaRegistry.url=https://registry:8081",
        "--set",
        "schemaRegistry.existingSecret=tally-registry",
    ];
    let rendered = run(&helm, &[&["template", "t", "helm/tally"][..], &REQUIRED, &files].concat(), None);
    assert!(rendered.status.success(), "{}", text(&rendered));
    let manifests = String::from_utf8(rendered.stdout).unwrap();
    for kind in
        ["Deployment", "Service", "ConfigMap", "Secret", "PodDisruptionBudget", "HorizontalPodAutoscaler"]
    {
        assert!(manifests.contains(&format!("kind: {kind}\n")), "no {kind} rendered");
    }
    for mount in [
        "/etc/tally/api-keys",
        "/etc/tally/policy",
        "/etc/tally/producers",
        "TALLY_PRODUCER_ALLOW_LIST",
        "TALLY_SCHEMA_REGISTRY_URL",
        "TALLY_SCHEMA_REGISTRY_PASSWORD",
    ] {
        assert!(manifests.contains(mount), "{mount} is not in the rendered manifests");
    }
    let checked = run(Path::new("python3"), &[".ci/check_manifests.py"], Some(manifests.as_bytes()));
    assert!(checked.status.success(), "the rendered manifests fail the checks:\n{}", text(&checked));

    let validate = Path::new("kubernetes-validate");
    if !runs(validate, &["--version"]) {
        return skipped("Kubernetes schema validation", "kubernetes-validate is not installed (pip)");
    }
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &manifests).unwrap();
    let path = file.path().to_str().unwrap();
    let valid = run(validate, &["-k", "1.35.0", "--strict", "--quiet", path], None);
    assert!(valid.status.success(), "{}", text(&valid));
}

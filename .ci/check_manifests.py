#!/usr/bin/env python3
"""Checks the Helm chart's rendered manifests (read from stdin) for what operators rely on:
every container and init container requests CPU and memory; every long-running container has
liveness and readiness probes; every image has a pinned tag (not `latest`, not missing); pods
run as non-root. Prints each problem and exits 1 if there is any."""

import sys

import yaml


def containers(doc):
    spec = doc.get("spec", {}).get("template", {}).get("spec", {})
    for c in spec.get("initContainers", []):
        yield c, True, spec
    for c in spec.get("containers", []):
        yield c, False, spec


def problems(docs):
    workloads = 0
    for doc in docs:
        if not doc or doc.get("kind") not in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            continue
        workloads += 1
        name = f'{doc["kind"]}/{doc["metadata"]["name"]}'
        for c, init, pod in containers(doc):
            where = f'{name} container {c["name"]}'
            requests = c.get("resources", {}).get("requests", {})
            for resource in ("cpu", "memory"):
                if resource not in requests:
                    yield f"{where}: no {resource} request"
            image = c.get("image", "")
            tag = image.rsplit(":", 1)[1] if ":" in image.rsplit("/", 1)[-1] else ""
            if tag in ("", "latest"):
                yield f"{where}: image {image!r} is not pinned to a version"
            if not init and doc["kind"] != "Job":
                for probe in ("livenessProbe", "readinessProbe"):
                    if probe not in c:
                        yield f"{where}: no {probe}"
            if not pod.get("securityContext", {}).get("runAsNonRoot"):
                yield f"{where}: the pod may run as root"
    if workloads == 0:
        yield "no workloads rendered"


def main():
    found = list(problems(yaml.safe_load_all(sys.stdin)))
    for problem in found:
        print(problem)
    sys.exit(1 if found else 0)


if __name__ == "__main__":
    main()

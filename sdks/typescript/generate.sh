#!/usr/bin/env bash
# Regenerates src/gen/ from the .proto files with buf and protoc-gen-es (from node_modules:
# run `npm ci` first).
#   ./generate.sh          write the generated code into src/gen/
#   ./generate.sh --check  regenerate into a temp dir; exit 1 with a diff if the committed code
#                          differs
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"
export PATH="$here/node_modules/.bin:$PATH"
command -v buf > /dev/null || { echo "no buf in node_modules: run npm ci" >&2; exit 2; }

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
buf generate --template buf.gen.yaml -o "$out"

if [[ "${1:-}" == "--check" ]]; then
  if ! diff -ru src/gen "$out/src/gen"; then
    echo "src/gen is out of date: run ./generate.sh" >&2
    exit 1
  fi
  echo "src/gen is up to date"
else
  rm -rf src/gen
  cp -r "$out/src/gen" src/gen
  echo "wrote $here/src/gen"
fi

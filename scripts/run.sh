#!/usr/bin/env bash
# Sets up what is missing, builds Groundwork and runs it on the embedded defaults (private PostgreSQL
# clusters and object stores under ./.groundwork).
#
#   ./scripts/run.sh            the demo: acquire, label, train, evaluate, predict and publish a map of
#                               the offline demo scene, then serve it (Ctrl-C stops)
#   ./scripts/run.sh serve      the server with one in-process worker
#   ./scripts/run.sh ARGS…      any other `groundwork` command
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
cargo build --release -q --bin groundwork
if [ "$#" -eq 0 ]; then
  set -- demo
fi
exec ./target/release/groundwork "$@"

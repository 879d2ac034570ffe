#!/usr/bin/env bash
# Sets up what is missing, builds Groundwork and runs `groundwork serve` on the embedded defaults
# (a private PostgreSQL cluster and object store under ./.groundwork). It prints the URL when ready.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
cargo build --release -q --bin groundwork
exec ./target/release/groundwork serve "$@"

#!/usr/bin/env bash
# The whole test suite: sets up what is missing, then runs every test of the workspace against real
# services. Tests use DATABASE_URL when it is set; otherwise they start a private PostgreSQL cluster
# from the machine's own binaries (no Docker needed).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
cargo test --workspace --no-fail-fast "$@"

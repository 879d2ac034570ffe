#!/usr/bin/env bash
# The whole test suite: sets up what is missing, then runs every test of the workspace against real
# services. Tests use DATABASE_URL when it is set; otherwise they start a private PostgreSQL cluster
# from the machine's own binaries (no Docker needed).
set -euo pipefail
cd "$(dirname "$0")/.."
# Tests reach no other site: every server the tests start draws no basemap (the browser tests also pass
# `serve --offline` themselves, and fail on any request that leaves 127.0.0.1).
export GROUNDWORK_OFFLINE=1
unset GROUNDWORK_BASEMAP_URL GROUNDWORK_BASEMAP_ATTRIBUTION
./scripts/setup.sh
cargo test --workspace --no-fail-fast "$@"

# The web UI: install the pinned front-end packages, check that the committed web/dist is a fresh build of
# web/src, and run the browser tests (headless Chromium against the debug `groundwork` binary).
node_major="$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)"
if [ "$node_major" -lt 20 ]; then
  echo "browser tests need Node >= 20.19 (found: $(node --version 2>/dev/null || echo none)); not run" >&2
  exit 1
fi
# The browser tests start `sleep` runs: the binary needs the test-only step kinds.
cargo build -p groundwork-server --bin groundwork --features test-kinds
(
  cd web
  [ -d node_modules ] || npm ci --no-audit --no-fund
  npm test
)

#!/usr/bin/env bash
# Fuzzes the REST API from its own OpenAPI document with schemathesis (installed from PyPI into a
# throwaway virtualenv): starts `groundwork serve` on loopback with a private PostgreSQL cluster and no
# workers, makes the first owner and a write-scoped API token, and runs schemathesis with the checks
# `not_a_server_error` (no 5xx) and `negative_data_rejection` (a request that breaks the schema is
# refused with a 4xx). Traffic goes to 127.0.0.1 only.
#
#   scripts/fuzz-api.sh                 # defaults: 25 examples per operation
#   FUZZ_EXAMPLES=100 scripts/fuzz-api.sh
#   scripts/fuzz-api.sh --include-path-regex '/projects'    # extra schemathesis arguments
#
# Exits non-zero when schemathesis found a failure; its report is left in the printed folder.
set -euo pipefail
cd "$(dirname "$0")/.."

work="$(mktemp -d)"
# When run as root the private cluster runs as `postgres`, which must reach its folder.
chmod 755 "$work"
server=""
cleanup() {
  if [ -n "$server" ] && kill -0 "$server" 2>/dev/null; then
    kill "$server"
    wait "$server" 2>/dev/null || true
  fi
  # The private cluster `serve` started stops with it; its folder goes.
  rm -rf "$work/data" "$work/venv"
}
trap cleanup EXIT

cargo build --bin groundwork
python3 -m venv "$work/venv"
"$work/venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis>=4,<5"

port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
base="http://127.0.0.1:$port"
env -u DATABASE_URL RUST_LOG=warn target/debug/groundwork serve --bind "127.0.0.1:$port" \
  --data-dir "$work/data" --local-workers 0 --object-store "file://$work/objects" >"$work/serve.log" 2>&1 &
server=$!
for _ in $(seq 1 120); do
  curl -fsS "$base/healthz" >/dev/null 2>&1 && break
  sleep 0.5
done
curl -fsS "$base/healthz" >/dev/null || { tail -20 "$work/serve.log"; exit 1; }

# The first owner (setup signs in), then an API token made with that session.
headers="$work/setup.headers"
session="$(curl -fsS -D "$headers" -H 'content-type: application/json' \
  -d '{"email":"fuzz@example.org","password":"a long fuzzing password","org_name":"fuzz"}' \
  "$base/api/v1/setup")"
cookie="$(grep -i '^set-cookie: gw_session=' "$headers" | sed -e 's/^[^:]*: //' -e 's/;.*//' | tr -d '\r')"
csrf="$(python3 -c 'import json,sys; print(json.load(sys.stdin)["csrf_token"])' <<<"$session")"
token="$(curl -fsS -H 'content-type: application/json' -H "cookie: $cookie" -H "x-csrf-token: $csrf" \
  -d '{"name":"fuzz","scope":"write"}' "$base/api/v1/tokens" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')"

echo "fuzzing $base (report in $work/report)"
status=0
"$work/venv/bin/schemathesis" run "$base/api/openapi.json" \
  --checks not_a_server_error,negative_data_rejection \
  --header "Authorization: Bearer $token" \
  --max-examples "${FUZZ_EXAMPLES:-25}" \
  --phases examples,coverage,fuzzing \
  --generation-deterministic \
  --exclude-path-regex '^/api/v1/(auth/logout|setup)$' \
  --report junit --report-dir "$work/report" \
  "$@" || status=$?
if grep -qiE 'panicked|internal' "$work/serve.log"; then
  echo "server log lines worth reading:"
  grep -iE 'panicked|internal' "$work/serve.log" | head -20
fi
exit "$status"

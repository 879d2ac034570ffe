#!/usr/bin/env bash
# Checks published outputs with third-party tools (issue #14; run by hand, not by the test suite):
#
#   - the project's STAC Collection and every Item (one by one and as /items) with stac-validator (core
#     and every declared extension), pystac (JSON-schema validation, the object model round trip, the
#     projection/raster/classification accessors) and stac-pydantic's models; every link and asset href
#     opened (the token goes to the server itself only; other hosts only with VALIDATE_EXTERNAL_LINKS=1);
#     each Item's fields against the COG it points at;
#   - every GeoTIFF asset with `rio cogeo validate`, read over HTTP by GDAL from its href (/vsicurl/,
#     `GDAL_HTTP_HEADERS="Authorization: Bearer …"`), after a range-request check; and the web-mercator
#     COG the tiles are drawn from;
#   - our PNG tiles against TiTiler's (titiler.core's TilerFactory in a FastAPI app, through starlette's
#     TestClient) of the same COGs with the legend's colours and nearest resampling, at the map's
#     full-resolution and coarsest zooms: the fraction of matching pixels.
#
# The tools come from PyPI into a throwaway virtualenv (default ${TMPDIR:-/tmp}/groundwork-validate-venv,
# reused while it imports them). No schema is fetched from the web: the STAC 1.1.0 core and GeoJSON
# schemas come from pystac's wheel; the published extension schemas are read from STAC_EXTENSION_SCHEMAS
# (default ${TMPDIR:-/tmp}/groundwork-stac-schemas), a folder laid out as <name>/<version>/schema.json
# (e.g. projection/v1.0.0/schema.json, copied from https://stac-extensions.github.io/<name>/<version>/
# schema.json on a machine that can reach it). An extension with no local schema is reported as ERROR
# (not checkable), not as a failure.
#
# By default it runs `groundwork demo` (debug build, offline, a 256 px scene) in a temporary folder on a
# free loopback port, signs in as the demo user, makes a read-only API token and checks what the demo
# published; traffic goes to 127.0.0.1 only. To check another server instead:
#
#   GROUNDWORK_URL=http://127.0.0.1:8080 GROUNDWORK_TOKEN=gw_… scripts/validate-outputs.sh
#     [GROUNDWORK_PROJECT=<uuid>]  only this project (default: every project with outputs)
#     [GROUNDWORK_OBJECTS=<dir>]   the server's local object store, to also check the web-mercator COGs
#
# Settings: VALIDATE_PX (demo scene side, default 256), VALIDATE_TILES (tiles compared per map at the
# full zoom, default 12), VALIDATE_EXTERNAL_LINKS=1 (also open links to other hosts, without the token),
# VALIDATE_DEMO_TIMEOUT (seconds, default 3600), VENV, GROUNDWORK_BIN (a built binary; default: cargo
# build, then target/debug/groundwork), KEEP=1 (keep the folder with the STAC documents, validator
# outputs, tiles and the demo's log).
#
# Prints a table (check, result, detail). Exits 1 when a validator that could run found an error
# (a FAIL row); WARN/INFO rows (e.g. tiles that differ by resampling) do not change the exit status.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"

VENV="${VENV:-${TMPDIR:-/tmp}/groundwork-validate-venv}"
PKGS=("stac-validator==4.1.2" "pystac[validation]==1.15.2" "stac-pydantic==3.7.1" "rio-cogeo==7.0.4"
  "titiler.core==2.4.0" "httpx" "pillow")

work="$(mktemp -d "${TMPDIR:-/tmp}/groundwork-validate.XXXXXX")"
# When run as root the demo's private cluster runs as `postgres`, which must reach its folder.
chmod 755 "$work"
server=""
cleanup() {
  if [ -n "$server" ] && kill -0 "$server" 2>/dev/null; then
    kill "$server"
    wait "$server" 2>/dev/null || true
  fi
  if [ "${KEEP:-0}" = 1 ]; then
    echo "kept $work (checks/: STAC documents, validator outputs, tiles; demo.log)" >&2
  else
    rm -rf "$work"
  fi
}
trap cleanup EXIT

if ! "$VENV/bin/python" -c 'import stac_validator, pystac, jsonschema, stac_pydantic, rio_cogeo, titiler.core, httpx, PIL' 2>/dev/null; then
  echo "== installing ${PKGS[*]} into $VENV" >&2
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "${PKGS[@]}"
fi

objects="${GROUNDWORK_OBJECTS:-}"
if [ -n "${GROUNDWORK_URL:-}" ]; then
  base="${GROUNDWORK_URL%/}"
  token="${GROUNDWORK_TOKEN:?GROUNDWORK_TOKEN (an API token, gw_…) is needed with GROUNDWORK_URL}"
else
  if [ -n "${GROUNDWORK_BIN:-}" ]; then
    bin="$GROUNDWORK_BIN"
  else
    bin="$root/target/debug/groundwork"
    if ! cargo build --workspace --bin groundwork >&2; then
      [ -x "$bin" ] || exit 1
      echo "== the build failed; checking with the existing $bin" >&2
    fi
  fi
  port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  base="http://127.0.0.1:$port"
  objects="$work/demo/objects"
  echo "== groundwork demo on $base (scene ${VALIDATE_PX:-256} px; log in $work/demo.log)" >&2
  env -u DATABASE_URL RUST_LOG="${RUST_LOG:-warn}" "$bin" demo --demo-dir "$work/demo" --bind "127.0.0.1:$port" \
    --offline --scene-px "${VALIDATE_PX:-256}" >"$work/demo.json" 2>"$work/demo.log" &
  server=$!
  # The demo prints its JSON summary on stdout when the map is published, then keeps serving.
  started=$SECONDS
  until [ -s "$work/demo.json" ]; do
    if ! kill -0 "$server" 2>/dev/null; then
      echo "the demo stopped before publishing a map:" >&2
      tail -30 "$work/demo.log" >&2
      exit 1
    fi
    if [ $((SECONDS - started)) -gt "${VALIDATE_DEMO_TIMEOUT:-3600}" ]; then
      echo "the demo did not publish a map within ${VALIDATE_DEMO_TIMEOUT:-3600} s" >&2
      tail -30 "$work/demo.log" >&2
      exit 1
    fi
    sleep 2
  done
  echo "== demo done in $((SECONDS - started)) s: $(head -c 400 "$work/demo.json")" >&2
  login="$(grep -m1 -o 'sign in as .* with the password [^ ]*' "$work/demo.log")"
  email="$(sed -E 's/^sign in as (.*) with the password .*/\1/' <<<"$login")"
  password="$(sed -E 's/.* with the password ([^ ]*)$/\1/' <<<"$login")"
  headers="$work/login.headers"
  session="$(EMAIL="$email" PASSWORD="$password" python3 -c \
    'import json, os; print(json.dumps({"email": os.environ["EMAIL"], "password": os.environ["PASSWORD"]}))' |
    curl -fsS -D "$headers" -H 'content-type: application/json' --data-binary @- "$base/api/v1/auth/login")"
  cookie="$(grep -i '^set-cookie: gw_session=' "$headers" | sed -e 's/^[^:]*: //' -e 's/;.*//' | tr -d '\r')"
  csrf="$(python3 -c 'import json,sys; print(json.load(sys.stdin)["csrf_token"])' <<<"$session")"
  token="$(curl -fsS -H 'content-type: application/json' -H "cookie: $cookie" -H "x-csrf-token: $csrf" \
    -d '{"name":"validate-outputs","scope":"read"}' "$base/api/v1/tokens" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')"
fi

args=(--base "$base" --token "$token" --schemas "${STAC_EXTENSION_SCHEMAS:-${TMPDIR:-/tmp}/groundwork-stac-schemas}"
  --test-schemas "$root/server/tests/fixtures/stac-schemas" --work "$work/checks" --tiles "${VALIDATE_TILES:-12}")
if [ -n "${GROUNDWORK_PROJECT:-}" ]; then args+=(--project "$GROUNDWORK_PROJECT"); fi
if [ -n "$objects" ]; then args+=(--objects "$objects"); fi
status=0
"$VENV/bin/python" "$root/scripts/validate_outputs.py" "${args[@]}" || status=$?
exit "$status"

#!/usr/bin/env bash
# Installs what Groundwork needs on a Debian/Ubuntu machine that has Rust: PostgreSQL's server binaries
# (the local database), GDAL (raster I/O) and the build tools for the crates that link C libraries.
# Safe to run again: it installs only what is missing.
set -euo pipefail

need=()
have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
for pkg in postgresql libgdal-dev gdal-bin pkg-config clang curl ca-certificates; do
  have_pkg "$pkg" || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# The web UI's browser tests: Node (with npm) builds the map module and drives Debian's Chromium through
# playwright-core, which downloads no browser of its own.
web_need=()
command -v node >/dev/null 2>&1 || web_need+=(nodejs)
command -v npm >/dev/null 2>&1 || web_need+=(npm)
[ -x /usr/bin/chromium ] || web_need+=(chromium)
if [ ${#web_need[@]} -gt 0 ]; then
  echo "installing: ${web_need[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${web_need[@]}" >/dev/null
fi

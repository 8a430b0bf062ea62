#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian machine: Python packages (the project with
# its test extras), Debian packages, and the pinned npm packages of tests/js. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
# `nginx` (not nginx-light): the shipped nginx/ config needs ssl, http_v2 and realip.
command -v nginx >/dev/null 2>&1 || need_apt+=(nginx)
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)   # nginx/self-signed.sh
command -v curl >/dev/null 2>&1 || need_apt+=(curl)         # the HTTP/2 check
command -v wrk >/dev/null 2>&1 || need_apt+=(wrk)
# tests/browser drives this Chromium through the `playwright` wheel of the test extra; never run
# `playwright install` (it would download a browser build of its own).
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v npm >/dev/null 2>&1 || need_apt+=(nodejs npm)
# tests/fleet starts real redis-server processes (loopback, AOF on) for the Redis backends.
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
if [ ${#need_apt[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

python -m pip install -q --disable-pip-version-check -e '.[test,speed]'

# The exact packages of tests/js/package-lock.json (mixpanel-browser: the real SDK bundles the
# fake CDN serves). `npm ci` starts from a clean node_modules, so a rerun is a reinstall.
npm ci --prefix tests/js --no-audit --no-fund --loglevel=error >/dev/null

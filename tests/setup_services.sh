#!/usr/bin/env bash
# Installs the external programs the integration tests need, where missing, from Debian's packages:
# Prometheus (with promtool) for the scrape tests and Chromium for the headless-browser check of the
# HTML report. It starts no daemon; the tests start their own.
set -euo pipefail
SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
missing=()
if ! command -v prometheus >/dev/null 2>&1 || ! command -v promtool >/dev/null 2>&1; then missing+=(prometheus); fi
if ! command -v chromium >/dev/null 2>&1; then missing+=(chromium); fi
if [ "${#missing[@]}" -gt 0 ]; then
  echo "installing ${missing[*]} from Debian's packages (once)..."
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # the package may start a service where an init system runs; the tests need none
  $SUDO systemctl stop prometheus >/dev/null 2>&1 || true
fi
prometheus --version 2>&1 | head -1
chromium --version 2>/dev/null | head -1 || true

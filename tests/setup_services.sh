#!/usr/bin/env bash
# Installs the external programs the integration tests need, where missing:
# Prometheus (with promtool) from Debian's packages. It starts no daemon; the tests start their own.
set -euo pipefail
if ! command -v prometheus >/dev/null 2>&1 || ! command -v promtool >/dev/null 2>&1; then
  echo "installing Prometheus from Debian's packages (once)..."
  SUDO=""
  if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  # the package may start a service where an init system runs; the tests need none
  $SUDO systemctl stop prometheus >/dev/null 2>&1 || true
fi
prometheus --version 2>&1 | head -1

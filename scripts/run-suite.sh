#!/usr/bin/env bash
# The main job: installs what is missing, then runs the scenario suite on the default
# topology and writes a report under reports/<run-id>/. Extra arguments go to
# `netpol-harness suite` (see --help).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/netpol-harness suite "$@"

#!/usr/bin/env bash
# The test command: installs what is missing, lints, and runs the harness's tests and the
# conformance cases (kernel tests need root; without it they skip with the reason).
# Extra arguments go to pytest, e.g. `bash scripts/run-tests.sh -m scale` for the scale sweeps.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
.venv/bin/ruff check harness tests cases
exec .venv/bin/pytest -p no:cacheprovider "$@"

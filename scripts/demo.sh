#!/usr/bin/env bash
# Set everything up (scripts/setup.sh), then fit the demo model on the data set
# shipped inside the package. Set-up messages go to stderr, the fit to stdout.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh" >&2   # keep stdout for the fit itself
cd "$ROOT"
exec "$ROOT/.venv/bin/interlace-nb" demo "$@"

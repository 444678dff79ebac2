#!/usr/bin/env bash
# Create the peers' virtualenv (.venv-peers) used by the side-by-side benchmark.
#
# DBOS Transact gets its own environment because its pins can clash with the
# project's. Idempotent: an existing, working .venv-peers is left untouched.
set -euo pipefail

cd "$(dirname "$0")/.."
VENV=.venv-peers

if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import dbos, asyncpg" 2>/dev/null; then
    exit 0
fi

if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
"$VENV/bin/pip" install --quiet "dbos==3.4.0" asyncpg
"$VENV/bin/python" -c "import dbos, asyncpg" || {
    echo "setup_peers.sh: $VENV exists but cannot import dbos/asyncpg; delete $VENV and run again" >&2
    exit 1
}

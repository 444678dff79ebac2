#!/usr/bin/env bash
# Create the LangGraph virtualenv (.venv-langgraph) used by the graph benchmark.
#
# LangGraph gets an environment of its own, like DBOS in setup_peers.sh: its pins
# (langchain-core, psycopg 3) can clash with the project's. Idempotent: an existing,
# working .venv-langgraph is left untouched.
set -euo pipefail

cd "$(dirname "$0")/.."
VENV=.venv-langgraph
CHECK="import langgraph, langgraph.checkpoint.postgres.aio, psycopg, psycopg_pool"

if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "$CHECK" 2>/dev/null; then
    exit 0
fi

if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
"$VENV/bin/pip" install --quiet langgraph langgraph-checkpoint-postgres "psycopg[binary,pool]"
"$VENV/bin/python" -c "$CHECK" || {
    echo "setup_langgraph.sh: $VENV exists but cannot import langgraph/psycopg; delete $VENV and run again" >&2
    exit 1
}

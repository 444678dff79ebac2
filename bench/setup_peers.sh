#!/usr/bin/env bash
# Create the peers' virtualenvs used by the side-by-side benchmark.
#
#   .venv-peers   DBOS Transact 3.4.0 and bare asyncpg (dbos_bench.py, raw_asyncpg*.py)
#   .venv-absurd  Absurd: absurd-sdk, absurdctl (its bundled absurd.sql), psycopg
#
# Each peer gets its own environment because their pins can clash with the project's
# and with each other's. Idempotent: an environment that already imports its packages
# is left untouched.
set -euo pipefail

cd "$(dirname "$0")/.."

make_venv() {  # make_venv DIR "import check" packages...
    local venv=$1 check=$2
    shift 2
    if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c "$check" 2>/dev/null; then
        return 0
    fi
    if [ ! -x "$venv/bin/python" ]; then
        python3 -m venv "$venv"
    fi
    "$venv/bin/pip" install --quiet "$@"
    "$venv/bin/python" -c "$check" || {
        echo "setup_peers.sh: $venv exists but fails '$check'; delete $venv and run again" >&2
        exit 1
    }
}

make_venv .venv-peers "import dbos, asyncpg" "dbos==3.4.0" asyncpg
make_venv .venv-absurd "import absurd_sdk, absurdctl, psycopg" absurd-sdk absurdctl "psycopg[binary]"

#!/usr/bin/env bash
# One command: set up, then run the whole test suite against real PostgreSQL and Redis on localhost.
# Override with TEST_DATABASE_URL / TEST_REDIS_URL. With ECHOFLOW_REQUIRE_SERVICES=1 (CI) a missing service is a
# failure, never a skip.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
export DATABASE_URL=${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/echoflow}
export REDIS_URL=${TEST_REDIS_URL:-redis://127.0.0.1:6379/15}
export DEBUG=1
export ECHOFLOW_VAR_DIR=${ECHOFLOW_VAR_DIR:-$PWD/var/test}
exec .venv/bin/python -m pytest "$@"

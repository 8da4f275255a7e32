#!/usr/bin/env bash
# One command, fresh machine, nothing but Python: set up, then run web + worker + beat + Flower on the embedded
# default (SQLite + a filesystem broker under var/). Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
exec .venv/bin/python manage.py up "$@"

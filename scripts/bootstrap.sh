#!/usr/bin/env bash
# Sets up EchoFlow from a fresh clone: the uv tool (from PyPI, if missing) and the locked virtualenv in .venv.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if ! command -v uv >/dev/null 2>&1 && [ ! -x .venv-tools/bin/uv ]; then
  echo "bootstrap: installing uv into .venv-tools" >&2
  "$PYTHON" -m venv .venv-tools
  .venv-tools/bin/pip install --quiet --disable-pip-version-check "uv>=0.5"
fi
UV=$(command -v uv || echo .venv-tools/bin/uv)
export UV_PYTHON_DOWNLOADS=never
"$UV" sync --frozen --python "$PYTHON" "$@" >&2

#!/usr/bin/env bash
# The runtime-only virtualenv: requirements.txt and nothing else (no dev tools that might drag in a missing
# dependency by chance). Prints its bin directory. Rebuilt only when requirements.txt or the Python changes
# (a stamp file holds their hash), so repeated CI runs reuse it.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${DSR_PROD_VENV:-.venv-prod}"
python="${PYTHON:-python3}"
want="$( { "$python" --version; cat requirements.txt; } | sha256sum | cut -d' ' -f1)"
stamp="$venv/.requirements-stamp"
if [ -x "$venv/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  echo "$(cd "$venv/bin" && pwd)"
  exit 0
fi
echo "ci: building the runtime-only venv $venv from requirements.txt" >&2
rm -rf "$venv"
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r requirements.txt >&2
"$venv/bin/python" -m pip check >&2
echo "$want" >"$stamp"
echo "$(cd "$venv/bin" && pwd)"

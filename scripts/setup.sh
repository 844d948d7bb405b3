#!/usr/bin/env bash
# Set up everything on a fresh machine (Python 3.11, no GPU, package registries only):
# PostgreSQL from Debian (tuning tests start a real server), a virtualenv with the CPU build of torch
# installed *before* the package (so no multi-GB CUDA build is pulled), then the package and its tools.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
SUDO=""
[ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null && SUDO="sudo"

if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  if command -v apt-get >/dev/null; then
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql >/dev/null
  else
    echo "setup: PostgreSQL is missing and apt-get is unavailable; PostgreSQL tests will be skipped" >&2
  fi
fi

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=".venv/bin/python -m pip"
$PIP install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
$PIP install -q torch==2.13.0 2>&1 | grep -v "^WARNING: Location" || true
$PIP install -q -e '.[dev]' 2>&1 | grep -v "^WARNING: Location" || true
# timm declares torchvision, whose PyPI build cannot load beside the CPU torch; timm builds its models
# without it (tests/torchvision_stub.py covers its imports), so it is installed without dependencies.
$PIP install -q --no-deps 'timm>=1.0,<2' 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -c "import torch, lightning_wd; print('setup ok: torch', torch.__version__, '| lightning_wd', lightning_wd.__version__)"

#!/usr/bin/env bash
# Set up everything on a fresh machine (Python 3.11, no GPU, package registries only):
# PostgreSQL from Debian (tuning tests start a real server), a virtualenv with the CPU build of torch
# installed *before* the package (so no multi-GB CUDA build is pulled), then the package and its tools.
# On success it writes .venv/.setup-done, the stamp `make` compares with pyproject.toml and this script.
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

# pip's output without its noise: "WARNING: Location ... is ignored" (local index folders that do not
# exist here) and setuptools' "Editable installation" warning box (a reminder, not a problem; it spans
# from the BuildBackendWarning line to the second "!!" and the source line warnings.warn prints after it).
# Everything else, errors included, passes through; pip's exit status is kept (pipefail).
quiet() {
  awk '
    /^WARNING: Location .* is ignored/ { next }
    /BuildBackendWarning: Editable installation/ { box = 1; bangs = 0; next }
    box && /^[[:space:]]*!![[:space:]]*$/ { if (++bangs == 2) { box = 0; after = 1 } ; next }
    box { next }
    after { after = 0; if ($0 ~ /^[[:space:]]+with strategy, WheelFile/) next }
    { print }
  '
}
pip_install() {
  .venv/bin/python -m pip install -q "$@" 2>&1 | quiet
}

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
pip_install --upgrade pip || echo "setup: could not upgrade pip; going on with $(.venv/bin/python -m pip --version)" >&2
pip_install torch==2.13.0
pip_install -e '.[dev]'
# timm declares torchvision, whose PyPI build cannot load beside the CPU torch; timm builds its models
# without it (tests/torchvision_stub.py covers its imports), so it is installed without dependencies.
pip_install --no-deps 'timm>=1.0,<2'
.venv/bin/python -c "import torch, lightning_wd; print('setup ok: torch', torch.__version__, '| lightning_wd', lightning_wd.__version__)"
touch .venv/.setup-done

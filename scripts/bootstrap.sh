#!/usr/bin/env bash
# Create .venv (if missing) and install GeoBridge with everything the demo and the tests need.
# Safe to run again: pip skips what is already installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
. .venv/bin/activate
python -m pip install --quiet --upgrade pip
# torch + torchvision first: these exact builds lie on this machine's disk (see docs/install.md).
python -m pip install --quiet "torch==2.14.1" "torchvision==0.29.1"
python -m pip install --quiet -e ".[serve,dev]"
echo "bootstrap: $(python -c 'import geobridge, torch; print("geobridge", geobridge.__version__, "torch", torch.__version__)')"

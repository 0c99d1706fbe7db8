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
# torch + torchvision first: these exact builds lie on this machine's disk, so pip never fetches another torch.
python -m pip install --quiet "torch==2.14.1" "torchvision==0.29.1"
python -m pip install --quiet -e ".[serve,geo,dev,onnx,clip]"
# Headless Chromium + chromedriver for the browser tests (tests/test_browser.py); best effort, never fatal.
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
    if command -v apt-get >/dev/null 2>&1; then
        SUDO=""
        if [ "$(id -u)" -ne 0 ]; then
            if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; else SUDO="none"; fi
        fi
        if [ "$SUDO" != "none" ]; then
            if ! { $SUDO apt-get update -qq && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; } >/dev/null 2>&1; then
                echo "bootstrap: warning: could not install chromium and chromium-driver; browser tests will be skipped" >&2
            fi
        else
            echo "bootstrap: warning: not root and no password-less sudo; browser tests will be skipped" >&2
        fi
    fi
fi
echo "bootstrap: $(python -c 'import geobridge, torch; print("geobridge", geobridge.__version__, "torch", torch.__version__)')"

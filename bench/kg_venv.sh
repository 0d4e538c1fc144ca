#!/usr/bin/env bash
# Bench-only environment: Kernel Gateway 3.0.1 (the reference gateway of issue 15) and py-spy
# (profiles), in bench/.venv-kg, never in the project's own environment. Idempotent.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="$here/.venv-kg"
python="${PYTHON:-$(command -v python3.11 || command -v python3)}"
if [ ! -x "$venv/bin/jupyter-kernelgateway" ] || [ ! -x "$venv/bin/py-spy" ]; then
    "$python" -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check \
        jupyter_kernel_gateway==3.0.1 ipykernel py-spy==0.4.1
fi
echo "$venv"

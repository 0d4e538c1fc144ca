#!/usr/bin/env bash
# Run the test suite; pytest's "no tests collected" (exit 5) is a failure, never a pass.
set -uo pipefail
cd "$(dirname "$0")/.."
# File order by default, so that CI is repeatable; KERNELBUS_RANDOM_ORDER=1 shuffles
# (pytest-randomly) and the run's last lines name the seed to replay it.
order=(-p no:randomly)
if [ -n "${KERNELBUS_RANDOM_ORDER:-}" ]; then order=(); fi
.venv/bin/python -m pytest "${order[@]}" "$@"
status=$?
if [ "$status" -eq 5 ]; then
  echo "pytest collected no tests: failing" >&2
  exit 1
fi
exit "$status"

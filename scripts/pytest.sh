#!/usr/bin/env bash
# Run the test suite; pytest's "no tests collected" (exit 5) is a failure, never a pass.
set -uo pipefail
cd "$(dirname "$0")/.."
# File order by default, so that CI is repeatable; KERNELBUS_RANDOM_ORDER=1 shuffles
# (pytest-randomly) and the run's last lines name the seed to replay it.
order=(-p no:randomly)
if [ -n "${KERNELBUS_RANDOM_ORDER:-}" ]; then order=(); fi
# Test files run in parallel on KERNELBUS_TEST_WORKERS pytest-xdist workers (2 by default; 0
# runs them all in this process): each file whole on one worker, and all of tests/e2e on one
# (kernelbus.testing.xdistscope). Most of a test's time is waiting for processes it started,
# not CPU.
workers=(-n "${KERNELBUS_TEST_WORKERS:-2}" --dist loadfile)
# The 30 slowest setups, calls and teardowns close the report: where CI's time goes.
.venv/bin/python -m pytest "${order[@]}" "${workers[@]}" --durations=30 "$@"
status=$?
if [ "$status" -eq 5 ]; then
  echo "pytest collected no tests: failing" >&2
  exit 1
fi
exit "$status"

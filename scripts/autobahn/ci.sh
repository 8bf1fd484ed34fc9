#!/usr/bin/env bash
# CI entry for the Autobahn conformance run: build wstest's Python 2.7 virtualenv, then run
# the default case set (1-7, 10, and 12-13 with permessage-deflate) against shardcorn.
#
#   bash scripts/autobahn/ci.sh [run.py arguments...]
#
# Expects shardcorn importable by `python` (scripts/install). Skips with exit 0 when there
# is no Python 2.7 (setup.sh's exit 3) or wstest is missing (run.py's exit 3).
# AUTOBAHN_FAIL_ON overrides --fail-on (default FAILED; FAILED,UNIMPLEMENTED also
# requires permessage-deflate to be negotiated).
set -euo pipefail
cd "$(dirname "$0")/../.."

echo "== autobahn: setting up wstest"
status=0
bash scripts/autobahn/setup.sh || status=$?
if [[ "$status" == 3 ]]; then
  echo "== autobahn: skipped (python2.7 not available)"
  exit 0
elif [[ "$status" != 0 ]]; then
  echo "== autobahn: setup failed (exit $status)"
  exit "$status"
fi

echo "== autobahn: fuzzingclient against shardcorn"
status=0
python scripts/autobahn/run.py --fail-on "${AUTOBAHN_FAIL_ON:-FAILED}" "$@" || status=$?
if [[ "$status" == 3 ]]; then
  echo "== autobahn: skipped (wstest not available)"
  exit 0
fi
exit "$status"

#!/usr/bin/env bash
# Build the Python 2.7 virtualenv that holds the Autobahn testsuite (wstest).
#
# usage: scripts/autobahn/setup.sh [--force]
#
#   AUTOBAHN_HOME     where everything goes (default: $HOME/.cache/shardcorn-autobahn):
#                     $AUTOBAHN_HOME/virtualenv-tool  virtualenv installed with pip --target
#                     $AUTOBAHN_HOME/venv             the Python 2.7 virtualenv; wstest is
#                                                     $AUTOBAHN_HOME/venv/bin/wstest
#   AUTOBAHN_PYTHON2  the Python 2.7 interpreter to use
#                     (default: $(pyenv root)/versions/2.7.18/bin/python)
#   --force           delete and rebuild both directories
#
# Exit status:
#   0  wstest is installed and answers (nothing is redone when the pins are unchanged)
#   3  no Python 2.7 here: prints "python2.7 not available"; callers should skip Autobahn
#   other  the install failed
#
# Recipe: python2.7 -m pip install --target TOOL "virtualenv<20.22";
#         PYTHONPATH=TOOL python2.7 -m virtualenv VENV; VENV/bin/pip install autobahntestsuite
# with every package pinned by the constraints below.
set -euo pipefail

AUTOBAHN_PYTHON2_VERSION=2.7.18
HOME_DIR="${AUTOBAHN_HOME:-$HOME/.cache/shardcorn-autobahn}"
TOOL_DIR="$HOME_DIR/virtualenv-tool"
VENV_DIR="$HOME_DIR/venv"
STAMP="$VENV_DIR/.shardcorn-autobahn-pins"

# Pins that install and run on CPython 2.7.18 from PyPI (checked 2026-11 with the
# virtualenv 20.15.1 that "virtualenv<20.22" resolves to, whose seed pip is 20.3.4).
# autobahntestsuite 25.10.1 pins its direct dependencies itself (Twisted 19.10.0,
# autobahn 0.10.9, txaio 2.1.0, pyOpenSSL 19.1.0, cryptography 3.3.2, setuptools 44.0.0,
# ...); the rest are the newest releases that still support Python 2.7, frozen here so a
# future upload cannot break the install. wsaccel and zope.interface compile C code, so
# gcc and the Python 2.7 headers (pyenv installs them) are needed.
CONSTRAINTS='autobahntestsuite==25.10.1
autobahn==0.10.9
Twisted==19.10.0
txaio==2.1.0
zope.interface==4.6.0
incremental==16.10.1
Automat==22.10.0
attrs==21.4.0
constantly==15.1.0
hyperlink==21.0.0
idna==2.10
typing==3.10.0.0
PyHamcrest==1.10.1
six==1.16.0
setuptools==44.0.0
pyOpenSSL==19.1.0
cryptography==3.3.2
cffi==1.15.1
pycparser==2.21
enum34==1.1.10
ipaddress==1.0.23
service-identity==18.1.0
pyasn1==0.5.1
pyasn1-modules==0.3.0
klein==17.10.0
Werkzeug==1.0.1
Jinja2==2.11.3
MarkupSafe==1.1.1
unittest2==1.1.0
argparse==1.4.0
traceback2==1.4.0
linecache2==1.0.0
wsaccel==0.6.6
ujson==2.0.3'

say() { printf '[autobahn-setup] %s\n' "$*"; }

force=0
for arg in "$@"; do
  case "$arg" in
    --force) force=1 ;;
    -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
    *) say "unknown argument: $arg" >&2; exit 2 ;;
  esac
done

# Python 2 must not see a Python 3 environment's module paths.
unset PYTHONPATH PYTHONHOME

find_python2() {
  if [[ -n "${AUTOBAHN_PYTHON2:-}" ]]; then
    printf '%s\n' "$AUTOBAHN_PYTHON2"
  elif command -v pyenv >/dev/null 2>&1; then
    printf '%s/versions/%s/bin/python\n' "$(pyenv root)" "$AUTOBAHN_PYTHON2_VERSION"
  elif [[ -d "${PYENV_ROOT:-$HOME/.pyenv}" ]]; then
    printf '%s/versions/%s/bin/python\n' "${PYENV_ROOT:-$HOME/.pyenv}" \
      "$AUTOBAHN_PYTHON2_VERSION"
  fi
}

PY2="$(find_python2 || true)"
if [[ -z "$PY2" || ! -x "$PY2" ]] \
  || ! "$PY2" -c 'import sys; sys.exit(sys.version_info[:2] != (2, 7))' >/dev/null 2>&1; then
  echo "python2.7 not available${PY2:+ (looked for $PY2)}"
  exit 3
fi

mkdir -p "$HOME_DIR"
# Two setups at once (parallel CI jobs, say) must not build the same directories.
if command -v flock >/dev/null 2>&1; then
  exec 9>"$HOME_DIR/.setup.lock"
  flock 9
fi

pins_id="$(printf '%s\n%s\n' "$PY2" "$CONSTRAINTS" | sha256sum | cut -d' ' -f1)"

wstest_works() {
  local version
  version="$("$VENV_DIR/bin/wstest" --autobahnversion 2>/dev/null)" || return 1
  [[ "$version" == *"AutobahnTestSuite 25.10.1"* ]]
}

if [[ "$force" == 1 ]]; then
  say "--force: removing $TOOL_DIR and $VENV_DIR"
  rm -rf "$TOOL_DIR" "$VENV_DIR"
elif [[ -f "$STAMP" && "$(cat "$STAMP")" == "$pins_id" ]] && wstest_works; then
  say "already set up: $VENV_DIR/bin/wstest"
  exit 0
fi

export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1

if [[ ! -f "$TOOL_DIR/virtualenv/__init__.py" ]]; then
  say "installing virtualenv<20.22 into $TOOL_DIR"
  rm -rf "$TOOL_DIR"
  "$PY2" -m pip install --quiet --quiet --target "$TOOL_DIR" "virtualenv<20.22"
fi

# Anything short of a verified install (new pins, a half-built or damaged venv) gets a
# fresh virtualenv: it takes seconds, and pip would not repair a damaged one.
say "creating the Python 2.7 virtualenv $VENV_DIR"
rm -rf "$VENV_DIR"
PYTHONPATH="$TOOL_DIR" "$PY2" -m virtualenv --quiet "$VENV_DIR"

constraints_file="$HOME_DIR/constraints.txt"
printf '%s\n' "$CONSTRAINTS" >"$constraints_file"
say "installing autobahntestsuite into $VENV_DIR (pinned by $constraints_file)"
"$VENV_DIR/bin/pip" install --quiet --quiet -c "$constraints_file" autobahntestsuite

if ! wstest_works; then
  say "wstest does not run after the install:" >&2
  "$VENV_DIR/bin/wstest" --autobahnversion >&2 || true
  exit 1
fi
printf '%s\n' "$pins_id" >"$STAMP"
say "ready: $VENV_DIR/bin/wstest ($("$VENV_DIR/bin/wstest" --autobahnversion 2>/dev/null \
  | tr '\n' ' '))"

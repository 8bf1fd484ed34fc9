#!/usr/bin/env bash
# System packages the tests use, from Debian/Ubuntu apt:
#   prometheus  promtool (checks the exporter's output) and the Prometheus server (scrapes a
#               live shardcorn in tests/metrics)
#   wrk         the load generator of bench/
# Idempotent: does nothing when the tools are already there. Without apt, or without root
# (and no passwordless sudo), it says what is missing and exits 0: the tests that need a
# missing tool skip and say why.
set -euo pipefail

needed=()
command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1 || needed+=(prometheus)
command -v wrk >/dev/null 2>&1 || needed+=(wrk)
if [ "${#needed[@]}" -eq 0 ]; then
    echo "ci-system-deps: prometheus, promtool and wrk are installed"
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "ci-system-deps: no apt-get here; install these yourself: ${needed[*]}" >&2
    exit 0
fi
if [ "$(id -u)" -eq 0 ]; then
    as_root=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    as_root=(sudo -n)
else
    echo "ci-system-deps: not root (and no passwordless sudo); missing: ${needed[*]}" >&2
    exit 0
fi

# Installing the prometheus package would also start a Prometheus daemon on :9090 (and, with
# recommends, a node exporter). CI wants the binaries, not services: while apt runs, a
# policy-rc.d that refuses every service start (exit 101) keeps them stopped. An existing
# policy-rc.d is left alone.
policy=/usr/sbin/policy-rc.d
made_policy=0
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | ${as_root[@]+"${as_root[@]}"} tee "$policy" >/dev/null
    ${as_root[@]+"${as_root[@]}"} chmod 755 "$policy"
    made_policy=1
fi
cleanup() {
    if [ "$made_policy" -eq 1 ]; then
        ${as_root[@]+"${as_root[@]}"} rm -f "$policy"
    fi
}
trap cleanup EXIT

echo "ci-system-deps: installing ${needed[*]}"
export DEBIAN_FRONTEND=noninteractive
${as_root[@]+"${as_root[@]}"} apt-get update -qq >/dev/null
${as_root[@]+"${as_root[@]}"} apt-get install -y -qq --no-install-recommends "${needed[@]}" >/dev/null
for tool in promtool prometheus wrk; do
    command -v "$tool" >/dev/null 2>&1 || echo "ci-system-deps: $tool is still missing" >&2
done

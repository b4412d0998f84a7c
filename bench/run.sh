#!/usr/bin/env bash
# `make bench`: install what the benchmark needs, then run bench/bench.py with the project venv.
# Arguments and BENCH_* environment variables are passed through (see bench/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."

PROJECT_PY=.venv/bin/python
BASELINE_VENV=bench/.venv-baselines
REQS=bench/requirements-baselines.txt

if [[ ! -x $PROJECT_PY ]]; then
  echo "bench: $PROJECT_PY is missing; run 'make bench' (or 'make test') from the repo root" >&2
  exit 2
fi

# wrk, from Debian's packages, only when missing.
if ! command -v wrk >/dev/null 2>&1; then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "bench: installing wrk (apt-get install -y wrk)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
  else
    echo "bench: wrk is not installed. Install it first, e.g.: sudo apt-get install -y wrk" >&2
    exit 2
  fi
fi
if ! command -v taskset >/dev/null 2>&1; then
  echo "bench: taskset is missing (Debian package util-linux)" >&2
  exit 2
fi

# The baselines' packages, in their own venv; reinstalled when the requirements change.
stamp=$BASELINE_VENV/.installed-$(sha256sum "$REQS" | cut -c1-16)
if [[ ! -f $stamp ]]; then
  echo "bench: installing the baselines' packages into $BASELINE_VENV"
  rm -rf "$BASELINE_VENV"
  "$PROJECT_PY" -m venv "$BASELINE_VENV"
  "$BASELINE_VENV/bin/python" -m pip install --quiet --upgrade pip
  "$BASELINE_VENV/bin/python" -m pip install --quiet -r "$REQS"
  touch "$stamp"
fi

# BENCH_COMPARE=<git rev>: that revision, built into a venv of its own, is measured beside this
# checkout in the same run (rows "plivohook-sqlite@<rev>", "plivohook-pg@<rev>").
if [[ -n ${BENCH_COMPARE:-} ]]; then
  sha=$(git rev-parse --short=12 "$BENCH_COMPARE^{commit}")
  compare=bench/.compare/$sha
  if [[ ! -x $compare/venv/bin/plivohook ]]; then
    echo "bench: building $BENCH_COMPARE ($sha) into $compare"
    rm -rf "$compare"
    mkdir -p "$compare/src"
    git archive "$sha" | tar -x -C "$compare/src"
    "$PROJECT_PY" -m venv "$compare/venv"
    "$compare/venv/bin/python" -m pip install --quiet --upgrade pip
    extra=server
    grep -q '^server = \[' "$compare/src/pyproject.toml" || extra=
    "$compare/venv/bin/python" -m pip install --quiet "$compare/src${extra:+[$extra]}"
  fi
  export BENCH_COMPARE_BIN=$compare/venv/bin BENCH_COMPARE_LABEL=$sha
fi

exec "$PROJECT_PY" bench/bench.py "$@"

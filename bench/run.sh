#!/usr/bin/env bash
# Runs the agentsmith benchmarks: installs redis-server and wrk when missing, builds the
# release binaries, runs `bench` and prints its table. Arguments go to the bench binary
# (e.g. `bash bench/run.sh --jobs 50000 --duration 20`; `--help` lists them).
set -euo pipefail

cd "$(dirname "$0")/.."

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
if ((${#missing[@]})); then
  echo "run.sh: installing ${missing[*]}" >&2
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  $sudo apt-get update
  $sudo apt-get install -y "${missing[@]}"
fi

# The docker phase (--only docker) needs a Docker engine: install and start one if needed.
for arg in "$@"; do
  if [ "$arg" = docker ] || [ "$arg" = --only=docker ]; then
    . scripts/lib.sh
    ensure_docker
    ensure_busybox
  fi
done

cargo build --release -p agentsmith -p agent-runner -p bench
exec "${CARGO_TARGET_DIR:-target}/release/bench" --no-build "$@"

#!/usr/bin/env bash
# Runs the agentsmith benchmarks: installs redis-server and wrk (and nodejs and npm, for the
# BullMQ phase) when missing, builds the release binaries, runs `bench` and prints its
# table. Arguments go to the bench binary (e.g. `bash bench/run.sh --jobs 50000 --duration
# 20`; `--help` lists them). The bench itself installs BullMQ, with `npm ci`, into
# ${XDG_CACHE_HOME:-$HOME/.cache}/agentsmith/bullmq-<version>/ (once).
set -euo pipefail

cd "$(dirname "$0")/.."

# Which parts run (`--only X[,Y]` or `--only=X[,Y]`; everything by default).
only=all
prev=""
for arg in "$@"; do
  case "$arg" in
    --only=*) only="${arg#--only=}" ;;
    *) if [ "$prev" = --only ]; then only="$arg"; fi ;;
  esac
  prev="$arg"
done

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
case ",$only," in
  *,all,* | *,bullmq,*)
    command -v node >/dev/null 2>&1 || missing+=(nodejs)
    command -v npm >/dev/null 2>&1 || missing+=(npm)
    ;;
esac
if ((${#missing[@]})); then
  echo "run.sh: installing ${missing[*]}" >&2
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  $sudo apt-get update
  $sudo apt-get install -y "${missing[@]}"
fi

# The docker phase (--only docker) needs a Docker engine: install and start one if needed.
if [ "$only" = docker ]; then
  . scripts/lib.sh
  ensure_docker
  ensure_busybox
fi

# The fleet and streams phases hold two ends of thousands of local connections: raise the
# soft limit on open files to the hard one (the bench checks it and says what it needs).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

cargo build --release -p agentsmith -p agent-runner -p bench
exec "${CARGO_TARGET_DIR:-target}/release/bench" --no-build "$@"

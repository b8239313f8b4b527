#!/usr/bin/env bash
# Builds Kubernetes v1.20.2 (server binaries, kubectl and the pause image) from Debian's source
# package, once, into a cache outside the clone; a no-op when the cache is complete.
#
#   scripts/k8s-testenv/build.sh        # ~11 min on 2 cores the first time, ~0.1 s afterwards
#
# Environment:
#   AGENTSMITH_K8S_CACHE   cache directory (default $HOME/.cache/agentsmith/k8s-1.20.2); holds
#                          bin/ (the six binaries and pause), stamp, build.log and timings.
#
# Why build at all: no registry is reachable, Debian ships no kube-apiserver, and its kubectl
# carries the reflect2 crash described in TESTENV.md. The two source patches are explained where
# they are applied.
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
# shellcheck source=scripts/k8s-testenv/config.sh
. scripts/k8s-testenv/config.sh

VERSION=$K8S_VERSION
CACHE=$K8S_CACHE
BIN=$K8S_BIN
BINARIES=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl)
PAUSE_IMAGE=$K8S_PAUSE_IMAGE

binaries_cached() {
  local b
  for b in "${BINARIES[@]}"; do [ -x "$BIN/$b" ] || return 1; done
}
pause_image_present() {
  docker image inspect "$PAUSE_IMAGE" >/dev/null 2>&1
}

# The fast path: nothing to do.
if binaries_cached && pause_image_present; then
  echo "==> Kubernetes $VERSION cached in $BIN"
  exit 0
fi

mkdir -p "$CACHE"
# One build at a time (two test runs may start together); re-check once the lock is ours.
exec 9>"$CACHE/.lock"
if ! flock -n 9; then
  echo "==> another build holds $CACHE/.lock; waiting for it"
  flock 9
  if binaries_cached && pause_image_present; then
    echo "==> Kubernetes $VERSION cached in $BIN"
    exit 0
  fi
fi

LOG=$CACHE/build.log
WORK=$CACHE/work
TIMINGS=$CACHE/timings
STEP=""
STEP_START=$EPOCHREALTIME
BUILD_START=$EPOCHREALTIME

sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo"

step() {
  end_step
  STEP=$1
  STEP_START=$EPOCHREALTIME
  echo "==> $STEP"
  echo "==> $STEP" >>"$LOG"
}
end_step() {
  [ -n "$STEP" ] || return 0
  local took
  took=$(k8s_elapsed "$STEP_START")
  printf '%-44s %7s s\n' "$STEP" "$took" >>"$TIMINGS"
  echo "    ($took s)"
  STEP=""
}
on_exit() {
  local rc=$?
  [ $rc -eq 0 ] && return 0
  echo "ERROR: the Kubernetes build failed (exit $rc) during: ${STEP:-start-up}" >&2
  if [ -s "$LOG" ]; then
    echo "---- the end of $LOG ----" >&2
    tail -n 40 "$LOG" >&2
    echo "----" >&2
  fi
  [ ! -d "$WORK" ] || echo "(the work tree stays in $WORK for inspection; the next build wipes it)" >&2
  exit $rc
}
trap on_exit EXIT
die() { echo "ERROR: $*" >&2; exit 1; }

# Runs a command with its output in the log, printing every 30 s that it is still alive: the
# elapsed time, the log's last line and, when PROGRESS_DIR is set, how much that directory holds
# (make prints nothing for minutes while Go compiles; its build cache keeps growing).
PROGRESS_DIR=""
run_logged() {
  local start=$EPOCHREALTIME next=30 pid secs size
  "$@" >>"$LOG" 2>&1 &
  pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    sleep 1
    secs=$(k8s_elapsed "$start")
    if [ "${secs%.*}" -ge "$next" ]; then
      next=$((next + 30))
      size=""
      [ -z "$PROGRESS_DIR" ] || size=" [$(du -sh "$PROGRESS_DIR" 2>/dev/null | cut -f1) in ${PROGRESS_DIR#"$CACHE"/}]"
      printf '    ... %s s%s: %s\n' "${secs%.*}" "$size" "$(tail -n 1 "$LOG" | cut -c 1-120)"
    fi
  done
  wait "$pid"
}

# The pause image only needs the small pause binary, which outlives the source tree.
if binaries_cached && [ -x "$BIN/pause" ]; then
  TIMINGS=/dev/null
  ensure_docker
  step "importing $PAUSE_IMAGE from $BIN/pause"
  tar -C "$BIN" -c pause | docker import --change 'ENTRYPOINT ["/pause"]' - "$PAUSE_IMAGE" >>"$LOG"
  end_step
  exit 0
fi

: >"$LOG"
: >"$TIMINGS"
echo "==> building Kubernetes $VERSION into $CACHE (log: $LOG)"

step "apt packages"
PACKAGES=(golang-1.19-go golang-github-modern-go-reflect2-dev rsync jq etcd-server etcd-client
  openssl curl docker.io busybox-static gcc libc6-dev iptables)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "    installing ${missing[*]}"
  $sudo apt-get -o DPkg::Lock::Timeout=300 update -qq >>"$LOG" 2>&1
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq -o DPkg::Lock::Timeout=300 \
    "${missing[@]}" >>"$LOG" 2>&1
fi
ensure_docker

step "deb-src entry for bookworm main"
MIRROR=$(debian_mirror)
MIRROR=${MIRROR%/}
# shellcheck disable=SC2016  # $(...) are apt's format fields
if apt-get indextargets --format '$(TARGET_OF) $(REPO_URI) $(CODENAME) $(COMPONENT)' 2>/dev/null |
  grep -qxF "deb-src $MIRROR/ bookworm main"; then
  echo "    present for $MIRROR"
else
  echo "    adding /etc/apt/sources.list.d/agentsmith-deb-src.list for $MIRROR"
  signed=""
  [ -f /usr/share/keyrings/debian-archive-keyring.gpg ] &&
    signed="[signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] "
  echo "deb-src ${signed}$MIRROR bookworm main" |
    $sudo tee /etc/apt/sources.list.d/agentsmith-deb-src.list >/dev/null
  run_logged $sudo apt-get -o DPkg::Lock::Timeout=300 update
fi

step "apt-get source --download-only kubernetes"
rm -rf "$WORK"
mkdir -p "$WORK/src"
if ! (cd "$WORK/src" && run_logged apt-get source --download-only kubernetes); then
  # The Sources index may predate the entry (added by hand without an update): update once.
  run_logged $sudo apt-get -o DPkg::Lock::Timeout=300 update
  (cd "$WORK/src" && run_logged apt-get source --download-only kubernetes)
fi
ls -l "$WORK/src" >>"$LOG"

step "unpacking the orig tarball"
orig=$(find "$WORK/src" -maxdepth 1 -name 'kubernetes_*.orig.tar.*' | head -n 1)
[ -n "$orig" ] || die "no kubernetes_*.orig.tar.* in $WORK/src"
mkdir -p "$WORK/unpack"
tar -C "$WORK/unpack" -xf "$orig"
top=$(find "$WORK/unpack" -mindepth 1 -maxdepth 1 -type d)
if [ "$(wc -l <<<"$top")" != 1 ] || [ ! -f "$top/Makefile" ] || [ ! -d "$top/vendor" ]; then
  die "$orig does not hold one source tree with a Makefile and vendor/"
fi
mv "$top" "$WORK/tree"
rm -rf "$WORK/unpack" "$WORK/src"
TREE=$WORK/tree

step "patching OOM scores and vendored reflect2"
# 1. Root here lacks CAP_SYS_RESOURCE, so a negative oom_score_adj fails every pod sandbox start;
#    kubelet 1.20 hard-codes -998 for sandboxes and -997 for Guaranteed pods.
sed -i -E 's/^(\s*defaultSandboxOOMAdj\s+int\s*=\s*)-[0-9]+/\10/' \
  "$TREE/pkg/kubelet/dockershim/docker_sandbox.go"
sed -i -E 's/^(\s*guaranteedOOMScoreAdj\s+int\s*=\s*)-[0-9]+/\10/' "$TREE/pkg/kubelet/qos/policy.go"
grep -Eq '^\s*defaultSandboxOOMAdj\s+int\s*=\s*0\s*$' "$TREE/pkg/kubelet/dockershim/docker_sandbox.go" ||
  die "could not set defaultSandboxOOMAdj to 0"
grep -Eq '^\s*guaranteedOOMScoreAdj\s+int\s*=\s*0\s*$' "$TREE/pkg/kubelet/qos/policy.go" ||
  die "could not set guaranteedOOMScoreAdj to 0"
# 2. reflect2 v1.0.1 crashes at random under Go >= 1.18 (UnsafeMapType.UnsafeIterate); Debian's
#    1.0.2 is the fixed release with the same API.
R2_DEB=/usr/share/gocode/src/github.com/modern-go/reflect2
R2_VENDOR=$TREE/vendor/github.com/modern-go/reflect2
[ -d "$R2_DEB" ] || die "$R2_DEB is missing (golang-github-modern-go-reflect2-dev)"
rm -f "$R2_VENDOR"/*.go "$R2_VENDOR"/*.s
for f in "$R2_DEB"/*.go "$R2_DEB"/*.s; do
  [ -e "$f" ] || continue
  case $f in *_test.go) continue ;; esac
  cp "$f" "$R2_VENDOR/"
done
ls "$R2_VENDOR" >>"$LOG"

step "make (kube-apiserver ... kubectl)"
(
  cd "$TREE"
  export PATH=/usr/lib/go-1.19/bin:$PATH GOPROXY=off CGO_ENABLED=0 KUBE_GIT_VERSION=$VERSION \
    KUBE_GIT_MAJOR=1 KUBE_GIT_MINOR=20 KUBE_GIT_TREE_STATE=clean
  # Kubernetes' make keeps GOPATH and Go's build cache under _output/, so the clean-up below
  # frees them as well.
  PROGRESS_DIR=$TREE/_output
  run_logged make WHAT="cmd/kube-apiserver cmd/kube-controller-manager cmd/kube-scheduler cmd/kubelet cmd/kube-proxy cmd/kubectl"
)

step "installing the binaries into bin/"
mkdir -p "$BIN"
for b in "${BINARIES[@]}"; do
  [ -x "$TREE/_output/bin/$b" ] || die "make left no _output/bin/$b"
  # Copy then rename, so an interrupted copy never looks like a cached binary.
  cp "$TREE/_output/bin/$b" "$BIN/.$b.tmp"
  mv "$BIN/.$b.tmp" "$BIN/$b"
done
"$BIN/kubectl" version --client --short >>"$LOG" 2>&1 || "$BIN/kubectl" version --client >>"$LOG" 2>&1

step "building and importing $PAUSE_IMAGE"
gcc -static -O2 -DVERSION=3.2 -o "$BIN/.pause.tmp" "$TREE/build/pause/linux/pause.c" >>"$LOG" 2>&1
mv "$BIN/.pause.tmp" "$BIN/pause"
tar -C "$BIN" -c pause | docker import --change 'ENTRYPOINT ["/pause"]' - "$PAUSE_IMAGE" >>"$LOG"

step "removing the source tree"
rm -rf "$WORK"
end_step

total=$(k8s_elapsed "$BUILD_START")
printf '%-44s %7s s\n' "total" "$total" >>"$TIMINGS"
{
  echo "kubernetes $VERSION built $(date -u +%Y-%m-%dT%H:%M:%SZ) from $(basename "$orig")"
  echo "binaries: ${BINARIES[*]} pause"
  cat "$TIMINGS"
} >"$CACHE/stamp"
echo "==> built Kubernetes $VERSION in $total s; binaries in $BIN"
cat "$TIMINGS"

#!/usr/bin/env bash
# Stops the cluster start.sh started, and only that: the processes listed in $RUN/pids (kubelet
# first, then its pod containers, then the rest), and undoes its changes to the host (iptables
# rules and chains, sysctls, kubelet mounts under $RUN, pod log directories, kubepods cgroups).
# Safe to run twice, or when nothing runs. $RUN itself (logs included) is kept for inspection.
#
#   scripts/k8s-testenv/stop.sh [--quiet]
#
# Environment: AGENTSMITH_K8S_RUN, AGENTSMITH_K8S_CACHE (see start.sh).
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=scripts/k8s-testenv/config.sh
. scripts/k8s-testenv/config.sh

quiet=""
[ "${1:-}" = --quiet ] && quiet=1
RUN=$K8S_RUN
BIN=$K8S_BIN
LOGS=$RUN/logs
T0=$EPOCHREALTIME
say() { [ -n "$quiet" ] || echo "$@"; }

[ "$(id -u)" = 0 ] || { echo "ERROR: stop.sh ends root processes and edits iptables: run it as root" >&2; exit 1; }
if [ ! -d "$RUN" ]; then
  say "==> nothing to stop: no $RUN"
  exit 0
fi

# --- the processes: "NAME PID" lines, in start order -------------------------------------------------
names=() pids=()
if [ -f "$RUN/pids" ]; then
  while read -r name pid; do
    names+=("$name")
    pids+=("$pid")
  done <"$RUN/pids"
fi
started() { # NAME: whether start.sh started a process of that name
  local n
  for n in "${names[@]}"; do [ "$n" = "$1" ] && return 0; done
  return 1
}
# A PID is ours while it lives and its command line names the run directory (every one does), so a
# reused PID is never signalled.
ours() {
  [ -r "/proc/$1/cmdline" ] && tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -qF "$RUN/"
}
# Each process leads a session of its own (start.sh used setsid), so its group holds its children,
# e.g. the DNS watcher's kubectl.
# Zombies do not count: these processes outlived start.sh, so PID 1 reaps them, in its own time.
group_alive() {
  ps -e -o pgid=,stat= | awk -v g="$1" '$1 == g && $2 !~ /^Z/ { found = 1 } END { exit !found }'
}
signal() { # SIGNAL PID
  if [ "$(ps -o pgid= -p "$2" 2>/dev/null | tr -d ' ')" = "$2" ]; then
    kill "-$1" -- "-$2" 2>/dev/null || true
  else
    kill "-$1" "$2" 2>/dev/null || true
  fi
}
stop_all() { # SECONDS PID...: SIGTERM, wait, then SIGKILL what is left
  local limit=$1 pid live deadline
  shift
  for pid in "$@"; do signal TERM "$pid"; done
  deadline=$((SECONDS + limit))
  while :; do
    live=()
    for pid in "$@"; do group_alive "$pid" && live+=("$pid"); done
    [ ${#live[@]} -eq 0 ] && return 0
    ((SECONDS < deadline)) || break
    sleep 0.1
  done
  for pid in "${live[@]}"; do
    say "    $pid did not end within $limit s: SIGKILL"
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
  done
}

live_pids=() live_names=() kubelet_pid=""
for i in "${!pids[@]}"; do
  ours "${pids[$i]}" || continue
  if [ "${names[$i]}" = kubelet ]; then
    kubelet_pid=${pids[$i]}
  else
    live_names=("${names[$i]}" "${live_names[@]}") # reverse start order
    live_pids=("${pids[$i]}" "${live_pids[@]}")
  fi
done

did=""
if [ ${#pids[@]} -gt 0 ]; then
  did=1
  say "==> stopping the cluster in $RUN"
fi

if [ -n "$kubelet_pid" ]; then
  stop_all 10 "$kubelet_pid"
fi
if started kubelet; then
  mapfile -t containers < <(docker ps -aq --filter 'name=^k8s_')
  if [ ${#containers[@]} -gt 0 ]; then
    say "    removing ${#containers[@]} pod containers"
    docker rm -f "${containers[@]}" >/dev/null
  fi
fi
if [ ${#live_pids[@]} -gt 0 ]; then
  stop_all 10 "${live_pids[@]}"
fi
[ -z "$did" ] || say "    processes stopped: ${#pids[@]} listed (${kubelet_pid:+kubelet }${live_names[*]:-none other alive})"

# --- iptables -------------------------------------------------------------------------------------------
# kube-proxy --cleanup removes its rules but leaves empty chains (the canaries) and KUBE-MARK-MASQ /
# KUBE-MARK-DROP, which it shares with kubelet's iptables util chains (not made here): those two are
# flushed once nothing jumps to them, then every empty KUBE-* chain goes.
delete_kube_chains() {
  local ipt table chain deleted=1 rules
  for ipt in iptables ip6tables; do
    command -v "$ipt" >/dev/null || continue
    for table in filter nat mangle; do
      rules=$("$ipt" -t "$table" -S 2>/dev/null) || continue
      for chain in KUBE-MARK-MASQ KUBE-MARK-DROP; do
        grep -qx -- "-N $chain" <<<"$rules" && ! grep -q -- "-j $chain\( \|\$\)" <<<"$rules" &&
          "$ipt" -t "$table" -F "$chain"
      done
    done
  done
  while [ -n "$deleted" ]; do # a deleted chain may have been the last reference to another
    deleted=""
    for ipt in iptables ip6tables; do
      command -v "$ipt" >/dev/null || continue
      for table in filter nat mangle; do
        for chain in $("$ipt" -t "$table" -S 2>/dev/null | awk '$1 == "-N" && $2 ~ /^KUBE-/ { print $2 }'); do
          # Empty: its listing is the "-N CHAIN" line alone.
          [ "$("$ipt" -t "$table" -S "$chain" 2>/dev/null | wc -l)" = 1 ] || continue
          "$ipt" -t "$table" -X "$chain" 2>/dev/null && deleted=1
        done
      done
    done
  done
}
if started kube-proxy; then
  # It also tears down IPVS state, and fails for want of the ipset tool, which this cluster never
  # used: only other errors count.
  if ! "$BIN/kube-proxy" --cleanup >"$LOGS/kube-proxy-cleanup.log" 2>&1 &&
    grep -E '^[EF][0-9]{4} ' "$LOGS/kube-proxy-cleanup.log" | grep -v -e ipset -e 'tearing down rules' | grep -q .; then
    echo "WARNING: kube-proxy --cleanup failed; see $LOGS/kube-proxy-cleanup.log" >&2
  fi
fi
if started kube-proxy || started kubelet; then
  delete_kube_chains
  left=$(for ipt in iptables ip6tables; do
    for table in filter nat mangle; do
      "$ipt" -t "$table" -S 2>/dev/null | awk -v t="$ipt/$table" '$1 == "-N" && $2 ~ /^KUBE-/ { print t " " $2 }'
    done
  done)
  [ -z "$left" ] || echo "WARNING: KUBE-* chains left (not empty or still referenced): $(tr '\n' ' ' <<<"$left")" >&2
fi
if [ -f "$RUN/mangle-rules.added" ]; then
  did=1
  while read -ra words; do
    while iptables -t mangle -D "${words[@]}" 2>/dev/null; do :; done
  done <"$RUN/mangle-rules.added"
  rm -f "$RUN/mangle-rules.added"
fi

# --- host settings ------------------------------------------------------------------------------------
if [ -f "$RUN/sysctl.saved" ]; then
  while read -r key value; do
    [ "$(sysctl -n "$key" 2>/dev/null)" = "$value" ] || sysctl -q -w "$key=$value" >/dev/null 2>&1 ||
      echo "WARNING: could not restore $key=$value" >&2
  done <"$RUN/sysctl.saved"
  rm -f "$RUN/sysctl.saved"
fi

# kubelet's tmpfs (Secret and token volumes) and other mounts under the run directory, deepest first.
mapfile -t mounts < <(awk -v p="$RUN/" 'index($2, p) == 1 { print $2 }' /proc/self/mounts | sort -r)
for m in "${mounts[@]}"; do
  m=${m//\\040/ } # /proc/self/mounts escapes spaces
  umount "$m" 2>/dev/null || umount -l "$m"
done
[ ${#mounts[@]} -eq 0 ] || say "    unmounted ${#mounts[@]} kubelet mounts"

# What kubelet added to fixed host paths (pod logs, the device plugin socket), as start.sh noted.
if [ -d "$RUN/host-paths" ]; then
  did=1
  for dir in /var/lib/kubelet /var/log/pods /var/log/containers; do
    if grep -qxF "$dir" "$RUN/host-paths/absent" 2>/dev/null; then
      rm -rf "$dir"
    elif [ -f "$RUN/host-paths/${dir//\//_}" ] && [ -d "$dir" ]; then
      comm -13 <(sort "$RUN/host-paths/${dir//\//_}") <(find "$dir" -mindepth 1 -maxdepth 1 -printf '%f\n' | sort) | while read -r entry; do
        rm -rf "${dir:?}/${entry:?}"
      done
    fi
  done
  rm -rf "$RUN/host-paths"
fi

# The empty kubepods cgroups kubelet made (cgroupfs driver: kubepods, systemd driver: kubepods.slice).
if started kubelet; then
  for root in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/*/kubepods.slice /sys/fs/cgroup/kubepods /sys/fs/cgroup/kubepods.slice; do
    if [ -d "$root" ]; then find "$root" -depth -type d -exec rmdir {} + 2>/dev/null || true; fi
  done
fi

if [ -f "$RUN/pids" ]; then
  mv "$RUN/pids" "$RUN/pids.stopped"
fi
if [ -n "$did" ]; then
  say "==> stopped in $(k8s_elapsed "$T0") s"
else
  say "==> nothing to stop in $RUN"
fi

#!/usr/bin/env bash
# Checks that the cluster start.sh started can do what agentsmith needs: a batch/v1 Job of a local
# image runs, completes, has its logs read and is removed by ttlSecondsAfterFinished; a pod
# reaches a server on the host at the bridge address; cluster DNS answers for Services (and for
# nothing else); a Service routes to a pod. Everything runs in a namespace of its own, deleted
# at the end.
#
#   scripts/k8s-testenv/smoke.sh
#
# Environment: AGENTSMITH_K8S_RUN, AGENTSMITH_K8S_CACHE (see start.sh);
#   AGENTSMITH_K8S_TEST_IMAGE  the busybox image the pods run (default agentsmith-busybox:test;
#                              made with `docker import` when missing).
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
# shellcheck source=scripts/k8s-testenv/config.sh
. scripts/k8s-testenv/config.sh

RUN=$K8S_RUN
IMAGE=${AGENTSMITH_K8S_TEST_IMAGE:-agentsmith-busybox:test}
if [ ! -f "$RUN/env" ] || [ ! -f "$RUN/pids" ]; then
  echo "ERROR: no cluster in $RUN: run scripts/k8s-testenv/start.sh" >&2
  exit 1
fi
# shellcheck source=/dev/null
. "$RUN/env"
KCTL=("$K8S_KUBECTL" --kubeconfig "$KUBECONFIG" --request-timeout=10s)
BRIDGE=$K8S_BRIDGE
NS=smoke-$(date +%s)-$RANDOM
T0=$EPOCHREALTIME
timings=()
WORK=$(mktemp -d)
httpd_pid=""
ns_created=""

cleanup() {
  local rc=$?
  [ -z "$httpd_pid" ] || kill "$httpd_pid" 2>/dev/null || true
  if [ $rc -ne 0 ] && [ -n "$ns_created" ]; then
    echo "---- pods in $NS ----" >&2
    "${KCTL[@]}" -n "$NS" get pods -o wide >&2 || true
    "${KCTL[@]}" delete namespace "$NS" --wait=false >/dev/null 2>&1 || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT
fail() { echo "ERROR: $*" >&2; exit 1; }
timed() { # LABEL START
  local took
  took=$(k8s_elapsed "$2")
  timings+=("$(printf '%-44s %6s s' "$1" "$took")")
  echo "    $1: $took s"
}

ensure_busybox # the image is made of it, and the host's test server is its httpd
echo "==> smoke test of the cluster at $K8S_API_URL (namespace $NS)"

# --- the image -----------------------------------------------------------------------------------------
if ! docker image inspect "$IMAGE" >/dev/null 2>&1; then
  t=$EPOCHREALTIME
  root=$WORK/rootfs
  mkdir -p "$root/bin" "$root/etc" "$root/tmp"
  chmod 1777 "$root/tmp"
  cp /bin/busybox "$root/bin/busybox"
  for applet in $("$root/bin/busybox" --list); do
    [ "$applet" = busybox ] || ln -s busybox "$root/bin/$applet"
  done
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$root/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
  tar -C "$root" -c . | docker import --change 'ENV PATH=/bin' - "$IMAGE" >/dev/null
  timed "image $IMAGE imported" "$t"
fi

# --- helpers -------------------------------------------------------------------------------------------
# Creates a Job running COMMAND (sh -c) and waits for it to finish; fails with its pod's state when
# it does not complete within 60 s.
run_job() { # NAME COMMAND
  "${KCTL[@]}" -n "$NS" apply -f - >/dev/null <<YAML
apiVersion: batch/v1
kind: Job
metadata:
  name: $1
spec:
  backoffLimit: 0
  ttlSecondsAfterFinished: 10
  template:
    spec:
      restartPolicy: Never
      terminationGracePeriodSeconds: 1
      automountServiceAccountToken: false
      containers:
      - name: main
        image: $IMAGE
        imagePullPolicy: Never
        command: ["sh", "-c", $(printf '%s' "$2" | jq -Rs .)]
YAML
  local deadline=$((SECONDS + 60)) state
  while :; do
    state=$("${KCTL[@]}" -n "$NS" get job "$1" -o jsonpath='{range .status.conditions[?(@.status=="True")]}{.type}{end}')
    case $state in
      *Complete*) return 0 ;;
      *Failed*)
        "${KCTL[@]}" -n "$NS" logs "job/$1" >&2 || true
        fail "job $1 failed: $("${KCTL[@]}" -n "$NS" get pods -l job-name="$1" -o jsonpath='{.items[*].status.containerStatuses[*].state}')"
        ;;
    esac
    ((SECONDS < deadline)) || fail "job $1 did not finish within 60 s: $("${KCTL[@]}" -n "$NS" get pods -l job-name="$1" -o jsonpath='{.items[*].status}')"
    sleep 0.1
  done
}
job_logs() { "${KCTL[@]}" -n "$NS" logs "job/$1"; }

t=$EPOCHREALTIME
"${KCTL[@]}" create namespace "$NS" >/dev/null
ns_created=1
# The namespace's default ServiceAccount appears asynchronously; pods are refused until it does.
until "${KCTL[@]}" -n "$NS" get serviceaccount default >/dev/null 2>&1; do sleep 0.1; done
timed "namespace with its ServiceAccount" "$t"

# 1. A Job: create -> Complete, logs.
t=$EPOCHREALTIME
run_job hello 'echo "hello from agentsmith smoke"; sleep 2'
hello_done=$SECONDS
timed "job create -> Complete (sleep 2 s)" "$t"
t=$EPOCHREALTIME
logs=$(job_logs hello)
[ "$logs" = "hello from agentsmith smoke" ] || fail "job hello logged '$logs'"
timed "kubectl logs job/hello" "$t"

# 2. A pod reaches a TCP server on the host at the bridge address.
t=$EPOCHREALTIME
port=18080
while [ -n "$(ss -Hltn "sport = :$port")" ]; do port=$((port + 1)); done
mkdir -p "$WORK/www"
echo "host-token-$RANDOM$RANDOM" >"$WORK/www/index.html"
busybox httpd -f -p "$BRIDGE:$port" -h "$WORK/www" &
httpd_pid=$!
run_job host "wget -q -O- http://$BRIDGE:$port/index.html"
[ "$(job_logs host)" = "$(cat "$WORK/www/index.html")" ] || fail "the pod read '$(job_logs host)' from http://$BRIDGE:$port/"
kill "$httpd_pid" 2>/dev/null || true
httpd_pid=""
timed "pod -> host $BRIDGE:$port (job)" "$t"

# 3. Cluster DNS: the kubernetes Service resolves (full name: busybox nslookup of a short name
#    fails on the first search domain that misses), other names are NXDOMAIN at once.
t=$EPOCHREALTIME
run_job dns "nslookup kubernetes.default.svc.$K8S_DOMAIN; if nslookup example.com >/dev/null 2>&1; then echo LEAK; fi"
out=$(job_logs dns)
grep -Eq "Address:?[[:space:]]+${K8S_API_SERVICE_IP//./\\.}\$" <<<"$out" || fail "kubernetes.default.svc.$K8S_DOMAIN did not resolve to $K8S_API_SERVICE_IP: $out"
! grep -q LEAK <<<"$out" || fail "example.com resolved: the cluster DNS must not answer for outside names"
timed "pod DNS lookup (job)" "$t"

# 4. A Service in front of a pod, by its DNS name, from another pod.
t=$EPOCHREALTIME
"${KCTL[@]}" -n "$NS" apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Pod
metadata:
  name: web
  labels: {app: web}
spec:
  terminationGracePeriodSeconds: 1
  automountServiceAccountToken: false
  containers:
  - name: httpd
    image: $IMAGE
    imagePullPolicy: Never
    command: ["sh", "-c", "mkdir -p /www && echo service-ok >/www/index.html && exec httpd -f -p 8080 -h /www"]
    readinessProbe:
      tcpSocket: {port: 8080}
      periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {app: web}
  ports:
  - port: 80
    targetPort: 8080
YAML
# A connection to a Service without endpoints hangs: wait for one first.
deadline=$((SECONDS + 60))
until [ -n "$("${KCTL[@]}" -n "$NS" get endpoints web -o jsonpath='{.subsets[*].addresses[*].ip}' 2>/dev/null)" ]; do
  ((SECONDS < deadline)) || fail "service web has no ready endpoint after 60 s"
  sleep 0.1
done
timed "pod + Service -> endpoint ready" "$t"
t=$EPOCHREALTIME
run_job client "wget -q -O- http://web.$NS.svc.$K8S_DOMAIN/index.html"
[ "$(job_logs client)" = service-ok ] || fail "http://web.$NS.svc.$K8S_DOMAIN/ answered '$(job_logs client)'"
timed "pod -> Service by DNS name (job)" "$t"

# 5. ttlSecondsAfterFinished (an alpha feature gate in 1.20) removes the first Job ~10 s after it
#    completed.
t=$EPOCHREALTIME
deadline=$((hello_done + 30))
while "${KCTL[@]}" -n "$NS" get job hello >/dev/null 2>&1; do
  ((SECONDS < deadline)) || fail "job hello still exists 30 s after it completed: is TTLAfterFinished enabled?"
  sleep 0.2
done
timed "TTL removal of job hello (waited)" "$t"

# A running pod takes kubelet 1.20 ~10 s to confirm gone (its status sync period), and the
# namespace controller meanwhile backs off exponentially (up to ~30 s in all): the smoke test
# force-deletes its one running pod first.
"${KCTL[@]}" -n "$NS" delete pod web --grace-period=0 --force >/dev/null 2>&1
t=$EPOCHREALTIME
"${KCTL[@]}" delete namespace "$NS" --timeout=120s >/dev/null
ns_created=""
timed "namespace deleted" "$t"

echo "==> smoke test passed in $(k8s_elapsed "$T0") s"
printf '    %s\n' "${timings[@]}"

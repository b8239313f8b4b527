#!/usr/bin/env bash
# Starts a fresh single-node Kubernetes v1.20.2 cluster (etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler, kubelet on Docker, kube-proxy, a cluster DNS) and waits
# until a Job can run on it. Builds the binaries first when they are not cached (build.sh).
#
#   scripts/k8s-testenv/start.sh     # then: export KUBECONFIG=$AGENTSMITH_K8S_RUN/kubeconfig
#   scripts/k8s-testenv/stop.sh
#
# Environment:
#   AGENTSMITH_K8S_CACHE          built binaries (see build.sh)
#   AGENTSMITH_K8S_RUN            state, logs and kubeconfig (default ${TMPDIR:-/tmp}/agentsmith-k8s);
#                                 wiped at every start
#   AGENTSMITH_K8S_START_TIMEOUT  seconds to wait for a Ready cluster (default 120)
#   AGENTSMITH_K8S_KEEP_ON_FAILURE=1  leave a cluster that failed to become Ready running
#
# Writes $RUN/kubeconfig (cluster admin), $RUN/env (shell assignments: addresses, ports, paths),
# $RUN/pids ("NAME PID" per started process), $RUN/logs/*.log. Listens only on 127.0.0.1 and the
# Docker bridge address; pod traffic cannot leave the machine (a mangle FORWARD rule drops it).
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
# shellcheck source=scripts/k8s-testenv/config.sh
. scripts/k8s-testenv/config.sh

TIMEOUT=${AGENTSMITH_K8S_START_TIMEOUT:-120}
RUN=$K8S_RUN
BIN=$K8S_BIN
NODE=$K8S_NODE
PKI=$RUN/pki
LOGS=$RUN/logs
KUBECONFIGS=$RUN/kubeconfigs

[ "$(id -u)" = 0 ] || { echo "ERROR: start.sh runs kubelet and edits iptables: run it as root" >&2; exit 1; }

scripts/k8s-testenv/build.sh
ensure_packages dnsmasq:dnsmasq-base etcd:etcd-server openssl:openssl iptables:iptables curl:curl
ensure_docker

echo "==> starting a Kubernetes $K8S_VERSION cluster in $RUN"

# A previous cluster of this run directory is stopped first; nothing of it may survive the wipe.
if [ -f "$RUN/pids" ]; then
  t=$EPOCHREALTIME
  scripts/k8s-testenv/stop.sh --quiet
  echo "    the previous cluster stopped ($(k8s_elapsed "$t") s)"
else
  scripts/k8s-testenv/stop.sh --quiet # leftovers of a start that died: rules, sysctls, mounts
fi
if awk -v p="$RUN/" 'index($2, p) == 1 { found = 1 } END { exit !found }' /proc/self/mounts; then
  echo "ERROR: mounts under $RUN remain after stop.sh:" >&2
  awk -v p="$RUN/" 'index($2, p) == 1 { print "  " $2 }' /proc/self/mounts >&2
  exit 1
fi
T0=$EPOCHREALTIME
rm -rf "$RUN"
mkdir -p "$RUN" "$LOGS" "$KUBECONFIGS" "$RUN/dns"
(umask 077 && mkdir -p "$PKI")

read -r BRIDGE SUBNET < <(k8s_bridge)
CGROUP_DRIVER=$(docker info -f '{{.CgroupDriver}}')

# --- ports: the usual ones when free, else the next free one ---------------------------------------
taken=" "
pick_port() { # VARIABLE PREFERRED_PORT
  local port=$2
  while [ -n "$(ss -Hltn "sport = :$port")" ] || [[ $taken == *" $port "* ]]; do
    port=$((port + 1))
  done
  taken="$taken$port "
  printf -v "$1" %s "$port"
}
dns_port_taken=$(ss -Hlun 'sport = :53' | awk -v b="$BRIDGE:53" '
  { for (i = 1; i <= NF; i++) if ($i == b || $i ~ /^(0\.0\.0\.0|\*|\[::\]):53$/) { print; next } }')
if [ -n "$dns_port_taken" ]; then
  echo "ERROR: something already listens on $BRIDGE:53 (udp), which the cluster DNS needs:" >&2
  echo "$dns_port_taken" >&2
  exit 1
fi
pick_port API_PORT 6443
pick_port ETCD_PORT 12379
pick_port ETCD_PEER_PORT 12380
pick_port CM_PORT 10257
pick_port SCHED_PORT 10259
pick_port KUBELET_PORT 10250
pick_port KUBELET_HEALTHZ_PORT 10248
pick_port PROXY_HEALTHZ_PORT 10256
pick_port PROXY_METRICS_PORT 10249
API_URL=https://$BRIDGE:$API_PORT

# --- what has been started, and failing with the log that tells why --------------------------------
declare -A started_pid
started_names=()
start_proc() { # NAME COMMAND...: in a session of its own, so stop.sh can end it with its children
  local name=$1
  shift
  setsid "$@" >"$LOGS/$name.log" 2>&1 </dev/null &
  started_pid[$name]=$!
  started_names+=("$name")
  echo "$name $!" >>"$RUN/pids"
}
stop_after_failure() {
  if [ "${AGENTSMITH_K8S_KEEP_ON_FAILURE:-}" = 1 ]; then
    echo "AGENTSMITH_K8S_KEEP_ON_FAILURE=1: the cluster is left running; scripts/k8s-testenv/stop.sh ends it" >&2
  else
    scripts/k8s-testenv/stop.sh --quiet >&2 || true
    echo "(what had started is stopped again; its logs stay in $LOGS)" >&2
  fi
}
failed=""
fail() { # MESSAGE [COMPONENT]
  failed=1
  echo "ERROR: $1 ($(k8s_elapsed "$T0") s after start)" >&2
  local names=("${2:-}") name
  [ -n "${2:-}" ] || names=("${started_names[@]}")
  for name in "${names[@]}"; do
    [ -s "$LOGS/$name.log" ] || continue
    echo "---- the end of $LOGS/$name.log ----" >&2
    grep -v '^Flag --.* has been deprecated' "$LOGS/$name.log" | tail -n 25 >&2
  done
  echo "----" >&2
  stop_after_failure
  exit 1
}
# Any other failure (a command under set -e) stops what was started too.
on_exit() {
  local rc=$?
  [ $rc -eq 0 ] || [ -n "$failed" ] || {
    echo "ERROR: start.sh failed (exit $rc); logs in $LOGS" >&2
    stop_after_failure
  }
}
trap on_exit EXIT
check_alive() {
  local name
  for name in "${started_names[@]}"; do
    kill -0 "${started_pid[$name]}" 2>/dev/null || fail "$name exited" "$name"
  done
}
DEADLINE=$((SECONDS + TIMEOUT))
wait_until() { # DESCRIPTION COMPONENT COMMAND...: polls until COMMAND succeeds
  local what=$1 component=$2
  shift 2
  until "$@" >/dev/null 2>&1; do
    check_alive
    ((SECONDS < DEADLINE)) || fail "timed out after ${TIMEOUT} s waiting for $what" "$component"
    sleep 0.2
  done
}

# --- etcd first (it needs none of what follows), then certificates, tokens, kubeconfigs ------------
etcd_started=$EPOCHREALTIME
start_proc etcd etcd --name agentsmith --data-dir "$RUN/etcd" \
  --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
  --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-cluster "agentsmith=http://127.0.0.1:$ETCD_PEER_PORT"

t=$EPOCHREALTIME
# A CA of this run signs the API server's serving certificate (so clients verify it), the kubelet's
# serving certificate and the API server's client certificate for the kubelet (O=system:masters,
# so `kubectl logs` and exec are authorised).
keygen=()
for key in ca apiserver apiserver-kubelet-client kubelet sa; do
  openssl genrsa -out "$PKI/$key.key" 2048 2>/dev/null &
  keygen+=($!)
done
for pid in "${keygen[@]}"; do wait "$pid"; done
openssl req -x509 -new -sha256 -days 30 -subj "/CN=agentsmith-k8s-ca" -key "$PKI/ca.key" -out "$PKI/ca.crt" \
  -config <(printf '[req]\ndistinguished_name=dn\n[dn]\n[v3]\n%s\n%s\n%s\n' \
    'basicConstraints=critical,CA:TRUE' 'keyUsage=critical,keyCertSign,cRLSign' \
    'subjectKeyIdentifier=hash') -extensions v3 2>/dev/null
issue() { # NAME SUBJECT EXTENDED_KEY_USAGE [SUBJECT_ALT_NAMES]
  openssl req -new -subj "$2" -key "$PKI/$1.key" -out "$PKI/$1.csr" 2>/dev/null
  openssl x509 -req -sha256 -days 30 -in "$PKI/$1.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" \
    -CAcreateserial -out "$PKI/$1.crt" \
    -extfile <(printf '%s\n' 'basicConstraints=critical,CA:FALSE' \
      'keyUsage=critical,digitalSignature,keyEncipherment' "extendedKeyUsage=$3" \
      ${4:+"subjectAltName=$4"}) 2>/dev/null
  rm "$PKI/$1.csr"
}
issue apiserver "/CN=kube-apiserver" serverAuth \
  "IP:$BRIDGE,IP:127.0.0.1,IP:$K8S_API_SERVICE_IP,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.$K8S_DOMAIN"
issue apiserver-kubelet-client "/CN=kube-apiserver-kubelet-client/O=system:masters" clientAuth
issue kubelet "/CN=$NODE" serverAuth "IP:$BRIDGE,DNS:$NODE"
openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null

token() { openssl rand -hex 16; }
ADMIN_TOKEN=$(token) NODE_TOKEN=$(token) CM_TOKEN=$(token) SCHED_TOKEN=$(token) PROXY_TOKEN=$(token)
# token,user,uid,"groups": the users the default RBAC policy already grants their roles.
cat >"$PKI/tokens.csv" <<CSV
$ADMIN_TOKEN,admin,admin,"system:masters"
$NODE_TOKEN,system:node:$NODE,node,"system:nodes"
$CM_TOKEN,system:kube-controller-manager,kube-controller-manager,""
$SCHED_TOKEN,system:kube-scheduler,kube-scheduler,""
$PROXY_TOKEN,system:kube-proxy,kube-proxy,""
CSV
CA_DATA=$(base64 -w0 <"$PKI/ca.crt")
write_kubeconfig() { # FILE TOKEN
  (umask 077 && cat >"$1") <<YAML
apiVersion: v1
kind: Config
clusters:
- name: agentsmith
  cluster:
    server: $API_URL
    certificate-authority-data: $CA_DATA
users:
- name: agentsmith
  user:
    token: $2
contexts:
- name: agentsmith
  context:
    cluster: agentsmith
    user: agentsmith
current-context: agentsmith
YAML
}
write_kubeconfig "$RUN/kubeconfig" "$ADMIN_TOKEN"
write_kubeconfig "$KUBECONFIGS/kubelet" "$NODE_TOKEN"
write_kubeconfig "$KUBECONFIGS/controller-manager" "$CM_TOKEN"
write_kubeconfig "$KUBECONFIGS/scheduler" "$SCHED_TOKEN"
write_kubeconfig "$KUBECONFIGS/kube-proxy" "$PROXY_TOKEN"
echo "    certificates and tokens ($(k8s_elapsed "$t") s)"

{
  echo "# Written by scripts/k8s-testenv/start.sh: the running cluster, as shell assignments."
  printf '%s=%q\n' \
    KUBECONFIG "$RUN/kubeconfig" \
    K8S_API_URL "$API_URL" \
    K8S_BRIDGE "$BRIDGE" \
    K8S_BRIDGE_SUBNET "$SUBNET" \
    K8S_NODE "$NODE" \
    K8S_SERVICE_CIDR "$K8S_SERVICE_CIDR" \
    K8S_DNS "$BRIDGE:53" \
    K8S_DOMAIN "$K8S_DOMAIN" \
    K8S_KUBECTL "$BIN/kubectl" \
    K8S_ETCD_URL "http://127.0.0.1:$ETCD_PORT" \
    K8S_PORTS "apiserver=$API_PORT etcd=$ETCD_PORT etcd-peer=$ETCD_PEER_PORT controller-manager=$CM_PORT scheduler=$SCHED_PORT kubelet=$KUBELET_PORT kubelet-healthz=$KUBELET_HEALTHZ_PORT kube-proxy-healthz=$PROXY_HEALTHZ_PORT kube-proxy-metrics=$PROXY_METRICS_PORT"
} >"$RUN/env"

# --- host settings the components change, restored by stop.sh -------------------------------------
# kubelet writes a few fixed host paths whatever its flags say (dockershim's pod logs, the device
# plugin socket): note what is there now, so stop.sh removes only what this cluster added.
mkdir -p "$RUN/host-paths"
for dir in /var/lib/kubelet /var/log/pods /var/log/containers; do
  if [ -d "$dir" ]; then
    find "$dir" -mindepth 1 -maxdepth 1 -printf '%f\n' >"$RUN/host-paths/${dir//\//_}"
  else
    echo "$dir" >>"$RUN/host-paths/absent"
  fi
done
# kubelet sets vm/kernel tunables and kube-proxy route_localnet; stop.sh puts the old values back.
for key in vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops \
  kernel.keys.root_maxkeys kernel.keys.root_maxbytes net.ipv4.conf.all.route_localnet; do
  value=$(sysctl -n "$key" 2>/dev/null) && echo "$key $value"
done >"$RUN/sysctl.saved"
# With dockerd --iptables=false nothing masquerades pod traffic, and an address nobody programmed
# would be routed out of the machine: drop everything from the bridge that is not for the bridge.
# kube-proxy 1.20 sets route_localnet=1, which lets a pod that crafts packets reach services bound
# to the host's loopback (etcd among them; CVE-2020-8558). kubelet's guard against that comes with
# the iptables util chains it must not make here, so drop such packets before routing instead.
MANGLE_RULES=("FORWARD -i docker0 ! -o docker0 -j DROP" "PREROUTING -i docker0 -d 127.0.0.0/8 -j DROP")
for rule in "${MANGLE_RULES[@]}"; do
  read -ra words <<<"$rule"
  if ! iptables -t mangle -C "${words[@]}" 2>/dev/null; then
    iptables -t mangle -I "${words[@]}"
    echo "$rule" >>"$RUN/mangle-rules.added"
  fi
done

KCTL=("$BIN/kubectl" --kubeconfig "$RUN/kubeconfig" --request-timeout=5s)
CURL=(curl -fsS --max-time 2 --cacert "$PKI/ca.crt" -H "Authorization: Bearer $ADMIN_TOKEN")

# --- etcd (started above), then the API server ----------------------------------------------------
wait_until "etcd health" etcd curl -fsS --max-time 1 "http://127.0.0.1:$ETCD_PORT/health"
echo "    etcd ready on 127.0.0.1:$ETCD_PORT ($(k8s_elapsed "$etcd_started") s after its start)"

t=$EPOCHREALTIME
# Bound to the bridge address, not loopback: pods reach it through the kubernetes Service, whose
# endpoint is this address.
start_proc kube-apiserver "$BIN/kube-apiserver" \
  --advertise-address="$BRIDGE" --bind-address="$BRIDGE" --secure-port="$API_PORT" --insecure-port=0 \
  --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
  --cert-dir="$PKI/apiserver" --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
  --client-ca-file="$PKI/ca.crt" --token-auth-file="$PKI/tokens.csv" \
  --authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction \
  --service-account-issuer="https://kubernetes.default.svc.$K8S_DOMAIN" \
  --service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
  --service-cluster-ip-range="$K8S_SERVICE_CIDR" \
  --kubelet-client-certificate="$PKI/apiserver-kubelet-client.crt" \
  --kubelet-client-key="$PKI/apiserver-kubelet-client.key" \
  --kubelet-certificate-authority="$PKI/ca.crt" --kubelet-preferred-address-types=InternalIP \
  --profiling=false --feature-gates="$K8S_FEATURE_GATES"
wait_until "the API server's /readyz" kube-apiserver "${CURL[@]}" "$API_URL/readyz"
echo "    kube-apiserver ready on $API_URL ($(k8s_elapsed "$t") s)"

# --- the rest, all at once ----------------------------------------------------------------------------
t=$EPOCHREALTIME
start_proc kube-controller-manager "$BIN/kube-controller-manager" \
  --kubeconfig="$KUBECONFIGS/controller-manager" \
  --authentication-kubeconfig="$KUBECONFIGS/controller-manager" \
  --authorization-kubeconfig="$KUBECONFIGS/controller-manager" \
  --bind-address=127.0.0.1 --secure-port="$CM_PORT" --port=0 --cert-dir="$PKI/controller-manager" \
  --controllers='*' --leader-elect=false --use-service-account-credentials=true \
  --service-account-private-key-file="$PKI/sa.key" --root-ca-file="$PKI/ca.crt" \
  --cluster-signing-cert-file="$PKI/ca.crt" --cluster-signing-key-file="$PKI/ca.key" \
  --service-cluster-ip-range="$K8S_SERVICE_CIDR" \
  --flex-volume-plugin-dir="$RUN/controller-manager/volume-plugins" \
  --node-monitor-period=1s --profiling=false --feature-gates="$K8S_FEATURE_GATES"
start_proc kube-scheduler "$BIN/kube-scheduler" \
  --kubeconfig="$KUBECONFIGS/scheduler" \
  --authentication-kubeconfig="$KUBECONFIGS/scheduler" --authorization-kubeconfig="$KUBECONFIGS/scheduler" \
  --bind-address=127.0.0.1 --secure-port="$SCHED_PORT" --port=0 --cert-dir="$PKI/scheduler" \
  --leader-elect=false --profiling=false --feature-gates="$K8S_FEATURE_GATES"

# Cluster DNS: only the ClusterIP Services (the watcher's hosts file), NXDOMAIN for every other
# name (--address=/#/) and no upstream, so no query leaves the machine. Root keeps the right to
# re-read a hosts file under a run directory that may be private.
: >"$RUN/dns/hosts"
start_proc dnsmasq dnsmasq -C /dev/null --keep-in-foreground --user=root \
  --listen-address="$BRIDGE" --bind-interfaces --port=53 --no-resolv --no-hosts --address='/#/' \
  --addn-hosts="$RUN/dns/hosts" --pid-file="$RUN/dns/dnsmasq.pid"
start_proc dns-watcher scripts/k8s-testenv/dns-watcher.sh "$BIN/kubectl" "$RUN/kubeconfig" \
  "$RUN/dns/hosts" "$K8S_DOMAIN" "${started_pid[dnsmasq]}"

start_proc kube-proxy "$BIN/kube-proxy" --kubeconfig="$KUBECONFIGS/kube-proxy" \
  --hostname-override="$NODE" --proxy-mode=iptables --bind-address=127.0.0.1 --cluster-cidr="$SUBNET" \
  --nodeport-addresses="$BRIDGE/32" --oom-score-adj=0 \
  --healthz-bind-address="127.0.0.1:$PROXY_HEALTHZ_PORT" --metrics-bind-address="127.0.0.1:$PROXY_METRICS_PORT" \
  --conntrack-max-per-core=0 --conntrack-tcp-timeout-established=0 --conntrack-tcp-timeout-close-wait=0 \
  --profiling=false --feature-gates="$K8S_FEATURE_GATES"

# --oom-score-adj=0 and the patched sandbox score: root here lacks CAP_SYS_RESOURCE. The node IP
# must be the bridge address: loopback is refused, and without an address `kubectl logs` fails.
start_proc kubelet "$BIN/kubelet" --kubeconfig="$KUBECONFIGS/kubelet" --hostname-override="$NODE" \
  --container-runtime=docker --network-plugin= --pod-infra-container-image="$K8S_PAUSE_IMAGE" \
  --cgroup-driver="$CGROUP_DRIVER" --fail-swap-on=false --oom-score-adj=0 \
  --node-ip="$BRIDGE" --address="$BRIDGE" --port="$KUBELET_PORT" --read-only-port=0 \
  --healthz-bind-address=127.0.0.1 --healthz-port="$KUBELET_HEALTHZ_PORT" \
  --anonymous-auth=false --client-ca-file="$PKI/ca.crt" \
  --authentication-token-webhook --authorization-mode=Webhook \
  --tls-cert-file="$PKI/kubelet.crt" --tls-private-key-file="$PKI/kubelet.key" \
  --make-iptables-util-chains=false \
  --root-dir="$RUN/kubelet" --cert-dir="$RUN/kubelet/pki" \
  --experimental-dockershim-root-directory="$RUN/dockershim" \
  --volume-plugin-dir="$RUN/kubelet/volume-plugins" --seccomp-profile-root="$RUN/kubelet/seccomp" \
  --node-status-update-frequency=2s \
  --image-gc-high-threshold=100 --image-gc-low-threshold=99 \
  --eviction-hard='memory.available<100Mi,nodefs.available<1%,nodefs.inodesFree<1%,imagefs.available<1%' \
  --cluster-dns="$BRIDGE" --cluster-domain="$K8S_DOMAIN" \
  --feature-gates="$K8S_FEATURE_GATES"

# --- Ready: node Ready and untainted, default ServiceAccount token, DNS serving -----------------------
node_ready() {
  [ "$("${KCTL[@]}" get node "$NODE" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" = True ]
}
wait_until "node $NODE to be Ready" kubelet node_ready
echo "    node $NODE Ready ($(k8s_elapsed "$t") s after the other components started)"

# The node lifecycle controller lifts the not-ready taints within a monitor period (1 s here);
# should they linger, lift them by hand.
node_untainted() {
  local taints
  taints=$("${KCTL[@]}" get node "$NODE" -o jsonpath='{.spec.taints}') && [ -z "$taints" ]
}
ready_at=$SECONDS
until node_untainted; do
  check_alive
  ((SECONDS < DEADLINE)) || fail "timed out waiting for node $NODE to lose its taints" kube-controller-manager
  if ((SECONDS - ready_at >= 5)); then
    echo "    removing lingering taints: $("${KCTL[@]}" get node "$NODE" -o jsonpath='{.spec.taints}')"
    "${KCTL[@]}" taint node "$NODE" node.kubernetes.io/not-ready- >/dev/null 2>&1 || true
    "${KCTL[@]}" taint node "$NODE" node.kubernetes.io/unreachable- >/dev/null 2>&1 || true
    ready_at=$SECONDS
  fi
  sleep 0.2
done

default_sa_token() {
  local secret
  secret=$("${KCTL[@]}" -n default get serviceaccount default -o jsonpath='{.secrets[0].name}')
  [ -n "$secret" ] && "${KCTL[@]}" -n default get secret "$secret"
}
wait_until "the default ServiceAccount's token Secret" kube-controller-manager default_sa_token
wait_until "the cluster DNS to know the kubernetes Service" dns-watcher \
  grep -q " kubernetes.default.svc.$K8S_DOMAIN\$" "$RUN/dns/hosts"
check_alive

echo "==> Kubernetes $K8S_VERSION Ready in $(k8s_elapsed "$T0") s: API $API_URL, DNS $BRIDGE:53, node $NODE"
echo "    export KUBECONFIG=$RUN/kubeconfig    (addresses and ports: $RUN/env; logs: $LOGS; stop: scripts/k8s-testenv/stop.sh)"

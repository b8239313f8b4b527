# shellcheck shell=bash disable=SC2034  # the variables are for the scripts that source this file
# Locations and fixed settings shared by the k8s-testenv scripts (sourced, not run).
#
# Environment:
#   AGENTSMITH_K8S_CACHE  built binaries (default $HOME/.cache/agentsmith/k8s-1.20.2)
#   AGENTSMITH_K8S_RUN    state of the running cluster (default ${TMPDIR:-/tmp}/agentsmith-k8s)

K8S_VERSION=v1.20.2
K8S_CACHE=${AGENTSMITH_K8S_CACHE:-$HOME/.cache/agentsmith/k8s-1.20.2}
K8S_BIN=$K8S_CACHE/bin
# Normalised, because stop.sh finds the cluster's mounts by this prefix.
K8S_RUN=$(realpath -m "${AGENTSMITH_K8S_RUN:-${TMPDIR:-/tmp}/agentsmith-k8s}")
K8S_NODE=agentsmith-node
K8S_SERVICE_CIDR=10.96.0.0/24
K8S_API_SERVICE_IP=10.96.0.1
K8S_DOMAIN=cluster.local
K8S_FEATURE_GATES=TTLAfterFinished=true
K8S_PAUSE_IMAGE=k8s.gcr.io/pause:3.2

# Prints the Docker bridge's address and subnet ("172.17.0.1 172.17.0.0/16"): pods reach the host,
# the API server and the cluster DNS there.
k8s_bridge() {
  local addr subnet
  addr=$(ip -4 -o addr show dev docker0 2>/dev/null | awk '{ split($4, a, "/"); print a[1]; exit }')
  subnet=$(ip -4 route show dev docker0 proto kernel 2>/dev/null | awk '{ print $1; exit }')
  echo "${addr:-172.17.0.1} ${subnet:-172.17.0.0/16}"
}

# Seconds since $1 (an $EPOCHREALTIME value), one decimal.
k8s_elapsed() {
  awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'
}

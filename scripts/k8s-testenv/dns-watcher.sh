#!/usr/bin/env bash
# Keeps the cluster DNS's hosts file equal to the cluster's ClusterIP Services: one
# "CLUSTERIP name.namespace.svc.DOMAIN" line each, then SIGHUP to dnsmasq so it re-reads the file.
# Started (and stopped, with its kubectl child, as one process group) by start.sh / stop.sh.
#
#   dns-watcher.sh KUBECTL KUBECONFIG HOSTS_FILE DOMAIN DNSMASQ_PID
#
# A watch ends now and then (server time-out, API restart); each new watch begins with the full
# list as ADDED events, so the table is rebuilt from scratch every time and cannot go stale.
set -uo pipefail

kubectl=$1 kubeconfig=$2 hosts=$3 domain=$4 dnsmasq_pid=$5
declare -A service_ip

write_hosts() {
  local key
  for key in "${!service_ip[@]}"; do
    printf '%s %s.svc.%s\n' "${service_ip[$key]}" "$key" "$domain"
  done | sort >"$hosts.tmp"
  mv "$hosts.tmp" "$hosts"
  kill -HUP "$dnsmasq_pid"
}

apply_event() { # TYPE NAMESPACE NAME CLUSTER_IP
  case $1 in
    ADDED | MODIFIED)
      # Headless ("None") and ExternalName ("<none>") Services get no record.
      if [[ $4 =~ ^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$ ]]; then
        service_ip[$3.$2]=$4
      else
        unset "service_ip[$3.$2]"
      fi
      ;;
    DELETED) unset "service_ip[$3.$2]" ;;
  esac
}

while kill -0 "$dnsmasq_pid" 2>/dev/null; do
  service_ip=()
  while read -r type ns name ip; do
    apply_event "$type" "$ns" "$name" "$ip"
    # Events come in bursts (the initial list above all): write once per burst, taking the
    # events already waiting. `read -t 0` only asks whether input is there; a read with a
    # real time-out would swallow half a line that arrived in two pieces (and the Service
    # with it: its name never resolved, seen as a runner's "dns error" in the live test).
    while read -r -t 0 && read -r type ns name ip; do
      apply_event "$type" "$ns" "$name" "$ip"
    done
    write_hosts
  done < <("$kubectl" --kubeconfig "$kubeconfig" get services --all-namespaces --watch \
    --output-watch-events --no-headers \
    -o custom-columns=TYPE:.type,NS:.object.metadata.namespace,NAME:.object.metadata.name,IP:.object.spec.clusterIP)
  sleep 1
done

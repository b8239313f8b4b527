# Shared set-up of scripts/demo and scripts/test (sourced, not run).

# Installs the Debian packages given when their command is missing: "command:package ...".
ensure_packages() {
  local missing=() extra=()
  # --no-recommends: the packages alone (promtool's package recommends a node exporter).
  if [ "${1:-}" = --no-recommends ]; then extra+=(--no-install-recommends); shift; fi
  for pair in "$@"; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "==> installing ${missing[*]} (apt)"
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq -o DPkg::Lock::Timeout=300 "${extra[@]}" "${missing[@]}" >/dev/null
}

# Whether something listens on 127.0.0.1:$1.
port_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Waits up to $2 seconds for redis on port $1 to answer PING.
wait_for_redis() {
  local port=$1 limit=$2 i
  for ((i = 0; i < limit * 10; i++)); do
    redis-cli -p "$port" ping >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "redis-server did not answer on port $port" >&2
  return 1
}

# Makes a Docker engine answer: installs docker.io when dockerd is missing (a docker client alone,
# e.g. in /usr/local/bin, is not enough), and starts dockerd in the background when `docker info`
# fails. These machines have no systemd as PID 1, so nothing else starts it. --iptables=false:
# containers here need no NAT, and dockerd must not rewrite the host's firewall.
ensure_docker() {
  ensure_packages dockerd:docker.io
  docker info >/dev/null 2>&1 && return 0
  local log="${TMPDIR:-/tmp}/agentsmith-dockerd.log" sudo="" pid deadline=$((SECONDS + 30))
  [ "$(id -u)" = 0 ] || sudo="sudo"
  echo "==> starting dockerd --iptables=false (log: $log)"
  # In a session of its own, so a ctrl-c of the calling script does not stop it too.
  $sudo setsid -w nohup dockerd --iptables=false >"$log" 2>&1 </dev/null &
  pid=$!
  while ((SECONDS < deadline)); do
    docker info >/dev/null 2>&1 && return 0
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.2
  done
  docker info >/dev/null 2>&1 && return 0
  if kill -0 "$pid" 2>/dev/null; then
    echo "dockerd did not answer within 30 s; the end of $log:" >&2
  else
    echo "dockerd exited; the end of $log:" >&2
  fi
  tail -n 20 "$log" >&2 || true
  return 1
}

# Installs the statically linked busybox that the local images are made of.
ensure_busybox() {
  [ -x /bin/busybox ] || ensure_packages busybox:busybox-static
}

# Prints the Debian mirror this machine's apt sources use for "bookworm main" (one-line
# sources.list and deb822 *.sources alike), preferring a URI that names debian;
# http://deb.debian.org/debian when there is none.
debian_mirror() {
  local files=() f
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] && files+=("$f")
  done
  local candidates=""
  if [ ${#files[@]} -gt 0 ]; then
    candidates=$(awk '
      function has(list, word,   n, a, i) {
        n = split(list, a, /[ \t]+/)
        for (i = 1; i <= n; i++) if (a[i] == word) return 1
        return 0
      }
      function stanza_end() {
        if (has(f["types"], "deb") && has(f["suites"], "bookworm") && has(f["components"], "main") && f["enabled"] != "no") {
          split(f["uris"], u, /[ \t]+/); print u[1]
        }
        delete f
      }
      FNR == 1 { if (deb822) stanza_end(); deb822 = FILENAME ~ /\.sources$/ }
      /^[ \t]*#/ { next }
      !deb822 {
        if ($1 != "deb") next
        i = 2
        if ($i ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
        uri = $(i); suite = $(i + 1)
        comps = ""; for (j = i + 2; j <= NF; j++) comps = comps " " $j
        if (suite == "bookworm" && has(comps, "main")) print uri
        next
      }
      /^[ \t]*$/ { stanza_end(); next }
      /^[ \t]/ { f[key] = f[key] " " $0; next }
      {
        key = tolower(substr($0, 1, index($0, ":") - 1))
        f[key] = substr($0, index($0, ":") + 1)
        sub(/^[ \t]+/, "", f[key])
      }
      END { if (deb822) stanza_end() }
    ' "${files[@]}")
  fi
  local pick
  pick=$(grep -m1 debian <<<"$candidates" || head -n1 <<<"$candidates")
  echo "${pick:-http://deb.debian.org/debian}"
}

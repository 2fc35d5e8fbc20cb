#!/usr/bin/env bash
# A three-node RabbitMQ cluster of its own on this machine, from Debian's
# rabbitmq-server package, beside (never instead of) a broker the machine
# already runs: own node names, AMQP and distribution ports, data, log and
# config directories, an empty plugin list and its own Erlang cookie. Nothing
# here reads or writes /etc/rabbitmq, /var/lib/rabbitmq or the default node.
#
#   scripts/cluster.sh start        # start, cluster and wait until healthy; prints the URL list
#   scripts/cluster.sh status       # each node: pid, port, running or not; the cluster's view
#   scripts/cluster.sh stop         # kill every node and delete the directory
#   scripts/cluster.sh url          # WARDEN_AMQP_URL for the cluster (comma-separated)
#   scripts/cluster.sh kill N       # SIGKILL node N (1-3): a crash, for chaos tests
#   scripts/cluster.sh start-node N # start node N again (after kill), wait until it is back
#   scripts/cluster.sh restart N    # stop node N cleanly and start it again (a rolling upgrade step)
#   scripts/cluster.sh leader QUEUE # the node number (1-3) leading a quorum queue
#   scripts/cluster.sh members QUEUE # how many nodes hold a replica of a quorum queue
#
# Environment: WARDEN_CLUSTER_DIR (default /tmp/warden-cluster), WARDEN_CLUSTER_PORT
# (first AMQP port, default 5701; nodes use PORT, PORT+1, PORT+2 and distribution
# ports PORT+20000…), WARDEN_CLUSTER_NAME (node name stem, default warden-c).
# A `start` that fails tears down whatever it started; run as root (it uses
# runuser -u rabbitmq) and installs rabbitmq-server from Debian when missing.
set -euo pipefail

BASE="${WARDEN_CLUSTER_DIR:-/tmp/warden-cluster}"
PORT="${WARDEN_CLUSTER_PORT:-5701}"
STEM="${WARDEN_CLUSTER_NAME:-warden-c}"
HOST=localhost
NODES=(1 2 3)
# The package's scripts themselves, not the /usr/sbin wrappers: those cd to
# /var/lib/rabbitmq and use its cookie (HOME=.), and rabbitmq-server's wrapper
# writes the machine broker's startup log.
RMQ_BIN=/usr/lib/rabbitmq/bin

say() { echo "cluster: $*" >&2; }
die() { say "$*"; exit 1; }

node_name() { echo "$STEM$1@$HOST"; }
amqp_port() { echo $((PORT + $1 - 1)); }
dist_port() { echo $((PORT + 20000 + $1 - 1)); }
node_dir() { echo "$BASE/n$1"; }
pid_of() { cat "$(node_dir "$1")/pid" 2>/dev/null || true; }
alive() { local p; p=$(pid_of "$1"); [[ -n "$p" ]] && kill -0 "$p" 2>/dev/null; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# The environment a node (or a CLI tool talking to it) runs with. HOME points
# at the cluster's directory so Erlang reads the cluster's own cookie, not
# /var/lib/rabbitmq/.erlang.cookie; RABBITMQ_CONF_ENV_FILE points away from
# /etc/rabbitmq/rabbitmq-env.conf, whose NODENAME would otherwise apply.
node_env() {
  local n=$1 d
  d=$(node_dir "$n")
  echo HOME="$BASE/home" \
    RABBITMQ_CONF_ENV_FILE="$BASE/rabbitmq-env.conf" \
    RABBITMQ_NODENAME="$(node_name "$n")" \
    RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
    RABBITMQ_NODE_PORT="$(amqp_port "$n")" \
    RABBITMQ_DIST_PORT="$(dist_port "$n")" \
    RABBITMQ_CTL_DIST_PORT_MIN="$(($(dist_port "$n") + 10000))" \
    RABBITMQ_CTL_DIST_PORT_MAX="$(($(dist_port "$n") + 10010))" \
    RABBITMQ_MNESIA_BASE="$d/mnesia" \
    RABBITMQ_MNESIA_DIR="$d/mnesia/$(node_name "$n")" \
    RABBITMQ_LOG_BASE="$d/log" \
    RABBITMQ_PID_FILE="$d/pid" \
    RABBITMQ_CONFIG_FILE="$d/rabbitmq.conf" \
    RABBITMQ_ADVANCED_CONFIG_FILE="$d/advanced.config" \
    RABBITMQ_ENABLED_PLUGINS_FILE="$BASE/enabled_plugins" \
    RABBITMQ_PLUGINS_EXPAND_DIR="$d/plugins-expand" \
    ERL_EPMD_ADDRESS=127.0.0.1
}

as_rabbitmq() { # node, command...
  local n=$1; shift
  # shellcheck disable=SC2046
  runuser -u rabbitmq -- env $(node_env "$n") "$@"
}
ctl() { local n=$1; shift; as_rabbitmq "$n" "$RMQ_BIN/rabbitmqctl" -q -n "$(node_name "$n")" "$@"; }

prepare() {
  [[ -x "$RMQ_BIN/rabbitmq-server" ]] || {
    say "installing rabbitmq-server from Debian"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rabbitmq-server >/dev/null
    # The package starts the machine's own broker; that one is not ours to touch.
  }
  mkdir -p "$BASE/home"
  if [[ ! -s "$BASE/home/.erlang.cookie" ]]; then
    # A fresh cookie per cluster: the machine's own node cannot be reached with it.
    head -c 24 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' >"$BASE/home/.erlang.cookie"
  fi
  chmod 400 "$BASE/home/.erlang.cookie"
  : >"$BASE/rabbitmq-env.conf"
  echo '[].' >"$BASE/enabled_plugins"
  for n in "${NODES[@]}"; do
    local d; d=$(node_dir "$n")
    mkdir -p "$d/mnesia" "$d/log" "$d/plugins-expand"
    cat >"$d/rabbitmq.conf" <<EOF
listeners.tcp.1 = 127.0.0.1:$(amqp_port "$n")
loopback_users = none
# Room for a node lost mid-run: no disk or memory alarm from a busy shared machine.
disk_free_limit.absolute = 50MB
vm_memory_high_watermark.relative = 0.6
EOF
    echo "[{kernel, [{inet_dist_use_interface, {127,0,0,1}}]}]." >"$d/advanced.config"
  done
  chown -R rabbitmq:rabbitmq "$BASE"
}

start_node() { # n: start detached, wait until it answers
  local n=$1 d; d=$(node_dir "$n")
  alive "$n" && return 0
  port_open "$(amqp_port "$n")" && die "port $(amqp_port "$n") is taken by something else"
  rm -f "$d/pid"
  as_rabbitmq "$n" sh -c 'exec '"$RMQ_BIN"'/rabbitmq-server >>"$RABBITMQ_LOG_BASE/stdout.log" 2>&1' </dev/null >/dev/null 2>&1 &
  # (runuser stays the node's parent: with the caller's stdout it would hold
  # a pipe open, and a caller reading to the end would wait forever)
  disown
}

wait_node() { # n, seconds: the node runs its app and its AMQP port answers
  local n=$1 limit=$2
  # `rabbitmqctl wait` waits for the pid file, then for the app to boot, and
  # gives up early if that process dies: no polling of our own.
  if ! ctl "$n" wait "$(node_dir "$n")/pid" --timeout "$limit" >/dev/null 2>&1; then
    tail -20 "$(node_dir "$n")/log/stdout.log" >&2 || true
    die "node $n did not start within ${limit}s"
  fi
  for _ in $(seq 1 $((limit * 10))); do port_open "$(amqp_port "$n")" && return 0; sleep 0.1; done
  die "node $n is up but port $(amqp_port "$n") does not answer"
}

clustered() { # does node 1 see all three running?
  local running
  running=$(ctl 1 eval 'length(rabbit_nodes:all_running()).' 2>/dev/null || echo 0)
  [[ "$running" == "${#NODES[@]}" ]]
}

cmd_start() {
  [[ $(id -u) == 0 ]] || die "run as root (it starts nodes as the rabbitmq user)"
  if clustered 2>/dev/null; then cmd_url; return 0; fi
  local t0=$SECONDS ok=
  trap '[[ -n "$ok" ]] || { say "start failed; tearing down"; cmd_stop; }' EXIT
  prepare
  for n in "${NODES[@]}"; do start_node "$n"; done
  for n in "${NODES[@]}"; do wait_node "$n" 120; done
  for n in "${NODES[@]:1}"; do
    if ! ctl "$n" eval "lists:member('$(node_name 1)', rabbit_nodes:all())." | grep -q true; then
      # Quiet on success: a joining node logs feature-flag and
      # tracking-table warnings that are expected for a fresh node.
      local log="$(node_dir "$n")/log/join.log"
      { ctl "$n" stop_app && ctl "$n" reset && ctl "$n" join_cluster "$(node_name 1)" &&
        ctl "$n" start_app; } >"$log" 2>&1 || { cat "$log" >&2; die "node $n could not join"; }
    fi
  done
  for _ in $(seq 1 600); do clustered && break; sleep 0.1; done
  clustered || die "the nodes did not form one cluster"
  ok=1
  trap - EXIT
  say "3 nodes clustered in $((SECONDS - t0)) s (AMQP ports $(amqp_port 1)-$(amqp_port 3), data in $BASE)"
  cmd_url
}

cmd_stop() {
  local n p
  for n in "${NODES[@]}"; do
    p=$(pid_of "$n")
    if [[ -n "$p" ]] && kill -0 "$p" 2>/dev/null; then kill -9 "$p" 2>/dev/null || true; fi
  done
  # The node's Erlang port programs (inet_gethost, erl_child_setup) die with it;
  # epmd is shared with the machine's broker and is left alone.
  for n in "${NODES[@]}"; do
    p=$(pid_of "$n")
    while [[ -n "$p" ]] && kill -0 "$p" 2>/dev/null; do sleep 0.05; done
  done
  case "$BASE" in /tmp/*|/var/tmp/*|"$PWD"/*) rm -rf "$BASE" ;; *) say "left $BASE in place (not under a temp dir)";; esac
}

cmd_status() {
  local n
  for n in "${NODES[@]}"; do
    if alive "$n"; then echo "node $n $(node_name "$n") pid $(pid_of "$n") amqp 127.0.0.1:$(amqp_port "$n") running"
    else echo "node $n $(node_name "$n") amqp 127.0.0.1:$(amqp_port "$n") down"; fi
  done
  if clustered; then echo "cluster: all ${#NODES[@]} nodes running"; else echo "cluster: not all nodes running"; return 1; fi
}

cmd_url() {
  local n out=()
  for n in "${NODES[@]}"; do out+=("amqp://guest:guest@127.0.0.1:$(amqp_port "$n")/%2f"); done
  (IFS=,; echo "${out[*]}")
}

cmd_kill() { local p; p=$(pid_of "$1"); [[ -n "$p" ]] || die "node $1 has no pid"; kill -9 "$p"; while kill -0 "$p" 2>/dev/null; do sleep 0.02; done; }

cmd_start_node() { start_node "$1"; wait_node "$1" 120; for _ in $(seq 1 600); do clustered && return 0; sleep 0.1; done; die "node $1 did not rejoin"; }

cmd_restart() { ctl "$1" stop "$(node_dir "$1")/pid" >/dev/null; cmd_start_node "$1"; }

cmd_leader() { # the node number leading quorum queue $1 (in vhost /)
  local q=$1 n leader
  for n in "${NODES[@]}"; do
    alive "$n" || continue
    leader=$(ctl "$n" list_queues name leader --no-table-headers 2>/dev/null | awk -v q="$q" '$1 == q {print $2}')
    [[ -n "$leader" ]] && break
  done
  [[ -n "${leader:-}" ]] || die "no leader found for $q"
  for n in "${NODES[@]}"; do [[ "$leader" == "$(node_name "$n")" ]] && { echo "$n"; return 0; }; done
  die "leader $leader is not one of this cluster's nodes"
}

cmd_members() { # how many replicas quorum queue $1 (in vhost /) has
  local n
  for n in "${NODES[@]}"; do
    alive "$n" || continue
    ctl "$n" list_queues name members --no-table-headers 2>/dev/null |
      awk -v q="$1" '$1 == q {print gsub(/@/, "@")}' | grep . && return 0
  done
  die "no quorum queue $1"
}

node_arg() { [[ "${1:-}" =~ ^[123]$ ]] || die "expected a node number 1-3"; echo "$1"; }

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  url) cmd_url ;;
  kill) cmd_kill "$(node_arg "${2:-}")" ;;
  start-node) cmd_start_node "$(node_arg "${2:-}")" ;;
  restart) cmd_restart "$(node_arg "${2:-}")" ;;
  leader) [[ -n "${2:-}" ]] || die "leader needs a queue name"; cmd_leader "$2" ;;
  members) [[ -n "${2:-}" ]] || die "members needs a queue name"; cmd_members "$2" ;;
  *) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 64 ;;
esac

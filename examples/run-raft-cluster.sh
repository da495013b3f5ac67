#!/usr/bin/env bash
# Start a 3-node geocachedb cluster on this machine (loopback only).
#
#   examples/run-raft-cluster.sh            # nodes on 50051-50053, admin on 6051-6053
#   NODES=1 examples/run-raft-cluster.sh    # a single node
#   STORAGE=btree examples/run-raft-cluster.sh
#
# Logs go to node1.log ... and data to data/node1 ... (under $WORKDIR, default
# the current directory).  Ctrl-C stops every node this script started, by PID.
set -euo pipefail

NODES=${NODES:-3}
BASE_PORT=${BASE_PORT:-50051}
ADMIN_BASE=${ADMIN_BASE:-6051}
STORAGE=${STORAGE:-lmdb}
WORKDIR=${WORKDIR:-.}
TWISTD=${TWISTD:-twistd}
EXTRA=${EXTRA:-}

command -v "$TWISTD" >/dev/null || { echo "twistd not found: run 'make run' or activate .venv" >&2; exit 2; }
mkdir -p "$WORKDIR/data"

pids=()
stop() {
  trap - INT TERM EXIT
  if [ ${#pids[@]} -gt 0 ]; then
    echo; echo "stopping nodes (pids ${pids[*]})"
    kill "${pids[@]}" 2>/dev/null || true
    for pid in "${pids[@]}"; do
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
    done
  fi
}
trap stop INT TERM EXIT

peers_for() {
  local me=$1 out="" i
  for i in $(seq 1 "$NODES"); do
    [ "$i" = "$me" ] && continue
    out="${out:+$out,}node$i=127.0.0.1:$((BASE_PORT + i - 1))"
  done
  echo "$out"
}

addrs=""
for i in $(seq 1 "$NODES"); do
  port=$((BASE_PORT + i - 1))
  admin=$((ADMIN_BASE + i - 1))
  addrs="${addrs:+$addrs,}127.0.0.1:$port"
  # shellcheck disable=SC2086
  "$TWISTD" -n --pidfile= geocache --id "node$i" \
    --listen "tcp:$port:interface=127.0.0.1" \
    --admin "tcp:$admin:interface=127.0.0.1" \
    --peers "$(peers_for "$i")" \
    --storage "$STORAGE" --data "$WORKDIR/data/node$i" $EXTRA \
    >"$WORKDIR/node$i.log" 2>&1 &
  pids+=($!)
done

sleep 1.5
for i in $(seq 1 "$NODES"); do
  if ! kill -0 "${pids[$((i - 1))]}" 2>/dev/null; then
    echo "node$i failed to start; its log ($WORKDIR/node$i.log) says:" >&2
    tail -5 "$WORKDIR/node$i.log" >&2
    exit 1
  fi
done

cat <<EOT
geocachedb: $NODES node(s) running (pids ${pids[*]}), storage $STORAGE
  logs:   $WORKDIR/node1.log ... node$NODES.log
  data:   $WORKDIR/data/node1 ... node$NODES

Connect with the CLI (any node; writes reach the leader):
  geocache-cli --addr $addrs
  geocache-cli --addr 127.0.0.1:$BASE_PORT put hello world

Admin shell (password in data/nodeN/admin.password):
  telnet 127.0.0.1 $ADMIN_BASE

Ctrl-C stops every node.
EOT
wait

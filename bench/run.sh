#!/usr/bin/env bash
# Reproduces the throughput targets: each callback path of cardcallback
# against a bare net/http handler that writes a fixed 2 KB card, under the
# same wrk load (32 connections), servers pinned to core 0 with
# GOMAXPROCS=1 and wrk on core 1, and prints each ratio with wrk's p99.
#
#   bench/run.sh                 # 10 s per run
#   DURATION=30 bench/run.sh     # seconds per run
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10}
DURATION=${DURATION%s}
CONNS=${CONNS:-32}
# Unique requests prepared for a first-click run: more than it can send,
# not many more, since each needs a stored 2 KB card in the server's heap.
REQUESTS=${REQUESTS:-$((DURATION * 40000))}
SERVER_CPU=${SERVER_CPU:-0}
WRK_CPU=${WRK_CPU:-1}

if ! command -v wrk >/dev/null; then
  echo "installing wrk" >&2
  if [ "$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq wrk >/dev/null
  else sudo apt-get update -qq && sudo apt-get install -y -qq wrk >/dev/null; fi
fi

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

go build -o "$work/cardcallback" .
go build -o "$work/ceiling" ./bench/ceiling

export FEISHU_VERIFICATION_TOKEN=bench-verification-token
export FEISHU_ENCRYPT_KEY=bench-encrypt-key
export CARDCALLBACK_ADMIN_TOKEN=bench-admin-token
PORT=18080
URL="http://127.0.0.1:$PORT/webhook/card"

for p in $PORT 18081; do
  if curl -s -o /dev/null "http://127.0.0.1:$p/"; then echo "port $p is in use: stop what listens there first" >&2; exit 1; fi
done
wait_port() { for _ in $(seq 200); do curl -s -o /dev/null "http://127.0.0.1:$1/" && return 0; sleep 0.05; done; echo "port $1 did not open" >&2; exit 1; }

# start_server ARGS...: a fresh callback server, pinned, so each path is
# measured with only its own cards in memory. Its logs are formatted and
# written as always, to /dev/null: a log file on the disk that holds the
# data file would make the file system's journal flush it with every
# fsync, which measures the disk, not the server.
start_server() {
  GOMAXPROCS=1 taskset -c "$SERVER_CPU" "$work/cardcallback" -addr "127.0.0.1:$PORT" "$@" 2>/dev/null &
  pids+=($!)
  wait_port "$PORT"
}
stop_server() { kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true; unset 'pids[-1]'; }

# emit NAME ARGS...: stores cards on the running server and prepares
# requests, then syncs so the run does not pay for writing back the cards.
emit() {
  local name=$1; shift
  "$work/cardcallback" loadtest -addr "127.0.0.1:$PORT" -prefix "om_${name}_" -emit "$work/$name.req" "$@" >/dev/null
  sync
}

# run_wrk URL FILE: prints "requests/s p99-ms non-2xx".
run_wrk() {
  local out
  out=$(taskset -c "$WRK_CPU" wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency -s bench/replay.lua "$1" -- "$2")
  local rps p99 bad
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  p99=$(echo "$out" | awk '$1=="99%" {v=$2; if (v ~ /us$/) {sub(/us/,"",v); v=v/1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v=v*1000}; print v}')
  bad=$(echo "$out" | awk '/Non-2xx/ {print $5}')
  echo "$rps ${p99:-?} ${bad:-0}"
}

# outcomes: the server's own count of what it answered, from /metrics.
outcomes() {
  curl -s -H "Authorization: Bearer $CARDCALLBACK_ADMIN_TOKEN" "http://127.0.0.1:$PORT/metrics" |
    sed -n 's/^cardcallback_callbacks_total{generation="[^"]*",outcome="\([^"]*\)"} \([0-9]*\)$/\1=\2/p' | tr '\n' ' '
}

printf '%-34s %12s %9s %7s %7s %7s  %s\n' "path" "requests/s" "p99 ms" "non-2xx" "ratio" "target" "server's count of answers"

# The ceiling, fed the same legacy clicks.
GOMAXPROCS=1 taskset -c "$SERVER_CPU" "$work/ceiling" -addr 127.0.0.1:18081 &
pids+=($!)
wait_port 18081
start_server
emit ceiling -requests 100000 -cards 100000
stop_server
read -r ceil p99 bad < <(run_wrk "http://127.0.0.1:18081/webhook/card" "$work/ceiling.req")
kill "${pids[0]}"
printf '%-34s %12.0f %9s %7s %7s %7s\n' "ceiling (net/http, fixed 2 KB)" "$ceil" "$p99" "$bad" "1.00" ""

# scenario NAME TARGET SERVER-ARGS -- EMIT-ARGS
scenario() {
  local name=$1 target=$2; shift 2
  local server=()
  while [ "$1" != "--" ]; do server+=("$1"); shift; done
  shift
  start_server "${server[@]}"
  emit "$name" "$@"
  read -r rps p99 bad < <(run_wrk "$URL" "$work/$name.req")
  printf '%-34s %12.0f %9s %7s %7.2f %7s  %s\n' "$name" "$rps" "$p99" "$bad" "$(echo "$rps / $ceil" | bc -l)" "$target" "$(outcomes)"
  stop_server
}

scenario "legacy first click" 0.70 -- -requests "$REQUESTS" -cards "$REQUESTS"
scenario "legacy repeat click" 0.85 -- -requests 100000 -cards 1000
scenario "challenge" 0.85 -- -requests 100000 -challenge
scenario "new first click, encrypted+signed" 0.60 -- -requests "$REQUESTS" -cards "$REQUESTS" -generation new
scenario "legacy first click, -data" 0.30 -data "$work/cards.db" -- -requests "$REQUESTS" -cards "$REQUESTS"

#!/usr/bin/env bash
# Reproduces the throughput targets: each callback path of cardcallback
# against a bare net/http handler that writes a fixed 2 KB card, under the
# same wrk load (32 connections), servers pinned to core 0 with
# GOMAXPROCS=1 and wrk on core 1, and prints each ratio with wrk's p99.
#
#   bench/run.sh            # 10 s per run
#   DURATION=30s bench/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
CONNS=${CONNS:-32}
REQUESTS=${REQUESTS:-600000}  # unique requests prepared per run; more than a run sends
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

for p in 18080 18081; do
  if curl -s -o /dev/null "http://127.0.0.1:$p/"; then echo "port $p is in use: stop what listens there first" >&2; exit 1; fi
done

wait_port() { for _ in $(seq 200); do curl -s -o /dev/null "http://127.0.0.1:$1/" && return 0; sleep 0.05; done; echo "port $1 did not open" >&2; exit 1; }

# start_server ARGS...: the callback server, pinned, logs to a file.
start_server() {
  GOMAXPROCS=1 taskset -c "$SERVER_CPU" "$work/cardcallback" -addr "127.0.0.1:$PORT" "$@" 2>>"$work/server.log" &
  pids+=($!)
  wait_port "$PORT"
}
stop_server() { kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true; unset 'pids[-1]'; }

# run_wrk URL FILE: prints "requests/s p99-ms non-2xx".
run_wrk() {
  local out
  out=$(taskset -c "$WRK_CPU" wrk -t1 -c"$CONNS" -d"$DURATION" --latency -s bench/replay.lua "$1" -- "$2")
  echo "$out" >>"$work/wrk.log"
  local rps p99 bad
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  p99=$(echo "$out" | awk '$1=="99%" {v=$2; if (v ~ /us$/) {sub(/us/,"",v); v=v/1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v=v*1000}; print v}')
  bad=$(echo "$out" | awk '/Non-2xx/ {print $5}')
  echo "$rps ${p99:-?} ${bad:-0}"
}

# emit NAME ARGS...: stores cards on the running server and prepares requests.
emit() {
  local name=$1; shift
  "$work/cardcallback" loadtest -addr "127.0.0.1:$PORT" -prefix "om_${name}_" -emit "$work/$name.req" "$@" >/dev/null
}

URL="http://127.0.0.1:$PORT/webhook/card"
printf '%-34s %12s %9s %7s %8s %s\n' "path" "requests/s" "p99 ms" "non-2xx" "ratio" "target"

# The ceiling, fed the same legacy clicks.
GOMAXPROCS=1 taskset -c "$SERVER_CPU" "$work/ceiling" -addr 127.0.0.1:18081 &
pids+=($!)
wait_port 18081
start_server
emit legacy-first -requests "$REQUESTS" -cards "$REQUESTS"
read -r ceil p99 bad < <(run_wrk "http://127.0.0.1:18081/webhook/card" "$work/legacy-first.req")
kill "${pids[0]}"
printf '%-34s %12.0f %9s %7s %8s %s\n' "ceiling (net/http, fixed 2 KB)" "$ceil" "$p99" "$bad" "1.00" ""

report() { # NAME TARGET FILE
  read -r rps p99 bad < <(run_wrk "$URL" "$3")
  printf '%-34s %12.0f %9s %7s %8.2f ≥ %s\n' "$1" "$rps" "$p99" "$bad" "$(echo "$rps / $ceil" | bc -l)" "$2"
}

report "legacy first click" 0.70 "$work/legacy-first.req"
emit legacy-repeat -requests 100000 -cards 1000
report "legacy repeat click" 0.85 "$work/legacy-repeat.req"
emit challenge -requests 100000 -challenge
report "challenge" 0.85 "$work/challenge.req"
emit new-first -requests "$REQUESTS" -cards "$REQUESTS" -generation new
report "new first click, encrypted+signed" 0.60 "$work/new-first.req"
stop_server

start_server -data "$work/cards.db"
emit durable-first -requests "$REQUESTS" -cards "$REQUESTS"
report "legacy first click, -data" 0.30 "$work/durable-first.req"
stop_server

echo
echo "wrk output: kept in the run's log; server log lines: $(wc -l <"$work/server.log")"

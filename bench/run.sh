#!/usr/bin/env bash
# Reproduces the throughput targets: each callback path of cardcallback
# against a bare net/http handler that writes a fixed 2 KB card, under the
# same wrk load (32 connections), servers pinned to core 0 with
# GOMAXPROCS=1 and wrk on core 1, and prints each ratio with wrk's p99.
#
# A shared machine's speed drifts by more than the differences measured
# here, within minutes, so the ceiling runs before and after every path
# and the path's ratio is taken against the mean of those two runs; all of
# it is repeated ROUNDS times and the summary gives the median of the
# rounds. A path's line is printed after the ceiling run that follows it.
#
#   bench/run.sh                       # 3 rounds of 10 s runs
#   ROUNDS=5 DURATION=5 bench/run.sh   # more, shorter rounds
#   PATHS="repeat challenge" bench/run.sh
#   BIN=/path/to/cardcallback bench/run.sh   # another build, e.g. to compare
#   SERVER_FLAGS=-fast-path=false bench/run.sh   # flags for every callback server
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10}
DURATION=${DURATION%s}
ROUNDS=${ROUNDS:-3}
CONNS=${CONNS:-32}
# Unique requests prepared for a first-click run: more than it can send,
# not many more, since each needs a stored 2 KB card in the server's heap.
REQUESTS=${REQUESTS:-$((DURATION * 100000))}
SERVER_CPU=${SERVER_CPU:-0}
WRK_CPU=${WRK_CPU:-1}
PATHS=${PATHS:-"first repeat challenge new-first data-first"}

source bench/lib.sh
need wrk

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

build "$work"
PORT=18080
CEIL_PORT=18081
URL="http://127.0.0.1:$PORT/webhook/card"

free $PORT $CEIL_PORT

# start_server SERVER-ARGS...: a fresh callback server, pinned, so each path is
# measured with only its own cards in memory. Its logs are formatted and
# written as always, to /dev/null: a log file on the disk that holds the
# data file would make the file system's journal flush it with every
# fsync, which measures the disk, not the server.
start_server() {
  # shellcheck disable=SC2086 # SERVER_FLAGS is a list of flags
  GOMAXPROCS=1 taskset -c "$SERVER_CPU" "$work/cardcallback" -addr "127.0.0.1:$PORT" ${SERVER_FLAGS:-} "$@" 2>/dev/null &
  pids+=($!)
  wait_port "$PORT"
}
# stop_server stops the last server started and removes its data file, so
# that the file's write-back does not slow the runs that follow.
stop_server() {
  kill "${pids[-1]}"
  wait "${pids[-1]}" 2>/dev/null || true
  unset 'pids[-1]'
  rm -f "$work"/cards.db*
  sync
}


# run_wrk PID URL FILE: prints "requests/s p99-ms non-2xx cpu-µs-per-request",
# the last from the server's own CPU time (user and system) over the run.
run_wrk() {
  local pid=$1 out t0 t1
  t0=$(awk '{print $14 + $15}' "/proc/$pid/stat")
  out=$(taskset -c "$WRK_CPU" wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency -s bench/replay.lua "$2" -- "$3")
  t1=$(awk '{print $14 + $15}' "/proc/$pid/stat")
  echo "$out" | awk -v ticks=$((t1 - t0)) -v hz="$(getconf CLK_TCK)" '
    /Requests\/sec/ {rps = $2}
    /requests in/ {n = $1}
    /Non-2xx/ {bad = $5}
    $1 == "99%" {v = $2; if (v ~ /us$/) {sub(/us/, "", v); v = v / 1000} else if (v ~ /ms$/) {sub(/ms/, "", v)} else if (v ~ /s$/) {sub(/s/, "", v); v = v * 1000}; p99 = v}
    END {printf "%s %s %d %.1f\n", rps, p99, bad, ticks / hz * 1e6 / n}'
}

# outcomes: the server's own count of what it answered, from /metrics.
outcomes() {
  curl -s -H "Authorization: Bearer $CARDCALLBACK_ADMIN_TOKEN" "http://127.0.0.1:$PORT/metrics" |
    sed -n 's/^cardcallback_callbacks_total{generation="[^"]*",outcome="\([^"]*\)"} \([0-9]*\)$/\1=\2/p' | tr '\n' ' '
}

# The ceiling is fed the same legacy clicks as the first-click path.
start_server
emit ceiling -requests 100000 -cards 100000
stop_server
GOMAXPROCS=1 taskset -c "$SERVER_CPU" "$work/ceiling" -addr "127.0.0.1:$CEIL_PORT" &
ceil_pid=$!
pids+=($ceil_pid)
wait_port $CEIL_PORT

declare -A label target
label[first]="legacy first click";                 target[first]=0.70
label[repeat]="legacy repeat click";               target[repeat]=0.85
label[challenge]="challenge (encrypted)";          target[challenge]=0.85
label[new-first]="new first click, encrypted+signed"; target[new-first]=0.60
label[data-first]="legacy first click, -data";     target[data-first]=0.30

# measure NAME: one run of a path on a fresh server; prints its wrk figures.
measure() {
  case $1 in
    first) start_server; emit first -requests "$REQUESTS" -cards "$REQUESTS" ;;
    repeat) start_server; emit repeat -requests 100000 -cards 1000 ;;
    challenge) start_server; emit challenge -requests 100000 -challenge ;;
    new-first) start_server; emit new-first -requests "$REQUESTS" -cards "$REQUESTS" -generation new ;;
    data-first) start_server -data "$work/cards.db"; emit data-first -requests "$REQUESTS" -cards "$REQUESTS" ;;
    *) echo "unknown path $1 (PATHS is a list of: first repeat challenge new-first data-first)" >&2; exit 2 ;;
  esac
  local fig
  fig=$(run_wrk "${pids[-1]}" "$URL" "$work/$1.req")
  echo "$fig $(outcomes)"
  stop_server
}

results="$work/results"
printf '%-5s %-34s %10s %8s %7s %7s %9s  %s\n' round path "requests/s" "p99 ms" non-2xx ratio "cpu µs/r" "server's count of answers"
# ceiling: one run of the bare handler; leaves its figures in ceil, ceilcpu.
ceiling() {
  local p99 bad
  read -r ceil p99 bad ceilcpu < <(run_wrk $ceil_pid "http://127.0.0.1:$CEIL_PORT/webhook/card" "$work/ceiling.req")
  printf '%-5s %-34s %10.0f %8s %7s %7s %9s\n' "$round" "ceiling (net/http, fixed 2 KB)" "$ceil" "$p99" "$bad" "1.00" "$ceilcpu"
  echo "ceiling $ceil $p99 $bad $ceilcpu $ceil $ceilcpu" >>"$results"
}
for round in $(seq "$ROUNDS"); do
  ceiling
  for p in $PATHS; do
    before=$ceil before_cpu=$ceilcpu
    measure "$p" >"$work/figures"
    ceiling
    # The path's ceiling is the mean of the runs just before and after it.
    around=$(echo "($before + $ceil) / 2" | bc -l) around_cpu=$(echo "($before_cpu + $ceilcpu) / 2" | bc -l)
    read -r rps p99 bad cpu counts <"$work/figures"
    printf '%-5s %-34s %10.0f %8s %7s %7.2f %9s  %s\n' "$round" "${label[$p]}" "$rps" "$p99" "$bad" "$(echo "$rps / $around" | bc -l)" "$cpu" "$counts"
    echo "$p $rps $p99 $bad $cpu $around $around_cpu" >>"$results"
  done
done

# The summary: medians over the rounds. The CPU ratio is the ceiling's CPU
# time per request (from the runs around the path's, as for the throughput
# ratio) over the path's: what the throughput ratio would be with the
# server the only thing on its core.
median() { sort -g | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
echo
printf '%-34s %10s %8s %7s %7s %9s %7s\n' "median of $ROUNDS rounds" "requests/s" "p99 ms" ratio target "cpu ratio" non-2xx
for p in ceiling $PATHS; do
  name=${label[$p]:-"ceiling (net/http, fixed 2 KB)"}
  rps=$(awk -v p="$p" '$1 == p {print $2}' "$results" | median)
  p99=$(awk -v p="$p" '$1 == p {print $3}' "$results" | median)
  bad=$(awk -v p="$p" '$1 == p {s += $4} END {print s + 0}' "$results")
  ratio=$(awk -v p="$p" '$1 == p {print $2 / $6}' "$results" | median)
  cpuratio=$(awk -v p="$p" '$1 == p {print $7 / $5}' "$results" | median)
  printf '%-34s %10.0f %8s %7.2f %7s %9.2f %7s\n' "$name" "$rps" "$p99" "$ratio" "${target[$p]:-}" "$cpuratio" "$bad"
done

#!/usr/bin/env bash
# Counts the instructions the server runs per request on each callback
# path, under valgrind's callgrind, for comparing two builds: unlike time,
# an instruction count hardly moves with the machine, so two builds
# compare within about 0.3% where wrk on a shared machine cannot tell 5%
# apart. Only the requests are counted (instrumentation is switched on
# after the cards are stored and, for repeat clicks, after each card's
# first click), user space only: the kernel's share and cache misses are
# not in it. The counts are for comparisons, not absolute: valgrind hides
# the SHA instructions of the CPU, so SHA-1 and SHA-256 run Go's generic
# code (about 17,000 instructions a legacy signature).
#
#   bench/instructions.sh                         # repeat and first
#   bench/instructions.sh ceiling repeat first challenge new-first
#   BIN=/tmp/old/cardcallback bench/instructions.sh repeat
#
# ceiling is bench/ceiling, the bare net/http handler, fed legacy first
# clicks.
set -euo pipefail
cd "$(dirname "$0")/.."

PATHS=${*:-"repeat first"}
DURATION=${DURATION:-10}
DURATION=${DURATION%s}
PORT=18080
URL="http://127.0.0.1:$PORT/webhook/card"

source bench/lib.sh
need wrk valgrind
free $PORT

work=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

build "$work"

# replay FILE SECONDS: wrk at 8 connections; prints the requests it sent.
replay() {
  wrk -t1 -c8 -d"$2s" -s bench/replay.lua "$URL" -- "$1" | awk '/requests in/ {print $1}'
}


# Under callgrind the server answers about 1,000 requests a second: a
# first-click run gets a card for each it can send.
n=$((DURATION * 3000))
printf '%-12s %10s %18s\n' path requests "instructions/req"
for p in $PATHS; do
  case $p in
    first | ceiling) loadtest=(-requests "$n" -cards "$n") ;;
    repeat) loadtest=(-requests 2000 -cards 1000) ;;
    challenge) loadtest=(-requests 2000 -challenge) ;;
    new-first) loadtest=(-requests "$n" -cards "$n" -generation new) ;;
    *) echo "unknown path $p (of: ceiling first repeat challenge new-first)" >&2; exit 2 ;;
  esac
  server=("$work/cardcallback" -addr "127.0.0.1:$PORT")
  if [ "$p" = ceiling ]; then
    # The requests are prepared on a callback server, then replayed
    # against the bare handler.
    "${server[@]}" 2>/dev/null &
    pid=$!
    wait_port $PORT
    emit "$p" "${loadtest[@]}"
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    server=("$work/ceiling" -addr "127.0.0.1:$PORT")
  fi
  # GODEBUG=asyncpreemptoff=1: callgrind stops on an assertion with the
  # signals Go preempts goroutines with.
  GODEBUG=asyncpreemptoff=1 GOMAXPROCS=1 valgrind --tool=callgrind --instr-atstart=no \
    --callgrind-out-file="$work/callgrind.$p.%p" "${server[@]}" 2>"$work/$p.log" &
  pid=$!
  wait_port $PORT 60 # valgrind starts slowly
  if [ "$p" != ceiling ]; then emit "$p" "${loadtest[@]}"; fi
  if [ "$p" = repeat ]; then replay "$work/$p.req" 5 >/dev/null; fi # each card's first click
  callgrind_control -i on "$pid" >/dev/null 2>&1
  sent=$(replay "$work/$p.req" "$DURATION")
  callgrind_control -i off "$pid" >/dev/null 2>&1
  callgrind_control -d "$pid" >/dev/null 2>&1
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  pid=
  total=$(cat "$work"/callgrind."$p".* | awk '/^totals:/ {s += $2} END {print s + 0}')
  printf '%-12s %10d %18d\n' "$p" "$sent" $((total / sent))
done

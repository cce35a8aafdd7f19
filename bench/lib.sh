# Sourced by the bench scripts, from the repository's root: what they share.

# need TOOL...: installs each tool missing here from Debian (package and
# command have the same name).
need() {
  local tool
  for tool; do
    if ! command -v "$tool" >/dev/null; then
      echo "installing $tool" >&2
      if [ "$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq "$tool" >/dev/null
      else sudo apt-get update -qq && sudo apt-get install -y -qq "$tool" >/dev/null; fi
    fi
  done
}

# build DIR: the server ($BIN when set, else built from here) and the bare
# handler, as DIR/cardcallback and DIR/ceiling.
build() {
  if [ -n "${BIN:-}" ]; then cp "$BIN" "$1/cardcallback"; else go build -o "$1/cardcallback" .; fi
  go build -o "$1/ceiling" ./bench/ceiling
}

# free PORT...: stops the script if something already listens on a port.
free() {
  local p
  for p; do
    if curl -s -o /dev/null "http://127.0.0.1:$p/"; then echo "port $p is in use: stop what listens there first" >&2; exit 1; fi
  done
}

# wait_port PORT [SECONDS]: waits for a server to answer on PORT, 10 s at
# most unless told.
wait_port() {
  local _
  for _ in $(seq $((${2:-10} * 20))); do curl -s -o /dev/null "http://127.0.0.1:$1/" && return 0; sleep 0.05; done
  echo "port $1 did not open" >&2
  exit 1
}

# emit NAME ARGS...: stores cards on the server at $PORT and prepares
# requests in $work/NAME.req (loadtest -emit with ARGS), then syncs so that
# the run does not pay for writing the cards back.
emit() {
  local name=$1; shift
  "$work/cardcallback" loadtest -addr "127.0.0.1:$PORT" -prefix "om_${name}_" -emit "$work/$name.req" "$@" >/dev/null
  sync
}

# The secrets the benchmark servers and their requests share.
export FEISHU_VERIFICATION_TOKEN=bench-verification-token
export FEISHU_ENCRYPT_KEY=bench-encrypt-key
export CARDCALLBACK_ADMIN_TOKEN=bench-admin-token

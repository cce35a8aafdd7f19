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

# The secrets the benchmark servers and their requests share.
export FEISHU_VERIFICATION_TOKEN=bench-verification-token
export FEISHU_ENCRYPT_KEY=bench-encrypt-key
export CARDCALLBACK_ADMIN_TOKEN=bench-admin-token

#!/usr/bin/env bash
# Checks the deployment files with the real tools: systemd-analyze verify
# for the unit, caddy validate for the Caddyfile, nginx -t for the nginx
# server block. Missing tools are installed from Debian's packages.
set -euo pipefail
cd "$(dirname "$0")"

missing=()
for pair in nginx:nginx caddy:caddy systemd-analyze:systemd openssl:openssl; do
  command -v "${pair%%:*}" >/dev/null || missing+=("${pair##*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]}" >&2
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# systemd: verify needs the binary the unit starts to exist.
go build -o "$tmp/cardcallback" ..
sed "s|/usr/local/bin/cardcallback|$tmp/cardcallback|" cardcallback.service >"$tmp/cardcallback.service"
# It exits 0 even for unknown keys: anything it says is a mistake.
problems=$(systemd-analyze verify "$tmp/cardcallback.service" 2>&1 || true)
if [ -n "$problems" ]; then echo "systemd-analyze verify:"; echo "$problems"; exit 1; fi
echo "ok: cardcallback.service"

# Caddy.
caddy validate --adapter caddyfile --config Caddyfile >"$tmp/caddy.log" 2>&1 || { cat "$tmp/caddy.log"; exit 1; }
echo "ok: Caddyfile"

# nginx: the server block inside a minimal main configuration, with a
# throwaway certificate where the real one will be.
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=callback.example.com \
  -keyout "$tmp/key.pem" -out "$tmp/cert.pem" >/dev/null 2>&1
sed -e "s|/etc/letsencrypt/live/callback.example.com/fullchain.pem|$tmp/cert.pem|" \
    -e "s|/etc/letsencrypt/live/callback.example.com/privkey.pem|$tmp/key.pem|" nginx.conf >"$tmp/site.conf"
cat >"$tmp/nginx.conf" <<CONF
pid $tmp/nginx.pid;
error_log $tmp/error.log;
events {}
http {
    access_log off;
    client_body_temp_path $tmp;
    include $tmp/site.conf;
}
CONF
nginx -t -q -c "$tmp/nginx.conf" -p "$tmp" || exit 1
echo "ok: nginx.conf"

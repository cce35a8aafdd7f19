#!/bin/sh
# An -exec script for cardcallback: the full release is a pipeline in a CI
# system, started through its webhook (a GitLab pipeline trigger, a Jenkins
# buildWithParameters URL, a GitHub repository_dispatch, …).
#
#   CARDCALLBACK_EXEC=/usr/local/lib/cardcallback/release-webhook.sh
#
# Settings, from the server's environment (FEISHU_* secrets are not passed on):
#   RELEASE_WEBHOOK_URL    the webhook to POST to (required)
#   RELEASE_WEBHOOK_TOKEN  sent as "Authorization: Bearer …" when set
#   RELEASE_TIMEOUT        seconds to wait for the CI system (default 60)
#
# The click arrives as CARD_* variables and action.value on stdin. The
# last line written to stderr is what the user sees when the release fails.
set -u

url=${RELEASE_WEBHOOK_URL:-}
timeout=${RELEASE_TIMEOUT:-60}
if [ -z "$url" ]; then
  echo "RELEASE_WEBHOOK_URL is not set on the server" >&2
  exit 2
fi

# JSON string escaping for the ids (they come from the platform, but a
# button_id is whatever the card's author wrote).
esc() { printf '%s' "$1" | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g'; }

value=$(cat)
[ -n "$value" ] || value=null
body=$(printf '{"event":"full_release","message_id":"%s","chat_id":"%s","operator":{"open_id":"%s","user_id":"%s","union_id":"%s"},"button_id":"%s","value":%s}' \
  "$(esc "${CARD_MESSAGE_ID:-}")" "$(esc "${CARD_CHAT_ID:-}")" "$(esc "${CARD_OPEN_ID:-}")" \
  "$(esc "${CARD_USER_ID:-}")" "$(esc "${CARD_UNION_ID:-}")" "$(esc "${CARD_BUTTON_ID:-}")" "$value")

out=$(mktemp)
trap 'rm -f "$out"' EXIT
set -- --silent --show-error --max-time "$timeout" --connect-timeout 5 \
  -H "Content-Type: application/json" --data-binary "$body" -o "$out" -w '%{http_code}'
if [ -n "${RELEASE_WEBHOOK_TOKEN:-}" ]; then
  set -- "$@" -H "Authorization: Bearer $RELEASE_WEBHOOK_TOKEN"
fi

status=$(curl "$@" "$url" 2>"$out.err")
rc=$?
if [ $rc -eq 28 ]; then
  echo "the CI system did not answer within ${timeout}s" >&2
  exit 1
elif [ $rc -ne 0 ]; then
  echo "cannot reach the CI system: $(tail -n 1 "$out.err" | sed 's/^curl: ([0-9]*) //')" >&2
  rm -f "$out.err"
  exit 1
fi
rm -f "$out.err"
case "$status" in
  2??)
    echo "release pipeline started for $CARD_MESSAGE_ID by $CARD_OPEN_ID" >&2
    exit 0 ;;
  *)
    echo "the CI system answered HTTP $status: $(head -c 120 "$out" | tr '\n' ' ')" >&2
    exit 1 ;;
esac

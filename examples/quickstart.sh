#!/usr/bin/env bash
# MiniObserv quick start with curl, end to end against `miniobserv serve`.
#
#   examples/quickstart.sh                      # uses 127.0.0.1:8080
#   LISTEN_ADDR=127.0.0.1:9090 examples/quickstart.sh
#
# Starts the development server on a throwaway SQLite file, shows that reads need a token,
# sends one metric with curl, queries it back, runs the agent for this host for a few
# seconds and shows this host's CPU.
# Everything it starts is stopped on exit. Exits non-zero as soon as a step fails.
set -euo pipefail

LISTEN_ADDR=${LISTEN_ADDR:-127.0.0.1:8080}
PYTHON=${PYTHON:-python3}
MINIOBSERV=${MINIOBSERV:-miniobserv}
SERVER="http://${LISTEN_ADDR}"
WORK=$(mktemp -d)
PIDS=()

cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

step() { printf '\n== %s\n' "$*"; }
utc() { date -u -d "$1" +%Y-%m-%dT%H:%M:%SZ; }

# The shared secret: every token is an HS256 JWT minted from it (16 characters at least).
export AGENT_TOKEN=${AGENT_TOKEN:-$("$PYTHON" -c 'import secrets; print(secrets.token_urlsafe(32))')}
export LISTEN_ADDR DATABASE_URL="sqlite:///${WORK}/quickstart.db"

step "start the server on ${SERVER} (log: ${WORK}/server.log)"
"$MINIOBSERV" serve >"$WORK/server.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 100); do
    curl -fsS "$SERVER/readyz" >/dev/null 2>&1 && break
    sleep 0.2
done
curl -fsS "$SERVER/readyz"

step "mint tokens: one to ingest, one to read"
INGEST=$("$MINIOBSERV" token --scope ingest)
READ=$("$MINIOBSERV" token --scope read --ttl 1h)

step "reads need a read token: the fleet without one is 401, with one 200"
STATUS=$(curl -sS -o /dev/null -w '%{http_code}' "$SERVER/api/v1/hosts")
echo "without a token: HTTP $STATUS"
[ "$STATUS" = 401 ]
curl -fsS "$SERVER/api/v1/hosts" -H "Authorization: Bearer $READ"

step "the dashboard: serve printed a link carrying a read token in its fragment"
grep -m 1 '^Dashboard: ' "$WORK/server.log" | sed 's/#token=.*/#token=…/'

step "send one metric"
NOW=$(utc now)
curl -fsS -X POST "$SERVER/api/v1/metrics" \
  -H "Authorization: Bearer $INGEST" -H 'Content-Type: application/json' \
  -d '{"host":"web-01","metrics":[{"time":"'"$NOW"'","host":"web-01","name":"cpu.usage_pct","value":42.5,"labels":{"core":"total"}}]}'

step "query it back"
curl -fsS -G "$SERVER/api/v1/metrics/query" -H "Authorization: Bearer $READ" \
  --data-urlencode host=web-01 --data-urlencode name=cpu.usage_pct \
  --data-urlencode label=core:total --data-urlencode bucket=1m --data-urlencode agg=avg \
  --data-urlencode "from=$(utc '-1 hour')" --data-urlencode "to=$(utc '+1 minute')"

step "a bad name is refused, naming the field"
STATUS=$(curl -sS -o "$WORK/error.json" -w '%{http_code}' -X POST "$SERVER/api/v1/metrics" \
  -H "Authorization: Bearer $INGEST" -H 'Content-Type: application/json' \
  -d '{"host":"web-01","metrics":[{"time":"'"$NOW"'","host":"web-01","name":"cpu_usage_pct","value":1}]}')
echo "HTTP $STATUS $(cat "$WORK/error.json")"
[ "$STATUS" = 400 ]

step "run the agent for this host (1 s interval) until its CPU shows up"
HOST=$(hostname)
SERVER_URL=$SERVER AGENT_HOST=$HOST COLLECT_INTERVAL=1s "$PYTHON" -m miniobserv.agent \
    >"$WORK/agent.log" 2>&1 &
AGENT=$!
PIDS+=($AGENT)
for _ in $(seq 1 60); do
    ANSWER=$(curl -fsS -G "$SERVER/api/v1/metrics/query" -H "Authorization: Bearer $READ" \
      --data-urlencode "host=$HOST" --data-urlencode name=cpu.usage_pct \
      --data-urlencode label=core:total --data-urlencode bucket=10s \
      --data-urlencode "from=$(utc '-5 minutes')" --data-urlencode "to=$(utc '+1 minute')")
    case $ANSWER in *'"value"'*) break ;; esac
    sleep 0.5
done
echo "$ANSWER"
case $ANSWER in *'"value"'*) ;; *) echo "no CPU data from the agent; its log:"; cat "$WORK/agent.log"; exit 1 ;; esac

step "stop the agent (SIGTERM drains its queue, exit status 0)"
kill -TERM "$AGENT"
wait "$AGENT"
tail -n 1 "$WORK/agent.log"

step "done"

#!/usr/bin/env bash
# Peak RSS of one relay (`outbox relay --once`, batches of 1,000) draining N events from
# PostgreSQL to Redis Streams: bash bench/rss.sh 10000; bash bench/rss.sh 1000000.
# The backlog is written in SQL in a schema of its own, dropped afterwards. Needs psql,
# GNU time (/usr/bin/time), PostgreSQL at OUTBOX_POSTGRES_DSN and Redis at OUTBOX_REDIS_URL.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:?events}
DB=${OUTBOX_POSTGRES_DSN:-postgres://postgres@127.0.0.1:5432/test?sslmode=disable}
REDIS=${OUTBOX_REDIS_URL:-redis://127.0.0.1:6379/0}
SCHEMA=outbox_rss_$N
BIN=$(mktemp -d)/outbox
go build -o "$BIN" ./cmd/outbox
psql -q "$DB" -c "DROP SCHEMA IF EXISTS $SCHEMA CASCADE; CREATE SCHEMA $SCHEMA;" >/dev/null
"$BIN" migrate --dsn "$DB&schema=$SCHEMA" >/dev/null
psql -q "$DB" -c "INSERT INTO $SCHEMA.outbox_events (id, type, entity_id, user_id, status, payload, created_at, updated_at, next_attempt_at)
  SELECT gen_random_uuid(), 'order_created', 'e-' || i, 'u-' || (i % 1000), 'pending', '{\"n\":1}', now(), now(), now()
  FROM generate_series(1, $N) i; ANALYZE $SCHEMA.outbox_events;" >/dev/null
/usr/bin/time -f "$N events: %M KiB peak RSS, %e s" "$BIN" relay --once --dsn "$DB&schema=$SCHEMA" --sink "$REDIS" \
  --subject "rss$N.{type}" --max-len 1000 --dedup-window 1m --batch-size 1000 --log-level warn
psql -q -t "$DB" -c "SELECT count(*) FILTER (WHERE status = 'completed') || ' of ' || count(*) || ' completed' FROM $SCHEMA.outbox_events; DROP SCHEMA $SCHEMA CASCADE;"
redis-cli -u "$REDIS" DEL "rss$N.order_created" "{rss$N.order_created}:outbox-dedup" >/dev/null
rm -f "$BIN"

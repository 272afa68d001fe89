#!/usr/bin/env bash
# What one INSERT of the log's row costs the server, without a client, a commit or a
# network in the way (issue 24): each table of log-setup.sql gets 40,000 rows from a
# loop in one DO block (plpgsql keeps the INSERT's plan, as a prepared statement does),
# the tables emptied before each, the order fixed, and each time divided by the plain
# event row's (events) in the same round. log.sh prices whole transactions; at 8 clients
# they are bound by the commit, which hides differences of a few microseconds that this
# shows. Usage: bash bench/pgbench/log-insert.sh [rounds] (default 7).
set -euo pipefail
cd "$(dirname "$0")"
dsn="${OUTBOX_BENCH_DSN:-postgres://postgres@127.0.0.1:5432/outbox_bench?sslmode=disable}"
PGOPTIONS="-c client_min_messages=warning" psql -q "$dsn" -f log-setup.sql
row="now(), gen_random_uuid(), 0, 0, false, 'orderPlaced', 'x', 'user-1', NULL, NULL, '{\"order_id\":\"x\",\"amount\":42,\"currency\":\"EUR\"}'"
cols="created_at, id, max_attempts, priority, is_new_record, type, entity_id, user_id, ordering_key, metadata, payload"
declare -A insert=(
  [events]="INSERT INTO events (id, payload) VALUES (gen_random_uuid(), '{\"order_id\":\"x\",\"amount\":42,\"currency\":\"EUR\"}')"
  [log]="INSERT INTO log ($cols) VALUES ($row)"
  [logpos]="INSERT INTO logpos ($cols) VALUES ($row)"
  [ringcol]="INSERT INTO ringcol ($cols) VALUES ($row)"
  [ringdirect]="INSERT INTO ringcol_p3 ($cols) VALUES ($row)"
  [wm]="INSERT INTO wm (uuid, payload, metadata, transaction_id) VALUES (gen_random_uuid()::text, '{\"order_id\":\"x\",\"amount\":42,\"currency\":\"EUR\"}', '{}', pg_current_xact_id())"
)
for round in $(seq 1 "${1:-7}"); do
  line="round $round:"
  for t in events log logpos ringcol ringdirect wm; do
    ms=$({ echo "SET search_path = bench_pgbench_log;"
           echo "TRUNCATE events, log, logpos, ringcol, wm;"
           echo '\timing on'
           echo "DO \$\$ BEGIN FOR i IN 1..40000 LOOP ${insert[$t]}; END LOOP; END \$\$;"
         } | psql -q "$dsn" 2>&1 | awk '/^Time:/ {print $2}')
    line="$line $t=$ms"
  done
  echo "$line"
done | tee /dev/stderr | python3 ratios.py events 'the events row'
PGOPTIONS="-c client_min_messages=warning" psql -q "$dsn" -c "DROP SCHEMA bench_pgbench_log CASCADE"

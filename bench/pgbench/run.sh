#!/usr/bin/env bash
# The enqueue phase without any Go client: pgbench, 8 clients, each script in turn for
# 3 s, four rounds. Needs the schemas that `-keep` leaves (see setup.sql).
set -euo pipefail
cd "$(dirname "$0")"
dsn="${OUTBOX_BENCH_DSN:-postgres://postgres@127.0.0.1:5432/outbox_bench?sslmode=disable}"
psql -q "$dsn" -f setup.sql
for round in 1 2 3 4; do
  line="round $round:"
  for s in plain plain_notify narrow outbox_pk_only outbox_row; do
    tps=$(pgbench -n -M prepared -c 8 -j 2 -T 3 -f "$s.sql" "$dsn" 2>&1 | awk '/^tps/ {printf "%.0f", $3}')
    line="$line $s=$tps"
  done
  echo "$line"
done
psql -q "$dsn" -c "DROP SCHEMA bench_pgbench CASCADE"

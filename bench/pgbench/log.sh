#!/usr/bin/env bash
# The log layout's append without any Go client (issue 24): pgbench, 8 clients, each script
# in turn for 4 s, the order rotated every round, and each script's rate divided by the plain
# two-row transaction's in the same round. Usage: bash bench/pgbench/log.sh [rounds] (default 10);
# SCRIPTS="log_plain log_ringcol ..." runs only those (log_plain, the divisor, must be among them).
set -euo pipefail
cd "$(dirname "$0")"
dsn="${OUTBOX_BENCH_DSN:-postgres://postgres@127.0.0.1:5432/outbox_bench?sslmode=disable}"
PGOPTIONS="-c client_min_messages=warning" psql -q "$dsn" -f log-setup.sql
scripts=(${SCRIPTS:-log_plain log_log log_ring log_ringcol log_ringdirect log_seqonly log_wm})
n=${#scripts[@]}
for round in $(seq 1 "${1:-10}"); do
  line="round $round:"
  for k in $(seq 0 $((n - 1))); do
    s=${scripts[$(((k + round) % n))]}
    tps=$(pgbench -n -M prepared -c 8 -j 2 -T 4 -f "$s.sql" "$dsn" 2>&1 | awk '/^tps/ {printf "%.0f", $3}')
    line="$line $s=$tps"
  done
  echo "$line"
done | tee /dev/stderr | python3 ratios.py log_plain 'log_plain'
PGOPTIONS="-c client_min_messages=warning" psql -q "$dsn" -c "DROP SCHEMA bench_pgbench_log CASCADE"

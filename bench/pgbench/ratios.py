"""Summarizes rounds of measurements as medians of within-round ratios.

Reads lines "round N: name=value name=value ..." from stdin and prints, for each name, the
median over rounds of its value divided by the value of the divisor named by the first
argument in the same round, with the range. The second argument describes the divisor in
the output. log.sh and log-insert.sh pipe their rounds into it.
"""
import statistics
import sys

divisor, label = sys.argv[1], sys.argv[2]
ratios = {}
for line in sys.stdin:
    values = dict(kv.split("=") for kv in line.split(":", 1)[1].split())
    for name, v in values.items():
        ratios.setdefault(name, []).append(float(v) / float(values[divisor]))
for name, r in ratios.items():
    print(f"{name}: {statistics.median(r):.2f}x {label} (range {min(r):.2f}-{max(r):.2f}, {len(r)} rounds)")

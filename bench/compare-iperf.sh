#!/usr/bin/env bash
# Holds `freight bench` against one well-tuned TCP stream on loopback, `iperf3 -P 1 -l 1M -C reno`, in one run:
# rounds alternate iperf3 and freight so that machine drift cancels, and the ratios of medians are reported.
#   bench/compare-iperf.sh                  # 3 rounds, 1 GiB messages
#   ROUNDS=5 SIZES=256MiB,1GiB bench/compare-iperf.sh
# Targets: node to node >= 80% of iperf3, app to app >= 35%. Exits 3 when a target is not met.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
SIZES=${SIZES:-1GiB}
PORT=${PORT:-5399}

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
if ! command -v iperf3 >/dev/null; then
  as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iperf3 >/dev/null
fi
swift build -c release --product freight >/dev/null
BIN="$(swift build -c release --show-bin-path)/freight"

work=$(mktemp -d)
iperf3 -s -B 127.0.0.1 -p "$PORT" >"$work/iperf-server.log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null; wait "$server" 2>/dev/null || true; rm -rf "$work"' EXIT
sleep 0.5

for round in $(seq 1 "$ROUNDS"); do
  iperf3 -c 127.0.0.1 -p "$PORT" -P 1 -l 1M -C reno -t 5 -J >"$work/iperf-$round.json"
  "$BIN" bench --json --sizes "$SIZES" >"$work/freight-$round.json"
  echo "round $round done" >&2
done

python3 - "$work" "$ROUNDS" <<'PY'
import json, os, statistics, sys
work, rounds = sys.argv[1], int(sys.argv[2])
iperf = []
freight = {}
for r in range(1, rounds + 1):
    data = json.load(open(os.path.join(work, f"iperf-{r}.json")))
    iperf.append(data["end"]["sum_received"]["bits_per_second"] / 8 / 1e6)
    for line in open(os.path.join(work, f"freight-{r}.json")):
        row = json.loads(line)
        freight.setdefault((row["path"], row["bytes"]), []).append(row)
ref = statistics.median(iperf)
def size(n):
    for unit, div in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= div and n % div == 0: return f"{n // div} {unit}"
    return f"{n} B"
lines = [
    f"Reference: iperf3 -P 1 -l 1M -C reno on 127.0.0.1, median of {rounds}: **{ref:.0f} MB/s** "
    f"(rounds: {', '.join(f'{x:.0f}' for x in iperf)})",
    "",
    "| path | message size | MB/s (median) | rounds | CPU s/GiB | of iperf3 | target |",
    "|---|---|---|---|---|---|---|",
]
targets = {"node": 0.80, "app": 0.35}
ok = True
for (path, nbytes), rows in sorted(freight.items(), key=lambda kv: (kv[0][0] != "node", kv[0][1])):
    mbps = statistics.median(r["mbps"] for r in rows)
    cpu = statistics.median(r["cpu_s_per_gib"] for r in rows)
    ratio = mbps / ref
    met = ratio >= targets[path]
    ok = ok and met
    name = "node to node" if path == "node" else "app to app (2 nodes)"
    each = ", ".join("%.0f" % r["mbps"] for r in rows)
    lines.append(f"| {name} | {size(nbytes)} | {mbps:.0f} | {each} | {cpu:.2f} | "
                 f"{ratio * 100:.0f}% | ≥ {targets[path] * 100:.0f}% {'met' if met else 'NOT met'} |")
text = "\n".join(lines)
print(text)
os.makedirs("bench/results", exist_ok=True)
open("bench/results/compare-iperf.md", "w").write(text + "\n")
sys.exit(0 if ok else 3)
PY

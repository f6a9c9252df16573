#!/usr/bin/env bash
# Two freight builds against each other, alternating in one run so that machine drift cancels: `freight bench` on
# the node-to-node and app-to-app paths, medians per size and the ratio new/old.
#   bench/ab.sh OLD_FREIGHT NEW_FREIGHT                 # 3 rounds, 64 KiB ... 1 GiB
#   ROUNDS=5 SIZES=1MiB,1GiB bench/ab.sh OLD NEW
# OLD can be any checkout built with `swift build -c release --product freight` (e.g. in a git worktree).
set -euo pipefail
OLD=$1
NEW=$2
ROUNDS=${ROUNDS:-3}
SIZES=${SIZES:-64KiB,1MiB,8MiB,64MiB,1GiB}
TOTAL=${TOTAL:-2GiB}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for round in $(seq 1 "$ROUNDS"); do
  # The order alternates too: old first in odd rounds, new first in even ones.
  if [ $((round % 2)) = 1 ]; then order="old new"; else order="new old"; fi
  for which in $order; do
    bin=$OLD; [ "$which" = new ] && bin=$NEW
    "$bin" bench --json --paths node,app --sizes "$SIZES" --total "$TOTAL" 2>/dev/null | grep '^{' >"$work/$which-$round.json"
  done
  echo "round $round done" >&2
done
python3 - "$work" "$ROUNDS" <<'PY'
import json, os, statistics, sys
work, rounds = sys.argv[1], int(sys.argv[2])
runs = {"old": {}, "new": {}}
for which in runs:
    for r in range(1, rounds + 1):
        for line in open(os.path.join(work, f"{which}-{r}.json")):
            row = json.loads(line)
            runs[which].setdefault((row["path"], row["bytes"]), []).append(row["mbps"])
print("| path | size | old MB/s (median; rounds) | new MB/s (median; rounds) | new / old |")
print("|---|---|---|---|---|")
for key in sorted(runs["old"], key=lambda k: (k[0] != "node", k[1])):
    old, new = runs["old"][key], runs["new"].get(key, [0])
    mo, mn = statistics.median(old), statistics.median(new)
    size = key[1]
    label = f"{size >> 30} GiB" if size >= 1 << 30 else f"{size >> 20} MiB" if size >= 1 << 20 else f"{size >> 10} KiB"
    fmt = lambda xs: ", ".join(f"{x:.0f}" for x in xs)
    print(f"| {'node to node' if key[0] == 'node' else 'app to app'} | {label} | {mo:.0f} ({fmt(old)}) | {mn:.0f} ({fmt(new)}) | {mn / mo:.2f} |")
PY

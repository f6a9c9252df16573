#!/usr/bin/env bash
# The CLI as a new user runs it, against `freight bench` in the same run: two `freight node` processes (127.0.0.161
# and 127.0.0.162), `freight recv ADDRESS --summary` on the second, `freight send ADDRESS --size SIZE --count COUNT`
# on the first; each round then runs `freight bench --paths app --sizes SIZE` (both nodes and both apps in one
# process). Prints every round and the medians.
#   bench/cli.sh [SIZE] [COUNT]                 # 1GiB 8, 3 rounds
#   ROUNDS=5 FREIGHT=path/to/freight bench/cli.sh 256 100000
set -euo pipefail
SIZE=${1:-1GiB}
COUNT=${2:-8}
ROUNDS=${ROUNDS:-3}
FREIGHT=${FREIGHT:-.build/release/freight}
[ -x "$FREIGHT" ] || { echo "build it first: swift build -c release --product freight" >&2; exit 1; }
work=$(mktemp -d)
pids=()
stop() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  pids=()
}
trap 'stop; rm -rf "$work"' EXIT
cli=()
bench=()
for round in $(seq 1 "$ROUNDS"); do
  "$FREIGHT" node --name cli1 --listen 127.0.0.161:7461 --socket "$work/n1.sock" >"$work/n1.log" 2>&1 &
  pids+=($!)
  "$FREIGHT" node --name cli2 --listen 127.0.0.162:7462 --socket "$work/n2.sock" --join 127.0.0.161:7461 \
    >"$work/n2.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 50); do [ -S "$work/n1.sock" ] && [ -S "$work/n2.sock" ] && break; sleep 0.1; done
  timeout 300 "$FREIGHT" recv bench/cli --via "$work/n2.sock" --summary >"$work/recv.log" 2>&1 &
  pids+=($!)
  sleep 1
  line=$(timeout 300 "$FREIGHT" send bench/cli --size "$SIZE" --count "$COUNT" --via "$work/n1.sock" | tail -1)
  stop
  rate=$(echo "$line" | grep -o '[0-9.]* MB/s' | cut -d' ' -f1 || true)
  [ -n "$rate" ] || { echo "freight send did not finish: $line" >&2; cat "$work"/*.log >&2; exit 1; }
  cli+=("$rate")
  app=$(timeout 300 "$FREIGHT" bench --paths app --sizes "$SIZE" | awk '$1 == "app" { print $(NF-1) }')
  bench+=("$app")
  echo "round $round: freight send $rate MB/s, freight bench --paths app $app MB/s"
done
python3 - "${cli[*]}" "${bench[*]}" "$SIZE" "$COUNT" <<'PY'
import statistics, sys
cli = [float(x) for x in sys.argv[1].split()]
app = [float(x) for x in sys.argv[2].split()]
c, a = statistics.median(cli), statistics.median(app)
print(f"freight send --size {sys.argv[3]} --count {sys.argv[4]}: median {c:,.0f} MB/s; "
      f"freight bench --paths app: median {a:,.0f} MB/s; {100 * c / a:.0f}%")
PY

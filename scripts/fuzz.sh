#!/usr/bin/env bash
# Fuzzes Freight's parsers with libFuzzer (Fuzz/): the frame parser, the descriptor-link codec and the control
# payloads, starting from the committed corpus in Fuzz/corpus (new inputs that reach new code are added to it).
#   scripts/fuzz.sh 600        # fuzz for 600 seconds (default 60)
#   scripts/fuzz.sh 0 CRASH    # replay one input (a crash file libFuzzer wrote)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
swift build -c release --package-path Fuzz --scratch-path .build-fuzz -Xswiftc -sanitize=fuzzer >/dev/null
bin="$(swift build -c release --package-path Fuzz --scratch-path .build-fuzz --show-bin-path)/FreightFuzz"
if [ -n "${2:-}" ]; then exec "$bin" "$2"; fi
mkdir -p .build-fuzz/crashes
exec "$bin" Fuzz/corpus -max_total_time="$seconds" -max_len=70000 -timeout=10 -rss_limit_mb=2048 \
  -artifact_prefix=.build-fuzz/crashes/ -print_final_stats=1

#!/usr/bin/env bash
# Fuzzes Freight's parsers with libFuzzer (Fuzz/): the frame parser, the descriptor-link codec and the control
# payloads. Starts from the committed corpus (Fuzz/corpus), grows a working corpus in .build-fuzz/grown, and merges
# back into Fuzz/corpus only the inputs that reach new code (commit them). A crash is written to
# .build-fuzz/crashes/ and the script exits non-zero; the test command replays Fuzz/corpus (FuzzCorpusTests).
#   scripts/fuzz.sh 600        # fuzz for 600 seconds (default 60)
#   scripts/fuzz.sh 0 CRASH    # replay one input (a crash file libFuzzer wrote)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
build=(swift build -c release --package-path Fuzz --scratch-path .build-fuzz)
"${build[@]}" -Xswiftc -sanitize=fuzzer >/dev/null || {
  echo "the fuzz build failed: ${build[*]} -Xswiftc -sanitize=fuzzer" >&2
  exit 1
}
bin="$("${build[@]}" --show-bin-path)/FreightFuzz"
if [ -n "${2:-}" ]; then exec "$bin" "$2"; fi
mkdir -p .build-fuzz/crashes .build-fuzz/grown
"$bin" .build-fuzz/grown Fuzz/corpus -max_total_time="$seconds" -max_len=70000 -timeout=10 -rss_limit_mb=2048 \
  -artifact_prefix=.build-fuzz/crashes/ -print_final_stats=1
"$bin" -merge=1 Fuzz/corpus .build-fuzz/grown 2>&1 | grep -E "MERGE-OUTER: [0-9]+ new files" || true

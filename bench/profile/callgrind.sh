#!/usr/bin/env bash
# Instruction counts of `freight bench` under valgrind's callgrind: where user-space work goes, by function,
# inclusive of what each calls. The kernel's share (copies, TCP) is not counted here; `perf record -g` shows it.
#   bench/profile/callgrind.sh                                   # node to node, 64 KiB messages
#   bench/profile/callgrind.sh --paths app --sizes 8MiB --total 256MiB --in-flight 8
# Writes .build-valgrind/callgrind.out and prints the top functions (self and inclusive).
#
# Debian 12's valgrind (3.19) cannot read Swift 6's DWARF 5, so this takes valgrind 3.24 from Debian 13's archive
# (`apt-get download` with a private sources list and state: the system's apt setup is not touched) and unpacks it
# under .build-valgrind. Every valgrind up to 3.24 also crashes on a Swift program with an async `main`: its
# rt_sigsuspend wrapper edits the signal mask in place, and libdispatch parks the main thread passing a mask that
# lies in read-only memory. A two-line preload (built here) hands the system call a copy of the mask instead.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
VG=$ROOT/.build-valgrind
ARGS=("$@")
[ ${#ARGS[@]} -gt 0 ] || ARGS=(--paths node --sizes 64KiB --total 256MiB --in-flight 64)

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
if ! command -v cc >/dev/null || ! command -v perl >/dev/null; then
  as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc perl >/dev/null
fi
if [ ! -x "$VG/root/usr/bin/valgrind" ]; then
  mkdir -p "$VG/apt/lists/partial" "$VG/apt/cache/archives/partial"
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main" \
    >"$VG/apt/sources.list"
  apt_private=(-o "Dir::Etc::SourceList=$VG/apt/sources.list" -o "Dir::Etc::SourceParts=/nonexistent"
    -o "Dir::State::Lists=$VG/apt/lists" -o "Dir::Cache=$VG/apt/cache" -o "Debug::NoLocking=1")
  apt-get "${apt_private[@]}" update -qq
  (cd "$VG" && apt-get "${apt_private[@]}" download valgrind)
  dpkg -x "$VG"/valgrind_*.deb "$VG/root"
fi
if [ ! -f "$VG/sigsuspend.so" ]; then
  cat >"$VG/sigsuspend.c" <<'C'
#define _GNU_SOURCE
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>
int sigsuspend(const sigset_t *mask) { sigset_t copy = *mask; return (int)syscall(SYS_rt_sigsuspend, &copy, 8); }
C
  cc -O2 -shared -fPIC -o "$VG/sigsuspend.so" "$VG/sigsuspend.c"
fi

swift build -c release --product freight >/dev/null
BIN="$(swift build -c release --show-bin-path)/freight"
export VALGRIND_LIB="$VG/root/usr/libexec/valgrind"
LD_PRELOAD="$VG/sigsuspend.so" SWIFT_BACKTRACE=enable=no "$VG/root/usr/bin/valgrind" --tool=callgrind \
  --callgrind-out-file="$VG/callgrind.out" --separate-threads=no "$BIN" bench "${ARGS[@]}" --json
annotate() { perl "$VG/root/usr/bin/callgrind_annotate" "$@" "$VG/callgrind.out" 2>/dev/null; }
echo "== self (instructions in the function itself)"
annotate --threshold=90 | sed -n '/^-* *$/,$p' | head -40
echo "== inclusive (with what it calls)"
annotate --inclusive=yes --threshold=90 | sed -n '/^-* *$/,$p' | head -40

#!/usr/bin/env bash
# The README's test command: every tier, in order (docs/testing.md).
#
#   tools/test.sh           setup, lint, build, unit + proptest + twin, then the QEMU guest on each kernel
#   tools/test.sh --quick   lint, unit + proptest + twin only: the edit loop (no setup, no guest, no root)
#
# On a fresh Debian machine the setup tier installs what the guest tier needs (qemu-system-x86,
# busybox-static, cpio, binutils, kmod, xz-utils) and fetches two Debian kernel images under target/vm/
# (unpacked, never installed as the machine's kernel). The guest tier boots each kernel once with every
# scenario (tests/guest.rs), one after the other, plus a small boot per kernel that crashes on purpose.
# Test files named tests/guest*.rs are the guest tier; every other tests/*.rs is the twin tier.
#
# Prints each tier's wall time at the end (also on failure). RESETLAB_TEST_THREADS (default 2) is
# passed to the test binaries.
set -euo pipefail
cd "$(dirname "$0")/.."

quick=0
case ${1:-} in
"") ;;
--quick) quick=1 ;;
-h | --help) sed -n '2,/^set -e/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
*) echo "tools/test.sh: error: unknown argument '$1' (want nothing or --quick)" >&2; exit 2 ;;
esac
[ $# -le 1 ] || { echo "tools/test.sh: error: one argument at most, got $#" >&2; exit 2; }
threads=${RESETLAB_TEST_THREADS:-2}

times=()
summary() {
    local IFS=,
    echo "tier times:${times[*]}"
}
# tier NAME CMD...: run one tier, note its wall time; stop at the first that fails.
tier() {
    local name=$1 t0 t1 rc=0
    shift
    echo "==== tier $name: $*" >&2
    t0=$(date +%s.%N)
    "$@" || rc=$?
    t1=$(date +%s.%N)
    times+=(" $name $(echo "$t0 $t1" | awk '{ printf "%.0f", $2 - $1 }') s")
    if [ "$rc" != 0 ]; then
        summary
        echo "tools/test.sh: tier $name failed (exit $rc)" >&2
        exit "$rc"
    fi
}

twin=(--lib --bins --examples)
guest_files=()
for t in tests/*.rs; do
    n=$(basename "$t" .rs)
    case $n in
    guest*) guest_files+=("$n") ;;
    *) twin+=(--test "$n") ;;
    esac
done

lint() { cargo fmt --all -- --check && cargo clippy --all-targets -- -D warnings; }
unit_twin() { cargo test "${twin[@]}" -- --test-threads="$threads"; }
# The static guest binaries and every test binary, so that the tiers below time only their tests.
build() { cargo test --no-run --all-targets && tools/vm/run.sh --build; }
# The unit tests of guest.rs (no boot), then any other guest-tier file.
guest_rest() {
    cargo test --test guest -- --skip bookworm_6_1:: --skip trixie_6_12:: --test-threads="$threads"
    local n
    for n in "${guest_files[@]}"; do
        [ "$n" = guest ] || cargo test --test "$n" -- --test-threads="$threads" || return
    done
}

if [ "$quick" = 1 ]; then
    tier lint lint
    tier unit+twin unit_twin
    summary
    exit 0
fi
tier setup tools/vm/setup.sh
tier lint lint
tier build build
tier unit+twin unit_twin
# One kernel after the other (two cores: never two TCG guests at once).
tier "guest 6.1" cargo test --test guest bookworm_6_1:: -- --test-threads="$threads"
tier "guest 6.12" cargo test --test guest trixie_6_12:: -- --test-threads="$threads"
tier "guest rest" guest_rest
summary

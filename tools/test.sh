#!/usr/bin/env bash
# Runs every test tier: unit + proptest, the twin, and the QEMU guest.
# On a fresh Debian machine it installs what the guest tier needs first
# (qemu-system-x86, busybox-static, cpio, a Debian kernel image unpacked under
# target/vm/, never installed as the machine's kernel).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -x tools/vm/setup.sh ]; then
    tools/vm/setup.sh
fi
cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings
cargo test --all-targets -- --test-threads="${RESETLAB_TEST_THREADS:-2}"

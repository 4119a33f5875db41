#!/usr/bin/env bash
# Sets up the machine (scripts/setup.sh) and runs every test of the workspace: unit tests,
# property tests, the ring stress test, and the integration tests that start the real
# frame-kernel / model-server / core-agent processes with the real assets in
# $FRAMEBUS_ASSETS (default ../shared/assets). With CI=true a missing asset fails the tests.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup.sh
# shellcheck disable=SC1091
source .local/env.sh
export FRAMEBUS_ASSETS="${FRAMEBUS_ASSETS:-$(cd "$root/.." && pwd)/shared/assets}"
# Integration tests of one crate start the binaries of the others: build them all first.
cargo build --workspace --bins
cargo test --workspace --no-fail-fast -- --test-threads="${FRAMEBUS_TEST_THREADS:-2}"

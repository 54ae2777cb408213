#!/usr/bin/env bash
# The whole test suite: unit, property, differential and (as root) namespace lab tests.
# EAL-using tests need one process per test, hence nextest.
set -euo pipefail
cd "$(dirname "$0")/.."
export FLOWGATE_CLASSBENCH="${FLOWGATE_CLASSBENCH:-$(cd .. && pwd)/shared/classbench}"
cargo nextest run --workspace --no-fail-fast "$@"

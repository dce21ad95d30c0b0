#!/usr/bin/env bash
# The tests, as the README's second command and CI run them: builds every binary (the end-to-end tests
# run them as real processes), then runs every tier with cargo-nextest, installing it first when missing.
# Needs only Rust; tiers that need Docker, ZooKeeper or the Mesos protos skip loudly without them (see the
# README). Arguments go to nextest, e.g. `./test.sh -p tetherctl` or `./test.sh -E 'binary(ha)'`.
set -euo pipefail
cd "$(dirname "$0")"

command -v cargo-nextest >/dev/null || cargo install --locked cargo-nextest
cargo build --workspace --bins
cargo nextest run --workspace --no-fail-fast "$@"

#!/usr/bin/env bash
# Coverage-guided fuzzing of one target with libFuzzer (needs a nightly toolchain and cargo-fuzz:
# `rustup toolchain install nightly && cargo install cargo-fuzz`). New inputs go to a scratch corpus in
# fuzz/libfuzzer/corpus/<target> (ignored by git); the committed seeds in fuzz/corpus/<target> are read,
# never written. A crash leaves its input in fuzz/libfuzzer/artifacts/<target>/: fix the bug, copy the
# input to fuzz/corpus/<target>/regression-<what> and add a test that names it.
#
#   fuzz/run.sh TARGET [SECONDS]      targets: recordio mesos_events plugin_reply agent_messages wal
#   fuzz/run.sh all [SECONDS]         each target in turn
#
# Safe Rust only, so no sanitizer (-s none: several times faster); debug assertions on (-a), so an
# arithmetic overflow is a finding too.
set -euo pipefail
cd "$(dirname "$0")"
target=${1:?usage: fuzz/run.sh TARGET|all [SECONDS]}
seconds=${2:-300}
# The fuzz crate is a workspace of its own: start from the main lock file so it builds the same versions.
[ -f libfuzzer/Cargo.lock ] || cp ../Cargo.lock libfuzzer/Cargo.lock
if [ "$target" = all ]; then
  targets=(recordio mesos_events plugin_reply agent_messages wal)
else
  targets=("$target")
fi
for t in "${targets[@]}"; do
  mkdir -p "libfuzzer/corpus/$t"
  cargo +nightly fuzz run --fuzz-dir libfuzzer -s none -a "$t" "libfuzzer/corpus/$t" "corpus/$t" -- \
    -max_total_time="$seconds" -max_len=65536 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
done

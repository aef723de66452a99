#!/usr/bin/env bash
# Build the fuzz target on a stable toolchain (libFuzzer with SanitizerCoverage, no ASan: Rust
# code is memory-safe; the target looks for panics, overflows and hangs) and run it.
# Usage: fuzz/run.sh [SECONDS]   (default 300). Corpus: fuzz/corpus/tcf_decode (seeded from the
# shared TC-string vectors when present).
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-300}"
export CARGO_TARGET_DIR="${CARGO_FUZZ_TARGET_DIR:-$HOME/.cache/segdb-fuzz-target}"
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
 -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
 -Cllvm-args=-sanitizer-coverage-trace-compares -Cdebug-assertions -Coverflow-checks"
# An explicit --target keeps RUSTFLAGS off build scripts (as cargo-fuzz does).
host="$(rustc -vV | sed -n 's/^host: //p')"
cargo build --release --bin tcf_decode --target "$host"
corpus=corpus/tcf_decode
mkdir -p "$corpus"
vectors=../../shared/vectors
if [ -d "$vectors" ] && [ -z "$(ls -A "$corpus")" ]; then
  python3 - "$vectors" "$corpus" <<'PY'
import json, sys, pathlib, hashlib
src, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
def strings(v):
    if isinstance(v, str):
        yield v
    elif isinstance(v, dict):
        for x in v.values(): yield from strings(x)
    elif isinstance(v, list):
        for x in v: yield from strings(x)
for f in ["tcf_valid.json", "tcf_invalid.json"]:
    p = src / f
    if p.exists():
        for s in strings(json.loads(p.read_text())):
            if len(s) > 8:
                (out / hashlib.sha1(s.encode()).hexdigest()).write_text(s)
PY
fi
"$CARGO_TARGET_DIR/$host/release/tcf_decode" -max_total_time="$secs" -max_len=4096 -timeout=5 "$corpus"

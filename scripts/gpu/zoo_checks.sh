#!/bin/bash
# Parity for every fused mixer, then the mixer benchmark, on one GPU host (results in docs/gpu.md).
# Compile-bound work runs in parallel processes (FLA_CACHE_RESULTS=0: no autotuning choices made on
# a crowded GPU are kept); the benchmark then times one mixer at a time on a quiet GPU.
#   scripts/gpu/zoo_checks.sh OUTDIR [MIXER ...]      (JOBS=8 warm-up processes by default)
set -u
out=${1:?usage: zoo_checks.sh OUTDIR [MIXER ...]}; shift
mkdir -p "$out"
mixers=("$@")
if [ ${#mixers[@]} -eq 0 ]; then
  mixers=($(python3 -c 'from grid.models.registry import all_mixers; print(*[s.name for s in all_mixers() if s.fused])'))
fi
python3 -m grid models > "$out/models.txt" 2>&1
for m in "${mixers[@]}"; do
  FLA_CACHE_RESULTS=0 python3 -m grid check parity --mixers "$m" --json "$out/parity-$m.json" \
    > "$out/parity-$m.txt" 2>&1 &
done
python3 scripts/gpu/warm_kernels.py bench --mixers "${mixers[@]}" --jobs "${JOBS:-8}" > "$out/warm-bench.txt" 2>&1
wait
python3 -m grid bench mixers --mixers "${mixers[@]}" --json "$out/bench.json" --markdown \
  > "$out/bench.txt" 2> "$out/bench.log"

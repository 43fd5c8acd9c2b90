#!/bin/bash
# Parity for every fused mixer, then the mixer benchmark, on one GPU host (results in docs/gpu.md).
# Parity runs with the first kernel config that compiles (grid/models/autotune.py: the math does not
# depend on it), one process per mixer, in parallel with the benchmark's warm-up, which compiles
# every autotuning candidate (FLA_CACHE_RESULTS=0: no choice made on a crowded GPU is kept); the
# benchmark then autotunes and times one mixer at a time on a quiet GPU. Everything lands in
# OUTDIR/zoo.tar.gz as well (a device call returns only a few files: fetch that one).
#   scripts/gpu/zoo_checks.sh OUTDIR [MIXER ...]      (JOBS=8 warm-up processes by default;
#   PARITY_ONLY=1 skips the benchmark; BUDGET_S=500 stops every step by then, archive kept;
#   BENCH_AUTOTUNE=first times the first kernel config that runs: untuned, recorded per row)
set -u
start=$SECONDS
# run a step within what is left of BUDGET_S (no limit without it): a killed script would leave
# its python children running on the GPU, a per-step timeout does not
lim() { if [ -n "${BUDGET_S:-}" ]; then timeout $(( BUDGET_S - (SECONDS - start) > 1 ? BUDGET_S - (SECONDS - start) : 1 )) "$@"; else "$@"; fi; }
out=${1:?usage: zoo_checks.sh OUTDIR [MIXER ...]}; shift
mkdir -p "$out"
mixers=("$@")
if [ ${#mixers[@]} -eq 0 ]; then
  mixers=($(python3 -c 'from grid.models.registry import all_mixers; print(*[s.name for s in all_mixers() if s.fused])'))
fi
python3 -m grid models > "$out/models.txt" 2>&1
for m in "${mixers[@]}"; do
  lim python3 -m grid check parity --mixers "$m" --json "$out/parity-$m.json" \
    > "$out/parity-$m.txt" 2>&1 &
done
pack() { tar -C "$out" -czf "$out/zoo.tar.gz" --exclude zoo.tar.gz . ; }
trap pack EXIT
if [ -z "${PARITY_ONLY:-}" ]; then
  lim python3 scripts/gpu/warm_kernels.py bench --mixers "${mixers[@]}" --jobs "${JOBS:-8}" \
    --autotune "${BENCH_AUTOTUNE:-full}" > "$out/warm-bench.txt" 2>&1
fi
wait
cat "$out"/parity-*.jsonl > "$out/parity.jsonl" 2>/dev/null
pack
if [ -z "${PARITY_ONLY:-}" ]; then
  lim python3 -m grid bench mixers --mixers "${mixers[@]}" --json "$out/bench.json" --markdown \
    --autotune "${BENCH_AUTOTUNE:-full}" \
    > "$out/bench.txt" 2> "$out/bench.log"
fi

#!/bin/bash
# One GPU host, one command: how close does each fused mixer get, inside the LM of a throughput
# grid, to what its mixer benchmark allows (scripts/lm_vs_mixer_bench.py; docs/gpu.md)?
#   1. compile the grid's LM kernels and the benchmark's kernels in parallel processes
#      (scripts/gpu/warm_kernels.py; minutes per mixer with full autotuning);
#   2. benchmark the grid's mixers at the LM's mixer shape (the scale's d_model and sequence
#      length, the micro-batch's tokens per step): minutes, so it goes before the long part;
#   3. run the grid (one trial at a time on a quiet GPU; steady-state tokens/s);
#   4. print the ratio table; leave lm.csv, bench.json, logs and ratio.txt in OUTDIR.
#   scripts/gpu/lm_vs_bench.sh GRID.yaml OUTDIR        (JOBS=10 warm-up processes by default;
#   RESULTS=DIR the results store, default OUTDIR/results; BUDGET_S=N stops every step by then;
#   DRY_RUN=1 prints the shapes and mixers it would use and exits; PYTHON=... the interpreter;
#   AUTOTUNE=first makes the LM and the benchmark both take fla's first kernel config, untuned:
#   minutes instead of hours for a whole registry, like against like, slower than tuned kernels)
# The grid must hold an eager transformer (the estimate subtracts its attention time).
set -u
start=$SECONDS
py=${PYTHON:-python3}
autotune=${AUTOTUNE:-full}
case "$autotune" in full|first) ;; *) echo "AUTOTUNE=$autotune: expected full or first" >&2; exit 2 ;; esac
export LINGRID_AUTOTUNE=$autotune   # the grid's trials (Ray workers inherit it) and the warm-up's LM processes
lim() { if [ -n "${BUDGET_S:-}" ]; then timeout $(( BUDGET_S - (SECONDS - start) > 1 ? BUDGET_S - (SECONDS - start) : 1 )) "$@"; else "$@"; fi; }
grid=${1:?usage: lm_vs_bench.sh GRID.yaml OUTDIR}; out=${2:?usage: lm_vs_bench.sh GRID.yaml OUTDIR}
mkdir -p "$out"; results=${RESULTS:-$out/results}
read -r d_model seq_len micro layers mixers < <("$py" - "$grid" <<'PY'
import sys
from grid.lm.gridspec import expand, load_grid
trials = expand(load_grid(sys.argv[1]), 4096, "plan", count=False)
shapes = {(t.model.d_model, t.train["seq_len"], t.train["micro_batch_size"], t.model.n_layers) for t in trials}
if len(shapes) != 1:
    sys.exit(f"one scale and micro-batch per grid, please: {sorted(shapes)}")
print(*shapes.pop(), ",".join(sorted({t.model.mixer for t in trials})))
PY
)
[ -n "${mixers:-}" ] || exit 2
IFS=, read -r -a mix <<< "$mixers"
echo "[lm_vs_bench] $grid: d_model $d_model, T $seq_len, $layers layers, micro-batch $micro, autotune $autotune, mixers ${mix[*]}"
[ -z "${DRY_RUN:-}" ] || exit 0
lim "$py" scripts/gpu/warm_kernels.py lm "$grid" --jobs "${JOBS:-10}" > "$out/warm-lm.log" 2>&1 &
lm_pid=$!
lim "$py" scripts/gpu/warm_kernels.py bench --mixers "${mix[@]}" --seq-lens "$seq_len" --jobs "${JOBS:-10}" \
  --autotune "$autotune" > "$out/warm-bench.log" 2>&1 &
bench_pid=$!
wait "$lm_pid" "$bench_pid"   # (wait on the pids: a pgrep for the script name would match this shell)
cat "$out/warm-lm.log" "$out/warm-bench.log"
lim "$py" -m grid bench mixers --mixers "${mix[@]}" --d-model "$d_model" --seq-lens "$seq_len" \
  --tokens $(( micro * seq_len )) --autotune "$autotune" --json "$out/bench.json" > "$out/bench.log" 2>&1
tail -n $(( ${#mix[@]} + 3 )) "$out/bench.log"
lim "$py" -m grid run "$grid" --results "$results" > "$out/run.log" 2>&1
grep -v "running |" "$out/run.log" | tail -15
"$py" -m grid results query --results "$results" --format csv \
  "SELECT model_id, mixer, compiled, autotune, triton, tokens_per_s, mfu, peak_mem_gib, status FROM results WHERE suite = 'lm'" \
  > "$out/lm.csv"
"$py" scripts/lm_vs_mixer_bench.py "$out/lm.csv" "$out/bench.json" --n-layers "$layers" --seq-len "$seq_len" | tee "$out/ratio.txt"

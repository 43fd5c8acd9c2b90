#!/bin/bash
# Full-protocol MAD runs of some tasks for several architectures, one after the other, on this GPU
# host; each architecture's table and wall time go to OUTDIR, plus every row as CSV.
#
#   scripts/gpu/mad_tasks.sh OUTDIR TASKS ARCH [ARCH ...]      e.g. scripts/gpu/mad_tasks.sh $OUT M gla deltanet
#
# Extra flags for evals.mad go in MAD_FLAGS (default: the protocol's defaults, every setting of TASKS,
# all six packs of a task at once on the GPU, first-config autotuning); the store, data and Ray
# storage live under /tmp (kept while the machine is held, so a later call resumes, skipping done runs).
set -uo pipefail
out=${1:?usage: mad_tasks.sh OUTDIR TASKS ARCH...}; tasks=$2; shift 2
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD
export LINGRID_PARITY_CACHE=${LINGRID_PARITY_CACHE:-/tmp/lingrid-parity}
store=${MAD_STORE:-/tmp/mad-store}
flags=${MAD_FLAGS:---n-gpu 1 --n-tasks-gpu 6 --autotune first}
for arch in "$@"; do
  t0=$SECONDS
  python3 -m evals.mad.mad_eval_${arch//-/_} --tasks $tasks $flags --results "$store" --data-path /tmp/mad-data \
    --ray-tmp-path /tmp/mad-ray > "$out/$arch-$tasks.log" 2>&1
  rc=$?
  echo "== $arch tasks=$tasks rc=$rc wall=$((SECONDS - t0)) s"
  sed -n '/^trials:/,$p' "$out/$arch-$tasks.log"
done
python3 -m grid results query "SELECT model_id, protocol, task, setting, lr, wd, status, acc, acc_best, nan, epochs_run,
  stopped_early, parity_gate, parity_detail, backend, run_wall_s FROM results WHERE suite = 'mad' ORDER BY model_id, task, setting, lr, wd" \
  --store "$store" --format csv > "$out/mad-rows.csv"

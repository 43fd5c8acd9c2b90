#!/bin/bash
# The small hybrid-recall study (configs/grids/hybrid-recall-small.yaml) on one GPU host. One device call
# normally does it all (docs/hybrid-recall.md has the sequence and the time estimate):
#   scripts/gpu/hybrid_recall.sh OUTDIR all       prepare, then run within what is left of BUDGET_S (570 s)
#   scripts/gpu/hybrid_recall.sh OUTDIR prepare   link the installed packages' text, prepare the BPE shards, and
#                                                 compile the 9 models' kernels in parallel meanwhile
#   scripts/gpu/hybrid_recall.sh OUTDIR run       run the grid: trials already stored are skipped, so a call that
#                                                 ran out of time is finished by another `run`
# Kernels take fla's first config that compiles (LINGRID_AUTOTUNE=first: the same math, untuned speed; rows
# record it). `grid run` is stopped with SIGINT before the budget ends: Tune saves its state and the next
# `run` resumes. OUTDIR/hybrid-recall.tgz holds the logs and the results store (fetch that one file).
set -u
out=${1:?usage: hybrid_recall.sh OUTDIR all|prepare|run}
step=${2:?usage: hybrid_recall.sh OUTDIR all|prepare|run}
grid=configs/grids/hybrid-recall-small.yaml
budget=${BUDGET_S:-570}
mkdir -p "$out"
export LINGRID_AUTOTUNE=first
pack() { tar -C "$out" -czf "$out/hybrid-recall.tgz" --exclude hybrid-recall.tgz . ; }
trap pack EXIT
start=$SECONDS
left() { echo $(( budget - (SECONDS - start) > 30 ? budget - (SECONDS - start) : 30 )); }

prepare() {
  python3 scripts/link_corpus.py benchmark/corpus > "$out/corpus.txt" 2>&1
  timeout -k 10 "$(left)" python3 scripts/gpu/warm_kernels.py lm "$grid" --jobs 9 > "$out/warm.txt" 2>&1 &
  timeout -k 10 "$(left)" python3 -m grid data prepare configs/data/site-packages-bpe.yaml > "$out/prepare.txt" 2>&1
  wait
  python3 -m grid plan "$grid" > "$out/plan.txt" 2>&1
  echo "prepare done at $((SECONDS - start)) s" | tee -a "$out/steps.txt"
}

run() {
  # a fresh machine (the previous call's was given back): link again; `grid run` prepares the data itself
  [ -d benchmark/corpus ] || python3 scripts/link_corpus.py benchmark/corpus > "$out/corpus.txt" 2>&1
  local log="$out/run-$(date +%H%M%S).txt"
  timeout -s INT -k 60 "$(( $(left) - 20 ))" python3 -m grid run "$grid" --results benchmark/results \
    --ray-tmp-path benchmark/ray > "$log" 2>&1
  echo "grid run rc=$? at $((SECONDS - start)) s" | tee -a "$out/steps.txt"
  python3 -m grid analyze recall --results benchmark/results --grid hybrid-recall-small --all-settings \
    > "$out/recall.txt" 2>&1
  rm -rf "$out/results" && cp -r benchmark/results "$out/results"
}

case "$step" in
  prepare) prepare ;;
  run) run ;;
  all) prepare; run ;;
  *) echo "unknown step $step; allowed: all, prepare, run" >&2; exit 2 ;;
esac

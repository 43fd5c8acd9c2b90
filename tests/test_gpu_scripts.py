"""The GPU-host helper scripts list the right jobs without a GPU (--dry-run)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WARM = ROOT / "scripts" / "gpu" / "warm_kernels.py"


def _dry(*args: str) -> list[str]:
    p = subprocess.run([sys.executable, str(WARM), *args, "--dry-run"], capture_output=True, text=True,
                       timeout=300, cwd=ROOT)
    assert p.returncode == 0, p.stderr[-2000:]
    return p.stdout.strip().splitlines()[1:]


def test_lm_warm_up_has_one_job_per_distinct_model():
    jobs = _dry("lm", "configs/grids/throughput-125m.yaml")
    assert jobs == [f"{a}/pure/bench-125M" for a in
                    ("transformer", "gla", "retnet", "hgrn2", "deltanet", "gated-deltanet", "mamba2")]


def test_bench_warm_up_has_one_job_per_mixer_and_length():
    assert _dry("bench", "--mixers", "gla", "retnet", "--seq-lens", "2048", "8192") == [
        "gla T=2048", "gla T=8192", "retnet T=2048", "retnet T=8192"]


def test_zoo_script_parses():
    assert subprocess.run(["bash", "-n", str(ROOT / "scripts" / "gpu" / "zoo_checks.sh")]).returncode == 0

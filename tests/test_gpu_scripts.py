"""The GPU-host helper scripts without a GPU: job lists (--dry-run) and the LM-vs-benchmark estimate."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

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


def test_lm_vs_mixer_estimate_charges_each_layer_at_benchmark_speed():
    import importlib.util

    import pandas as pd

    spec = importlib.util.spec_from_file_location("lvm", ROOT / "scripts" / "lm_vs_mixer_bench.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    # transformer: 1 s per token, of which 2 attention layers at benchmark speed take 2 x 1/8 s
    lm = pd.DataFrame({"mixer": ["attention", "gla", "attention"], "compiled": [False, False, True],
                       "tokens_per_s": [1.0, 0.5, 9.0]})
    out = mod.allowed(lm, {"attention": 8.0, "gla": 2.0}, n_layers=2)
    # non-mixer cost 1 - 2/8 = 0.75 s; gla allowed 1 / (0.75 + 2/2) = 1/1.75 tokens/s; the compiled row is ignored
    assert out.to_dict("records") == [{"mixer": "gla", "lm_tokens_per_s": 0.5, "allowed_tokens_per_s": 1 / 1.75,
                                       "ratio": 0.5 * 1.75}]
    with pytest.raises(ValueError, match="eager transformer"):
        mod.allowed(lm[lm.mixer == "gla"], {"gla": 2.0}, n_layers=2)


def _load(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / "gpu" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_profile_script_classifies_kernels_and_needs_a_gpu():
    prof = _load("profile_lm_step")
    assert prof.kernel_class("cudnn_generated_fort_native_sdpa_sm90_flash_bprop_wgmma_f16") == "attention"
    assert prof.kernel_class("nvjet_sm90_tst_256x128_64x4_1x2_h_bz_coopA_NNT") == "gemm"
    assert prof.kernel_class("void at::native::multi_tensor_apply_kernel<FusedAdamMathFunctor>") == "optimizer"
    assert prof.kernel_class("triton_poi_fused__to_copy_add_arange_cos_sin_0") == "triton/fused"
    assert prof.kernel_class("void at::native::vectorized_elementwise_kernel<4, CUDAFunctor_add>") == "elementwise"
    assert prof.kernel_class("ncclDevKernel_AllReduce") == "communication"  # not an elementwise "reduce"
    assert prof.kernel_class("some_custom_kernel") == "other"
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(SystemExit):
            prof.main(["configs/grids/throughput-125m-compile.yaml"])


def test_pack_check_runs_on_cpu_and_packed_equals_solo(tmp_path):
    out = tmp_path / "pack.json"
    p = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu" / "check_pack.py"), "--tasks", "M", "--epochs",
                        "1", "--data-path", str(tmp_path / "data"), "--json", str(out)],
                       capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert p.returncode == 0, p.stderr[-2000:]
    import json

    (row,) = json.loads(out.read_text())
    assert row["pack_status"] == ["ok"] * 6 and row["runs"] == 6
    assert row["solo_noise_max_rel_test_loss_diff"] == 0.0 and row["max_rel_test_loss_diff"] == 0.0  # CPU: bitwise


def test_lm_vs_bench_reads_the_lm_shape_from_the_grid(tmp_path):
    import os

    env = {**os.environ, "DRY_RUN": "1", "PYTHON": sys.executable}
    p = subprocess.run(["bash", str(ROOT / "scripts" / "gpu" / "lm_vs_bench.sh"),
                        str(ROOT / "configs" / "grids" / "throughput-350m.yaml"), str(tmp_path / "out")],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert ("d_model 1024, T 2048, 24 layers, micro-batch 16, autotune full, "
            "mixers attention deltanet gated_deltanet gla hgrn2 retnet") in p.stdout
    grid = str(ROOT / "configs" / "grids" / "throughput-350m-rest.yaml")
    first = subprocess.run(["bash", str(ROOT / "scripts" / "gpu" / "lm_vs_bench.sh"), grid, str(tmp_path / "o2")],
                           cwd=ROOT, env={**env, "AUTOTUNE": "first"}, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0 and "autotune first, mixers attention gated_deltanet" in first.stdout
    bad = subprocess.run(["bash", str(ROOT / "scripts" / "gpu" / "lm_vs_bench.sh"), grid, str(tmp_path / "o3")],
                         cwd=ROOT, env={**env, "AUTOTUNE": "fastest"}, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "AUTOTUNE=fastest: expected full or first" in bad.stderr


def test_batched_mad_check_runs_on_a_cpu(tmp_path):
    # the GPU check of batched MAD runs, with the reference backend on a CPU: it must run end to end and
    # find the batched members equal to their solo runs (bit for bit here), before any GPU time is spent
    import json

    out = tmp_path / "check.json"
    cmd = [sys.executable, str(ROOT / "scripts" / "gpu" / "check_batched_mad.py"), "--json", str(out),
           "--arch", "gla", "--tasks", "M", "--epochs", "1", "--backend", "reference", "--device", "cpu",
           "--max-train-examples", "64", "--compare", "0", "--data-path", str(tmp_path / "data")]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert p.returncode == 0, p.stderr[-3000:] + p.stdout[-2000:]
    (row,) = json.loads(out.read_text())
    assert row["batched_status"] == ["ok"] * 6 and row["pack_status"] == ["ok"] * 6
    assert row["max_batched_vs_solo_curve_rel"] == 0.0 and row["max_noise_curve_rel"] == 0.0
    assert row["batched_wall_s"] > 0 and row["speedup_vs_pack"] > 0

"""The parity command itself, on CPU: fla's kernels run in Triton's interpreter (tests/conftest.py)."""
import json

import pytest

from grid.check.cli import parity_main
from grid.check.parity import check_mixer, rel_err


def test_rel_err_zero_and_scale():
    import torch

    a = torch.ones(3)
    assert rel_err(a, a) == 0.0
    assert abs(rel_err(2 * a, a) - 1.0) < 1e-7


@pytest.mark.parametrize("mixer", ["gla", "hgrn2"])
def test_fused_vs_reference_in_interpreter(mixer):
    rows = check_mixer(mixer, shapes=[(1, 20, 32)], dtypes=("fp32",), device="cpu")
    assert [r.status for r in rows] == ["PASS"], rows
    assert rows[0].out_err < 1e-4 and rows[0].dx_err < 1e-4


def test_cli_writes_table_and_json(tmp_path, capsys):
    out = tmp_path / "parity.json"
    rc = parity_main(["--device", "cpu", "--mixers", "attention", "gla", "--dtypes", "fp32",
                      "--shapes", "1x20x32", "--json", str(out)])
    assert rc == 0
    data = json.loads(out.read_text())
    assert {r["mixer"] for r in data["rows"]} == {"attention", "gla"}
    assert all(r["status"] == "PASS" for r in data["rows"])
    assert len((tmp_path / "parity.jsonl").read_text().splitlines()) == 2  # streamed as measured
    assert "PASS" in capsys.readouterr().out


def test_cli_unknown_mixer_is_an_error_row(tmp_path):
    rc = parity_main(["--device", "cpu", "--mixers", "nope", "--dtypes", "fp32", "--shapes", "1x8x32"])
    assert rc == 1

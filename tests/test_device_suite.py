"""benchmarks/device_suite.py, the prepared device check, runs end to end on the CPU at tiny sizes and writes its
JSON (so that it works the day an accelerator is at hand)."""
import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ALL = "ncsn_cifar10,mdsm_fashion_mnist,dde_mnist,debm_cifar10"


@pytest.mark.parametrize("configs", [pytest.param("mdsm_fashion_mnist", id="one_config"),
                                     pytest.param(ALL, id="one_per_method", marks=pytest.mark.slow)])
def test_device_suite_runs_tiny_and_writes_json(tmp_path, configs):
  out = tmp_path / "suite.json"
  r = subprocess.run([sys.executable, "benchmarks/device_suite.py", f"--out={out}", "--tiny", "--chunk=2",
                      f"--configs={configs}", "--bf16=mdsm_fashion_mnist",
                      "--budget_s=900"], cwd=REPO, capture_output=True, text=True, timeout=1200)
  assert r.returncode == 0, r.stderr[-3000:]
  res = json.load(open(out))
  for key in [f"{c}/float32" for c in configs.split(",")] + ["mdsm_fashion_mnist/bfloat16"]:
    row = res["configs"][key]
    assert "error" not in row, (key, row)
    assert row["train_steps_s"] > 0 and row["step_flops"] > 0 and 0 < row["mfu"] < 1.5, (key, row)
    assert row["sampler_steps_s"] > 0, (key, row)
  assert res["mdsm_dsm_ratio"]["rc"] == 0 and "ratio mdsm/dsm" in res["mdsm_dsm_ratio"]["stdout"]
  assert res["debm_vs_ncsn_64_samples"]["rc"] == 0 and "ratio NCSN / DEBM" in res["debm_vs_ncsn_64_samples"]["stdout"]

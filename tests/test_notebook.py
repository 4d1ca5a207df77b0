"""notebooks/quickstart.ipynb runs end to end.

The notebook is executed with nbclient in a kernel of *this* interpreter (a kernel spec written to a
temporary JUPYTER_PATH, so it works in a fresh venv with no registered kernels), at the tiny settings
its first cell reads from the environment: 100 training steps, 200 Langevin chains, the runner writing
to a temporary directory.
"""
import json
import os
import pathlib
import re
import sys

import nbclient
import nbformat
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "quickstart.ipynb"
KERNEL = "dsm_jax_test_python3"
TINY = {"DSM_QUICKSTART_STEPS": "100", "DSM_QUICKSTART_SAMPLES": "200"}
# one row of the notebook's weight table: "  <score>   <annealed weight>   <plain weight>"
WEIGHT_ROW = r"^\s*{}\s+([01]\.\d{{3}})\s+([01]\.\d{{3}})\s*$"


def _kernel_spec(root: pathlib.Path) -> None:
  spec = root / "kernels" / KERNEL
  spec.mkdir(parents=True)
  (spec / "kernel.json").write_text(json.dumps({
      "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
      "display_name": "Python 3 (dsm_jax tests)",
      "language": "python",
  }))


def _stdout(nb) -> str:
  return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                 for o in c.outputs if o.output_type == "stream" and o.name == "stdout")


def test_committed_notebook_has_no_outputs():
  nb = nbformat.read(NOTEBOOK, as_version=4)
  nbformat.validate(nb)
  code = [c for c in nb.cells if c.cell_type == "code"]
  assert code, "no code cells"
  for c in code:
    assert not c.outputs and c.execution_count is None, f"stored output in cell:\n{c.source[:200]}"
  assert all(f"os.environ.get(\"{k}\"" in code[0].source for k in TINY), "the first cell reads the knobs"


def test_quickstart_notebook_runs(tmp_path, monkeypatch):
  _kernel_spec(tmp_path / "jupyter")
  monkeypatch.setenv("JUPYTER_PATH", os.pathsep.join(
      p for p in (str(tmp_path / "jupyter"), os.environ.get("JUPYTER_PATH", "")) if p))
  for k, v in TINY.items():
    monkeypatch.setenv(k, v)
  workdir = tmp_path / "run"
  monkeypatch.setenv("DSM_QUICKSTART_WORKDIR", str(workdir))

  nb = nbformat.read(NOTEBOOK, as_version=4)
  client = nbclient.NotebookClient(nb, kernel_name=KERNEL, timeout=600, startup_timeout=120,
                                   resources={"metadata": {"path": str(NOTEBOOK.parent)}})
  try:
    client.execute()
  except nbclient.exceptions.CellExecutionError as e:
    pytest.fail(f"the notebook raised:\n{e}")

  errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
  assert not errors, errors
  out = _stdout(nb)
  assert "N_STEPS=100, N_SAMPLES=200" in out, out[:500]
  assert "weight of the (5, 5) mode" in out, out

  weights = {}
  for name in ("network", "exact"):
    m = re.search(WEIGHT_ROW.format(name), out, re.MULTILINE)
    assert m, f"no weight row for the {name} score in:\n{out}"
    weights[name] = tuple(float(w) for w in m.groups())
  for annealed, plain in weights.values():
    assert 0.0 <= annealed <= 1.0 and 0.0 <= plain <= 1.0, weights
  # the exact score needs no training: annealed Langevin finds the 0.8 weight even from 200 chains
  assert 0.65 <= weights["exact"][0] <= 0.95, weights

  # figures render inline (the runner's headless plotting must not switch the notebook's backend)
  images = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
            if o.output_type == "display_data" and "image/png" in o.get("data", {})]
  assert len(images) >= 4, f"{len(images)} inline images"

  # the runner section wrote the output contract where DSM_QUICKSTART_WORKDIR pointed
  for rel in ("config.json", "metrics.jsonl", "eval.json", "samples/samples.npz", "samples/langevin.npz",
              "samples/samples.png", "checkpoints/100"):
    assert (workdir / rel).exists(), rel
  results = json.loads((workdir / "eval.json").read_text())
  assert results["step"] == 100
  assert re.search(r"weight_pos_annealed\s+[0-9.]+", out), out

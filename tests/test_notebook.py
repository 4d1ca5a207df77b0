"""Every notebook in notebooks/ runs end to end, and the committed copies carry the outputs of their current code.

The runs execute each notebook with nbclient in a kernel of *this* interpreter (notebooks/execute.py writes a kernel
spec to a temporary JUPYTER_PATH, so it works in a fresh venv with no registered kernels) at the tiny size its first
cell reads from DSM_NOTEBOOK_SIZE, the runs writing under DSM_NOTEBOOK_WORKDIR.
"""
import importlib.util
import json
import pathlib
import re

import nbclient
import nbformat
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = REPO / "notebooks"
NOTEBOOKS = ("quickstart", "scores_denoisers_energies", "mdsm_energies", "dde_and_denoiser_vi", "denoising_ebm")
# one row of the quickstart's weight table: "  <score>   <annealed weight>   <plain weight>"
WEIGHT_ROW = r"^\s*{}\s+([01]\.\d{{3}})\s+([01]\.\d{{3}})\s*$"


def _execute_module():
  spec = importlib.util.spec_from_file_location("notebook_execute", NOTEBOOK_DIR / "execute.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


ex = _execute_module()


def _stdout(nb) -> str:
  return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                 for o in c.outputs if o.output_type == "stream" and o.name == "stdout")


def _images(nb) -> int:
  return sum("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.outputs)


def _run(name, tmp_path):
  """The notebook executed at the tiny size (not written back); its runs write under tmp_path / 'run'."""
  workdir = tmp_path / "run"
  try:
    nb = ex.execute(NOTEBOOK_DIR / f"{name}.ipynb", size="tiny", env={"DSM_NOTEBOOK_WORKDIR": str(workdir)},
                    write=False, timeout=600)
  except nbclient.exceptions.CellExecutionError as e:
    pytest.fail(f"{name}.ipynb raised:\n{e}")
  errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
  assert not errors, errors
  out = _stdout(nb)
  assert re.search(r"^SIZE=tiny\b", out, re.MULTILINE), out[:500]
  assert nb.metadata["dsm_jax"]["size"] == "tiny"
  assert ex.problems(nb) == [], ex.problems(nb)  # a fresh run passes the staleness check
  return nb, out, workdir


def test_quickstart_runs(tmp_path):
  nb, out, workdir = _run("quickstart", tmp_path)
  assert "N_STEPS=100, N_SAMPLES=200" in out, out[:500]
  weights = {}
  for name in ("network", "exact"):
    m = re.search(WEIGHT_ROW.format(name), out, re.MULTILINE)
    assert m, f"no weight row for the {name} score in:\n{out}"
    weights[name] = tuple(float(w) for w in m.groups())
  # the exact score needs no training: annealed Langevin finds the 0.8 weight even from 200 chains
  assert 0.65 <= weights["exact"][0] <= 0.95, weights
  # figures render inline (the runner's headless plotting must not switch the notebook's backend)
  assert _images(nb) >= 4, f"{_images(nb)} inline images"
  for rel in ("config.json", "metrics.jsonl", "eval.json", "samples/samples.npz", "samples/langevin.npz",
              "samples/samples.png", "checkpoints/100"):
    assert (workdir / rel).exists(), rel
  assert json.loads((workdir / "eval.json").read_text())["step"] == 100


def test_scores_denoisers_energies_runs(tmp_path):
  nb, out, workdir = _run("scores_denoisers_energies", tmp_path)
  # Tweedie: the denoiser built from the exact score is the posterior mean, to float32 round-off
  gaps = [float(g) for g in re.findall(r"max \|r\(x~\) - E\[x \| x~\]\| = ([0-9.e+-]+)", out)]
  assert len(gaps) == 2 and max(gaps) < 1e-3, out
  for name in ("dsm", "esm", "ssm", "mdsm"):  # the four runs, each with its output contract
    assert json.loads((workdir / name / "eval.json").read_text())["step"] == 30, name
  rows = dict(re.findall(r"^(DSM|ESM|SSM|MDSM)\s+([0-9.]+)\s", out, re.MULTILINE))
  assert set(rows) == {"DSM", "ESM", "SSM", "MDSM"}, out
  # the samplers on the exact density: MALA's within-mode spread is the truth's (1.118), up to sampling error
  mala = re.search(r"^MALA, alpha=1.0\s+([0-9.]+)\s+([0-9.]+)", out, re.MULTILINE)
  assert mala and abs(float(mala.group(2)) - 1.118) < 0.15, out
  assert _images(nb) >= 4  # Tweedie's arrows, the four objectives, MDSM's energy contours, the samplers


def test_mdsm_energies_runs(tmp_path):
  nb, out, workdir = _run("mdsm_energies", tmp_path)
  aurocs = {k: float(v) for k, v in re.findall(r"AUROC test digits vs (\w+)\s*: ([0-9.]+)", out)}
  assert set(aurocs) == {"noise", "constant", "interp"}, out
  assert all(0.0 <= a <= 1.0 for a in aurocs.values()), aurocs
  assert (workdir / "samples" / "trajectory.png").exists()
  assert _images(nb) >= 4


def test_dde_and_denoiser_vi_runs(tmp_path):
  nb, out, workdir = _run("dde_and_denoiser_vi", tmp_path)
  for rel in ("dde/samples/training_rounds.png", "dde/samples/densities.png", "dvi/samples/samples.png",
              "dvi/samples/gradients.png"):
    assert (workdir / rel).exists(), rel
  assert re.search(r"post_mean_err\s+[0-9.e+-]+", out), out
  assert _images(nb) >= 5


def test_denoising_ebm_runs(tmp_path):
  nb, out, workdir = _run("denoising_ebm", tmp_path)
  aurocs = re.findall(r"AUROC of -U_c: test digits vs (\w+)\s+([0-9.]+)", out)
  assert {k for k, _ in aurocs} == {"noise", "constant", "interp"}, out
  for rel in ("samples/trajectory.png", "samples/pixel_only.png", "samples/pixel_only_equal_cost.png"):
    assert (workdir / rel).exists(), rel
  assert _images(nb) >= 4


def test_every_notebook_is_tested():
  assert sorted(p.stem for p in ex.notebook_paths()) == sorted(NOTEBOOKS)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_notebook_is_executed_from_its_current_code(name):
  """The committed notebook holds the outputs of a top-to-bottom run of its current cells at a default size
  (notebooks/execute.py stamps each code cell with its source's hash), a Colab-ready first cell, a thumbnail."""
  nb = nbformat.read(NOTEBOOK_DIR / f"{name}.ipynb", as_version=4)
  nbformat.validate(nb)
  assert ex.problems(nb) == [], f"{name}.ipynb: rerun `python notebooks/execute.py notebooks/{name}.ipynb`: " \
                                f"{ex.problems(nb)}"
  assert nb.metadata["dsm_jax"]["size"] in ("small", "large"), nb.metadata["dsm_jax"]
  first = next(c for c in nb.cells if c.cell_type == "code").source
  for needle in ("DSM_JAX_SPEC = ", "pip", "jax.devices()", 'os.environ.get("DSM_NOTEBOOK_SIZE")',
                 'jax.default_backend() == "cpu"'):
    assert needle in first, needle
  assert (NOTEBOOK_DIR / "figures" / f"{name}.png").exists()


def test_staleness_check_catches_edits_and_reordering():
  nb = nbformat.read(NOTEBOOK_DIR / "quickstart.ipynb", as_version=4)
  assert ex.problems(nb) == []
  code = [c for c in nb.cells if c.cell_type == "code"]
  edited = nbformat.from_dict(json.loads(json.dumps(nb)))
  [c for c in edited.cells if c.cell_type == "code"][2].source += "\nprint('changed')"
  assert any("edited after execution" in p for p in ex.problems(edited))
  swapped = nbformat.from_dict(json.loads(json.dumps(nb)))
  cs = [c for c in swapped.cells if c.cell_type == "code"]
  cs[1].execution_count, cs[2].execution_count = cs[2].execution_count, cs[1].execution_count
  assert any("execution counts" in p for p in ex.problems(swapped))
  cleared = nbformat.from_dict(json.loads(json.dumps(nb)))
  for c in cleared.cells:
    if c.cell_type == "code":
      c.outputs, c.execution_count = [], None
  assert ex.problems(cleared), "a notebook without outputs passed"
  assert len(code) >= 3


def test_readme_links_every_notebook_with_its_thumbnail():
  readme = (REPO / "README.md").read_text()
  for name in NOTEBOOKS:
    assert f"notebooks/{name}.ipynb" in readme, name
    assert f"notebooks/figures/{name}.png" in readme, name


def test_only_machine_load_reports_are_dropped_from_outputs():
  alarm = nbformat.v4.new_output("stream", name="stderr", text=(
      "E1208 00:11:40.385167   13516 slow_operation_alarm.cc:73] \n********************************\n"
      "[Compiling module jit_step_fn for CPU] Very slow compile? If you want to file a bug, run with envvar ...\n"
      "********************************\n"))
  warning = nbformat.v4.new_output("stream", name="stderr", text="UserWarning: the loss is not finite\n")
  printed = nbformat.v4.new_output("stream", name="stdout", text="Very slow compile? (printed by the notebook)\n")
  assert ex.is_machine_noise(alarm)
  assert not ex.is_machine_noise(warning) and not ex.is_machine_noise(printed)

"""Every mistake on the command line is one line on stderr and exit status 2, before any compute: a missing or
misspelled config path, a config file with a syntax error or a get_config that raises, an override of a key
that does not exist or with a value of the wrong type, a mode that needs a checkpoint on an empty workdir,
and (hypothesis) random malformed flags."""
import os
import string

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from experiments import run as cli_module

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(capfd, *args):
  rc = cli_module.cli(["run", *args])
  out, err = capfd.readouterr()
  return rc, err


def _one_line(err: str) -> str:
  lines = [l for l in err.splitlines() if l.strip()]
  assert len(lines) == 1, err
  assert lines[0].startswith("error: "), lines[0]
  return lines[0]


@pytest.fixture
def bad_configs(tmp_path):
  syntax = tmp_path / "syntax.py"
  syntax.write_text("def get_config(:\n  pass\n")
  raises = tmp_path / "raises.py"
  raises.write_text("def get_config():\n  raise RuntimeError('no such dataset prepared')\n")
  missing = tmp_path / "no_get_config.py"
  missing.write_text("x = 1\n")
  return {"syntax": str(syntax), "raises": str(raises), "missing": str(missing)}


@pytest.mark.parametrize("case,args,says", [
    ("misspelled path", ["--config=configs/ncsn_tyo.py"], "no such file"),
    ("missing config", [], "--config is required"),
    ("missing workdir", ["--config=configs/ncsn_toy.py", "--workdir="], "--workdir is required"),
    ("unknown key", ["--config=configs/ncsn_toy.py", "--config.training.n_itrs=5"], "config.training.n_itrs"),
    ("unknown section", ["--config=configs/ncsn_toy.py", "--config.optim.lr=5"], "config.optim.lr"),
    ("wrong type", ["--config=configs/ncsn_toy.py", "--config.training.n_iters=many"], "config.training.n_iters"),
    ("bad value", ["--config=configs/ncsn_toy.py", "--config.model.sigma_min=-1"], "config.model.sigma_min"),
    ("bad mode", ["--config=configs/ncsn_toy.py", "--mode=fit"], "--mode"),
    ("unknown flag", ["--config=configs/ncsn_toy.py", "--epochs=3"], "epochs"),
    ("bad restarts", ["--config=configs/ncsn_toy.py", "--restarts=-1"], "--restarts"),
    ("outdir with train", ["--config=configs/ncsn_toy.py", "--outdir=/tmp/x"], "--outdir"),
])
def test_mistakes_are_one_line(capfd, tmp_path, case, args, says):
  if not any(a.startswith("--workdir") for a in args):
    args = args + [f"--workdir={tmp_path}/w"]
  rc, err = _run(capfd, *args)
  line = _one_line(err)
  assert rc == 2 and says in line, (case, line)
  assert not os.path.exists(tmp_path / "w" / "checkpoints")


@pytest.mark.parametrize("which,says", [("syntax", "syntax error"), ("raises", "no such dataset prepared"),
                                        ("missing", "get_config")])
def test_config_files_that_do_not_load_are_one_line(capfd, tmp_path, bad_configs, which, says):
  rc, err = _run(capfd, f"--config={bad_configs[which]}", f"--workdir={tmp_path}/w")
  line = _one_line(err)
  assert rc == 2 and says in line and bad_configs[which] in line, line


@pytest.mark.parametrize("mode,config", [("sample", "ncsn_toy"), ("eval", "ncsn_toy"), ("inpaint", "ncsn_toy"),
                                         ("loglik", "mdsm_toy")])
def test_a_mode_that_needs_a_checkpoint_on_an_empty_workdir(capfd, tmp_path, mode, config):
  rc, err = _run(capfd, f"--config=configs/{config}.py", f"--workdir={tmp_path}/empty", f"--mode={mode}")
  line = _one_line(err)
  assert rc == 2 and "no checkpoint" in line and "--mode=train" in line, line
  assert not os.path.exists(tmp_path / "empty" / "config.json")


def test_loglik_for_a_model_without_an_energy_is_one_line(capfd, tmp_path):
  rc, err = _run(capfd, "--config=configs/ncsn_toy.py", f"--workdir={tmp_path}/w", "--mode=loglik")
  line = _one_line(err)
  assert rc == 2 and "no energy to normalise" in line, line


KEYS = ["training.n_iters", "training.lr", "training.batch_size", "model.hidden", "model.sigma_min", "model.act",
        "sampling.eps", "sampling.convention", "sampling.init_range", "data.dataset", "seed", "method",
        "runtime.num_devices", "runtime.chunk_mode", "training.nets", "eval.enabled"]
_TEXT = st.text(alphabet=string.ascii_letters + string.digits + "._-()[],'\" =/", max_size=12)
_FLAG = st.one_of(
    st.tuples(st.sampled_from(KEYS), _TEXT).map(lambda kv: f"--config.{kv[0]}={kv[1]}"),  # a value of any shape
    st.tuples(_TEXT, _TEXT).map(lambda kv: f"--config.{kv[0]}={kv[1]}"),                 # any key
    st.tuples(st.sampled_from(["--mode", "--restarts", "--config", "--outdir", "--bogus"]), _TEXT).map("=".join),
)


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(flags=st.lists(_FLAG, min_size=1, max_size=3))
def test_random_malformed_flags_are_one_line(capfd, tmp_path, flags):
  """The toy config with random flags: exit 0 only if they happen to form a valid (tiny) run, else status 2 with
  one line; never a traceback."""
  args = ["--config=configs/ncsn_toy.py", f"--workdir={tmp_path}/h", "--config.training.n_iters=0",
          "--config.eval.enabled=False", "--config.sampling.n_samples=4", "--config.sampling.n_steps_each=1",
          "--config.runtime.progress=False", *flags]
  rc, err = _run(capfd, *args)
  if rc != 0:
    line = _one_line(err)
    assert rc == 2, (flags, rc, line)
    assert "Traceback" not in err

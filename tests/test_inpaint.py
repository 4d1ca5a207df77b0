"""Conditional sampling (samplers.inpaint_langevin) against the exact conditional of a Gaussian.

For p = N(mu, C) smoothed at sigma, p_sigma = N(mu, C + sigma^2 I). With x_0 held at y = a + sigma z (z fixed for
the level), x_1 | y is N(m(y), v) with b = C_s10 / C_s00, m(y) = mu_1 + b (y - mu_0), v = C_s11 - b C_s10, and ULA
with step alpha has the stationary variance v / (1 - alpha / (4 v)) (tests/test_samplers.py). Over the draws of z
the free coordinate is N(mu_1 + b (a - mu_0), v / (1 - alpha / (4 v)) + b^2 sigma^2): the law the chains must
reach at the last level, checked to 5 standard errors."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dsm_jax import samplers, sigmas
from dsm_jax.eval import inpaint as inpaint_eval

MU = np.asarray([1.0, -0.5])
COV = np.asarray([[1.0, 0.8], [0.8, 1.0]])
N = 4000
A = 2.5  # the conditioned value of x_0: 1.5 sd above its mean, so the conditional mean moves far from mu_1


def smoothed_score(x, sigma):
  cov = jnp.asarray(COV, jnp.float32)[None] + (sigma ** 2)[:, None, None] * jnp.eye(2)[None]
  return -jnp.linalg.solve(cov, (x - jnp.asarray(MU, jnp.float32))[..., None])[..., 0]


def exact_law(sigma, alpha):
  cs = COV + sigma ** 2 * np.eye(2)
  b = cs[1, 0] / cs[0, 0]
  v = cs[1, 1] - b * cs[1, 0]
  return MU[1] + b * (A - MU[0]), v / (1 - alpha / (4 * v)) + b ** 2 * sigma ** 2


@pytest.mark.parametrize("form", ["annealed", "tempered"])
def test_conditioning_one_coordinate_gives_the_exact_conditional(form):
  if form == "annealed":
    ladder = np.asarray(sigmas.geometric(3.0, 0.1, 6))
    sched = samplers.annealed_schedule(ladder, 0.01, 300, "paper")
    sigma_l, alpha_l = float(ladder[-1]), 0.01
  else:  # MDSM's form at T = 1 throughout: the score of p_sigma0, known values at known + sigma0 z
    sched = samplers.tempered_schedule(0.1, np.ones(1500), 0.3, n_levels=5)
    sigma_l, alpha_l = 0.3, 0.01
  known = jnp.broadcast_to(jnp.asarray([A, 0.0], jnp.float32), (N, 2))
  mask = jnp.asarray([1.0, 0.0])
  x0 = 4.0 * jax.random.normal(jax.random.PRNGKey(0), (N, 2))
  x, aux = jax.jit(lambda k: samplers.inpaint_langevin(smoothed_score, k, x0, known, mask, sched, n_keep=3))(
      jax.random.PRNGKey(1))
  x = np.asarray(x, np.float64)
  np.testing.assert_array_equal(x[:, 0], A)  # the known entry comes back exactly
  mean, var = exact_law(sigma_l, alpha_l)
  assert abs(x[:, 1].mean() - mean) < 5 * np.sqrt(var / N), (x[:, 1].mean(), mean)
  assert abs(x[:, 1].var() - var) < 5 * var * np.sqrt(2 / N), (x[:, 1].var(), var)
  # not the unconditional marginal of x_1 (mean -0.5): conditioning moved it
  assert abs(x[:, 1].mean() - MU[1]) > 1.0
  assert aux["trajectory"].shape == (int(np.max(sched["level"])) + 1, 3, 2)
  assert int(aux["n_nonfinite"]) == 0


def test_final_denoise_moves_only_the_free_entries():
  sched = samplers.annealed_schedule(np.asarray([1.0, 0.5]), 0.05, 20, "paper")
  known = jnp.ones((64, 2)) * jnp.asarray([A, 0.0])
  mask = jnp.asarray([1.0, 0.0])
  x0 = jax.random.normal(jax.random.PRNGKey(3), (64, 2))
  plain, aux = samplers.inpaint_langevin(smoothed_score, jax.random.PRNGKey(4), x0, known, mask, sched, n_keep=64)
  den, _ = samplers.inpaint_langevin(smoothed_score, jax.random.PRNGKey(4), x0, known, mask, sched,
                                     final_denoise_sigma=0.5)
  np.testing.assert_array_equal(np.asarray(den[:, 0]), A)
  last = aux["trajectory"][-1]  # the last state, known entry still at its noised value
  np.testing.assert_array_equal(np.asarray(last[:, 1]), np.asarray(plain[:, 1]))
  # one Tweedie step at sigma 0.5 on the free entry: x_1 + 0.25 s_1(x)
  expect = np.asarray(last[:, 1] + 0.25 * smoothed_score(last, jnp.full((64,), 0.5))[:, 1])
  np.testing.assert_allclose(np.asarray(den[:, 1]), expect, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", inpaint_eval.MASKS)
def test_masks_hide_what_they_name(name):
  m = inpaint_eval.make_mask(name, (28, 28, 1), n=5, key=jax.random.PRNGKey(0), frac=0.5, square=14)
  assert m.shape == (5, 28, 28, 1) and set(np.unique(m)) <= {0.0, 1.0}
  hidden = 1.0 - m
  if name == "lower_half":
    assert hidden[:, 14:].all() and not hidden[:, :14].any()
  elif name == "centre_square":
    assert hidden[:, 7:21, 7:21].all() and hidden.sum() == 5 * 14 * 14
  else:  # random pixels: about frac hidden, different per image
    assert abs(hidden.mean() - 0.5) < 0.05 and not np.array_equal(m[0], m[1])


def test_bad_mask_name_is_one_line():
  with pytest.raises(ValueError, match="lower_half"):
    inpaint_eval.make_mask("upper_left", (28, 28, 1), 2, jax.random.PRNGKey(0))


# ----------------------------------------------------------------------------------- the two modes, end to end
INPAINT_KEYS = ("inpaint_accuracy", "inpaint_accuracy_blank", "inpaint_accuracy_real", "inpaint_mse_hidden")
LOGLIK_KEYS = ("test_loglik", "test_loglik_se", "test_loglik_gaussian", "ais_log_z", "ais_ess")


def _tiny_run(name, tmp_path, cache_dir):
  from tests.test_configs import CONFIG_DIR, _flags, tiny_overrides  # noqa: PLC0415
  from experiments import run as cli_module  # noqa: PLC0415
  wd = str(tmp_path / name)
  base = ["run", f"--config={CONFIG_DIR}/{name}.py", f"--workdir={wd}", "--restarts=0",
          *_flags(tiny_overrides(name, cache_dir))]
  assert cli_module.cli(base) == 0
  extra = ["--config.eval.inpaint_n=6", "--config.eval.inpaint_batch_size=4", "--config.eval.ais_chains=4",
           "--config.eval.ais_temps=3", "--config.eval.loglik_n=5"]
  return wd, lambda mode, *more: cli_module.cli(base + extra + [f"--mode={mode}", f"--outdir={wd}/{mode}", *more])


SLOW = pytest.mark.slow  # a tiny training run and both modes: about a minute each on 2 CPU cores


@pytest.mark.parametrize("name,modes", [pytest.param("ncsn_mnist5k", ("inpaint",), marks=SLOW),
                                        ("mdsm_mnist5k", ("inpaint", "loglik")),
                                        pytest.param("dde_mnist5k", ("inpaint", "loglik"), marks=SLOW),
                                        pytest.param("debm_mnist5k", ("inpaint", "loglik"), marks=SLOW),
                                        ("mdsm_toy", ("loglik",)), pytest.param("dde_toy", ("loglik",), marks=SLOW)])
def test_inpaint_and_loglik_modes_write_their_metrics(name, modes, tmp_path, capsys):
  import json  # noqa: PLC0415
  import os  # noqa: PLC0415
  wd, run = _tiny_run(name, tmp_path, "")  # '': the default feature-classifier cache, trained once per machine
  for mode in modes:
    assert run(mode) == 0, capsys.readouterr().err[-3000:]
    ev = json.load(open(os.path.join(wd, mode, "eval.json")))
    keys = INPAINT_KEYS if mode == "inpaint" else LOGLIK_KEYS
    assert all(isinstance(ev[k], (int, float)) for k in keys), ev
    if mode == "inpaint":
      out = np.load(os.path.join(wd, mode, "inpaint", "inpaint.npz"))
      known = out["mask"] == 1
      np.testing.assert_allclose(out["x"][known], out["truth"][known], atol=1e-6)  # the known half is kept
      assert os.path.exists(os.path.join(wd, mode, "inpaint", "inpaint.png"))
      assert 0.0 <= ev["inpaint_accuracy"] <= 1.0
    elif "toy" in name:
      assert np.isfinite(ev["test_loglik_exact"])
    else:
      assert np.isfinite(ev["test_bits_per_dim"])


def test_inpaint_on_a_toy_is_one_line(tmp_path, capsys):
  wd, run = _tiny_run("mdsm_toy", tmp_path, "")
  assert run("inpaint") == 2
  assert "labelled image dataset" in capsys.readouterr().err

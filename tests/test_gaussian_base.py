"""The data's Gaussian as a base score (dsm_jax/gaussian_base.py) and NCSN's model.base_score."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dsm_jax import gaussian_base, methods
from dsm_jax.validation import ConfigError


def _gaussian_data(n=20000, d=5, seed=0):
  rng = np.random.default_rng(seed)
  a = rng.normal(size=(d, d))
  cov = a @ a.T / d
  cov[-1, :] = cov[:, -1] = 0.0  # one coordinate never varies (like MNIST's black border)
  mu = rng.normal(size=d)
  x = rng.multivariate_normal(mu, cov, size=n)
  return x, mu, cov


def test_fit_recovers_mean_and_covariance():
  x, mu, cov = _gaussian_data()
  base = gaussian_base.fit(x.reshape(len(x), 5, 1))  # any trailing shape is flattened
  got_cov = np.asarray(base.basis) @ np.diag(np.asarray(base.eigvals)) @ np.asarray(base.basis).T
  np.testing.assert_allclose(np.asarray(base.mean), mu, atol=0.05)
  np.testing.assert_allclose(got_cov, cov, atol=0.08)
  assert float(jnp.min(base.eigvals)) >= 0.0
  with pytest.raises(ValueError, match="at least 2"):
    gaussian_base.fit(x[:1])


@pytest.mark.parametrize("sigma", [0.01, 0.3, 2.0])
def test_score_is_the_smoothed_gaussian_score(sigma):
  """s_G = -(Sigma + sigma^2 I)^{-1} (x - mu) = grad log N(x; mu, Sigma + sigma^2 I), by an explicit
  inverse and by autodiff of log_density; exact (to round-off) in the direction that never varies."""
  x, mu, cov = _gaussian_data()
  base = gaussian_base.fit(x)
  cov_hat = np.cov(x, rowvar=False, bias=True)
  pts = jnp.asarray(np.random.default_rng(1).normal(size=(7, 5)), jnp.float32)
  sig = jnp.full((7,), sigma)
  got = gaussian_base.score(base, pts, sig)
  want = -(np.asarray(pts, np.float64) - x.mean(0)) @ np.linalg.inv(cov_hat + sigma ** 2 * np.eye(5))
  np.testing.assert_allclose(got, want, rtol=2e-3, atol=2e-3 / sigma ** 2 * 1e-2 + 1e-4)
  auto = jax.vmap(jax.grad(lambda p, s: gaussian_base.log_density(base, p[None], s[None])[0]))(pts, sig)
  np.testing.assert_allclose(got, auto, rtol=1e-3, atol=1e-3)
  # the frozen coordinate: -(x - mu) / sigma^2, the exact score of data + N(0, sigma^2) there
  np.testing.assert_allclose(got[:, -1], -(pts[:, -1] - mu[-1]) / sigma ** 2, rtol=1e-3)
  chex.assert_trees_all_close(jax.jit(gaussian_base.score)(base, pts, sig), got, rtol=1e-5, atol=1e-5)


def test_tweedie_denoiser_of_the_base_is_the_wiener_filter():
  """x + sigma^2 s_G(x) = mu + Sigma (Sigma + sigma^2 I)^{-1} (x - mu): the MMSE denoiser of Gaussian
  data, which beats the identity and the mean on fresh Gaussian data with noise sigma."""
  x, mu, cov = _gaussian_data(seed=2)
  base = gaussian_base.fit(x)
  sigma = 0.7
  rng = np.random.default_rng(3)
  clean = rng.multivariate_normal(mu, cov, size=4000)
  noisy = clean + sigma * rng.normal(size=clean.shape)
  den = noisy + sigma ** 2 * np.asarray(gaussian_base.score(base, jnp.asarray(noisy, jnp.float32), sigma))
  wiener = mu + (noisy - mu) @ np.linalg.inv(cov + sigma ** 2 * np.eye(5)).T @ cov.T
  np.testing.assert_allclose(den, wiener, atol=0.05)
  mse = lambda a: np.mean((a - clean) ** 2)  # noqa: E731
  assert mse(den) < 0.9 * min(mse(noisy), mse(np.broadcast_to(mu, clean.shape)))


def _toy_config(base_score):
  from configs.ncsn_toy import get_config  # noqa: PLC0415
  c = get_config()
  c.model.base_score = base_score
  c.model.hidden = (8, 8)
  return c


def test_ncsn_base_score_adds_the_gaussian_and_nothing_else():
  """NCSN with model.base_score='gaussian' = the same network's output + s_G of the training data."""
  from dsm_jax.data.pipeline import get_dataset  # noqa: PLC0415
  c_plain, c_base = _toy_config("none"), _toy_config("gaussian")
  ds = get_dataset(c_plain.data, c_plain.seed)
  plain, with_base = methods.build(c_plain, ds), methods.build(c_base, ds)
  params = plain.init_params(jax.random.PRNGKey(0))
  key = jax.random.PRNGKey(1)
  batch = ds.sample(jax.random.PRNGKey(2), 64)
  l_plain, _ = plain.loss_fn(params, key, batch)
  l_base, _ = with_base.loss_fn(params, key, batch)
  assert np.isfinite(float(l_base)) and abs(float(l_base) - float(l_plain)) > 1e-3
  base = gaussian_base.fit(np.asarray(ds.sample(jax.random.PRNGKey(c_base.seed), 10000)))
  from dsm_jax.models import get_model  # noqa: PLC0415
  net = get_model(c_base.model, (2,), conditional=True)
  # the method's score is visible through its loss: rebuild it from the parts and compare losses
  from dsm_jax import losses  # noqa: PLC0415
  from dsm_jax.methods.ncsn import ladder_from_config  # noqa: PLC0415
  want, _ = losses.ncsn(lambda v, s: net.apply(params, v, s) + gaussian_base.score(base, v, s), key, batch,
                        ladder_from_config(c_base), c_base.model.anneal_power)
  np.testing.assert_allclose(float(l_base), float(want), rtol=1e-5)


def test_ncsn_base_score_is_validated():
  from dsm_jax.data.pipeline import get_dataset  # noqa: PLC0415
  c = _toy_config("wiener")
  with pytest.raises(ConfigError, match=r"model\.base_score"):
    methods.build(c, get_dataset(c.data, c.seed))


def test_paper_configs_default_to_no_base_score():
  """The paper's NCSN has no base score; 'gaussian' is opt-in: the CPU config ncsn_mnist5k uses it (measured
  in RESULTS.md, stop 16)."""
  import importlib  # noqa: PLC0415
  for name in ("ncsn_mnist", "ncsn_cifar10", "ncsn_celeba"):
    assert importlib.import_module(f"configs.{name}").get_config().model.base_score == "none", name
  assert importlib.import_module("configs.ncsn_mnist5k").get_config().model.base_score == "gaussian"

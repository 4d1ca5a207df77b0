"""Denoiser-guided VI (Huszar 2017, "Variational Inference using Implicit Models, Part IV: Denoisers instead
of Discriminators") on Bayesian logistic regression with 2-D weights (the model of Part I):
P(y = 1 | x, w) = sigmoid(w^T x), no bias, Gaussian prior. An implicit q(w) = G(z) is trained with the
denoiser's estimate of grad log q; the reference posterior is a 512 x 512 grid (checked by MALA).

Values marked (blog) follow the posts; the blog's notebook data set is not reproduced (its own synthetic
draw), so n_points, w_true and prior_std are this project's choices, picked for a visibly skewed,
correlated posterior (KL to its Gaussian moment match 0.03 nats, by the grid). About 4 minutes on 2 CPU cores."""
from configs.default import get_default_config
from dsm_jax import models


def get_config():
  config = get_default_config("dvi")
  d = config.data
  d.dataset = "logreg2d"      # (blog, Part I) logistic regression, 2-D weights, no bias
  d.n_points = 10             # few points: a non-Gaussian posterior (project choice)
  d.w_true = (3.0, 1.0)       # labels y_n ~ Bernoulli(sigmoid(w_true^T x_n)), x_n ~ N(0, I) (project choice)
  d.prior_std = 2.0           # (blog) Gaussian prior N(0, prior_std^2 I); the scale is a project choice

  m = config.model
  m.latent_dim = 4            # z ~ N(0, I_4) -> w in R^2: G is not invertible, q has no tractable density
  m.sigma_n = 0.1             # denoiser noise (D3): small against the posterior std (~0.8); the fixed point of a
                              # Gaussian q has Cov_q = Cov_p - sigma_n^2 I: eval.json cov_bias_sigma_n (1.4% here)
  m.n_particles = 512         # z per step, for the denoiser and the generator (Monte Carlo size in (D3), (D4))
  m.f_steps = 3               # denoiser steps per generator step ("trained in tandem", blog; 3 keeps F ahead of G:
                              # with 2 steps and g_lr 5e-4 a run diverged, F losing track of a moving q)
  m.f_warmup = 200            # the first steps train only the denoiser on the initial q
  m.antithetic = True         # (D3) the denoiser's loss averaged over eps and -eps
  m.generator = models.section("generator_mlp", hidden=(64, 64), act="elu",
                               linear_skip=True)  # G(z) = Wz + MLP(z): starts near a Gaussian
  m.denoiser = models.section("denoiser_mlp", hidden=(128, 128), act="softplus")  # F(w) = w + sigma_n^2 s(w)

  t = config.training
  t.n_iters = 8000
  t.batch_size = 10           # data rows per step = n_points: the exact log-likelihood gradient
  t.lr = 1e-3                 # the denoiser's Adam learning rate ...
  t.nets.G.lr = 2e-4          # ... and the generator's, slower
  t.log_every = 200
  t.ckpt_every = 2000
  t.steps_per_call = 200
  t.ema_rate = 0.995          # q is sampled from the EMA of G (and F): less step-to-step jitter

  config.sampling.n_samples = 20000
  e = config.eval
  e.grid_n = 512              # reference posterior: 512 x 512 grid over mean +- 8 std
  e.mala_chains = 2000        # an independent check of the grid: 2000 MALA chains ...
  e.mala_steps = 1000         # ... of 1000 steps each
  return config

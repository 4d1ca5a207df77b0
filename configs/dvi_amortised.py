"""Amortised denoiser-guided VI (Huszar 2017, Part IV's amortised algorithm): q(w | y) = G(z, y) and a
conditional denoiser F(w, y), trained on y drawn from the model's marginal p(y), on a linear-Gaussian
model y = A w + noise whose posterior p(w | y) is exact. eval.json: errors against it averaged over 100
held-out y (dsm_jax/methods/dvi.py: evaluate_amortised). Model sizes and schedule are this project's
choices (the blog gives none for this toy); about 4 minutes on 2 CPU cores."""
from configs.default import get_default_config
from configs.dvi_logreg import get_config as logreg_config


def get_config():
  config = get_default_config("dvi_amortised")
  shared = logreg_config()  # the same networks, optimizers and schedule as configs/dvi_logreg.py
  for sec in ("training",):
    config[sec] = shared[sec]
  for k in ("latent_dim", "f_steps", "f_warmup", "antithetic", "generator", "denoiser"):
    config.model[k] = shared.model[k]
  d = config.data
  d.dataset = "linear_gaussian"  # y = A w + noise_std n, w ~ N(0, prior_std^2 I_2), A [obs_dim, 2] ~ N(0, 1) (seeded)
  d.obs_dim = 3
  d.prior_std = 1.0
  d.noise_std = 1.0              # posterior std ~0.5 per coordinate (exact: eval.json post_std_*)

  m = config.model
  m.z_per_y = 4                  # w draws per observation: batch_size * z_per_y points per step for F and G
  m.sigma_n = 0.05               # (D3) cov bias sigma_n^2 / posterior variance ~1% (eval.json cov_bias_sigma_n)
  m.generator.hidden = (128, 128)  # G(z, y) = W z + MLP([z, y])
  m.denoiser.hidden = (128, 128)   # F(w, y) = w + sigma_n^2 s([w, y])

  t = config.training
  t.batch_size = 128             # observations y per step, drawn from p(y)
  t.n_iters = 8000

  config.sampling.n_samples = 2000  # q samples per held-out y
  config.eval.n_eval_y = 100     # held-out observations (a fixed draw from p(y), independent of training)
  return config

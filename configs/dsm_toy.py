"""Denoising score matching (Vincent 2011) of the 1/5, 4/5 mixture smoothed at sigma = 0.5, compared
with configs/esm_toy.py, configs/ssm_toy.py and configs/mdsm_toy.py (same data, model size, budget)."""
from configs.default import get_default_config


def toy_score_config(method: str):
  config = get_default_config(method)
  config.data.dataset = "mixture"

  m = config.model
  m.hidden = (128, 128)
  m.act = "softplus"

  t = config.training
  t.n_iters = 10000
  t.batch_size = 128
  t.lr = 1e-3
  t.log_every = 200
  t.ckpt_every = 2000
  t.steps_per_call = 200

  s = config.sampling
  s.n_samples = 5000
  s.init_range = (-8.0, 8.0)
  s.eps = 0.2                 # x <- x + eps^2/2 s + eps sqrt(T) z
  s.t_start = 10.0            # flat at T = 10, geometric decay to 1, then held at T = 1
  s.n_flat = 200
  s.n_decay = 1000
  s.n_cool = 500
  s.decay = "geometric"
  s.t_end = 1.0
  return config


def get_config():
  config = toy_score_config("dsm")
  config.model.sigma = 0.5    # the one noise level: every method targets p_sigma = p * N(0, sigma^2 I)
  return config

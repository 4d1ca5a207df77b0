"""MDSM (Li, Chen & Sommer 2019) on the 1/5, 4/5 mixture: a scalar energy network trained with
multi-scale DSM (double backprop), sampled by temperature-annealed Langevin. See configs/dsm_toy.py."""
from configs.dsm_toy import toy_score_config


def get_config():
  config = toy_score_config("mdsm")
  m = config.model
  m.name = "energy_mlp"
  m.quadratic = True
  m.sigma0 = 0.5             # the fixed sigma0: -grad E is compared with the score of p_sigma0
  m.sigma_min = 0.5          # per-example sigma ~ U[sigma_min, sigma_max]
  m.sigma_max = 0.6          # a narrow band: the loss optimum stays near the score of p_sigma0 (see RESULTS)
  m.sigma_dist = "uniform"
  m.weight_power = 2.0       # l(sigma) = 1/sigma^2 (eq. 10)
  s = config.sampling
  s.init = "uniform"         # x_0 ~ U[-8, 8]^2
  s.final_denoise = False    # compare with p_sigma0, like the other three
  return config

"""Sliced score matching (Song et al. 2019), variance-reduced, on draws of the mixture smoothed at
sigma = 0.5. See configs/dsm_toy.py."""
from configs.dsm_toy import toy_score_config


def get_config():
  config = toy_score_config("ssm")
  config.model.sigma = 0.5
  config.model.n_projections = 1     # paper: one projection per example
  config.model.variance_reduced = True  # SSM-VR
  return config

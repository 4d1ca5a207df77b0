"""Exact score matching (Hyvarinen 2005; full Jacobian trace) on draws of the mixture smoothed at
sigma = 0.5. See configs/dsm_toy.py."""
from configs.dsm_toy import toy_score_config


def get_config():
  config = toy_score_config("esm")
  config.model.sigma = 0.5
  return config

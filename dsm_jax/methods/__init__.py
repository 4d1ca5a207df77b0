"""One file per paper. `build(config, dataset)` returns the `Method` the runner trains and samples."""
from __future__ import annotations

from dsm_jax.validation import ConfigError


def _registry():
  from dsm_jax.methods import mdsm, ncsn, score_matching
  return {
      "ncsn": ncsn.build,
      "dsm": score_matching.build,
      "esm": score_matching.build,
      "ssm": score_matching.build,
      "mdsm": mdsm.build,
      "dde": _lazy("dde"),  # issue 5
      "dvi": _lazy("dvi"),
      "dvi_amortised": _lazy("dvi"),
      "debm": _lazy("debm"),  # issue 6: Denoising-EBM
  }


METHODS = ("ncsn", "dsm", "esm", "ssm", "mdsm")
METHODS += ("dde", "dvi", "dvi_amortised")  # issue 5: DDE and denoiser-guided VI
METHODS += ("debm",)  # issue 6: Denoising-EBM


def _lazy(module: str):
  """build() of dsm_jax.methods.<module>, imported when first called."""
  def build_fn(config, dataset):
    import importlib
    return importlib.import_module(f"dsm_jax.methods.{module}").build(config, dataset)
  return build_fn


def build(config, dataset):
  reg = _registry()
  if config.method not in reg:
    raise ConfigError("method", f"unknown method {config.method!r}; choose from {sorted(reg)}")
  return reg[config.method](config, dataset)

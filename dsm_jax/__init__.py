"""dsm_jax: denoisers, scores and energies in JAX.

One object, three views (Tweedie / Miyasawa):
    score     s(x, sigma) ~ grad_x log p_sigma(x)
    denoiser  r(x, sigma) = x + sigma^2 s(x, sigma)
    energy    E(x, sigma)  with p_sigma ∝ exp(-E), so s = -grad_x E
See `dsm_jax.fields` for the conversions.
"""
from dsm_jax import fields, losses, samplers, sigmas  # noqa: F401

__version__ = "0.1.0"

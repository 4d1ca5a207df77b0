"""Shared test settings.

* hypothesis runs are deterministic (derandomized, no example database) and small;
* XLA's backend optimisation level is lowered for the test process: these tests compile many tiny
  programs, and at level 0 compiling dominates far less (about 2x faster on 2 cores). Numerics are
  unchanged up to float rounding; an XLA_FLAGS setting of the user's own wins.
"""
import os

if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()

from hypothesis import settings  # noqa: E402

settings.register_profile("dsm_jax", derandomize=True, database=None, deadline=None,
                          max_examples=15, print_blob=True)
settings.load_profile("dsm_jax")

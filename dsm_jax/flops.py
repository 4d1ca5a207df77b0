"""Model FLOPs of a JAX function, for throughput and MFU (model FLOPs utilisation) reports.

`count(fn, *args)` traces fn to a jaxpr and adds up 2 x multiply-accumulates of every matrix product
(dot_general) and convolution, multiplying the body of a loop by its trip count (lax.scan and static fori_loops):
XLA's own cost analysis counts a loop body once, which makes a Langevin chain look like one step. Element-wise
work is not counted (the usual convention for MFU). tests/test_flops.py checks it against XLA's cost analysis
on loop-free programs and on known shapes.

Peak rates for MFU and projections, dense, per chip (vendor figures): H100 SXM 989 TFLOP/s in bfloat16 and 494
TFLOP/s in TF32 (the rate JAX's default precision gives float32 matrix products on it); TPU v5e 197 TFLOP/s in
bfloat16 (float32 products run as bfloat16 passes by default).
"""
from __future__ import annotations

import math
from typing import Callable

import jax

PEAK = {("h100", "float32"): 494e12, ("h100", "bfloat16"): 989e12,
        ("tpu_v5e", "float32"): 197e12, ("tpu_v5e", "bfloat16"): 197e12}


def _dot_flops(eqn) -> float:
  lhs = eqn.invars[0].aval
  (contract, _), _ = eqn.params["dimension_numbers"]
  k = math.prod(lhs.shape[d] for d in contract)
  return 2.0 * math.prod(eqn.outvars[0].aval.shape) * k


def _conv_flops(eqn) -> float:
  rhs = eqn.invars[1].aval
  dn = eqn.params["dimension_numbers"]
  rhs_spec = dn.rhs_spec  # (out feature dim, in feature dim, spatial dims...)
  k_in = rhs.shape[rhs_spec[1]]
  spatial = math.prod(rhs.shape[d] for d in rhs_spec[2:])
  return 2.0 * math.prod(eqn.outvars[0].aval.shape) * k_in * spatial


def _sub_jaxprs(eqn):
  for v in eqn.params.values():
    for j in (v if isinstance(v, (tuple, list)) else (v,)):
      if isinstance(j, jax.extend.core.ClosedJaxpr):
        yield j.jaxpr
      elif isinstance(j, jax.extend.core.Jaxpr):
        yield j


def _jaxpr_flops(jaxpr) -> float:
  total = 0.0
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    if name == "dot_general":
      total += _dot_flops(eqn)
    elif name == "conv_general_dilated":
      total += _conv_flops(eqn)
    elif name == "scan":
      total += eqn.params["length"] * _jaxpr_flops(eqn.params["jaxpr"].jaxpr)
    elif name == "cond":
      total += max(_jaxpr_flops(b.jaxpr) for b in eqn.params["branches"])
    elif name == "while":
      total += _jaxpr_flops(eqn.params["body_jaxpr"].jaxpr)  # trip count unknown: counted once
    else:
      total += sum(_jaxpr_flops(j) for j in _sub_jaxprs(eqn))
  return total


def count(fn: Callable, *args) -> float:
  """Matmul and convolution FLOPs of one call fn(*args) (arguments may be jax.ShapeDtypeStructs)."""
  return _jaxpr_flops(jax.make_jaxpr(fn)(*args).jaxpr)


def hours(flops_per_step: float, steps: int, chip: str, dtype: str = "float32", mfu: float = 0.4) -> float:
  """Projected hours for `steps` steps on one `chip` ('h100', 'tpu_v5e') at the given MFU."""
  return flops_per_step * steps / (mfu * PEAK[(chip, dtype)]) / 3600.0

"""MCMC samplers as `lax.scan` loops.

Every sampler takes a score callable `score_fn(x, sigma)` (see `dsm_jax.fields`; sigma is passed as a
per-example [B] array, or None for an unconditional model), an explicit PRNG key and a start x0 [B, ...],
and returns (x, aux). aux always has `n_nonfinite` (samples with a NaN/Inf entry) and, when asked for,
`trajectory`: the chain thinned to every `thin`-th step, shape [n_steps // thin, B, ...].
`inpaint_langevin` samples the free entries of x given the known ones (mask), for any of the step schedules
(`annealed_schedule`, `tempered_schedule`, `constant_schedule`).

Step-size conventions (make them explicit, the literature mixes them):
  * 'paper' (Song & Ermon 2019, Alg. 1; Welling & Teh 2011): x <- x + alpha/2 s(x) + sqrt(alpha) z.
  * 'code' (the NCSN reference implementation): x <- x + a s(x) + sqrt(2a) z, i.e. the paper's rule
    with alpha = 2a. NCSN's published image numbers come from this form with a = step_lr (sigma_i/sigma_L)^2,
    step_lr = 2e-5.
"""
from __future__ import annotations

from typing import Callable, Optional

import chex
import jax
import jax.numpy as jnp
import numpy as np

from dsm_jax import fields

Array = jax.Array
CONVENTIONS = ("paper", "code")


def paper_alpha(step: float, convention: str) -> float:
  """The paper-form alpha for a step size given in `convention`."""
  if convention == "paper":
    return step
  if convention == "code":
    return 2.0 * step
  raise ValueError(f"unknown step convention {convention!r}; use one of {CONVENTIONS}")


def _full(sigma, x: Array) -> Optional[Array]:
  if sigma is None:
    return None
  return jnp.full(x.shape[:1], sigma, x.dtype)


def _nonfinite(x: Array) -> Array:
  return jnp.sum(~jnp.all(jnp.isfinite(x.reshape(x.shape[0], -1)), axis=-1))


def _run_chain(step_fn, x0, keys: Array, extra: Array, thin: int, pick=lambda c: c):
  """Scans step_fn(carry, (key, extra_t)) -> (carry, info) over the steps; thin > 0 also keeps
  pick(carry) at every thin-th step."""
  n = keys.shape[0]
  if thin == 1:
    def every(c, inp):
      c, info = step_fn(c, inp)
      return c, (pick(c), info)
    x, (traj, info) = jax.lax.scan(every, x0, (keys, extra))
    return x, info, traj
  if thin and thin > 0:
    if n % thin:
      raise ValueError(f"thin={thin} must divide the number of steps {n}")
    k2 = keys.reshape((n // thin, thin) + keys.shape[1:])
    e2 = extra.reshape((n // thin, thin) + extra.shape[1:])

    def outer(x, ke):
      x, info = jax.lax.scan(step_fn, x, ke)
      return x, (pick(x), info)

    x, (traj, info) = jax.lax.scan(outer, x0, (k2, e2))
    info = jax.tree_util.tree_map(lambda a: a.reshape((n,) + a.shape[2:]), info)
    return x, info, traj
  x, info = jax.lax.scan(step_fn, x0, (keys, extra))
  return x, info, None


def _finish(x, info, traj, return_traj):
  aux = {"n_nonfinite": _nonfinite(x)}
  aux.update(info)
  if return_traj:
    aux["trajectory"] = traj
  return x, aux


# ------------------------------------------------------------------------------------- plain Langevin
def langevin(score_fn, rng: Array, x0: Array, step_size: float, n_steps: int, sigma=None,
             convention: str = "paper", thin: int = 0) -> tuple[Array, dict]:
  """Unadjusted Langevin (ULA) with a fixed step: x <- x + alpha/2 s(x) + sqrt(alpha) z."""
  alpha = paper_alpha(step_size, convention)
  sig = _full(sigma, x0)

  def step(x, inp):
    key, _ = inp
    z = jax.random.normal(key, x.shape, x.dtype)
    return x + 0.5 * alpha * score_fn(x, sig) + jnp.sqrt(alpha) * z, {}

  keys = jax.random.split(rng, n_steps)
  x, info, traj = _run_chain(step, x0, keys, jnp.zeros((n_steps,)), thin)
  return _finish(x, info, traj, thin > 0)


# ------------------------------------------------------------------------------------- MALA
def mala(log_prob_fn, rng: Array, x0: Array, step_size: float, n_steps: int, sigma=None,
         score_fn=None, thin: int = 0) -> tuple[Array, dict]:
  """Metropolis-adjusted Langevin (Roberts & Tweedie 1996): the ULA proposal
  y = x + alpha/2 s(x) + sqrt(alpha) z, accepted with prob. min(1, p(y) q(x|y) / (p(x) q(y|x))).
  log_prob_fn(x, sigma) -> [B] (unnormalised). score_fn defaults to grad log_prob_fn.
  aux['accept_rate']: mean acceptance over chains and steps; aux['accept']: per step [n_steps]."""
  alpha = step_size
  sig = _full(sigma, x0)
  if score_fn is None:
    score_fn = fields.score_from_log_density(log_prob_fn)

  def log_q(to, frm, s_frm):  # log N(to; frm + alpha/2 s(frm), alpha I), up to a constant
    d = to - frm - 0.5 * alpha * s_frm
    return -jnp.sum(d.reshape(d.shape[0], -1) ** 2, axis=-1) / (2 * alpha)

  def step(carry, inp):
    x, lp, s = carry
    key, _ = inp
    kz, ku = jax.random.split(key)
    y = x + 0.5 * alpha * s + jnp.sqrt(alpha) * jax.random.normal(kz, x.shape, x.dtype)
    lp_y, s_y = log_prob_fn(y, sig), score_fn(y, sig)
    log_ratio = lp_y + log_q(x, y, s_y) - lp - log_q(y, x, s)
    accept = jnp.log(jax.random.uniform(ku, lp.shape)) < log_ratio
    acc = accept.reshape(accept.shape + (1,) * (x.ndim - 1))
    x, s = jnp.where(acc, y, x), jnp.where(acc, s_y, s)
    lp = jnp.where(accept, lp_y, lp)
    return (x, lp, s), {"accept": jnp.mean(accept.astype(jnp.float32))}

  carry0 = (x0, log_prob_fn(x0, sig), score_fn(x0, sig))
  keys = jax.random.split(rng, n_steps)
  carry, info, traj = _run_chain(step, carry0, keys, jnp.zeros((n_steps,)), thin, pick=lambda c: c[0])
  x, aux = _finish(carry[0], info, traj, thin > 0)
  aux["accept_rate"] = jnp.mean(info["accept"])
  return x, aux


# ------------------------------------------------------------------------------------- annealed Langevin
def annealed_alphas(ladder: Array, eps: float, convention: str = "paper") -> Array:
  """NCSN Alg. 1 step sizes alpha_i = eps * sigma_i^2 / sigma_L^2, in the paper form."""
  ladder = jnp.asarray(ladder)
  return paper_alpha(eps, convention) * ladder ** 2 / ladder[-1] ** 2


def annealed_langevin(score_fn, rng: Array, x0: Array, ladder: Array, eps: float,
                      n_steps_each: int, convention: str = "paper", final_denoise: bool = False,
                      return_traj: bool = False) -> tuple[Array, dict]:
  """Annealed Langevin dynamics (Song & Ermon 2019, Alg. 1): for each level i = 1..L, T steps of
  x <- x + alpha_i/2 s(x, sigma_i) + sqrt(alpha_i) z with alpha_i = eps sigma_i^2 / sigma_L^2.
  final_denoise adds one Tweedie step x + sigma_L^2 s(x, sigma_L) (NCSNv2).
  return_traj gives aux['trajectory'] [L, B, ...]: the state at the end of every level."""
  chex.assert_rank(jnp.asarray(ladder), 1)
  ladder = jnp.asarray(ladder, x0.dtype)
  alphas = annealed_alphas(ladder, eps, convention)
  n_levels = ladder.shape[0]
  sig_steps = jnp.repeat(ladder, n_steps_each)
  alpha_steps = jnp.repeat(alphas, n_steps_each)

  def step(x, inp):
    key, (sig, alpha) = inp[0], inp[1]
    z = jax.random.normal(key, x.shape, x.dtype)
    return x + 0.5 * alpha * score_fn(x, _full(sig, x)) + jnp.sqrt(alpha) * z, {}

  keys = jax.random.split(rng, n_levels * n_steps_each)

  extra = jnp.stack([sig_steps, alpha_steps], axis=-1)  # [n, 2]: (sigma_t, alpha_t)
  x, info, traj = _run_chain(step, x0, keys, extra, n_steps_each if return_traj else 0)
  if final_denoise:
    x = fields.tweedie_denoise(score_fn, x, _full(ladder[-1], x))
  return _finish(x, info, traj, return_traj)


def annealed_mala(score_fn, rng: Array, x0: Array, ladder: Array, eps: float, n_steps_each: int,
                  convention: str = "paper", final_denoise: bool = False, return_traj: bool = False,
                  log_prob_fn=None) -> tuple[Array, dict]:
  """Metropolis-adjusted annealed Langevin: annealed_langevin's proposal at each level,
  y = x + alpha_i/2 s(x, sigma_i) + sqrt(alpha_i) z, accepted with probability
  min(1, p_i(y) q(x|y) / (p_i(x) q(y|x))), q the Gaussian proposal kernel, so each level's T steps leave
  p_{sigma_i} invariant whatever the step. A score network has no log-density: log p_i(y) - log p_i(x) is then
  the line integral of the score along the segment from x to y by the trapezoid rule,
  (s(x) + s(y)) . (y - x) / 2, exact when log p_i is quadratic; log_prob_fn(x, sigma) -> [B] gives the exact
  difference instead. One score evaluation per step, as annealed_langevin (plus one per level at its start).
  aux['accept'] [L, B]: each chain's acceptance rate at each level; aux['accept_rate']: the overall mean;
  return_traj gives aux['trajectory'] [L, B, ...], the state at the end of every level."""
  chex.assert_rank(jnp.asarray(ladder), 1)
  ladder = jnp.asarray(ladder, x0.dtype)
  alphas = annealed_alphas(ladder, eps, convention)
  n_levels = ladder.shape[0]
  keys = jax.random.split(rng, n_levels * n_steps_each).reshape((n_levels, n_steps_each, -1))
  flat_sum = lambda a: jnp.sum(a.reshape(a.shape[0], -1), axis=-1)

  def level(x, inp):
    keys_l, sig, alpha = inp
    sig_b = _full(sig, x)
    log_p = (lambda v: log_prob_fn(v, sig_b)) if log_prob_fn is not None else None

    def log_q(to, frm, s_frm):  # log N(to; frm + alpha/2 s(frm), alpha I), up to a constant
      return -flat_sum(jnp.square(to - frm - 0.5 * alpha * s_frm)) / (2 * alpha)

    def step(carry, key):
      x, s, lp = carry
      kz, ku = jax.random.split(key)
      y = x + 0.5 * alpha * s + jnp.sqrt(alpha) * jax.random.normal(kz, x.shape, x.dtype)
      s_y = score_fn(y, sig_b)
      if log_p is None:  # trapezoid line integral of the score from x to y
        lp_y = lp
        d_log_p = 0.5 * flat_sum((s + s_y) * (y - x))
      else:
        lp_y = log_p(y)
        d_log_p = lp_y - lp
      log_ratio = d_log_p + log_q(x, y, s_y) - log_q(y, x, s)
      accept = jnp.log(jax.random.uniform(ku, log_ratio.shape, log_ratio.dtype)) < log_ratio  # NaN: rejected
      acc = accept.reshape(accept.shape + (1,) * (x.ndim - 1))
      return (jnp.where(acc, y, x), jnp.where(acc, s_y, s), jnp.where(accept, lp_y, lp)), accept.astype(x.dtype)

    lp0 = log_p(x) if log_p is not None else jnp.zeros(x.shape[:1], x.dtype)
    (x, _, _), accepted = jax.lax.scan(step, (x, score_fn(x, sig_b), lp0), keys_l)
    return x, (x, jnp.mean(accepted, axis=0))

  x, (traj, accept) = jax.lax.scan(level, x0, (keys, ladder, alphas))
  if final_denoise:
    x = fields.tweedie_denoise(score_fn, x, _full(ladder[-1], x))
  x, aux = _finish(x, {"accept": accept}, traj, return_traj)
  aux["accept_rate"] = jnp.mean(accept)
  return x, aux


# ------------------------------------------------------------------------------------- tempered Langevin
def tempered_langevin(score_fn, rng: Array, x0: Array, eps: float, temperatures, sigma=None,
                      final_denoise_sigma: Optional[float] = None, thin: int = 0) -> tuple[Array, dict]:
  """Temperature-annealed Langevin for energies (Li, Chen & Sommer 2019, Sec. 4.2):
      x <- x + eps^2/2 s(x) + eps sqrt(T_t) z      (= x - eps^2/2 grad E(x) + eps sqrt(T_t) z),
  then, if final_denoise_sigma is given, one denoising step x + sigma0^2 s(x) (= x - sigma0^2 grad E)."""
  temps = jnp.asarray(temperatures, x0.dtype)
  chex.assert_rank(temps, 1)
  sig = _full(sigma, x0)

  def step(x, inp):
    key, t = inp
    z = jax.random.normal(key, x.shape, x.dtype)
    return x + 0.5 * eps ** 2 * score_fn(x, sig) + eps * jnp.sqrt(t) * z, {}

  keys = jax.random.split(rng, temps.shape[0])
  x, info, traj = _run_chain(step, x0, keys, temps, thin)
  if final_denoise_sigma is not None:
    x = x + final_denoise_sigma ** 2 * score_fn(x, sig)
  return _finish(x, info, traj, thin > 0)


# ------------------------------------------------------------------------------------- Langevin on a stochastic energy
def energy_langevin(energy_fn, rng: Array, x0: Array, step_size: float, n_steps: int, convention: str = "paper",
                    noise_scale: float = 1.0, n_keep: int = 0) -> tuple[Array, dict]:
  """Langevin on an energy U with its own noise, energy_fn(x, key) -> [B] (Denoising-EBM's U_c and U_s draw the
  DAE's input noise afresh at every step): with s = -grad_x U, the 'paper' rule
  x <- x + alpha/2 s + noise_scale sqrt(alpha) z (alpha = step_size), or the 'code' rule x + a s + noise_scale
  sqrt(2a) z. aux['trajectory'] [n_steps + 1, n_keep, ...]: the first n_keep chains at every step, x0 first;
  aux['energy'] [n_steps]: the mean energy at the state each step started from."""
  alpha = paper_alpha(step_size, convention)
  u_and_grad = jax.value_and_grad(lambda x, k: jnp.sum(energy_fn(x, k)))
  noise = float(np.sqrt(alpha)) * noise_scale

  def step(x, inp):
    k_e, k_w = jax.random.split(inp[0])
    u, g = u_and_grad(x, k_e)
    return x - 0.5 * alpha * g + noise * jax.random.normal(k_w, x.shape, x.dtype), {"energy": u / x.shape[0]}

  if n_steps == 0:
    return x0, {"n_nonfinite": _nonfinite(x0), "trajectory": x0[None, :n_keep], "energy": jnp.zeros((0,), x0.dtype)}
  keys = jax.random.split(rng, n_steps)
  x, info, traj = _run_chain(step, x0, keys, jnp.zeros((n_steps,)), 1, pick=lambda c: c[:n_keep])
  x, aux = _finish(x, info, traj, True)
  aux["trajectory"] = jnp.concatenate([x0[None, :n_keep], traj])
  return x, aux


# ------------------------------------------------------------------------------------- inpainting
def annealed_schedule(ladder, eps: float, n_steps_each: int, convention: str = "paper") -> dict:
  """The per-step schedule of annealed Langevin (NCSN Alg. 1) for `inpaint_langevin`: level i's T steps take the
  score at sigma_i with alpha_i = eps sigma_i^2 / sigma_L^2 at temperature 1, and hold the known values at
  known + sigma_i z (the data smoothed at the level the score models)."""
  ladder = np.asarray(ladder, np.float32)
  alphas = np.asarray(annealed_alphas(ladder, eps, convention), np.float32)
  n = len(ladder) * int(n_steps_each)
  return {"sigma": np.repeat(ladder, n_steps_each), "alpha": np.repeat(alphas, n_steps_each),
          "temperature": np.ones(n, np.float32), "known_noise": np.repeat(ladder, n_steps_each),
          "level": np.repeat(np.arange(len(ladder), dtype=np.int32), n_steps_each)}


def tempered_schedule(eps: float, temperatures, sigma0: float, n_levels: int = 10) -> dict:
  """The per-step schedule of MDSM's tempered Langevin (`tempered_langevin`) for `inpaint_langevin`: step t takes
  alpha = eps^2 at temperature T_t, with the score of an energy that models p_sigma0. exp(-E/T) is then about the
  data smoothed at sigma0 sqrt(T) (exactly so for a Gaussian energy near a data point), so the known values are
  held at known + sigma0 sqrt(T_t) z, with z redrawn at n_levels equal stretches of the schedule."""
  temps = np.asarray(temperatures, np.float32)
  n = len(temps)
  return {"sigma": np.full(n, sigma0, np.float32), "alpha": np.full(n, eps ** 2, np.float32),
          "temperature": temps, "known_noise": (sigma0 * np.sqrt(temps)).astype(np.float32),
          "level": np.minimum(np.arange(n) * int(n_levels) // max(n, 1), int(n_levels) - 1).astype(np.int32)}


def constant_schedule(sigma: float, alpha: float, n_steps: int, temperature: float = 1.0,
                      known_noise: float = 0.0) -> dict:
  """n_steps of Langevin at one sigma and step alpha for `inpaint_langevin` (an energy of clean data, e.g.
  Denoising-EBM's U_c, holds its known values exactly: known_noise 0)."""
  n = int(n_steps)
  return {"sigma": np.full(n, sigma, np.float32), "alpha": np.full(n, alpha, np.float32),
          "temperature": np.full(n, temperature, np.float32), "known_noise": np.full(n, known_noise, np.float32),
          "level": np.zeros(n, np.int32)}


def inpaint_langevin(score_fn, rng: Array, x0: Array, known: Array, mask: Array, schedule: dict,
                     final_denoise_sigma: Optional[float] = None, score_takes_key: bool = False,
                     n_keep: int = 0) -> tuple[Array, dict]:
  """Conditional sampling by masked Langevin (NCSN's anneal_Langevin_dynamics_inpainting; the same masking for any
  other step schedule, e.g. MDSM's tempered Langevin): mask [B, ...] (or broadcastable) is 1 where x is known, with
  values `known` [B, ...]. Step t of `schedule` (annealed_schedule / tempered_schedule / constant_schedule: per-step
  arrays 'sigma', 'alpha', 'temperature', 'known_noise', 'level') first sets the known entries to
  known + known_noise_t z_level (z drawn once per level, as the reference draws one noisy copy of the known half per
  noise level), then moves every entry by
      x <- x + alpha_t/2 s(x, sigma_t) + sqrt(alpha_t T_t) z,
  so the free entries follow Langevin on p_sigma(x_free | x_known noised at the same level): at the last level
  they sample the conditional of the smoothed density the score models. The output has the known entries
  exactly `known` and, with final_denoise_sigma, the free ones moved by one Tweedie step
  x + final_denoise_sigma^2 s(x, sigma_L). score_takes_key: score_fn(x, sigma, key) for a stochastic energy
  (Denoising-EBM's U_c draws its noise per call). n_keep > 0: aux['trajectory'] [levels, n_keep, ...], the first
  n_keep chains at the end of every level (known entries as held there)."""
  chex.assert_equal_shape((x0, known))
  mask = jnp.broadcast_to(jnp.asarray(mask, x0.dtype), x0.shape)
  sched = {k: jnp.asarray(schedule[k]) for k in ("sigma", "alpha", "temperature", "known_noise", "level")}
  n = sched["sigma"].shape[0]
  chex.assert_shape([sched[k] for k in sched], (n,))
  n_levels = int(np.asarray(schedule["level"]).max()) + 1
  k_known, k_steps = jax.random.split(rng)
  score = score_fn if score_takes_key else (lambda x, sig, _k: score_fn(x, sig))

  def clamp(x, level, noise):
    z = jax.random.normal(jax.random.fold_in(k_known, level), x.shape, x.dtype)
    return mask * (known + noise * z) + (1.0 - mask) * x

  def step(x, inp):
    key, sig, alpha, temp, noise, level = inp
    k_s, k_z = jax.random.split(key)
    x = clamp(x, level, noise)
    z = jax.random.normal(k_z, x.shape, x.dtype)
    x = x + 0.5 * alpha * score(x, _full(sig, x), k_s) + jnp.sqrt(alpha * temp) * z
    return x, x[:n_keep]

  keys = jax.random.split(k_steps, n)
  xs = (keys, sched["sigma"].astype(x0.dtype), sched["alpha"].astype(x0.dtype),
        sched["temperature"].astype(x0.dtype), sched["known_noise"].astype(x0.dtype), sched["level"])
  if n_keep > 0:
    ends = np.flatnonzero(np.diff(np.append(np.asarray(schedule["level"]), n_levels)))  # last step of each level
    x, traj = jax.lax.scan(step, x0, xs)
    traj = traj[ends]
  else:
    x, _ = jax.lax.scan(lambda c, i: (step(c, i)[0], None), x0, xs)
  if final_denoise_sigma is not None:
    sig_l = _full(schedule["sigma"][-1], x)
    x = x + final_denoise_sigma ** 2 * score(x, sig_l, jax.random.fold_in(k_steps, n))
  x = mask * known + (1.0 - mask) * x
  aux = {"n_nonfinite": _nonfinite(x)}
  if n_keep > 0:
    aux["trajectory"] = traj
  return x, aux


def shard_chains(x: jax.Array) -> jax.Array:
  """x [n, ...] constrained to be split over the local devices along the chain axis (inside jit), when there
  are several and n divides evenly; else x unchanged. Chains are independent, so a sampler then runs on
  every device (e.g. both halves of a host split by runtime.cpu_devices). The random draws do not
  depend on the sharding (jax's partitionable threefry), so the samples are the same as unsharded."""
  from jax.sharding import Mesh, NamedSharding, PartitionSpec  # noqa: PLC0415
  devices = jax.local_devices()
  if len(devices) < 2 or jax.process_count() > 1 or x.shape[0] % len(devices):
    return x
  mesh = Mesh(np.array(devices), ("chains",))
  return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, PartitionSpec("chains")))

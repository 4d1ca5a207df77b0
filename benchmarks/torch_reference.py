"""PyTorch versions of dsm_jax's MDSM and NCSN image networks and of their reference training and sampling steps,
for benchmarks/bench_vs_pytorch.py. Imported only by a Python that has torch (never by dsm_jax).

The modules follow dsm_jax/models/energy_resnet.py (EnergyResNet) and dsm_jax/models/refinenet.py (CondRefineNet)
layer for layer, with the same channels, kernel sizes, dilations, biases, norms and activations, and with the
same submodule names, so a parameter tree exported from Flax loads by name (`load_flax`: conv kernels HWIO ->
OIHW, dense kernels transposed). They compute in NCHW, PyTorch's native layout. The steps are written as the public
references write them (ermongroup/ncsn anneal_dsm_score_estimation and anneal_Langevin_dynamics; zengyi-li/MDSM's
double-backprop training step and its Langevin step with autograd.grad on the input), with Adam(1e-3).
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def conv(c_in: int, c_out: int, k: int = 3, dilation: int = 1, bias: bool = True) -> nn.Conv2d:
  """Stride-1 'SAME' convolution (odd k)."""
  return nn.Conv2d(c_in, c_out, k, padding=(k - 1) * dilation // 2, dilation=dilation, bias=bias)


# ------------------------------------------------------------------------------------ MDSM's ResNet energy
def mean_pool_ceil(x: torch.Tensor) -> torch.Tensor:
  """2x2 mean pool, stride 2; an odd side's last window averages the pixels that exist (as energy_resnet.py)."""
  return F.avg_pool2d(x, 2, ceil_mode=True)


class EnergyResBlock(nn.Module):
  def __init__(self, c_in: int, features: int, down: bool):
    super().__init__()
    self.down = down
    self.conv1 = conv(c_in, c_in, 3, bias=False)
    self.conv2 = conv(c_in, features, 3)
    self.shortcut = conv(c_in, features, 1)

  def forward(self, x):
    h = self.conv1(F.elu(x))
    h = self.conv2(F.elu(h))
    if self.down:
      return self.shortcut(mean_pool_ceil(x)) + mean_pool_ceil(h)
    return self.shortcut(x) + h


class ResNetTrunk(nn.Module):
  def __init__(self, channels: int, nf: int, stage_blocks):
    super().__init__()
    self.conv_in = conv(channels, nf, 3)
    self.blocks = []
    c = nf
    for i, n_blocks in enumerate(stage_blocks):
      width = nf * 2 ** (i + 1)
      for j in range(n_blocks):
        name = f"stage{i}_block{j}"
        self.add_module(name, EnergyResBlock(c, width, down=(j == 0)))
        self.blocks.append(name)
        c = width

  def forward(self, x):
    h = self.conv_in(x)
    for name in self.blocks:
      h = getattr(self, name)(h)
    return h


class EnergyResNet(nn.Module):
  """E(x) [B] for images [B, C, H, W]: the trunk, then (w1.h + b1)(w2.h + b2) + wq.(h * h) + bq over the flattened
  features (flattened in H, W, C order, as the NHWC network)."""

  def __init__(self, image_shape, nf: int = 16, stage_blocks=(2, 2, 2)):
    super().__init__()
    h, w, c = image_shape
    self.trunk = ResNetTrunk(c, nf, stage_blocks)
    for _ in stage_blocks:
      h, w = (h + 1) // 2, (w + 1) // 2
    n = h * w * nf * 2 ** len(stage_blocks)
    self.lin1, self.lin2, self.quad = nn.Linear(n, 1), nn.Linear(n, 1), nn.Linear(n, 1)

  def forward(self, x):
    h = self.trunk(x).permute(0, 2, 3, 1).flatten(1)
    return (self.lin1(h) * self.lin2(h) + self.quad(h * h))[:, 0]


# ------------------------------------------------------------------------------------ NCSN's CondRefineNet
class CondInstanceNormPlus(nn.Module):
  """Conditional instance norm++ (the reference's CondInstanceNorm2dPlus): instance norm, plus alpha times the
  normalised channel means, then gamma and beta, all three looked up per class."""

  def __init__(self, c: int, num_classes: int):
    super().__init__()
    self.c = c
    self.instance_norm = nn.InstanceNorm2d(c, affine=False, track_running_stats=False)
    self.embed = nn.Embedding(num_classes, 3 * c)

  def forward(self, x, y):
    means = x.mean(dim=(2, 3))
    m = means.mean(dim=-1, keepdim=True)
    v = means.var(dim=-1, keepdim=True)
    means = (means - m) / torch.sqrt(v + 1e-5)
    h = self.instance_norm(x)
    gamma, alpha, beta = self.embed(y).chunk(3, dim=-1)
    h = h + means[..., None, None] * alpha[..., None, None]
    return gamma[..., None, None] * h + beta[..., None, None]


class CondResBlock(nn.Module):
  def __init__(self, c_in: int, features: int, num_classes: int, down: bool, dilation):
    super().__init__()
    d = dilation or 1
    self.down, self.dilation, self.identity = down, dilation, (not down and features == c_in)
    self.norm1 = CondInstanceNormPlus(c_in, num_classes)
    if down:
      self.conv1 = conv(c_in, c_in, 3, d)
      self.norm2 = CondInstanceNormPlus(c_in, num_classes)
      self.conv2 = conv(c_in, features, 3, d)
      self.shortcut = conv(c_in, features, 1) if dilation is None else conv(c_in, features, 3, d)
    else:
      self.conv1 = conv(c_in, features, 3, d)
      self.norm2 = CondInstanceNormPlus(features, num_classes)
      self.conv2 = conv(features, features, 3, d)
      if not self.identity:
        self.shortcut = conv(c_in, features, 1)

  def forward(self, x, y):
    h = self.conv1(F.elu(self.norm1(x, y)))
    h = self.conv2(F.elu(self.norm2(h, y)))
    if self.down and self.dilation is None:
      return F.avg_pool2d(self.shortcut(x), 2) + F.avg_pool2d(h, 2)
    return (x if self.identity else self.shortcut(x)) + h


class CondRCU(nn.Module):
  def __init__(self, c: int, num_classes: int, n_blocks: int, n_stages: int = 2):
    super().__init__()
    self.n_blocks, self.n_stages = n_blocks, n_stages
    for i in range(n_blocks):
      for j in range(n_stages):
        self.add_module(f"norm_{i}_{j}", CondInstanceNormPlus(c, num_classes))
        self.add_module(f"conv_{i}_{j}", conv(c, c, 3, bias=False))

  def forward(self, x, y):
    for i in range(self.n_blocks):
      residual = x
      for j in range(self.n_stages):
        x = getattr(self, f"conv_{i}_{j}")(F.elu(getattr(self, f"norm_{i}_{j}")(x, y)))
      x = x + residual
    return x


class CondMSF(nn.Module):
  def __init__(self, in_channels, features: int, num_classes: int):
    super().__init__()
    self.n = len(in_channels)
    for i, c in enumerate(in_channels):
      self.add_module(f"norm_{i}", CondInstanceNormPlus(c, num_classes))
      self.add_module(f"conv_{i}", conv(c, features, 3))

  def forward(self, xs, y, shape):
    out = 0.0
    for i, x in enumerate(xs):
      h = getattr(self, f"conv_{i}")(getattr(self, f"norm_{i}")(x, y))
      out = out + F.interpolate(h, size=shape, mode="bilinear", align_corners=True)
    return out


class CondCRP(nn.Module):
  def __init__(self, c: int, num_classes: int, n_stages: int = 2):
    super().__init__()
    self.n_stages = n_stages
    self.pool = nn.AvgPool2d(5, 1, 2)
    for i in range(n_stages):
      self.add_module(f"norm_{i}", CondInstanceNormPlus(c, num_classes))
      self.add_module(f"conv_{i}", conv(c, c, 3, bias=False))

  def forward(self, x, y):
    x = F.elu(x)
    path = x
    for i in range(self.n_stages):
      path = getattr(self, f"conv_{i}")(self.pool(getattr(self, f"norm_{i}")(path, y)))
      x = path + x
    return x


class CondRefineBlock(nn.Module):
  def __init__(self, in_channels, features: int, num_classes: int, end: bool):
    super().__init__()
    self.n = len(in_channels)
    for i, c in enumerate(in_channels):
      self.add_module(f"adapt_{i}", CondRCU(c, num_classes, n_blocks=2))
    c = in_channels[0]
    if self.n > 1:
      self.msf = CondMSF(in_channels, features, num_classes)
      c = features
    self.crp = CondCRP(c, num_classes)
    self.output = CondRCU(c, num_classes, n_blocks=3 if end else 1)

  def forward(self, xs, y, shape):
    hs = [getattr(self, f"adapt_{i}")(x, y) for i, x in enumerate(xs)]
    h = self.msf(hs, y, shape) if self.n > 1 else hs[0]
    return self.output(self.crp(h, y), y)


class CondRefineNet(nn.Module):
  """NCSN's score network for 28/32-pixel images (CondRefineNetDilated), inputs [B, C, H, W] in [0, 1] and the
  noise level's index y [B]."""

  def __init__(self, channels: int = 1, ngf: int = 64, num_classes: int = 10):
    super().__init__()
    g = ngf
    self.levels = [(g, False, None), (2 * g, True, None), (2 * g, True, 2), (2 * g, True, 4)]
    self.begin_conv = conv(channels, g, 3)
    c = g
    for k, (features, down, dilation) in enumerate(self.levels):
      self.add_module(f"res{k + 1}_0", CondResBlock(c, features, num_classes, down, dilation))
      self.add_module(f"res{k + 1}_1", CondResBlock(features, features, num_classes, False, dilation))
      c = features
    widths = [f for f, _, _ in self.levels]
    n = len(widths)
    ref_c = None
    for i in range(n):
      level_c = widths[n - 1 - i]
      out_c = widths[n - 2 - i] if i < n - 1 else g
      in_channels = [level_c] if ref_c is None else [level_c, ref_c]
      features = out_c if i > 0 else level_c
      self.add_module(f"refine{i + 1}", CondRefineBlock(in_channels, features, num_classes, end=(i == n - 1)))
      ref_c = features if len(in_channels) > 1 else level_c
    self.normalizer = CondInstanceNormPlus(g, num_classes)
    self.end_conv = conv(g, channels, 3)

  def forward(self, x, y):
    h = self.begin_conv(2.0 * x - 1.0)
    feats = []
    for k in range(len(self.levels)):
      h = getattr(self, f"res{k + 1}_0")(h, y)
      h = getattr(self, f"res{k + 1}_1")(h, y)
      feats.append(h)
    n = len(feats)
    ref = None
    for i in range(n):
      level = feats[n - 1 - i]
      xs = [level] if ref is None else [level, ref]
      ref = getattr(self, f"refine{i + 1}")(xs, y, level.shape[2:])
    return self.end_conv(F.elu(self.normalizer(ref, y)))


# ------------------------------------------------------------------------------------ parameters from Flax
def n_params(net: nn.Module) -> int:
  return sum(p.numel() for p in net.parameters())


def load_flax(net: nn.Module, flat: dict) -> None:
  """Loads a Flax parameter tree flattened to {'a/b/kernel': array} into net, by name: 'kernel' -> 'weight'
  (HWIO -> OIHW for convolutions, transposed for dense layers), 'embed' -> 'embed.weight'."""
  state = net.state_dict()
  seen = set()
  for path, value in flat.items():
    parts = path.split("/")
    leaf = parts[-1]
    v = np.asarray(value)
    if leaf == "kernel":
      name = ".".join(parts[:-1] + ["weight"])
      v = v.transpose(3, 2, 0, 1) if v.ndim == 4 else v.T
    elif leaf == "embed":
      name = ".".join(parts + ["weight"])
    else:
      name = ".".join(parts)
    if name not in state:
      raise KeyError(f"{path}: no parameter {name} in the PyTorch module")
    if tuple(state[name].shape) != v.shape:
      raise ValueError(f"{path}: shape {v.shape} against {tuple(state[name].shape)} in PyTorch")
    state[name] = torch.from_numpy(np.ascontiguousarray(v))
    seen.add(name)
  missing = set(state) - seen
  if missing:
    raise KeyError(f"PyTorch parameters absent from the Flax tree: {sorted(missing)[:5]}")
  net.load_state_dict(state)


# ------------------------------------------------------------------------------------ the reference steps
def mdsm_train_step(net, opt, x, sig, sigma0: float):
  """MDSM eq. 10 with double backprop: || (x - x~)/sigma0^2 + grad_x E(x~) ||^2 / sigma^2, then Adam."""
  s = sig.view(-1, 1, 1, 1)
  x_noisy = (x + s * torch.randn_like(x)).requires_grad_(True)
  grad_e = torch.autograd.grad(net(x_noisy).sum(), x_noisy, create_graph=True)[0]
  resid = (x - x_noisy) / sigma0 ** 2 + grad_e
  loss = (resid.pow(2).flatten(1).sum(1) / sig ** 2).mean()
  opt.zero_grad(set_to_none=True)
  loss.backward()
  opt.step()
  return loss


def mdsm_langevin_step(net, x, eps: float, temperature: float):
  """x - eps^2/2 grad E(x) + eps sqrt(T) z, grad E by autograd on the input only."""
  x = x.detach().requires_grad_(True)
  grad_e = torch.autograd.grad(net(x).sum(), x)[0]
  return (x - 0.5 * eps ** 2 * grad_e + eps * math.sqrt(temperature) * torch.randn_like(x)).detach()


def ncsn_train_step(net, opt, x, sigmas, anneal_power: float = 2.0):
  """anneal_dsm_score_estimation: one level per example, lambda(sigma) = sigma^2, then Adam."""
  labels = torch.randint(0, len(sigmas), (x.shape[0],))
  used = sigmas[labels].view(-1, 1, 1, 1)
  perturbed = x + torch.randn_like(x) * used
  target = -(perturbed - x) / used ** 2
  scores = net(perturbed, labels)
  loss = (0.5 * (scores - target).pow(2).flatten(1).sum(-1) * used.flatten() ** anneal_power).mean()
  opt.zero_grad(set_to_none=True)
  loss.backward()
  opt.step()
  return loss


@torch.no_grad()
def ncsn_langevin_step(net, x, level: int, sigmas, step_lr: float):
  """One step of anneal_Langevin_dynamics at level i: x + a s(x, i) + sqrt(2a) z, a = step_lr (sigma_i/sigma_L)^2."""
  labels = torch.full((x.shape[0],), level, dtype=torch.long)
  a = step_lr * float(sigmas[level] / sigmas[-1]) ** 2
  return x + a * net(x, labels) + math.sqrt(2 * a) * torch.randn_like(x)

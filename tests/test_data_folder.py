"""The image-folder dataset (dsm_jax/data/folder.py) on a generated folder of a few hundred files: every format
read, the crop / resize geometry with known pixels, a deterministic held-out split, corrupt and too-small files
listed and skipped, the cache reused (no decoding) until the folder changes, and one-line errors."""
import logging
import os

import numpy as np
import pytest
from PIL import Image

from configs.default import get_default_config
from dsm_jax.data import DataError, ImageDataset, folder


def _save(path, arr):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(arr).save(path)


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
  """300 files in nested folders (png, jpg, webp, sizes 20x16 .. 35x40) plus: a corrupt .jpg, a 6x6 png (too
  small for a 12 crop), a text file (ignored), and two known images: constant colour, black|white halves."""
  root = tmp_path_factory.mktemp("imgs")
  rng = np.random.default_rng(0)
  for i in range(300):
    h, w = 16 + i % 25, 20 + i % 16
    ext = (".png", ".jpg", ".webp")[i % 3]
    _save(str(root / f"d{i % 4}" / f"sub{i % 2}" / f"img{i:03d}{ext}"), rng.integers(0, 256, (h, w, 3), np.uint8))
  (root / "d0" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
  _save(str(root / "d1" / "tiny.png"), np.zeros((6, 6, 3), np.uint8))
  (root / "notes.txt").write_text("not an image")
  _save(str(root / "known" / "const.png"), np.full((24, 30, 3), (10, 200, 30), np.uint8))
  halves = np.zeros((20, 40), np.uint8)
  halves[:, 20:] = 255
  _save(str(root / "known" / "halves.png"), halves)
  return str(root)


def _config(image_folder, data_dir, **over):
  c = get_default_config("ncsn")
  d = c.data
  d.dataset, d.folder, d.data_dir, d.image_size = "folder", image_folder, str(data_dir), 10
  for k, v in over.items():
    d[k] = v
  return c.data


def test_decode_geometry_known_pixels(image_folder):
  const = folder.decode(os.path.join(image_folder, "known", "const.png"), 10, 0, 3)
  assert const.shape == (10, 10, 3) and (const == np.array([10, 200, 30], np.uint8)).all()
  # 40x20 black|white: the square centre crop is columns 10..29, half black, half white
  halves = folder.decode(os.path.join(image_folder, "known", "halves.png"), 10, 0, 3)
  assert (halves[:, :4] == 0).all() and (halves[:, 6:] == 255).all()
  grey = folder.decode(os.path.join(image_folder, "known", "const.png"), 4, 0, 1)
  assert grey.shape == (4, 4, 1) and len(np.unique(grey)) == 1
  with pytest.raises(ValueError, match="smaller than centre_crop=12"):
    folder.decode(os.path.join(image_folder, "d1", "tiny.png"), 10, 12, 3)


def test_folder_dataset_split_skips_and_cache(image_folder, tmp_path, caplog, monkeypatch):
  cfg = _config(image_folder, tmp_path, folder_test_frac=0.2, centre_crop=12)
  files = folder.list_images(image_folder)
  assert len(files) == 304 and "notes.txt" not in files
  with caplog.at_level(logging.WARNING):
    ds = ImageDataset(cfg, 0)
  info = ds.folder_info
  assert info["built"] and sorted(s.split(":")[0] for s in info["skipped"]) == [
      os.path.join("d0", "broken.jpg"), os.path.join("d1", "tiny.png")]
  assert "skipped 2 of 304 files" in caplog.text and "broken.jpg" in caplog.text
  assert open(info["cache"][:-4] + ".skipped.txt").read().count("\n") == 2
  good = [f for f in files if f not in (os.path.join("d0", "broken.jpg"), os.path.join("d1", "tiny.png"))]
  n_test = sum(folder.is_test(f, 0.2) for f in good)
  assert ds.num_train == 302 - n_test and ds.num_test == n_test and 30 < n_test < 90
  assert ds.shape == (10, 10, 3) and ds.train_labels() is None
  assert ds.host_batches([0, 1], 8).shape == (2, 8, 10, 10, 3)
  # the second load reads the cache and decodes nothing (and still names the skipped files)
  monkeypatch.setattr(folder, "decode", lambda *a: pytest.fail("decoded again"))
  caplog.clear()
  with caplog.at_level(logging.WARNING):
    again = ImageDataset(cfg, 0)
  assert not again.folder_info["built"] and "skipped 2 of 304" in caplog.text
  np.testing.assert_array_equal(again.split_uint8("train"), ds.split_uint8("train"))
  np.testing.assert_array_equal(again.split_uint8("test"), ds.split_uint8("test"))
  # another geometry is another cache entry
  monkeypatch.undo()
  other = ImageDataset(_config(image_folder, tmp_path, folder_test_frac=0.2, centre_crop=12, image_size=8), 0)
  assert other.folder_info["built"] and other.shape == (8, 8, 3)


def test_changed_folder_is_decoded_again(tmp_path):
  root = tmp_path / "f"
  for i in range(3):
    _save(str(root / f"{i}.png"), np.full((8, 8, 3), i * 50, np.uint8))
  cfg = _config(str(root), tmp_path / "data", image_size=4, folder_channels=1)
  assert ImageDataset(cfg, 0).num_train == 3
  _save(str(root / "3.png"), np.full((8, 8, 3), 200, np.uint8))
  ds = ImageDataset(cfg, 0)
  assert ds.folder_info["built"] and ds.num_train == 4 and ds.shape == (4, 4, 1)
  assert sorted(np.unique(ds.split_uint8("train")).tolist()) == [0, 50, 100, 200]


@pytest.mark.parametrize("over,says", [
    ({"folder": ""}, "config.data.folder: set the image folder"),
    ({"folder": "/nonexistent/dir"}, "not a directory"),
    ({"image_size": 0}, "config.data.image_size=0"),
    ({"pad_to": 32}, "config.data.pad_to"),
    ({"folder_test_frac": 1.0}, "folder_test_frac=1.0"),
    ({"folder_channels": 2}, "folder_channels=2"),
])
def test_bad_folder_settings_are_one_line(image_folder, tmp_path, over, says):
  with pytest.raises(DataError, match=None) as e:
    ImageDataset(_config(image_folder, tmp_path, **over), 0)
  assert says in str(e.value) and "\n" not in str(e.value)


def test_empty_and_unreadable_folders(tmp_path):
  (tmp_path / "empty").mkdir()
  with pytest.raises(DataError, match="no jpg/jpeg/png/webp files"):
    ImageDataset(_config(str(tmp_path / "empty"), tmp_path), 0)
  (tmp_path / "bad").mkdir()
  (tmp_path / "bad" / "a.png").write_bytes(b"garbage")
  with pytest.raises(DataError, match="none of its 1 image files gave a training image"):
    ImageDataset(_config(str(tmp_path / "bad"), tmp_path), 0)


@pytest.mark.slow  # trains and samples a network (a minute or more on 2 shared cores)
def test_folder_trains_samples_and_evaluates(tmp_path):
  """The runner on a folder of grey images: train -> sample -> eval at the folder's geometry; without labels the
  class-based figures are NaN (null in eval.json), the pixel ones are numbers."""
  import importlib
  import json
  from dsm_jax import run_lib
  root = tmp_path / "digits"
  rng = np.random.default_rng(1)
  for i in range(40):
    _save(str(root / f"{i}.png"), rng.integers(0, 256, (12, 10), np.uint8))
  c = importlib.import_module("configs.ncsn_mnist5k").get_config()
  d = c.data
  d.dataset, d.folder, d.data_dir, d.image_size, d.folder_channels, d.folder_test_frac = (
      "folder", str(root), str(tmp_path / "data"), 8, 1, 0.25)
  c.model.channels = (4, 8, 8)
  t = c.training
  t.n_iters, t.batch_size, t.log_every, t.ckpt_every, t.steps_per_call = 2, 4, 1, 2, 1
  c.runtime.progress, c.runtime.cpu_devices = False, 0
  s = c.sampling
  s.n_samples, s.batch_size, s.n_steps_each = 4, 4, 1
  c.eval.feature_cache_dir = str(tmp_path / "fc")
  res = run_lib.run(c, str(tmp_path / "run"))
  x = np.load(tmp_path / "run" / "samples" / "samples.npz")["x"]
  assert x.shape == (4, 8, 8, 1) and np.isfinite(x).all()
  ev = json.load(open(tmp_path / "run" / "eval.json"))
  assert ev["step"] == 2 and ev["fid_feat"] is None and np.isfinite(ev["nn_dist_mean"]) and res["nonfinite_x"] == 0

"""`python -m experiments.prepare`: prepares what a config needs and says where and how many images; an image
folder's cache, the offline builders, tfds sets through the real builders (mocked offline), and one-line errors
for a set tfds cannot prepare without TensorFlow and for a config with nothing to prepare."""
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from experiments import prepare as prepare_cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(capfd, *args):
  rc = prepare_cli.cli(["prepare", *args])
  out, err = capfd.readouterr()
  return rc, out, err


def test_folder_is_decoded_once_and_reported(capfd, tmp_path):
  root = tmp_path / "faces"
  root.mkdir()
  for i in range(12):
    Image.fromarray(np.full((20, 16, 3), i * 20, np.uint8)).save(root / f"{i}.png")
  (root / "bad.jpg").write_bytes(b"nope")
  args = ["--config=configs/ncsn_celeba.py", "--config.data.dataset=folder", f"--config.data.folder={root}",
          f"--config.data.data_dir={tmp_path / 'data'}", "--config.data.centre_crop=0",
          "--config.data.folder_test_frac=0.25"]
  rc, out, err = _run(capfd, *args)
  assert rc == 0, err
  line = out.strip().splitlines()[-1]
  assert line.startswith(f"folder {root}: 12 images (train ") and "folder_cache" in line and "1 files skipped" in line
  cache = line.split(" in ", 1)[1].split(" (")[0]
  assert os.path.isfile(cache) and np.load(cache)["train"].shape[1:] == (32, 32, 3)
  rc, out2, _ = _run(capfd, *args)
  assert rc == 0 and out2 == out


def test_offline_set(capfd, tmp_path):
  rc, out, err = _run(capfd, "--config=configs/mdsm_mnist5k.py", f"--config.data.data_dir={tmp_path}",
                      "--config.data.dataset=digits")
  assert rc == 0, err
  assert out.splitlines()[-1] == f"digits: 1,797 images (train 1,438, test 359) in {tmp_path}/digits/1.0.0"


def test_mocked_tfds_sets(capfd, mock_tfds):
  mock_tfds.splits = ["train", "test"]
  rc, out, err = _run(capfd, "--config=configs/mdsm_celeba.py")  # celeb_a and its OOD sets cifar10, svhn_cropped
  assert rc == 0, err
  names = [l.split(":")[0] for l in out.strip().splitlines()]
  assert names == ["celeb_a", "cifar10", "svhn_cropped"] and "48 images (train 24, test 24)" in out


def test_unprepared_tfds_set_without_tensorflow_names_the_extra(capfd, tmp_path, monkeypatch):
  from dsm_jax.data import images
  monkeypatch.setattr(images, "_have_tensorflow", lambda: False)
  rc, out, err = _run(capfd, "--config=configs/ncsn_cifar10.py", f"--config.data.data_dir={tmp_path}")
  lines = [l for l in err.splitlines() if l.strip()]
  assert rc == 2 and len(lines) == 1 and "'cifar10' is not prepared" in lines[0] and "pip install -e .[tf]" in lines[0]


def test_nothing_to_prepare_and_bad_config_are_one_line(capfd):
  rc, _, err = _run(capfd, "--config=configs/ncsn_toy.py")
  assert rc == 2 and err.strip() == "error: config.data.dataset='mixture' is a toy dataset: nothing to prepare"
  rc, _, err = _run(capfd, "--config=configs/ncsn_celeba.py", "--config.data.dataset=folder")
  assert rc == 2 and "config.data.folder: set the image folder" in err and len(err.strip().splitlines()) == 1


def test_the_command_as_the_readme_writes_it(tmp_path):
  out = subprocess.run([sys.executable, "-m", "experiments.prepare", "--config=configs/dde_mnist5k.py",
                        "--config.data.dataset=digits", f"--config.data.data_dir={tmp_path}"], cwd=REPO, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PYTHONPATH": REPO})
  assert out.returncode == 0, out.stderr[-2000:]
  assert out.stdout.splitlines()[-1] == f"digits: 1,797 images (train 1,438, test 359) in {tmp_path}/digits/1.0.0"

"""A folder of image files as a dataset (`config.data.dataset='folder'`, `config.data.folder=PATH`).

Every .jpg / .jpeg / .png / .webp file under PATH (recursively, in sorted order of relative path) is decoded once
with PIL (converted to RGB, or to grey with data.folder_channels=1), centre-cropped to a square
(data.centre_crop, 0: the shorter side), resized bilinearly to data.image_size (required) with the same crop and
resize code as the tfds datasets (`images._apply_geometry`), and stored as uint8.

Held-out split: data.folder_test_frac of the files go to 'test', chosen by a hash of each file's relative path
(so the split is deterministic and a file keeps its side when others are added).

Cache: `<data_dir>/folder_cache/<folder name>-<key>.npz` (uint8 'train', 'test') with the list of skipped files
in `.skipped.txt` beside it. The key covers the folder's absolute path, the geometry, the channels, the split
fraction and the listing (every file's relative path, size and modification time), so a changed folder is
decoded again, and an unchanged one loads in seconds. Files that cannot be decoded or are smaller than the crop
are skipped and listed (a warning with the count and the list file), never silently.
"""
from __future__ import annotations

import hashlib
import logging
import os
from typing import Optional

import numpy as np

from dsm_jax.data.pipeline import DataError
from dsm_jax.data.pipeline import config_value as _cfg

EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")
FORMAT_VERSION = 1
CHANNELS = (1, 3)
_SHOWN = 5  # skipped files named in the warning (all of them are in the list file)


def settings(data_config) -> dict:
  """The folder settings of config.data, checked (DataError naming the key)."""
  path = str(_cfg(data_config, "folder", ""))
  if not path:
    raise DataError("config.data.folder: set the image folder for config.data.dataset='folder' "
                    "(--config.data.folder=PATH)")
  full = os.path.abspath(os.path.expanduser(path))
  if not os.path.isdir(full):
    raise DataError(f"config.data.folder={path!r}: not a directory")
  size = int(_cfg(data_config, "image_size", 0))
  if size <= 0:
    raise DataError("config.data.image_size=0: a folder's images have no common size; set one, e.g. "
                    "--config.data.image_size=32")
  crop = int(_cfg(data_config, "centre_crop", 0))
  if crop < 0:
    raise DataError(f"config.data.centre_crop={crop}: must be >= 0 (0: the shorter side)")
  if int(_cfg(data_config, "pad_to", 0)):
    raise DataError("config.data.pad_to: padding is for 28x28 tfds sets; a folder's images are cropped and "
                    "resized (use 0)")
  frac = float(_cfg(data_config, "folder_test_frac", 0.0))
  if not 0.0 <= frac < 1.0:
    raise DataError(f"config.data.folder_test_frac={frac}: must be in [0, 1)")
  channels = int(_cfg(data_config, "folder_channels", 3))
  if channels not in CHANNELS:
    raise DataError(f"config.data.folder_channels={channels}: must be 1 (grey) or 3 (RGB)")
  return {"folder": full, "size": size, "crop": crop, "test_frac": frac, "channels": channels}


def list_images(folder: str) -> list[str]:
  """Relative paths of the image files under folder, sorted."""
  out = []
  for root, dirs, files in os.walk(folder):
    dirs.sort()
    for f in files:
      if f.lower().endswith(EXTENSIONS) and not f.startswith("."):
        out.append(os.path.relpath(os.path.join(root, f), folder))
  return sorted(out)


def is_test(rel: str, test_frac: float) -> bool:
  """Whether file `rel` is held out: the first 8 bytes of sha1(rel) as a fraction of 2^64, below test_frac."""
  u = int.from_bytes(hashlib.sha1(rel.encode("utf-8")).digest()[:8], "big") / 2.0**64
  return u < test_frac


def decode(path: str, size: int, crop: int, channels: int) -> np.ndarray:
  """uint8 [size, size, channels] of one file: RGB or grey, centre crop (0: shorter side), bilinear resize."""
  from PIL import Image  # noqa: PLC0415
  from dsm_jax.data.images import Geometry, _apply_geometry  # noqa: PLC0415
  with Image.open(path) as im:
    im.load()
    im = im.convert("L" if channels == 1 else "RGB")
    a = np.asarray(im, np.uint8)
  if a.ndim == 2:
    a = a[..., None]
  c = crop or min(a.shape[:2])
  if c > min(a.shape[:2]):
    raise ValueError(f"{a.shape[1]}x{a.shape[0]} is smaller than centre_crop={crop}")
  return _apply_geometry(a[None], Geometry(crop=c, size=size, pad=0))[0]


def cache_path(s: dict, data_dir: str, files: list[str]) -> str:
  h = hashlib.sha1()
  h.update(repr((FORMAT_VERSION, s["folder"], s["size"], s["crop"], s["channels"], s["test_frac"])).encode())
  for rel in files:
    st = os.stat(os.path.join(s["folder"], rel))
    h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
  name = os.path.basename(s["folder"].rstrip(os.sep)) or "folder"
  return os.path.join(data_dir, "folder_cache", f"{name}-{h.hexdigest()[:16]}.npz")


def _warn_skipped(skipped: list[str], list_file: str, total: int) -> None:
  if skipped:
    shown = "; ".join(skipped[:_SHOWN]) + ("; ..." if len(skipped) > _SHOWN else "")
    logging.warning("image folder: skipped %d of %d files (all listed in %s): %s", len(skipped), total, list_file,
                    shown)


def load(data_config, data_dir: str, progress: bool = True) -> tuple[np.ndarray, np.ndarray, dict]:
  """(train uint8 [n, S, S, C], test uint8 [m, S, S, C], info) of the folder, decoded once and cached.
  info: {'cache': path, 'skipped': [str], 'built': bool}."""
  from dsm_jax.workdir import WriteError, write_npz, write_text  # noqa: PLC0415
  s = settings(data_config)
  files = list_images(s["folder"])
  if not files:
    raise DataError(f"config.data.folder={s['folder']!r}: no {'/'.join(e[1:] for e in EXTENSIONS)} files in it or "
                    "below it")
  path = cache_path(s, data_dir, files)
  list_file = path[:-4] + ".skipped.txt"
  if os.path.isfile(path):
    with np.load(path) as z:
      train, test = z["train"], z["test"]
    skipped = open(list_file).read().splitlines() if os.path.isfile(list_file) else []
    _warn_skipped(skipped, list_file, len(files))
    return train, test, {"cache": path, "skipped": skipped, "built": False}
  shape = (s["size"], s["size"], s["channels"])
  out = {"train": [], "test": []}
  skipped = []
  bar = None
  if progress:
    from tqdm.auto import tqdm  # noqa: PLC0415
    bar = tqdm(total=len(files), desc=f"decode {os.path.basename(s['folder'])}", unit="image", dynamic_ncols=True,
               mininterval=1.0)
  for rel in files:
    try:
      img = decode(os.path.join(s["folder"], rel), s["size"], s["crop"], s["channels"])
    except Exception as e:  # noqa: BLE001 - any file PIL cannot read is listed and skipped
      lines = [x for x in str(e).splitlines() if x.strip()]
      skipped.append(f"{rel}: {type(e).__name__}: {lines[0] if lines else ''}")
    else:
      out["test" if is_test(rel, s["test_frac"]) else "train"].append(img)
    if bar is not None:
      bar.update(1)
  if bar is not None:
    bar.close()
  if not out["train"]:
    raise DataError(f"config.data.folder={s['folder']!r}: none of its {len(files)} image files gave a training "
                    f"image ({len(skipped)} unreadable, e.g. {skipped[0] if skipped else '-'}; "
                    f"{len(out['test'])} held out)")
  arrays = {k: np.stack(v) if v else np.zeros((0,) + shape, np.uint8) for k, v in out.items()}
  try:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    write_text(list_file, "".join(f"{x}\n" for x in skipped))
    write_npz(path, **arrays)
  except (OSError, WriteError) as e:
    raise DataError(f"cannot write the folder cache {path} ({e}); set --config.data.data_dir=... to a "
                    "writable directory") from None
  _warn_skipped(skipped, list_file, len(files))
  return arrays["train"], arrays["test"], {"cache": path, "skipped": skipped, "built": True}


def example_shape(data_config) -> tuple:
  s = settings(data_config)
  return (s["size"], s["size"], s["channels"])


def default_data_dir(data_dir: Optional[str]) -> str:
  return os.path.expanduser(data_dir or os.environ.get("TFDS_DATA_DIR") or os.path.join("~", "tensorflow_datasets"))

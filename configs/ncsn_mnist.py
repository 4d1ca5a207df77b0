"""NCSN on MNIST at the paper's values (see configs/ncsn_images.py). Needs tfds `mnist` prepared in
--config.data.data_dir (pip install -e .[tf] to prepare it)."""
from configs.ncsn_images import ncsn_image_config


def get_config():
  return ncsn_image_config("mnist", ngf=64)  # reference mnist.yml: ngf 64

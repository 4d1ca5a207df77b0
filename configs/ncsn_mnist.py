"""NCSN on MNIST at the paper's values (see configs/ncsn_images.py). Needs tfds `mnist` prepared in
--config.data.data_dir (pip install -e .[tf] to prepare it)."""
from configs.ncsn_images import ncsn_image_config


def get_config():
  config = ncsn_image_config("mnist", ngf=64)  # reference mnist.yml: ngf 64
  config.eval.fid_n = 50000  # the papers' FID: 50,000 samples against the training split (eval/protocol.py)
  return config

"""DDE on MNIST at the reference code's values (configs/dde_images.py; logchan/dde train_mnist.sh)."""
from configs.dde_images import dde_image_config


def get_config():
  return dde_image_config("mnist")

"""DDE on Fashion-MNIST. The paper reports Fashion-MNIST next to MNIST; the reference code loads it
(datasets.py fashionLoader) but ships a script only for MNIST, so the MNIST values are used
(configs/dde_images.py)."""
from configs.dde_images import dde_image_config


def get_config():
  return dde_image_config("fashion_mnist")

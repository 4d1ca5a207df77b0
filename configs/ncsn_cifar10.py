"""NCSN on CIFAR-10 at the paper's values (see configs/ncsn_images.py): ngf 128, random horizontal flips
(reference cifar10.yml: random_flip true). Paper: Inception 8.87, FID 25.32."""
from configs.ncsn_images import ncsn_image_config


def get_config():
  config = ncsn_image_config("cifar10", ngf=128)
  config.data.random_flip = True
  config.eval.fid_n = 50000  # the papers' FID: 50,000 samples against the training split (eval/protocol.py)
  return config

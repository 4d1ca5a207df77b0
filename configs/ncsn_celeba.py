"""NCSN on CelebA at the paper's values (see configs/ncsn_images.py): centre crop 140x140, resized to
32x32 (paper Sec. 5), ngf 128, random flips (reference celeba.yml)."""
from configs.ncsn_images import ncsn_image_config


def get_config():
  config = ncsn_image_config("celeb_a", ngf=128)
  config.data.centre_crop = 140
  config.data.image_size = 32
  config.data.random_flip = True
  config.eval.fid_n = 50000  # the papers' FID: 50,000 samples against the training split (eval/protocol.py)
  return config

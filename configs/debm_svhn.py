"""Denoising-EBM on SVHN (tfds svhn_cropped) at the paper's values (configs/debm_images.py): K = 20
latent and T = 90 pixel Langevin steps [paper]."""
from configs.debm_images import debm_image_config


def get_config():
  config = debm_image_config("svhn_cropped", latent_steps=20, pixel_steps=90)
  config.eval.ood_datasets = ("cifar10",)  # [choice] the paper's OOD table starts from CIFAR-10
  config.eval.fid_n = 50000  # the papers' FID: 50,000 samples against the training split (eval/protocol.py)
  return config

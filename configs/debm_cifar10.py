"""Denoising-EBM on CIFAR-10 at the paper's values (configs/debm_images.py): K = 20 latent and T = 90
pixel Langevin steps [paper]. Paper: FID 21.24, IS 7.86; OOD AUROC from CIFAR-10: SVHN 0.99, CelebA
0.86, CIFAR-100 0.62, Interp. 0.99; 64 samples in 8.67 s vs NCSN's 120.11 s."""
from configs.debm_images import debm_image_config


def get_config():
  config = debm_image_config("cifar10", latent_steps=20, pixel_steps=90)
  config.eval.ood_datasets = ("svhn_cropped", "celeb_a", "cifar100")  # [paper] the OOD table's sets
  config.eval.fid_n = 50000  # the papers' FID: 50,000 samples against the training split (eval/protocol.py)
  return config

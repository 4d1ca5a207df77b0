"""Denoising-EBM on CelebA 64x64 at the paper's values (configs/debm_images.py): K = 40 latent and
T = 100 pixel Langevin steps [paper]; centre crop 140 then resize to 64 (celeb_a's default crop, as
NCSN). Paper: FID 14.1."""
from configs.debm_images import debm_image_config


def get_config():
  config = debm_image_config("celeb_a", latent_steps=40, pixel_steps=100, ch_mult=(1, 1, 2, 2, 2))
  config.data.image_size = 64   # [paper] CelebA 64x64
  config.data.centre_crop = 140  # [choice] as NCSN's CelebA (the paper's crop is not in the text we have)
  config.sampling.batch_size = 50
  config.eval.fid_n = 50000  # the papers' FID: 50,000 samples against the training split (eval/protocol.py)
  return config

"""Denoising-EBM on the 5,000 offline MNIST digits (mnist5k), sized for a 2-core CPU (draft)."""
from configs.debm_images import debm_image_config


def get_config():
  config = debm_image_config("mnist5k", latent_steps=5, pixel_steps=10, ch_mult=(1, 2, 2))
  config.data.random_flip = False
  m = config.model
  m.nf = 16
  m.num_res_blocks = 1
  m.latent_dim = 32
  t = config.training
  t.n_iters = 1000
  t.batch_size = 48
  t.n_chains = 16
  t.log_every = 50
  t.ckpt_every = 500
  t.steps_per_call = 10
  s = config.sampling
  s.n_samples = 500
  s.batch_size = 250
  return config

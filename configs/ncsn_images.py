"""Shared settings of NCSN's image experiments (Song & Ermon 2019, Sec. 5 and Appendix B; values from
the paper and the reference code's configs anneal.yml / mnist.yml / cifar10.yml / celeba.yml)."""
from configs.default import get_default_config
from dsm_jax import models


def ncsn_image_config(dataset: str, ngf: int):
  config = get_default_config("ncsn")
  d = config.data
  d.dataset = dataset
  d.scale = "01"             # NCSN models images in [0, 1] (reference: logit_transform false)
  d.random_flip = False
  d.dequantize = True        # reference: X / 256 * 255 + U / 256 in training and test (runners/anneal_runner.py)

  m = config.model
  models.set_network(m, "refinenet",   # CondRefineNetDilated (Appendix A.3)
                     ngf=ngf,          # reference: 64 for MNIST, 128 for CIFAR-10 and CelebA
                     scale_by_sigma=False,  # NCSN v1 outputs the score directly (v2 divides by sigma)
                     dtype="float32")  # 'bfloat16' computes convolutions in bf16 (params stay float32)
  m.sigma_max = 1.0          # paper Sec. 5: sigma_1 = 1 ... sigma_10 = 0.01, geometric
  m.sigma_min = 0.01
  m.num_scales = 10
  m.anneal_power = 2.0       # lambda(sigma) = sigma^2
  m.base_score = "none"      # the paper's network alone; 'gaussian': + the data's Gaussian score (gaussian_base.py)

  t = config.training
  t.n_iters = 200000         # paper: 200k iterations
  t.batch_size = 128         # paper: batch size 128
  t.optimizer = "adam"
  t.lr = 1e-3                # paper: Adam, learning rate 0.001
  t.beta1, t.beta2 = 0.9, 0.999
  t.ema_rate = 0.0           # NCSN v1 samples the raw weights (NCSNv2 uses EMA 0.999: set it here)
  t.log_every = 100
  t.ckpt_every = 5000
  t.steps_per_call = 10

  s = config.sampling
  s.score = "model"
  s.n_samples = 1000
  s.batch_size = 100
  s.init_range = (0.0, 1.0)  # reference: x_0 ~ U[0, 1]
  s.eps = 2e-5               # reference step_lr = 2e-5 ...
  s.convention = "code"      # ... in the code's rule x + a s + sqrt(2a) z, a = step_lr (sigma_i/sigma_L)^2
  s.n_steps_each = 100       # T = 100 steps per level
  s.final_denoise = False    # NCSN v1 has no final denoising step (v2 does)
  s.langevin_compare = False
  return config

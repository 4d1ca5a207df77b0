"""Shared settings of MDSM's image experiments (Li, Chen & Sommer 2019, Sec. 5; values from the paper
and the public reference code zengyi-li/MDSM: cfg.py defaults, train.py, sample.py, exps/*.sh)."""
from configs.default import get_default_config
from dsm_jax import models
from dsm_jax.models.energy_resnet import RESNET6, RESNET12, RESNET18, RESNET34  # noqa: F401  (re-exported)


def mdsm_image_config(dataset: str, nf: int, stage_blocks):
  config = get_default_config("mdsm")
  d = config.data
  d.dataset = dataset
  d.scale = "01"               # reference: torchvision ToTensor, x in [0, 1]
  d.random_flip = False        # reference data/cifar.py: inf_train_gen(flip=False)
  d.dequantize = False         # reference: none

  m = config.model
  models.set_network(m, "energy_resnet",  # reference models/ResNet.py: Res*_Quadratic, ELU, normalize=False
                     nf=nf,               # reference cfg.py --n_chan (first-layer width)
                     stage_blocks=tuple(stage_blocks),
                     dtype="float32")     # 'bfloat16' computes convolutions in bf16 (params stay float32)
  m.sigma0 = 0.1               # reference train.py: sigma0 = 0.1 (paper Sec. 4: the fixed sigma_0)
  m.sigma_min = 0.05           # reference cfg.py: --min_noise 0.05
  m.sigma_max = 1.2            # reference cfg.py: --max_noise 1.2
  m.sigma_dist = "batch_linear"  # reference cfg.py: --noise_distribution 'lin' (linspace over the batch)
  m.weight_power = 2.0         # reference train.py: loss / sigmas^2, i.e. l(sigma) = 1/sigma^2 (eq. 10)
  m.base_energy = "none"       # reference: the network alone; 'gaussian' adds the MDSM-optimal quadratic energy of
                               # the training data's Gaussian fit (dsm_jax/gaussian_base.py), the network corrects it

  t = config.training
  t.n_iters = 300000           # reference cfg.py: --n_iter 300000
  t.batch_size = 128           # reference cfg.py: --batch_size 128
  t.optimizer = "adam"
  t.lr = 5e-5                  # reference cfg.py: --max_lr 5e-5
  t.beta1, t.beta2 = 0.9, 0.95  # reference train.py: Adam betas (0.9, 0.95)
  t.schedule = "cosine"        # reference exps/*_train.sh: --lr_schedule 'cosine' (CosineAnnealingLR) ...
  t.lr_final_frac = 1e-6 / t.lr  # ... with eta_min = 1e-6
  t.ema_rate = 0.0             # reference: no EMA
  t.log_every = 100
  t.ckpt_every = 5000          # reference cfg.py: --save_every 5000
  t.steps_per_call = 10

  s = config.sampling
  s.n_samples = 1000           # the reference saves 20,000 (cfg.py --n_samples_save); 1000 for FID/KID here
  s.batch_size = 100           # chains per compiled sampler call
  s.eps = 0.02                 # reference cfg.py: --sample_step_size 0.02
  s.t_start = 100.0            # reference sample.py: Tmax = 100, flat for 500 steps,
  s.n_flat = 500
  s.n_decay = 2000             # then 2000 steps decaying to Tmin = 1 ('exp' = geometric; 'lin' = linear),
  s.decay = "geometric"        # reference cfg.py: --annealing_schedule 'exp'
  s.n_cool = 200               # then 200 steps linearly from 1 to 0
  s.t_end = 0.0
  s.init = "gaussian"          # reference sample.py: initial_x = 0.5 + randn
  s.init_mean = 0.5
  s.init_std = 1.0
  s.init_range = (0.0, 1.0)    # used only by init='uniform'
  s.final_denoise = True       # reference sample.py: SS_denoise(x, netE, 0.1): x - sigma0^2 grad E

  e = config.eval
  e.ood_n = 1000               # in-distribution test images (and as many of each OOD set) for the AUROCs
  e.ood_datasets = ()          # tfds names of real OOD sets; one that is not prepared is reported as not computed
  return config

"""Shared settings of Denoising-EBM's image experiments (Weili Zeng 2023, "How to Construct Energy for
Images? Denoising Autoencoder Can Be Energy Based Model", arXiv:2303.03887).

Each value is marked with its source: [paper] the paper's text (Algorithm 1, eqs. 7-8, the experiment section),
[choice] where the paper leaves it open (see dsm_jax/methods/debm.py's docstring for the reasons;
tests/test_debm.py checks each choice's behaviour)."""
from configs.default import get_default_config


def debm_image_config(dataset: str, latent_steps: int, pixel_steps: int, ch_mult=(1, 2, 2, 2)):
  config = get_default_config("debm")
  d = config.data
  d.dataset = dataset
  d.scale = "-11"              # [paper] data scaled to [-1, 1] ...
  d.random_flip = True         # [paper] ... with random horizontal flips
  d.dequantize = False         # [choice] no dequantization (the DAE's own noise covers the 8-bit grid)

  m = config.model
  m.name = "unet_dae"          # [paper] r_phi = g_beta o f_alpha, a U-Net with ResNet blocks and skips
  m.nf = 64                    # [choice] base width (the paper does not give its U-Net's widths)
  m.ch_mult = tuple(ch_mult)   # [choice] 32 -> 16 -> 8 -> 4 (64 -> 4 for CelebA: one more level)
  m.num_res_blocks = 2         # [choice]
  m.latent_dim = 128           # [choice] size of the semantic code z = f_alpha(x~, sigma)
  m.latent_norm = True         # [choice] z LayerNorm-ed (mean 0, variance 1 over its entries) so the
                               #          latent chain's start z ~ N(0, I) [paper] lies among the codes
  m.sigma_data = 0.5           # [choice] input scaling x~ / sqrt(sigma_data^2 + sigma^2)
  m.sigma_max = 1.0            # [paper] S = 128 noise levels, geometric from 1 ...
  m.sigma_min = 0.01           # [paper] ... to 0.01
  m.num_scales = 128           # [paper] S = 128
  m.dae_weight = "none"        # [paper] DAE loss || r_phi(x~, sigma) - x ||^2, unweighted
  m.sigma_latent = 0.1         # [choice] one fixed sigma per chain stage, the same in training and sampling;
  m.sigma_pixel = 0.1          #          0.1 keeps eta_2 = 0.01 stable (the drift moves x eta_2 / sigma^2 = 1 of
                               #          the way to r_phi(x))

  t = config.training
  t.n_iters = 100000           # [choice] the paper's iteration count is not in the text we have
  t.batch_size = 129          # [choice] 3 x 43: split into the L = 3 DAE minibatches of Algorithm 1
  t.optimizer = "adam"         # [paper] Adam ...
  t.lr = 5e-5                  # [paper] ... learning rate 5e-5 for every update
  t.beta1, t.beta2 = 0.9, 0.999  # [choice] Adam's defaults
  t.schedule = "constant"      # [paper] a constant learning rate
  t.ema_rate = 0.0             # [choice] sample the raw parameters
  t.dae_steps = 3              # [paper] L = 3 DAE steps per iteration (Algorithm 1)
  t.latent_steps = latent_steps  # [paper] K latent Langevin steps in training ...
  t.pixel_steps = pixel_steps  # [paper] ... and T pixel steps
  t.energy_reg = 0.0           # [paper] none; alpha > 0 adds alpha (U_data^2 + U_sample^2) to the contrastive
                               #         terms (Du & Mordatch 2019), bounding the sample energy (debm.py)
  t.eta_latent = 0.1           # [paper] eta_1 of the training chains (sampling.eta_latent is the sampler's) ...
  t.eta_pixel = 0.01           # [paper] ... and eta_2
  t.step_rule = "paper"        # [paper] x - eta grad U + sqrt(2 eta) e (eqs. 6, 15, 16; Alg. 1 lines 8, 12);
                               #         'half' is x - eta/2 grad U + sqrt(eta) e (half the step)
  t.noise_scale = 1.0          # [paper] the noise term at full size (unadjusted Langevin)
  t.contrastive_sigma = "per_example"  # [paper] each example's sigma_i in the contrastive terms (Alg. 1 lines
                               #         14-17); 'chain': the chains' sigma_latent / sigma_pixel
  t.dae_pretrain = 0           # [paper] none; P > 0 runs only the L DAE / decoder steps in the first P iterations
  t.n_chains = 0               # [choice] 0: batch_size / L chains (the size of one DAE minibatch)
  t.log_every = 100
  t.ckpt_every = 5000
  t.steps_per_call = 1         # one Algorithm-1 iteration is already K + T + L network passes

  s = config.sampling
  s.latent_steps = latent_steps  # [paper] K
  s.pixel_steps = pixel_steps  # [paper] T
  s.eta_latent = 0.1           # [paper] eta_1 = 0.1
  s.eta_pixel = 0.01           # [paper] eta_2 = 0.01
  s.step_rule = "paper"        # [paper] as training.step_rule
  s.noise_scale = 1.0          # [paper] as training.noise_scale
  s.final_denoise = True       # [choice] output r_phi(x^T, sigma_pixel), the DAE's posterior mean
  s.latent_init = "normal"     # [paper] z^0 ~ N(0, I); 'data_gaussian': the Gaussian of the training codes
  s.latent_fit_n = 2000        # training images whose codes 'data_gaussian' fits
  s.pixel_only = True          # [paper] the pixel-only baselines: Fig. 5's (below) and [choice] one with the
                               #         two-stage chain's K + T network evaluations from uniform noise
  s.pixel_only_steps = 500     # [paper] Fig. 5: pixel Langevin on U_c from N(0, I) for hundreds of steps
  s.pixel_only_n = 0           # chains of Fig. 5's baseline (0: sampling.n_samples)
  s.n_samples = 1000           # [choice] for feature FID/KID
  s.batch_size = 100           # chains per compiled sampler call
  s.n_traj = 8                 # chains shown in the trajectory strips (Fig. 5)

  e = config.eval
  e.ood_sigma = 0.05           # [paper] OOD score -U_c(x, sigma = 0.05)
  e.ood_n_eps = 1              # [choice] noise draws averaged per OOD score (1: the energy as defined)
  e.ood_n = 1000               # in-distribution test images (and as many of each OOD set)
  e.ood_batch_size = 250
  e.ood_datasets = ()          # tfds names of real OOD sets; one that is not prepared is reported as not computed
  return config

"""Shared settings of DDE's image experiments (Bigdeli et al. 2020, "Learning Generative Models using
Denoising Density Estimators"; values marked (ref) are the public reference code github.com/logchan/dde:
train_mnist.sh and dde.py's argument defaults).

The reference trains E_p and E_q on every batch of 100 and steps G every 10th batch (--train_gen_every 10), for
50 epochs of 600 batches. Here every trainer step is one round of that loop (dsm_jax/methods/dde.py, (E5),
training.ep_training = 'joint'): a batch of 1,000 data points split into the 10 minibatches of E_p's 10 steps,
10 E_q steps on generator batches of 100, then one generator step; 3,000 rounds are the reference's 30,000
batches and 3,000 generator steps.
"""
from configs.default import get_default_config
from dsm_jax import models


def dense_net(hidden: int, n_layers: int, out_act: str = "none"):
  return models.section("dense_net",  # (ref) modules.py DenseNetModule: every layer sees the input and all earlier ones
                        hidden=hidden,      # (ref) --n_hidden 256
                        n_layers=n_layers,  # (ref) --n_layers 16
                        act="softplus",     # (ref) --activation softplus
                        out_act=out_act,    # (ref) --dense_sigmoid: the generator ends in a sigmoid (images in [0, 1])
                        weight_init="reference",  # (ref) createLinear: Xavier-uniform weights, U(+-sqrt(3/n_out)) biases
                        quadratic=False)    # (ref) a linear last layer; True adds 1/2 softplus(c) ||x||^2 to the energy


def dde_image_config(dataset: str, hidden: int = 256, n_layers: int = 16, gen_hidden: int = 64):
  config = get_default_config("dde")
  d = config.data
  d.dataset = dataset
  d.scale = "01"             # (ref) torchvision ToTensor: pixels in [0, 1], flattened for the dense networks
  d.random_flip = False
  d.dequantize = False

  m = config.model
  m.sigma = 0.5              # (ref) train_mnist.sh --sigma 0.5
  m.latent_dim = 16          # (ref) --n_input 16
  m.latent_std = 1.0         # (ref) z ~ N(0, I); G sees latent_std * z
  m.base_energy = "none"     # (ref) the DDEs are networks alone; 'gaussian' adds the data's smoothed Gaussian fit
  m.dde = dense_net(hidden, n_layers)
  m.generator = dense_net(gen_hidden, n_layers, out_act="sigmoid")  # (ref) --n_gen_hidden 64 (dde.py default)

  t = config.training
  t.ep_training = "joint"    # (ref) E_p trains on every batch, beside E_q ('pretrain': trained first, then frozen)
  t.p_steps = 0              # (ref) no pre-training: the generator steps from the first round
  t.q_steps = 10             # E_p and E_q steps per round: (ref) --train_gen_every 10
  t.g_steps = 1
  t.gen_batch_size = 100     # (ref) the generator draws a data batch's worth of z
  t.antithetic = False       # (ref) one eps per example
  t.antithetic_g = False     # (ref) one eps per generator sample; True adds -eps (E4's linear noise cancels)
  t.anneal_sigmas = ()       # noise levels before sigma, decreasing; () = one sigma throughout (ref default)
  t.n_snapshots = 8          # training_rounds.png: the generator on 8 fixed z at rounds 0, snapshot_every, ...
  t.snapshot_every = 375
  t.snapshot_n = 8
  t.n_iters = t.p_steps + 3000  # 3,000 rounds: (ref) 30,000 batches / train_gen_every 10
  t.batch_size = 1000        # (ref) --batch_size 100 for each of a round's 10 E_p steps
  t.lr = 1e-3                # (ref) --lr 0.001 for every network
  t.ema_rate = 0.0           # (ref) no EMA
  t.log_every = 100
  t.ckpt_every = 2000
  t.steps_per_call = 50

  config.sampling.n_samples = 1000  # for the feature FID/KID against the held-out split
  return config

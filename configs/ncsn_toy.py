"""NCSN's 2-D toy experiment (Song & Ermon 2019, Sec. 3.2.2, Fig. 3 and Appendix B.1): the mixture
1/5 N((-5,-5), I) + 4/5 N((5,5), I); annealed Langevin recovers the mode weights, plain Langevin does not.

The paper samples its toy with the exact scores (App. B.1; reported here as weight_pos_annealed_exact_score).
The network this config trains departs from the paper's (NCSN v1) recipe in three ways, two of them NCSNv2's
techniques (Song & Ermon 2020): the output divided by sigma (model.scale_by_sigma), an EMA of the weights
(training.ema_rate = 0.999), and a cosine learning-rate decay. The plain recipe runs with
--config.model.scale_by_sigma=False --config.training.ema_rate=0 --config.training.schedule=constant, and
docs/RESULTS.md (NCSN) reports it beside this one.

    python -m experiments.run --config=configs/ncsn_toy.py --workdir=runs/ncsn_toy
"""
from configs.default import get_default_config


def get_config():
  config = get_default_config("ncsn")
  config.data.dataset = "mixture"

  m = config.model
  m.name = "score_mlp"
  m.hidden = (128, 128)
  m.act = "softplus"
  m.scale_by_sigma = True    # NCSNv2 (technique 3): s = f(x, sigma) / sigma; NCSN v1: False
  m.sigma_max = 20.0    # paper Appendix B.1 toy: sigmas geometric from 20 to 1 over 10 levels
  m.sigma_min = 1.0
  m.num_scales = 10
  m.anneal_power = 2.0  # lambda(sigma) = sigma^2 (paper Sec. 4.2)

  t = config.training
  t.n_iters = 40000          # ~1.5 min on 2 CPU cores; the score error keeps falling until ~40k
  t.batch_size = 512
  t.lr = 1e-3
  t.schedule = "cosine"      # decayed to 0 (NCSN v1: constant)
  t.ema_rate = 0.999         # NCSNv2 (technique 5): sample with the EMA of the parameters; NCSN v1: 0
  t.log_every = 500
  t.ckpt_every = 5000
  t.steps_per_call = 500

  s = config.sampling
  s.score = "model"            # model | analytic (exact score of the smoothed mixture, no network)
  s.analytic_form = "convolved"  # convolved: std sqrt(1+sigma^2) | reference: std sigma (NCSN toy runner)
  s.batch_size = 0             # 0: all samples in one batch
  s.langevin_compare = True    # also sample plain Langevin at sigma_L (samples/langevin.npz)
  s.n_samples = 20000         # the weight's sd over sampler seeds is ~0.008 at 5,000, ~0.004 here
  s.init_range = (-8.0, 8.0)   # paper: start uniform on [-8, 8]^2
  s.eps = 0.1                  # paper Appendix B.1: eps = 0.1, T = 100 per level
  s.n_steps_each = 100
  s.convention = "paper"       # the NCSN toy runner uses x + alpha/2 s + sqrt(alpha) z
  s.final_denoise = False
  s.langevin_eps = 0.1         # plain Langevin at sigma_L: eps = 0.1 ...
  s.langevin_steps = 0         # ... 0: L * T = 1,000 steps, the same number of score evaluations
  return config

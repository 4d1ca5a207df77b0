"""The sections every config has (seed, method, data, model, training, sampling, eval, runtime) with every shared
key, and, for `get_default_config(method)`, that method's own keys (its `defaults` in dsm_jax/methods/). An
experiment config starts from it and only sets values, so DIR/config.json is the whole config as run and one
override (e.g. --config.training.n_iters=50) works for every config."""
import ml_collections


def _merge(node: ml_collections.ConfigDict, values: dict) -> None:
  for k, v in values.items():
    if isinstance(v, dict):
      if k not in node:
        node[k] = ml_collections.ConfigDict()
      _merge(node[k], v)
    else:
      node[k] = v


def get_default_config(method: str = "") -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.method = method

  config.data = data = ml_collections.ConfigDict()
  data.dataset = "mixture"
  # image datasets (dsm_jax/data/images.py); toy datasets ignore these
  data.data_dir = ""           # tfds data_dir; '': tfds's default (~/tensorflow_datasets or $TFDS_DATA_DIR)
  data.image_size = 0          # 0: native (celeb_a: 32, as NCSN)
  data.scale = "01"            # 01: [0, 1] | -11: [-1, 1]
  data.random_flip = False     # random horizontal flips
  data.dequantize = False      # uniform dequantization (x * 255 + u) / 256 (digits: (v + u) / 17)
  data.pad_to = 0              # 0 | 32: pad 28x28 images to 32x32 with the background
  data.centre_crop = 0         # 0: none (celeb_a: 140, as NCSN; folder: the shorter side); else centre crop, then resize
  # dataset 'folder' (dsm_jax/data/folder.py): image files under a directory, decoded once into <data_dir>/folder_cache
  data.folder = ""             # the directory (recursive; jpg, png, webp)
  data.folder_test_frac = 0.0  # held-out share of the files (by a hash of each relative path)
  data.folder_channels = 3     # 3: RGB | 1: grey

  config.model = ml_collections.ConfigDict()

  config.training = t = ml_collections.ConfigDict()
  t.n_iters = 10000
  t.batch_size = 128
  # the optimizer of every network; a network's own settings are in training.nets.<name> (dsm_jax/train/state.py)
  t.optimizer = "adam"         # adam | adamw | sgd
  t.lr = 1e-3
  t.beta1 = 0.9
  t.beta2 = 0.999
  t.adam_eps = 1e-8
  t.weight_decay = 0.0         # adamw
  t.schedule = "constant"      # constant | cosine (over the network's own updates)
  t.lr_final_frac = 0.0        # cosine: final lr as a fraction of lr
  t.warmup = 0                 # linear warm-up updates
  t.grad_clip = 0.0            # global-norm clipping; 0: off
  t.nets = ml_collections.ConfigDict()  # {name: every optimizer key, -1 / '': training's} (multi-network methods)
  t.ema_rate = 0.0             # 0: sample with the raw parameters
  t.log_every = 100
  t.ckpt_every = 1000
  t.max_to_keep = 3
  t.steps_per_call = 100       # optimizer steps per host round trip (logging, checkpoints fall between)
  t.nan_policy = "stop"        # stop | skip

  config.sampling = ml_collections.ConfigDict()

  config.eval = e = ml_collections.ConfigDict()
  e.enabled = True
  e.feature_cache_dir = ""     # '' = ~/.cache/dsm_jax/feature_classifiers
  e.inception_path = ""        # FID Inception-v3 weights: a path, 'auto' (README), '' = not computed
  e.inception_max_n = 1000
  # the papers' protocol (dsm_jax/eval/protocol.py): FID of fid_n samples against Inception statistics of a split
  e.fid_n = 0                  # 0: off; the papers: 50000 samples
  e.fid_batch_size = 0         # samples per batch written to disk (0: sampling.batch_size)
  e.fid_ref_split = "train"    # train (the papers) | test: the split whose Inception statistics are the reference
  e.fid_stats_dir = ""         # '': beside the data (<data_dir>/fid_stats)
  e.inception_logits_path = "" # .npz with the Inception softmax layer 'w' [2048, 1008] (, 'b'): Inception Score
  # --mode=inpaint (dsm_jax/eval/inpaint.py): complete the first inpaint_n test images hidden by a mask
  e.inpaint_mask = "lower_half"  # lower_half | centre_square | random_pixels
  e.inpaint_n = 1000
  e.inpaint_batch_size = 250   # images per compiled sampler call
  e.inpaint_frac = 0.5         # random_pixels: the share hidden
  e.inpaint_square = 14        # centre_square: its side in pixels
  # --mode=loglik (dsm_jax/likelihood.py): annealed importance sampling from the data's Gaussian fit to exp(-E)
  e.ais_chains = 200           # importance-sampling chains
  e.ais_temps = 500            # intermediate distributions (a sigmoid schedule of beta from 0 to 1)
  e.ais_leapfrog = 1           # HMC leapfrog steps per transition (1: MALA)
  e.ais_step = 0.05            # the initial leapfrog step, adapted per temperature towards 0.65 acceptance
  e.ais_batch_size = 0         # chains per compiled call; 0: all at once
  e.loglik_n = 1000            # test points whose log-likelihood is averaged (test images, or fresh 2-D draws)

  # where and how it runs, apart from the hyperparameters (dsm_jax/platform.py)
  config.runtime = r = ml_collections.ConfigDict()
  r.num_devices = 0            # devices of the data mesh; 0: every device
  r.cpu_devices = 0            # > 0: split a CPU host into this many XLA devices (set before JAX starts)
  r.distributed = False        # multi-host: jax.distributed.initialize (run the same command on every host)
  r.coordinator_address = ""   # host:port of process 0 ('' = auto-detect: Cloud TPU, SLURM, Open MPI)
  r.num_processes = 0          # 0 = auto-detect
  r.process_id = -1            # -1 = auto-detect
  r.chunk_mode = "auto"        # scan | loop | auto: the platform's choice for the backend
  r.conv_impl = "auto"         # xla | vjp | patches | auto: the platform's choice for the backend and phase
  r.progress = True            # progress bar
  r.tensorboard = True         # DIR/tensorboard: scalars of metrics.jsonl, eval.json and sample pictures

  if method:
    from dsm_jax import methods  # noqa: PLC0415
    _merge(config, methods.defaults(method))
  return config

"""Sections every config has, so one override works everywhere:
seed, method, data, model, training, sampling, eval."""
import ml_collections


def get_default_config():
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.method = ""

  config.data = data = ml_collections.ConfigDict()
  data.dataset = "mixture"
  # Image datasets (dsm_jax/data/images.py); toy datasets ignore these.
  data.data_dir = ""           # tfds data_dir; '': tfds's default (~/tensorflow_datasets or $TFDS_DATA_DIR)
  data.image_size = 0          # 0: native (celeb_a: 32, as NCSN)
  data.scale = "01"            # 01: [0, 1] (NCSN) | -11: [-1, 1]
  data.random_flip = False     # random horizontal flips
  data.dequantize = False      # uniform dequantization (x * 255 + u) / 256 (digits: (v + u) / 17)
  data.pad_to = 0              # 0 | 32: pad 28x28 images to 32x32 with the background (MDSM's Fashion-MNIST)
  data.centre_crop = 0         # 0: none (celeb_a: 140, as NCSN); else centre crop before resizing

  config.model = ml_collections.ConfigDict()

  config.training = t = ml_collections.ConfigDict()
  t.n_iters = 10000
  t.batch_size = 128
  t.optimizer = "adam"
  t.lr = 1e-3
  t.beta1 = 0.9
  t.beta2 = 0.999
  t.adam_eps = 1e-8
  t.weight_decay = 0.0
  t.schedule = "constant"      # constant | cosine
  t.lr_final_frac = 0.0        # cosine: final lr as a fraction of lr
  t.warmup = 0
  t.grad_clip = 0.0            # 0: off
  t.ema_rate = 0.0             # 0: sample with the raw parameters
  t.log_every = 100
  t.ckpt_every = 1000
  t.max_to_keep = 3
  t.steps_per_call = 100       # optimizer steps per host round trip (logging, checkpoints fall between)
  t.chunk_mode = "auto"        # scan: steps_per_call steps in one lax.scan | loop: one compiled step per call
                               # auto: loop for image data on CPU (convolution backward is slow in a loop), else scan
  t.nan_policy = "stop"        # stop | skip
  t.num_devices = 0            # 0: every local device
  t.cpu_devices = 0            # >0: split a CPU host into this many XLA devices (set before JAX starts;
                               #     XLA:CPU runs one conv on ~one core, so 2 devices use 2 cores)
  t.distributed = False        # multi-host: jax.distributed.initialize (run the same command on every host)
  t.coordinator_address = ""   # host:port of process 0 ('' = auto-detect: Cloud TPU, SLURM, Open MPI)
  t.num_processes = 0          # 0 = auto-detect
  t.process_id = -1            # -1 = auto-detect
  t.progress = True
  t.tensorboard = True         # DIR/tensorboard: scalars of metrics.jsonl and sample pictures

  config.sampling = ml_collections.ConfigDict()
  config.eval = ml_collections.ConfigDict()
  config.eval.enabled = True
  config.eval.feature_cache_dir = ""   # '' = ~/.cache/dsm_jax/feature_classifiers
  config.eval.inception_path = ""      # FID Inception-v3 weights: a path, 'auto' (README), '' = not computed
  config.eval.inception_max_n = 1000
  return config

"""MDSM on Fashion-MNIST at the reference's values (see configs/mdsm_images.py; reference
exps/fmnist_train.sh, read from its stored copy exps/.ipynb_checkpoints/fmnist_train-checkpoint.sh, and
data/fashion_mnist_32.py): ResNet-12 energy with 64 channels on 28x28 images
padded to 32x32, sigmas log-spaced over the batch from 0.1 to 3, Adam 1e-4 with cosine decay, 100k
iterations. OOD: Fashion-MNIST test vs MNIST test (when prepared), plus the synthetic sets.

Split: this config trains on the TRAIN split. The reference's data/fashion_mnist_32.py builds its
training iterator from `datasets.FashionMNIST(..., train=False)`, i.e. it trained on the 10k test images
by mistake; here the test split stays held out for FID/KID and the OOD AUROCs."""
from configs.mdsm_images import RESNET12, mdsm_image_config


def get_config():
  config = mdsm_image_config("fashion_mnist", nf=64, stage_blocks=RESNET12)  # fmnist_train.sh: --n_chan 64;
  # train.py: Res12_Quadratic for 'fmnist'
  config.data.pad_to = 32               # data/fashion_mnist_32.py: transforms.Pad(2) -> 32x32
  m = config.model
  m.sigma_min = 0.1                     # fmnist_train.sh: --min_noise 0.1
  m.sigma_max = 3.0                     # fmnist_train.sh: --max_noise 3
  m.sigma_dist = "batch_geometric"      # fmnist_train.sh: --noise_distribution 'exp' (np.logspace over the batch)
  t = config.training
  t.n_iters = 100000                    # fmnist_train.sh: --n_iter 100000
  t.lr = 1e-4                           # fmnist_train.sh: --max_lr 1e-4
  t.lr_final_frac = 1e-6 / t.lr         # train.py: CosineAnnealingLR eta_min = 1e-6
  config.sampling.eps = 0.02            # cfg.py default --sample_step_size 0.02 (fmnist_sample_single.sh keeps it)
  config.eval.ood_datasets = ("mnist",)  # the usual pair: Fashion-MNIST vs MNIST
  config.eval.fid_n = 50000  # the papers' FID: 50,000 samples against the training split (eval/protocol.py)
  return config

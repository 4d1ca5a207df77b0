"""MDSM on CelebA (see configs/mdsm_images.py). The paper shows CelebA samples from a deeper ResNet
energy; the reference repository ships its CelebA loader (data/celeba.py: a 32x32 image folder,
'32_32_contrast_sharp', random horizontal flips) and the deeper Res34_Quadratic (models/ResNet.py) but
no CelebA training script, so the remaining values are the reference's defaults (cfg.py), which are
also its CIFAR-10 values. Images: the repo's CelebA geometry (centre crop 140, resized to 32x32, as
NCSN); the reference's contrast/sharpening preprocessing of its folder is not reproduced.

    python -m experiments.run --config=configs/mdsm_celeba.py --workdir=runs/mdsm_celeba
"""
from configs.mdsm_images import RESNET34, mdsm_image_config


def get_config():
  config = mdsm_image_config("celeb_a", nf=128, stage_blocks=RESNET34)  # Res34_Quadratic; cfg.py --n_chan 128
  d = config.data
  d.centre_crop = 140                   # as NCSN's CelebA (the reference folder holds 32x32 crops)
  d.image_size = 32                     # reference data/celeba.py: '32_32_...' folder
  d.random_flip = True                  # reference data/celeba.py: RandomHorizontalFlip(p=0.5)
  m = config.model
  m.sigma_min, m.sigma_max = 0.05, 1.2  # cfg.py defaults --min_noise 0.05 --max_noise 1.2
  m.sigma_dist = "batch_linear"         # cfg.py default --noise_distribution 'lin'
  t = config.training
  t.n_iters = 300000                    # cfg.py default --n_iter 300000
  t.batch_size = 128                    # cfg.py default --batch_size 128
  t.lr = 5e-5                           # cfg.py default --max_lr 5e-5 (train.py: betas 0.9, 0.95)
  config.eval.ood_datasets = ("cifar10", "svhn_cropped")  # real OOD sets at 32x32 (when prepared)
  config.eval.fid_n = 50000  # the papers' FID: 50,000 samples against the training split (eval/protocol.py)
  return config

"""MDSM on CIFAR-10 at the reference's values (see configs/mdsm_images.py; reference exps/cifar_train.sh):
ResNet-18 energy with 128 channels, sigmas spread linearly over the batch from 0.05 to 1.2, Adam 5e-5
(betas 0.9/0.95) with cosine decay, 300k iterations, batch 128, no flips. OOD: CIFAR-10 test vs SVHN,
CIFAR-100 and CelebA (each when prepared), plus the synthetic sets.

The network: the reference is ambiguous for CIFAR-10. train.py trains Res18_Quadratic with ELU activations;
sample.py builds SE_Res18_Quadratic (squeeze-excitation blocks, Swish) from a module models/SE_ResNet.py that the
repository does not contain at any commit, so sample.py stops with a NameError for CIFAR-10. We use train.py's
ELU ResNet-18, the network whose training the reference code runs (model.energy_resnet)."""
from configs.mdsm_images import RESNET18, mdsm_image_config


def get_config():
  config = mdsm_image_config("cifar10", nf=128, stage_blocks=RESNET18)  # cifar_train.sh: --n_chan 128;
  # train.py: Res18_Quadratic (ELU) for 'cifar' (see above)
  m = config.model
  m.sigma_min, m.sigma_max = 0.05, 1.2   # cifar_train.sh: --min_noise 0.05 --max_noise 1.2
  m.sigma_dist = "batch_linear"          # cifar_train.sh: --noise_distribution 'lin'
  t = config.training
  t.n_iters = 300000                     # cifar_train.sh: --n_iter 300000
  t.batch_size = 128                     # cifar_train.sh: --batch_size 128
  t.lr = 5e-5                            # cifar_train.sh: --max_lr 5e-5 (train.py: betas 0.9, 0.95)
  config.data.random_flip = False        # train.py: inf_train_gen(batch_size, flip=False)
  config.eval.ood_datasets = ("svhn_cropped", "cifar100", "celeb_a")  # the usual CIFAR-10 OOD pairs
  config.eval.fid_n = 50000  # the papers' FID: 50,000 samples against the training split (eval/protocol.py)
  return config

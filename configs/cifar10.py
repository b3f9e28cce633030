"""CIFAR-10 with the authors' DCGAN pair.

    python -m experiments.main --config=configs/cifar10.py --workdir=/tmp/cifar10 \
        --config.data.data_dir=$HOME/tensorflow_datasets
    python -m experiments.main --config=configs/cifar10.py:mi+diff --workdir=/tmp/cifar10_mi

The optional argument is a comma-separated list of bound presets and/or an image data set:
  sv+gp (default), mi+diff, none, r1, wgan_gp   the bound pairing (configs/common.py); mi+diff
           uses the time-conditioned DCGAN energy (TimeDCGANEnergy)
  cifar10, svhn_cropped, cifar100, imagenet32, celeb_a (64x64): the training set
Any field can be overridden on the command line, e.g. --config.train.num_steps=1000.

The authors' settings: DCGAN energy (3x3/4x4 convs 64..512, LeakyReLU 0.1, linear head) and
generator (linear to 4x4x512, three ConvTranspose + BN + ReLU, 3x3 conv, tanh), z in R^128,
batch 64, lr 5e-5 for both networks, Adam(0, 0.999), lambda_H = 1e-4, GP weight w = 1e-3
(constant), about 200k iterations, data in [-1, 1] with random horizontal flips.

Choices of ours:
  * GP margin zeta = 0 (the authors use zeta in [0, 1]): the penalty relu(w GP - zeta) is then
    always active, so L_up = L_lo + w GP is the bound that is trained and reported. With
    zeta > 0 the energy is unregularised while w GP < zeta.
  * SV estimator: LOBPCG on J^T J (128 x 128, matrix-free, J is 3072 x 128) with a block of 4
    and 10 iterations. Within 0.02% of the exact s_1 on a random DCGAN-32 generator and 0.20%
    after 20 training iterations, while 2 iterations over-estimate s_1 by 16-20% and so
    violate the entropy "lower bound" (docs/performance.md: `python -m benchmarks.sv_estimator
    --networks=dcgan32`). On one CPU core it costs 0.7-1.0x `exact_smin` (d = 128 JVPs per
    sample and an SVD) and holds 12 Jacobian columns per latent instead of 128; the exact
    estimators need `bounds.jacobian.latent_chunk` to fit in memory. Not yet timed on an accelerator.
    Lower `bounds.jacobian.num_iters` for speed only while watching `sv/residual`.
  * Adam eps 1e-8 (PyTorch's default).
"""
import ml_collections

from configs import common

# data set -> image shape; the names are those of bibound_jax/data/images.py.
DATASETS = {
    'cifar10': (32, 32, 3),
    'cifar100': (32, 32, 3),
    'svhn_cropped': (32, 32, 3),
    'imagenet32': (32, 32, 3),
    'celeb_a': (64, 64, 3),
}


def _dataset(name):
  def set_data(config):
    config.data.name = name
    config.data.shape = DATASETS[name]
  return set_data


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = common.base_config()
  config.bounds.lambda_h = 1e-4
  config.bounds.jacobian.estimator = 'lobpcg'
  config.bounds.jacobian.num_iters = 10
  config.bounds.jacobian.block_size = 4
  config.bounds.gp.schedule = 'constant'
  config.bounds.gp.weight = 1e-3
  config.bounds.gp.margin = 0.0
  config.bounds.mi.hidden = (512, 512)

  config.data = ml_collections.ConfigDict()
  config.data.name = 'cifar10'
  config.data.shape = DATASETS['cifar10']
  config.data.data_dir = ''        # TFDS data_dir ('': $TFDS_DATA_DIR or ~/tensorflow_datasets)
  config.data.download = False     # True: let TFDS download and prepare a missing data set

  config.model = ml_collections.ConfigDict()
  config.model.energy = ml_collections.ConfigDict({
      'name': 'dcgan', 'width': 64, 'negative_slope': 0.1, 'spectral_norm': False})
  config.model.generator = ml_collections.ConfigDict({
      'name': 'dcgan', 'width': 64, 'latent_dim': 128})

  config.optim.lr_energy = 5e-5
  config.optim.lr_generator = 5e-5
  config.optim.lr_mi_net = 5e-5
  config.optim.b1 = 0.0
  config.optim.b2 = 0.999
  config.optim.eps = 1e-8

  config.train.batch_size = 64           # global batch, split over devices and processes
  config.train.num_steps = 200_000
  config.train.log_every = 500
  config.train.eval_every = 10_000
  config.train.checkpoint_every = 5_000

  config.eval = ml_collections.ConfigDict()
  config.eval.num_samples = 50_000       # generator samples for FID / IS (the paper's protocol)
  config.eval.batch_size = 500           # generator, energy and Inception batch
  config.eval.grid_samples = 64          # fixed latents of the sample grid (samples.png)
  config.eval.energy_samples = 1_000     # test images and samples for E(x) and the AUROC
  config.eval.prd_samples = 10_000       # per set for PRD (min with the pools; 0: no PRD)
  config.eval.prd_runs = 10              # k-means clusterings averaged (the reference's 10)
  config.eval.fid_split = ''             # reference split ('': the test split of the data set)
  config.eval.inception_weights = ''     # '': inception_weights.default_weights_path()
  config.eval.stats_dir = ''             # reference statistics ('': ~/.cache/bibound_jax/fid_stats)

  common.parse_arg(config, arg, 'configs/cifar10.py',
                   {name: _dataset(name) for name in DATASETS})
  return config

"""ImageNet 32x32 (downsampled_imagenet/32x32) with the CIFAR-10 settings (configs/cifar10.py).

    python -m experiments.main --config=configs/imagenet32.py --workdir=/tmp/imagenet32 \
        --config.data.data_dir=$HOME/tensorflow_datasets

The argument takes the same bound presets as configs/cifar10.py (sv+gp, mi+diff, r1, wgan_gp,
none). FID and IS are computed against the validation split (50,000 images), the usual
reference of the ImageNet32 literature.
"""
import ml_collections

from configs import cifar10


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = cifar10.get_config(arg)
  config.data.name = 'imagenet32'
  config.data.shape = cifar10.DATASETS['imagenet32']
  return config

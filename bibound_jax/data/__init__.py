"""Data sets and input pipelines: toy.py (2-D toys), mnist.py (StackedMNIST), images.py (TFDS).

`SECTION` declares config.data: its keys are set by each experiment's config; where the data
live (data_dir) and whether TFDS may download them (download) may change between a run and its
resumption.
"""
from bibound_jax import config_schema

SECTION = config_schema.Section('data', {}, resumable=('data_dir', 'download'))

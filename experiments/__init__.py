"""The experiments: entry points, the training loop, tasks and evaluators.

Importing this package registers a deferred stand-in for clu's TensorFlow summary writer
(experiments/writers.py), so that clu's metric writers and periodic actions load without
TensorFlow: a run imports TensorFlow only when it reads a TFDS data set.
"""
from experiments import writers as _writers

_writers.defer_tensorflow_summary_writer()

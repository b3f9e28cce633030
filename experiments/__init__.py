"""The experiments: entry points, the training loop, tasks and evaluators.

Importing this package patches nothing. A run imports clu's writers and periodic actions
without TensorFlow where it uses them (`writers.import_clu`, experiments/writers.py).
"""

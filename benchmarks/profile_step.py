"""Where a compiled toy train step spends its time, by XLA kernel kind (from a jax.profiler trace).

    python -m benchmarks.profile_step --num_seeds=8

Runs `--calls` calls of the toy sv+gp step (exact_smin, one iteration per call, `--num_seeds`
seeds vmapped) under `jax.profiler.trace`, reads the Perfetto trace it writes and prints the time
per call of each kind of XLA:CPU kernel (names with their numeric suffix removed: `ynn_fusion`,
`dot`, ...), largest first, and each kind's share of all kernel time.
"""
from __future__ import annotations

import collections
import glob
import gzip
import json
import re
import tempfile

import jax
from absl import app
from absl import flags

from benchmarks.networks import get_config
from bibound_jax import assemble
from bibound_jax import train

flags.DEFINE_integer('num_seeds', 1, 'Seeds in the step.')
flags.DEFINE_integer('calls', 50, 'Profiled calls.')
flags.DEFINE_integer('top', 12, 'Kernel kinds printed.')
FLAGS = flags.FLAGS

# Host-side events of the runtime, not kernels.
_NOT_KERNELS = ('ThunkExecutor', 'Pjit', 'Common', 'ParseArguments', 'Allocate', '$')


def main(argv):
  del argv
  n = FLAGS.num_seeds
  cfg = get_config('toy', 'sv+gp')
  cfg.bounds.jacobian.estimator = 'exact_smin'
  cfg.train.num_seeds = n
  _, state, rng = assemble.initial_state(cfg)
  batch = jax.random.uniform(jax.random.key(1), (n, 1, cfg.train.batch_size, *cfg.data.shape),
                             minval=-1.0, maxval=1.0)
  step = train.make_train_step(cfg)
  for _ in range(10):
    state, _ = step(state, batch, rng)
  jax.block_until_ready(state)
  with tempfile.TemporaryDirectory() as d:
    with jax.profiler.trace(d, create_perfetto_trace=True):
      for _ in range(FLAGS.calls):
        state, _ = step(state, batch, rng)
      jax.block_until_ready(state)
    (path,) = glob.glob(f'{d}/**/*.trace.json.gz', recursive=True)
    events = json.load(gzip.open(path))
  events = events['traceEvents'] if isinstance(events, dict) else events
  total, count = collections.Counter(), collections.Counter()
  for e in events:
    if e.get('ph') == 'X' and not e['name'].startswith(_NOT_KERNELS):
      kind = re.sub(r'[._]?\d+$', '', e['name'])
      total[kind] += e.get('dur', 0)
      count[kind] += 1
  all_us = sum(total.values())
  print(f'toy sv+gp exact_smin, {n} seed(s): {all_us / FLAGS.calls / 1e3:.2f} ms of kernels per '
        'call\n\n| kernel kind | ms / call | kernels / call | share |\n| --- | --- | --- | --- |')
  for kind, us in total.most_common(FLAGS.top):
    print(f'| {kind} | {us / FLAGS.calls / 1e3:.3f} | {count[kind] / FLAGS.calls:.0f} | '
          f'{us / all_us:.0%} |')


if __name__ == '__main__':
  app.run(main)

"""Image runs end to end on mock TFDS data: training, evaluation artefacts, resume, OOD."""
import json
import logging
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

tfds = pytest.importorskip('tensorflow_datasets')

from bibound_jax import train
from bibound_jax import assemble  # pylint: disable=g-import-not-at-top
from bibound_jax import sharding
from bibound_jax.data import images
from bibound_jax.metrics import fid
from configs import cifar10
from configs import toy
from experiments import checkpoints
from experiments import image_eval
from experiments import ood
from experiments import run

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_EXAMPLES = 24


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  """TFDS metadata only: the builders count as prepared, mock_data supplies the examples."""
  path = str(tmp_path_factory.mktemp('tfds'))
  for name in ('cifar10', 'svhn_cropped', 'cifar100'):
    builder = tfds.builder(name, data_dir=path)
    os.makedirs(builder.data_dir, exist_ok=True)
    builder.info.write_to_directory(builder.data_dir)
  return path


def mock(data_dir):
  return tfds.testing.mock_data(num_examples=NUM_EXAMPLES, data_dir=data_dir)


def tiny_config(data_dir, tmp, arg=None, **train):
  """configs/cifar10.py with tiny networks and a few iterations; no Inception weights."""
  cfg = cifar10.get_config(arg)
  cfg.data.data_dir = data_dir
  cfg.model.energy.width = 8
  cfg.model.generator.width = 8
  cfg.model.generator.latent_dim = 8
  cfg.bounds.jacobian.num_iters = 2
  cfg.bounds.jacobian.block_size = 2
  cfg.bounds.mi.hidden = (16,)
  cfg.train.update(dict(batch_size=8, num_steps=4, log_every=2, eval_every=2,
                        checkpoint_every=2))
  cfg.train.update(train)
  cfg.eval.update(dict(num_samples=16, batch_size=8, grid_samples=16, energy_samples=16,
                       inception_weights=os.path.join(str(tmp), 'no_inception.npz'),
                       stats_dir=os.path.join(str(tmp), 'fid_stats')))
  return cfg


@pytest.fixture(scope='module')
def trained(data_dir, tmp_path_factory):
  """A 4-iteration sv+gp CIFAR-10 run, and the warnings it logged."""
  tmp = tmp_path_factory.mktemp('cifar10_run')
  cfg = tiny_config(data_dir, tmp)
  workdir = str(tmp / 'run')
  handler = _Collect()
  logging.getLogger().addHandler(handler)
  try:
    with mock(data_dir):
      state = run.train_and_evaluate(cfg, workdir)
  finally:
    logging.getLogger().removeHandler(handler)
  return cfg, workdir, state, handler.messages


class _Collect(logging.Handler):
  def __init__(self):
    super().__init__(logging.WARNING)
    self.messages = []

  def emit(self, record):
    self.messages.append(record.getMessage())


def _read(path):
  with open(path) as f:
    return json.load(f)


def _jsonl_steps(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [json.loads(line)['step'] for line in f]


def test_cifar10_run_writes_samples_metrics_and_checkpoints(trained):
  cfg, workdir, state, warnings = trained
  assert train.iteration(state) == 4
  # Two evaluations, one warning naming the conversion command.
  missing = [w for w in warnings if 'FID, IS and PRD are skipped' in w]
  assert len(missing) == 1 and 'python -m bibound_jax.metrics.inception_weights' in missing[0]
  out = os.path.join(workdir, 'eval')
  for name in ('samples_2.png', 'samples_4.png', 'samples.png', 'real.png', 'history.png',
               'bounds.png'):
    assert os.path.getsize(os.path.join(out, name)) > 1000, name
  import matplotlib.image  # pylint: disable=import-outside-toplevel
  grid = matplotlib.image.imread(os.path.join(out, 'samples.png'))
  assert grid.ndim == 3 and grid[..., :3].std() > 0.01     # a picture, not a blank
  m = _read(os.path.join(out, 'metrics_4.json'))
  assert m['step'] == 4
  for key in ('energy_real', 'energy_fake', 'energy_gap'):
    assert np.isfinite(m[key])
  assert m['energy_gap'] == pytest.approx(m['energy_fake'] - m['energy_real'])
  assert 0.0 <= m['auroc_real_fake'] <= 1.0 and 0.0 <= m['auprc_real_fake'] <= 1.0
  assert 'fid' not in m and 'inception_score' not in m        # no weights: FID-free
  assert not os.path.exists(cfg.eval.stats_dir)
  assert [h['step'] for h in _read(os.path.join(out, 'history.json'))] == [2, 4]
  assert sorted(int(s) for s in os.listdir(os.path.join(workdir, 'checkpoints'))) == [2, 4]
  assert _jsonl_steps(workdir) == [2, 4]
  # The input-pipeline profile: ms per iteration spent waiting for the prefetched batch.
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    waits = [json.loads(line)['data_wait_ms'] for line in f]
  assert all(np.isfinite(w) and w >= 0.0 for w in waits)


def test_resume_continues_from_the_saved_step(trained, data_dir):
  cfg, workdir, _, _ = trained
  cfg = cfg.copy_and_resolve_references()
  cfg.train.num_steps = 6
  with mock(data_dir):
    state = run.train_and_evaluate(cfg, workdir)
  assert train.iteration(state) == 6
  # Iterations 5 and 6 only: the records of 2 and 4 are not written twice.
  assert _jsonl_steps(workdir) == [2, 4, 6]
  assert [h['step'] for h in _read(os.path.join(workdir, 'eval', 'history.json'))] == [2, 4, 6]
  assert 6 in [int(s) for s in os.listdir(os.path.join(workdir, 'checkpoints'))]


def test_fid_is_prd_with_a_stand_in_inception(trained, data_dir, tmp_path, monkeypatch):
  """The FID/IS/PRD wiring, with a random linear map to 64 features standing in for Inception
  (the real network takes minutes to compile on a CPU, and a 2048-d Frechet distance ~10 s;
  metrics/fid.py is tested on its own)."""
  cfg, _, state, _ = trained
  cfg = cfg.copy_and_resolve_references()
  cfg.eval.prd_samples, cfg.eval.prd_runs = 16, 1
  proj = np.random.default_rng(0).normal(size=(32 * 32 * 3, 64)).astype(np.float32) / 55
  fake_apply = jax.jit(lambda v, x: (x.reshape(len(x), -1) @ v['proj'],
                                     x.reshape(len(x), -1)[:, :1008]))
  monkeypatch.setattr(image_eval.fid, 'inception_apply', fake_apply)
  monkeypatch.setattr(image_eval.inception_weights, 'load_inception_weights',
                      lambda path: {'proj': proj})
  workdir = str(tmp_path / 'run')
  evaluate = lambda: image_eval.ImageEvaluator(cfg, assemble.networks(cfg)).evaluate(
      state, 7, workdir)
  with mock(data_dir):
    m = evaluate()
  assert m['fid'] > 0 and 1.0 <= m['inception_score'] <= 1008
  assert 0.0 <= m['prd_f8'] <= 1.0 and 0.0 <= m['prd_f1_8'] <= 1.0
  assert _read(os.path.join(workdir, 'eval', 'metrics_7.json'))['fid'] == m['fid']
  stats = os.path.join(cfg.eval.stats_dir, 'cifar10_test_inception_pool3.npz')
  assert fid.load_stats_metadata(stats)['num_samples'] == NUM_EXAMPLES
  assert np.load(os.path.join(cfg.eval.stats_dir, 'cifar10_test_prd_features.npy')).shape == (
      16, 64)
  # A fresh evaluator reads the cached reference statistics instead of recomputing them.
  mu, sigma = fid.load_stats(stats)
  fid.save_stats(stats, mu + 1.0, sigma)
  with mock(data_dir):
    assert evaluate()['fid'] == pytest.approx(m['fid'] + 64, rel=0.05)


def test_mi_diff_run(data_dir, tmp_path):
  cfg = tiny_config(data_dir, tmp_path, 'mi+diff', num_steps=2)
  from bibound_jax.models import dcgan  # pylint: disable=import-outside-toplevel
  assert isinstance(assemble.networks(cfg).energy, dcgan.TimeDCGANEnergy)
  with mock(data_dir):
    state = run.train_and_evaluate(cfg, str(tmp_path / 'run'))
  assert train.iteration(state) == 2 and state.mi_net is not None
  with open(tmp_path / 'run' / 'metrics.jsonl') as f:
    record = json.loads(f.readline())
  assert np.isfinite(record['dsm']) and np.isfinite(record['mi/value'])
  m = _read(tmp_path / 'run' / 'eval' / 'metrics_2.json')
  assert np.isfinite(m['energy_real']) and 0.0 <= m['auroc_real_fake'] <= 1.0


def test_data_stream_shape_sharding_and_seeding(data_dir, tmp_path):
  cfg = tiny_config(data_dir, tmp_path)
  cfg.optim.energy_steps = 2
  mesh = sharding.make_mesh()
  stream = lambda start: images.batch_stream('cifar10', [cfg.seed], start, 2, 8, mesh, data_dir)
  with mock(data_dir):
    take = lambda start: [np.asarray(b) for b in map(stream(start), range(start, start + 3))]
    first, again, resumed = take(0), take(0), take(5)
    batch_at = stream(0)
    x = batch_at(0)
    with pytest.raises(ValueError, match='consecutive'):
      batch_at(2)
  assert x.shape == (1, 2, 8, 32, 32, 3) and x.sharding == sharding.batch_sharding(mesh)
  assert all(-1.0 <= b.min() and b.max() <= 1.0 for b in first)
  for a, b in zip(first, again):
    np.testing.assert_array_equal(a, b)          # reproducible from (seed, start_step)
  assert not np.array_equal(first[0], resumed[0])   # a resumed run draws a fresh stream
  assert not np.array_equal(first[0], first[1])


def test_ood_scores_every_set(trained, data_dir, capsys):
  cfg, workdir, _, _ = trained
  sets = ['svhn_cropped', 'cifar100', 'uniform', 'constant', 'cifar10']
  with mock(data_dir):
    result = ood.evaluate_ood(workdir, cfg, sets)
    from_checkpoint = ood.evaluate_ood(workdir, None, ['uniform'], step=2)
  assert list(result['ood']) == sets[:4]            # the in-distribution set is dropped
  step = result['step']
  assert step == max(int(s) for s in os.listdir(os.path.join(workdir, 'checkpoints')))
  saved = _read(os.path.join(workdir, 'eval', f'ood_{step}.json'))
  assert saved == json.loads(json.dumps(result))
  assert saved['num_in'] == NUM_EXAMPLES
  for name, row in saved['ood'].items():
    assert 0.0 <= row['auroc'] <= 1.0 and 0.0 <= row['auprc'] <= 1.0, name
    assert row['num'] == NUM_EXAMPLES and np.isfinite(row['energy'])
  assert from_checkpoint['step'] == 2
  assert os.path.exists(os.path.join(workdir, 'eval', 'ood_2.json'))
  assert '| uniform |' in ood.format_result(result)
  with mock(data_dir):
    assert ood.command(workdir, None, ['constant'], step=2) == 0
  printed = capsys.readouterr().out
  assert '| constant |' in printed and 'ood_2.json' in printed


def test_ood_errors_name_the_fix(trained, tmp_path):
  cfg, workdir, _, _ = trained
  with pytest.raises(ValueError, match='valid: uniform, constant'):
    ood.ood_names(['gaussian'], 'cifar10')
  with pytest.raises(checkpoints.CheckpointError, match='No checkpoints'):
    ood.evaluate_ood(str(tmp_path), cfg)
  changed = cfg.copy_and_resolve_references()
  changed.model.energy.width = 16
  with pytest.raises(checkpoints.CheckpointError, match='model.energy.width'):
    ood.evaluate_ood(workdir, changed)
  # The command line, end to end: data missing from data_dir -> one line naming `tfds build`.
  proc = subprocess.run(
      [sys.executable, '-m', 'experiments.ood', f'--workdir={workdir}', '--ood=uniform',
       f'--data_dir={tmp_path}'], cwd=REPO, capture_output=True, text=True, timeout=300,
      env=dict(os.environ, JAX_PLATFORMS='cpu'))
  assert proc.returncode == 1
  assert 'error: TFDS dataset cifar10 is not prepared' in proc.stderr
  assert 'tfds build cifar10' in proc.stderr


@pytest.mark.parametrize('kind', ['uniform', 'constant'])
def test_synthetic_ood_sets(kind):
  x = ood.synthetic_images(kind, 50, (32, 32, 3), seed=1)
  assert x.shape == (50, 32, 32, 3) and x.dtype == np.float32
  assert x.min() >= -1.0 and x.max() <= 1.0
  np.testing.assert_array_equal(x, ood.synthetic_images(kind, 50, (32, 32, 3), seed=1))
  if kind == 'uniform':
    assert abs(x.mean()) < 0.02 and abs(x.std() - 1 / np.sqrt(3)) < 0.02
  else:
    np.testing.assert_array_equal(x, np.broadcast_to(x[:, :1, :1], x.shape))   # one colour
    assert len(np.unique(x[:, 0, 0, 0])) == 50 and x[:, 0, 0].std() > 0.4


def test_configs_and_presets():
  from configs import imagenet32  # pylint: disable=import-outside-toplevel
  cfg = cifar10.get_config()
  assert (cfg.bounds.lower, cfg.bounds.upper, cfg.bounds.jacobian.estimator) == ('sv', 'gp', 'lobpcg')
  assert cfg.train.batch_size == 64 and cfg.model.generator.latent_dim == 128
  assert cfg.optim.lr_energy == cfg.optim.lr_generator == 5e-5 and cfg.bounds.lambda_h == 1e-4
  assert cfg.eval.num_samples == 50_000
  assert cifar10.get_config('wgan_gp').bounds.lower == 'none'
  assert cifar10.get_config('celeb_a,r1').data.shape == images.resolve('celeb_a').shape
  with pytest.raises(ValueError, match='bound presets: sv\\+gp, mi\\+diff, none'):
    cifar10.get_config('sv+diffusion')
  inet = imagenet32.get_config('mi+diff')
  assert inet.data.name == 'imagenet32' and inet.bounds.upper == 'diff'
  assert set(checkpoints.flatten(inet.to_dict())) == set(checkpoints.flatten(cfg.to_dict()))
  for section in ('bounds', 'optim', 'train'):   # what train.py and run.py read
    assert set(cfg[section]) == set(toy.get_config()[section]), section

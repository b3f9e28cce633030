"""The run loop: config validation, checkpoint save/restore, resume, evaluation artefacts."""
import json
import logging
import os
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from scipy import special
from absl import app

from benchmarks import startup
from bibound_jax import train
from bibound_jax import assemble
from bibound_jax import config_lib
from configs import common
from configs import toy
from experiments import checkpoints
from experiments import run
from experiments.studies import toy_checkpoint

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def small_config(**train):
  cfg = toy.get_config('authors')
  cfg.train.batch_size = 64
  cfg.train.num_steps = 20
  cfg.train.log_every = 5
  cfg.train.eval_every = 0   # no evaluation; the tests of evaluation set it
  cfg.train.checkpoint_every = 10
  # One compiled step per run (a chunk of several is its own program, tested on its own).
  cfg.train.steps_per_call = 1
  cfg.train.update(train)
  cfg.eval.num_samples = 500
  cfg.eval.grid_spacing = 0.05
  cfg.eval.bound_samples = 100
  return cfg


def _main(*overrides, workdir='/nonexistent'):
  """Run the entry point's flag parsing only (it fails before any training starts)."""
  return subprocess.run(
      [sys.executable, '-m', 'experiments.main', '--config=configs/toy.py',
       f'--workdir={workdir}', *overrides], cwd=REPO, capture_output=True, text=True,
      timeout=120)


def test_command_line_errors_name_the_key():
  bad_key = _main('--config.train.num_stepz=7')
  assert bad_key.returncode != 0 and 'Traceback' not in bad_key.stderr
  assert "config.train has no key 'num_stepz'" in bad_key.stderr
  assert 'num_steps' in bad_key.stderr.split('its keys are:')[1]     # the valid ones listed
  bad_section = _main('--config.bound.lower=sv')
  assert "config has no key 'bound'" in bad_section.stderr and 'bounds' in bad_section.stderr
  bad_type = _main('--config.train.num_steps=seven')
  assert bad_type.returncode != 0 and 'num_steps' in bad_type.stderr
  assert 'Traceback' not in bad_type.stderr and "'seven'" in bad_type.stderr
  # A key of the flat bounds section (before each bound had its own) names its new place.
  moved = _main('--config.bounds.gp_weight=0.01')
  assert moved.returncode != 0 and 'Traceback' not in moved.stderr
  assert ('--config.bounds.gp_weight: this key moved to config.bounds.gp.weight; pass '
          '--config.bounds.gp.weight=... instead.') in moved.stderr
  assert 'moved to config.optim.energy_steps' in _main('--config.optim.n_critic=2').stderr


def test_objectives_that_stop_being_bounds_are_named():
  """lambda_H != 1 and w_diff < 1 each get a warning; the bounds' own weights none."""
  assert run.objective_warnings(toy.get_config('sv+gp')) == []
  assert run.objective_warnings(toy.get_config('mi+diff')) == []
  cfg = toy.get_config('sv+gp')
  cfg.bounds.lambda_h = 0.3
  (message,) = run.objective_warnings(cfg)
  assert 'bounds.lambda_h = 0.3 != 1' in message and 'lower bound' in message
  cfg = toy.get_config('wgan_gp')   # no entropy term: lambda_H plays no role
  cfg.bounds.lambda_h = 0.3
  assert run.objective_warnings(cfg) == []
  cfg = toy.get_config('mi+diff')
  cfg.bounds.diff.weight = 0.1
  (message,) = run.objective_warnings(cfg)
  assert 'bounds.diff.weight = 0.1 < 1' in message and 'no longer bounds' in message
  cfg.bounds.upper = 'gp'   # the diff section's weight is not used
  assert run.objective_warnings(cfg) == []
  # StackedMNIST's mi+diff trades the diffusion bound's weight for coverage, and says so.
  from configs import cifar10, stackedmnist
  (message,) = run.objective_warnings(stackedmnist.get_config('cpu,mi+diff'))
  assert 'bounds.diff.weight = 0.1 < 1' in message
  # The image presets keep the paper's w = 1e-3 and lambda_H = 1e-4: both named.
  messages = run.objective_warnings(cifar10.get_config('mi+diff'))
  assert len(messages) == 2 and 'bounds.diff.weight = 0.001 < 1' in messages[1]


@pytest.mark.parametrize('key,value,match', [
    ('data.name', 'checkerboard', r'config.data.name.*25gaussians, swiss_roll, two_moons'),
    ('bounds.upper', 'gradient', r'config.bounds.upper.*gp, diff, none, r1, wgan_gp'),
    ('bounds.jacobian.estimator', 'power', r'config.bounds.jacobian.estimator.*lobpcg'),
    ('train.batch_size', -4, r'config.train.batch_size = -4.*> 0'),
    ('bounds.gp.margin', -1.0, r'config.bounds.gp.margin.*>= 0'),
    ('train.eval_every', -5, r'config.train.eval_every = -5.*>= 0'),
    ('bounds.jacobian.num_latents', 7,
     r'config.bounds.jacobian.num_latents = 7 must be 0 .* divisor'),
    ('model.energy.depth', 3,
     r'config.model.energy has key\(s\) depth .* its keys: confine, confine_radius, '
     r'freq_dim, hidden, scale_param'),
    ('model.generator.name', 'vit',
     r'config.model.generator.name .* mlp, flow, flow_mixture, dcgan, resnet'),
])
def test_bad_config_values_are_rejected_with_the_key(key, value, match):
  cfg = toy.get_config('authors')
  *path, name = key.split('.')
  node = cfg
  for part in path:
    node = node[part]
  node[name] = value
  with pytest.raises(config_lib.ConfigError, match=match):
    config_lib.validate_config(cfg, ('25gaussians', 'swiss_roll', 'two_moons'))


def test_toy_config_argument_presets():
  cfg = toy.get_config('swiss_roll,r1')
  assert cfg.data.name == 'swiss_roll' and (cfg.bounds.lower, cfg.bounds.upper) == ('sv', 'r1')
  # The flow's splines and the energy's confinement follow the data set's extent.
  assert cfg.model.generator.spline_range == 4.0 and cfg.model.energy.confine_radius == 4.0
  assert toy.get_config().model.generator.spline_range == 3.0
  assert toy.get_config('wgan_gp').bounds.lower == 'none'
  with pytest.raises(ValueError, match='bound presets: sv\\+gp, mi\\+diff, none, r1, wgan_gp'):
    toy.get_config('sv+diffusion')
  # Every bound with settings has its section, from that bound's own declaration.
  from bibound_jax import bounds
  assert {s.path for s in bounds.sections()} == {
      'bounds', 'bounds.jacobian', 'bounds.sv', 'bounds.mi', 'bounds.gp', 'bounds.diff',
      'bounds.r1', 'bounds.wgan_gp'}


def _params(state):
  return jax.tree.map(np.asarray, (state.energy.params, state.generator.params,
                                   state.generator.batch_stats, state.energy.opt_state,
                                   state.generator.opt_state))


def test_chunk_length_never_skips_an_event():
  cfg = toy.get_config('authors')   # log 500, evaluate, checkpoint 10k, 150k its, chunks of 10
  assert cfg.train.steps_per_call == 10
  assert run.chunk_length(0, cfg) == 10 and run.chunk_length(490, cfg) == 10
  assert run.chunk_length(495, cfg) == 1 and run.chunk_length(149_995, cfg) == 1
  cfg.train.update(eval_every=0, log_every=20)   # no evaluation: the other events still count
  assert [run.chunk_length(s, cfg) for s in (0, 10, 15)] == [10, 10, 1]
  cfg.train.steps_per_call = 1
  assert run.chunk_length(0, cfg) == 1


def test_events_fall_on_their_multiples_the_last_iteration_and_a_stop():
  cfg = small_config(num_steps=20, log_every=5, eval_every=4, checkpoint_every=10)
  assert run.events(5, cfg, evaluating=True, stopping=False) == (True, False, False)
  assert run.events(8, cfg, evaluating=True, stopping=False) == (False, True, False)
  assert run.events(10, cfg, evaluating=True, stopping=False) == (True, False, True)
  assert run.events(20, cfg, evaluating=True, stopping=False) == (True, True, True)
  assert run.events(19, cfg, evaluating=False, stopping=False) == (False, False, False)
  assert run.events(19, cfg, evaluating=False, stopping=True) == (False, False, True)
  assert run.events(20, cfg, evaluating=False, stopping=False) == (True, False, True)
  # Every event chunk_length avoids skipping is one of these.
  cfg.train.steps_per_call = 3
  step = 0
  while step < 20:
    n = run.chunk_length(step, cfg)
    assert not any(any(run.events(s, cfg, True, False)) for s in range(step + 1, step + n))
    step += n


def test_steps_per_call_gives_the_run_of_single_steps(tmp_path, monkeypatch):
  """Chunks of 4 (and single steps around each log/checkpoint at 10, 20): same parameters,
  same logged metrics and checkpoints as one call per iteration. Without the generator's
  entropy term (bounds.lower = 'none'): the chunk's scan and the single step are compiled
  apart and round differently in the last bit, and the entropy gradient (through 1/s of small
  singular values of J) amplifies that 10-100x per step (tests/multidevice_worker.py), while
  without it one batch out of place in the 20 moves a parameter by 3e-3 relative."""
  chunk_calls = []
  make = run.train.make_train_steps

  def counting(*args, **kwargs):
    fn = make(*args, **kwargs)
    return lambda *a: (chunk_calls.append(1), fn(*a))[1]
  monkeypatch.setattr(run.train, 'make_train_steps', counting)
  finals, logs = [], []
  for k in (1, 4):
    cfg = small_config(num_steps=20, log_every=10, steps_per_call=k)
    cfg.bounds.lower = 'none'
    finals.append(_params(run.train_and_evaluate(cfg, str(tmp_path / f'k{k}'))))
    with open(tmp_path / f'k{k}' / 'metrics.jsonl') as f:
      logs.append([json.loads(line) for line in f])
    manager = checkpoints.open_manager(str(tmp_path / f'k{k}'), read_only=True)
    assert manager.all_steps() == [10, 20]
    manager.close()
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), *finals)
  assert [r['step'] for r in logs[1]] == [10, 20]
  assert len(chunk_calls) == 4     # 0 -> 4 -> 8 and 10 -> 14 -> 18 in chunks, the rest single
  for single, chunked in zip(*logs):
    for name, value in single.items():
      np.testing.assert_allclose(chunked[name], value, rtol=1e-5, atol=1e-6, err_msg=name)


def test_checkpoint_restore_and_resume_match_an_uninterrupted_run(tmp_path):
  cfg = small_config(num_steps=20)
  final = run.train_and_evaluate(cfg, str(tmp_path / 'a'))
  saved = _params(final)
  # The restored checkpoint equals the state the run ended with.
  manager = checkpoints.open_manager(str(tmp_path / 'a'), read_only=True)
  assert manager.all_steps() == [10, 20]
  _, template, rng = assemble.abstract_state(cfg)
  restored, rng = checkpoints.restore(manager, template, rng)
  assert train.iteration(restored) == 20
  jax.tree.map(np.testing.assert_array_equal, _params(restored), saved)
  manager.close()
  # The benchmarks that read a run's networks restore it the same way, with its seed count
  # and its own networks and optimiser (the default preset names a flow and a cosine decay; the
  # run trained an MLP at a constant rate), and refuse a preset or seed count of other shapes
  # naming the keys.
  bench_cfg, _, bench_state, bench_step = toy_checkpoint.restore(str(tmp_path / 'a'), '')
  assert bench_step == 20 and bench_cfg.model.generator.name == 'mlp'
  assert bench_cfg.model.energy.confine == cfg.model.energy.confine == 0.0
  jax.tree.map(np.testing.assert_array_equal, _params(bench_state), saved)
  with pytest.raises(app.UsageError, match=r'train.num_seeds: 1 in the checkpoint, 2 now'):
    toy_checkpoint.restore(str(tmp_path / 'a'), 'authors', num_seeds=2)
  with pytest.raises(app.UsageError, match=r"bounds.upper: 'gp' in the checkpoint, 'diff' now"):
    toy_checkpoint.restore(str(tmp_path / 'a'), 'authors,mi+diff')
  with pytest.raises(app.UsageError, match=r'No checkpoint in .*train first.*--workdir is'):
    toy_checkpoint.restore(str(tmp_path / 'nothing'), 'authors')
  # An earlier checkpoint on request; a missing one lists those there.
  _, _, early, early_step = toy_checkpoint.restore(str(tmp_path / 'a'), '', step=10)
  assert early_step == train.iteration(early) == 10
  with pytest.raises(app.UsageError, match=r'No checkpoint of step 15 .*available: 10, 20'):
    toy_checkpoint.restore(str(tmp_path / 'a'), '', step=15)
  # Continuing to 30 resumes from 20 and lands where a straight 30-step run lands.
  cfg30 = small_config(num_steps=30)
  resumed = run.train_and_evaluate(cfg30, str(tmp_path / 'a'))
  straight = run.train_and_evaluate(cfg30, str(tmp_path / 'b'))
  assert train.iteration(resumed) == train.iteration(straight) == 30
  jax.tree.map(np.testing.assert_array_equal, _params(resumed), _params(straight))
  with open(tmp_path / 'a' / 'metrics.jsonl') as f:
    steps = [json.loads(line)['step'] for line in f]
  assert steps == [5, 10, 15, 20, 25, 30]
  assert not (tmp_path / 'a' / 'eval').exists()   # train.eval_every = 0: never evaluated
  # A warm start from 'a' at 10 (another workdir) takes its state, key and iteration: it
  # lands where the run it copies landed at 20.
  warm = run.train_and_evaluate(small_config(num_steps=20, init_from=f'{tmp_path / "a"}@10'),
                                str(tmp_path / 'c'))
  assert train.iteration(warm) == 20
  jax.tree.map(np.testing.assert_array_equal, _params(warm), saved)
  with open(tmp_path / 'c' / 'metrics.jsonl') as f:
    assert [json.loads(line)['step'] for line in f] == [15, 20]
  # A state of other shapes is refused before any training, naming the key that differs.
  wider = small_config(num_steps=20, init_from=str(tmp_path / 'a'))
  wider.model.energy.hidden = (16, 16)
  with pytest.raises(checkpoints.CheckpointError, match='model.energy.hidden'):
    run.train_and_evaluate(wider, str(tmp_path / 'd'))
  with pytest.raises(checkpoints.CheckpointError, match='DIR@STEP'):
    run.train_and_evaluate(small_config(init_from=str(tmp_path / 'nothing')),
                           str(tmp_path / 'e'))


@pytest.mark.parametrize('variant', ['', 'authors'])
def test_the_flow_never_folds_and_keeps_the_lower_bound_the_mlp_folds(tmp_path, variant):
  """200 iterations of the default toy (spline flow G, exact log-determinant) and of the
  authors' BatchNorm MLP: the flow has no latent with det J < 0 and its L_lo stays below the
  NLL; the MLP folds the plane from the start (docs/bounds.md, "The injectivity assumption")."""
  cfg = toy.get_config(variant)
  cfg.train.update(batch_size=64, num_steps=200, eval_every=200, checkpoint_every=200,
                   steps_per_call=1)   # one program: a chunk of 10 is a second compilation
  cfg.eval.update(num_samples=2000, bound_samples=500, grid_spacing=0.05)
  cfg.sample.during_training = not variant   # the energy as a model too (the flow's run)
  cfg.sample.ais_temps = 200
  run.train_and_evaluate(cfg, str(tmp_path))
  with open(tmp_path / 'eval' / 'metrics_200.json') as f:
    m = json.load(f)
  if variant == 'authors':
    assert m['folded_fraction'] > 0.1
  else:
    assert m['folded_fraction'] == 0.0
    assert m['lower_bound'] <= m['nll'] + 1e-3 and m['lower_bound_fails'] == 0.0
    assert m['entropy_estimator'] == pytest.approx(m['entropy_exact'])
    # The AIS NLL agrees with the quadrature's (measured: 0.012 nats apart, AIS error 0.009;
    # the quadrature's own error at this 0.1 spacing is of that order), and MCMC samples of
    # p_theta are as close to exp(-E)/Z as exact draws, up to 0.1 in total variation.
    assert m['log_z_ais_converged'] == 1.0
    assert abs(m['nll_ais'] - m['nll']) < 0.05
    assert m['model_tv'] < m['model_tv_floor'] + 0.1


@pytest.mark.parametrize('preset', ['sv+gp', 'mi+diff'])
def test_evaluation_writes_figures_json_and_arrays(tmp_path, preset, caplog):
  cfg = small_config(num_steps=10, eval_every=1000)   # evaluated at the end only
  assert common.apply_preset(cfg, preset)
  cfg.eval.grid_spacing = 0.01
  caplog.set_level(logging.INFO, logger='absl')
  launched = time.time()
  run.train_and_evaluate(cfg, str(tmp_path))
  # The log lines benchmarks/startup.py times: the evaluation is the one measured.
  lines = [(r.created, r.getMessage()) for r in caplog.records]
  times = startup.phases(lines, launched, time.time())
  evaluation = [m for _, m in lines if m.startswith('Evaluation at iteration 10 took')]
  assert len(evaluation) == 1 and times['evaluations'] > 0.0, times
  assert min(times.values()) >= 0.0, times
  out = tmp_path / 'eval'
  for name in ('samples.png', 'samples_10.png', 'bounds.png', 'sandwich.png', 'history.json',
               'metrics_10.json', 'toy_eval.npz'):
    assert (out / name).exists(), name
  arrays = np.load(out / 'toy_eval.npz')
  assert arrays['samples'].shape == (1, 500, 2) and list(arrays['seeds']) == [0]
  grid = arrays['grid']
  assert grid.min() <= -2.0 and grid.max() >= 2.0
  assert np.isclose(np.diff(np.unique(grid[:, 0]))[0], 0.01, atol=1e-6)
  assert arrays['energy'].shape == (1, grid.shape[0])
  with open(out / 'metrics_10.json') as f:
    m = json.load(f)
  # In 2-D the lower bound with the exact entropy is below the quadrature NLL.
  assert m['lower_bound'] <= m['nll'] + 1e-3
  assert 0 <= m['modes_covered'] <= 25 and 0.0 <= m['hq_fraction'] <= 1.0
  assert m['mode_depth_spread'] >= 0.0 and np.isfinite(m['well_rise_1std'])
  # L_up is the run's own upper term (GP or DSM with its energy penalty), checked in 2-D for
  # both (tests/test_bounds.py: the baselines are not checked).
  assert 'upper_bound_fails' in m and ('gp' if preset == 'sv+gp' else 'dsm') in m
  assert m['upper_bound'] == pytest.approx(m['lower_bound'] + m['upper_term'])
  # The model mass outside the plotting box (log Z's wider, coarser grid) is what the fine grid
  # inside the box misses: 1 - z_outside_mass = A sum over the box of exp(-E) / Z.
  inside = np.exp(special.logsumexp(-arrays['energy'][0].astype(np.float64))
                  + np.log(0.01 ** 2) - m['log_z'])
  assert 0.0 <= m['z_edge_mass'] <= m['z_outside_mass'] <= 1.0
  assert inside == pytest.approx(1.0 - m['z_outside_mass'], abs=0.01)
  assert any(f.startswith('events.out.tfevents') for f in os.listdir(tmp_path))


def test_tensorboard_files_are_written_without_tensorflow_and_read_back(tmp_path):
  code = ('import sys; from experiments import writers; '
          f'w = writers.TensorBoardWriter({str(tmp_path)!r}); '
          "w.write_scalars(7, {'loss': 1.5, 'seed_0/nll': -2.25}); "
          "w.write_hparams({'seed': 3}); w.close(); "
          "print('tensorflow' in sys.modules)")
  out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True,
                       cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  assert out.stdout.strip() == 'False', out.stdout + out.stderr
  from tensorboard.backend.event_processing import event_file_loader
  (name,) = [f for f in os.listdir(tmp_path) if f.startswith('events.out.tfevents')]
  events = list(event_file_loader.LegacyEventFileLoader(str(tmp_path / name)).Load())
  scalars = {(e.step, v.tag): v.simple_value for e in events for v in e.summary.value
             if v.HasField('simple_value')}
  assert scalars == {(7, 'loss'): 1.5, (7, 'seed_0/nll'): -2.25}
  texts = [v.tensor.string_val[0].decode() for e in events for v in e.summary.value
           if v.HasField('tensor')]
  assert texts and '| seed | 3 |' in texts[0]


def test_toy_bound_failures_name_the_seeds_of_each_checked_side():
  from experiments import toy_eval
  record = {'lower_bound_fails/seed_3': 0.0, 'lower_bound_fails/seed_4': 1.0,
            'upper_bound_fails/seed_3': 1.0, 'upper_bound_fails/seed_4': 1.0,
            'lower_bound_fails': 0.5, 'upper_bound_fails': 1.0}
  assert toy_eval.bound_failures(record, [3, 4]) == [
      ('L_lo > NLL (the entropy term over-counts)', [4]),
      ('L_up < NLL (the upper term is below the KL)', [3, 4])]
  # An upper bound that bounds nothing (r1, wgan_gp) has no flag: no L_up verdict.
  del record['upper_bound_fails']
  assert toy_eval.bound_failures(record, [3, 4]) == [
      ('L_lo > NLL (the entropy term over-counts)', [4])]
  assert toy_eval.bound_failures({'lower_bound_fails': 0.0, 'upper_bound_fails': 0.0},
                                 [0]) == []


def test_each_sandwich_failure_is_listed_with_its_margin():
  from experiments import toy_eval
  record = {'step': 10000, 'upper_bound_fails': 0.5,
            'nll/seed_3': 0.9, 'lower_bound/seed_3': 0.4, 'upper_term/seed_3': 0.3,
            'lower_bound_fails/seed_3': 0.0, 'upper_bound_fails/seed_3': 1.0,
            'nll/seed_4': 0.5, 'lower_bound/seed_4': 0.6, 'upper_term/seed_4': 1.0,
            'lower_bound_fails/seed_4': 1.0, 'upper_bound_fails/seed_4': 0.0}
  assert toy_eval.sandwich_failures(record, [3, 4]) == [
      (3, 'iteration 10000, seed 3: upper term 0.300 < KL(p_g || p_theta) 0.500 (by 0.200 '
          'nats)'),
      (4, 'iteration 10000, seed 4: L_lo 0.600 > NLL 0.500 (by 0.100 nats)')]
  # Where L_up is not checked (r1, wgan_gp), only L_lo is listed.
  del record['upper_bound_fails']
  assert toy_eval.sandwich_failures(record, [3, 4]) == [
      (4, 'iteration 10000, seed 4: L_lo 0.600 > NLL 0.500 (by 0.100 nats)')]


def test_evaluation_warm_up_compiles_every_program_the_first_evaluation_runs(tmp_path):
  from experiments import tasks   # pylint: disable=import-outside-toplevel
  cfg = small_config()
  nets, state, rng = assemble.initial_state(cfg)
  step = train.make_train_step(cfg)
  batch = jax.random.uniform(jax.random.key(1), (1, 1, cfg.train.batch_size, 2))
  state, _ = step(state, batch, rng)
  # Executables produced (compiled, or read from the persistent cache the tests share).
  produced = []
  names = ('/jax/core/compile/backend_compile_duration', '/jax/compilation_cache/cache_hits')
  on_event = lambda name, *a, **k: produced.append(name) if name in names else None
  jax.monitoring.register_event_listener(on_event)
  jax.monitoring.register_event_duration_secs_listener(on_event)
  try:
    evaluator = tasks.validate(cfg).evaluator(cfg, nets)
    evaluator.start_warm_up(state, str(tmp_path))
    # The warm-up holds a host copy: the train step may donate `state` while it compiles.
    state, _ = step(state, batch, rng)
    evaluator.wait_for_warm_up()
    assert produced, 'the warm-up compiled nothing'
    assert not os.path.exists(tmp_path / 'eval')   # and wrote nothing
    produced.clear()
    m = evaluator.evaluate(state, 2, str(tmp_path))
    # The evaluation of the trained state compiled nothing and read nothing from the cache.
    assert produced == []
    assert np.isfinite(m['nll'])
  finally:
    jax.monitoring.unregister_event_listener(on_event)
    jax.monitoring.unregister_event_duration_listener(on_event)
  # Off: no thread; the same numbers (the warm-up's placeholder outputs reach no metric).
  cfg.eval.warm_up = False
  evaluator = tasks.validate(cfg).evaluator(cfg, nets)
  evaluator.start_warm_up(state, str(tmp_path))
  assert evaluator._warm_up is None   # pylint: disable=protected-access
  cold = evaluator.evaluate(state, 2, str(tmp_path / 'off'))
  assert {k: v for k, v in cold.items() if k != 'wall_s'} == pytest.approx(
      {k: v for k, v in m.items() if k != 'wall_s'}, rel=1e-6)

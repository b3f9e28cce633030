"""Image networks: shapes, per-sample independence, spectral norm, time conditioning, sizes."""
import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bibound_jax.models import dcgan, fc, registry, resnet
from bibound_jax.models.time_energy import TimeMLPEnergy
from bibound_jax.models.toy import MLPEnergy, MLPGenerator

# Small widths keep the tests fast; full-size parameter counts use jax.eval_shape.
ENERGIES = {
    'fc': (lambda: fc.fc_energy(hidden=(32, 16)), (28, 28, 3)),
    'dcgan28': (lambda: dcgan.DCGAN28Energy(width=4), (28, 28, 3)),
    'dcgan32': (lambda: dcgan.DCGANEnergy(width=4), (32, 32, 3)),
    'dcgan32_sn_op': (lambda: dcgan.DCGANEnergy(width=4, spectral_norm=True, sn_mode='operator'),
                      (32, 32, 3)),
    'resnet64': (lambda: resnet.ResNetEnergy(width=2), (64, 64, 3)),
    'resnet8_sn': (lambda: resnet.ResNetEnergy((8, 8, 3), 2, (1, 2), spectral_norm=True),
                   (8, 8, 3)),
}
TIME_ENERGIES = {
    'dcgan32': (lambda: dcgan.TimeDCGANEnergy(width=4, time_features=16, freq_dim=8),
                (32, 32, 3)),
    'dcgan32_all': (lambda: dcgan.TimeDCGANEnergy(width=4, time_features=16, freq_dim=8,
                                                  film_every_layer=True), (32, 32, 3)),
    'resnet8_sn': (lambda: resnet.TimeResNetEnergy((8, 8, 3), 2, (1, 2), spectral_norm=True,
                                                   time_features=16, freq_dim=8), (8, 8, 3)),
    'resnet64': (lambda: resnet.TimeResNetEnergy(width=2, time_features=16, freq_dim=8),
                 (64, 64, 3)),
}
GENERATORS = {
    'fc': lambda: fc.fc_generator(latent_dim=8, hidden=(16, 32)),
    'dcgan28': lambda: dcgan.DCGAN28Generator(latent_dim=8, width=4),
    'dcgan32': lambda: dcgan.DCGANGenerator(latent_dim=8, width=4),
    'resnet64': lambda: resnet.ResNetGenerator(latent_dim=8, width=2),
    'resnet8_sn': lambda: resnet.ResNetGenerator(8, (8, 8, 3), 2, (2, 1), spectral_norm=True),
}


# NumPy randomness and parameters: compiling JAX's PRNG and initialisers for every parameter
# shape costs seconds per shape on CPU; `model.init` is traced (jax.eval_shape), never compiled.
def _images(seed, n, shape):
  return jnp.asarray(np.random.default_rng(seed).uniform(-1, 1, (n,) + tuple(shape)), jnp.float32)


def _latents(seed, n, d):
  return jnp.asarray(np.random.default_rng(seed).standard_normal((n, d)), jnp.float32)


def _init(model, *args, seed=0, **kwargs):
  """Variables with model.init's structure: kernels N(0, 1 / fan_in), other leaves near their
  usual initial values (perturbed so that biases and BatchNorm statistics matter)."""
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), *args, **kwargs))
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    name = str(path[-1].key)
    noise = rng.standard_normal(leaf.shape)
    if name == 'kernel':
      value = noise / np.sqrt(math.prod(leaf.shape[:-1]))
    elif name in ('scale', 'var'):
      value = 1.0 + 0.1 * np.abs(noise)
    elif name == 'negative_slope':
      value = np.full(leaf.shape, 0.25)
    else:   # bias, mean
      value = 0.1 * noise
    return jnp.asarray(value, leaf.dtype)
  return jax.tree_util.tree_map_with_path(fill, shapes)


def _assert_per_sample(f, inputs, others):
  """f(batch)[i] depends on inputs[i] only: f(inputs) equals, row by row, f on batches where
  every other row is replaced (one compiled shape, unlike batches of one)."""
  out = f(inputs)
  for i in range(inputs.shape[0]):
    np.testing.assert_allclose(f(others.at[i].set(inputs[i]))[i], out[i], rtol=1e-5, atol=1e-5)
  assert not np.allclose(f(others)[0], out[0])
  return out


@pytest.mark.parametrize('name', sorted(ENERGIES))
def test_energy_shape_and_per_sample(name):
  make, shape = ENERGIES[name]
  model = make()
  x = _images(0, 3, shape)
  variables = _init(model, x[:1])
  assert set(variables) == {'params'}   # No BatchNorm or other state in an energy.
  apply = jax.jit(functools.partial(model.apply, variables))
  e = _assert_per_sample(apply, x, _images(1, 3, shape))
  assert e.shape == (3,) and e.dtype == jnp.float32
  if name != 'fc':   # The MLP flattens any input.
    with pytest.raises(ValueError, match='expects inputs'):
      model.apply(variables, x[:, :-4, :-4])


@pytest.mark.parametrize('name', sorted(GENERATORS))
def test_generator_shapes_range_and_inference_is_per_sample(name):
  model = GENERATORS[name]()
  z = _latents(0, 3, model.latent_dim)
  variables = _init(model, z[:1], train=False)
  assert set(variables) == {'params', 'batch_stats'}
  x, updates = jax.jit(functools.partial(model.apply, train=True, mutable=['batch_stats']))(
      variables, z)
  assert x.shape == (3,) + tuple(model.data_shape)
  assert jnp.all(jnp.abs(x) <= 1.0)
  changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), variables['batch_stats'],
                         updates['batch_stats'])
  assert any(jax.tree.leaves(changed))
  variables = {'params': variables['params'], 'batch_stats': updates['batch_stats']}
  apply = jax.jit(functools.partial(model.apply, variables, train=False))
  out = _assert_per_sample(apply, z, _latents(1, 3, model.latent_dim))
  assert out.shape == (3,) + tuple(model.data_shape)


# ---------------------------------------------------------------------------------------------
# Spectral norm.
# ---------------------------------------------------------------------------------------------

def _conv_matrix(conv, in_shape):
  """The dense matrix of a linear conv map on inputs `in_shape` (small shapes only)."""
  n = math.prod(in_shape)
  return jax.jacfwd(lambda v: conv(v.reshape(in_shape)).ravel())(jnp.zeros(n))


def _operator_norm(conv, in_shape, iters=300):
  """Largest singular value of the linear map `conv` by long power iteration."""
  conv_t = jax.linear_transpose(conv, jax.ShapeDtypeStruct(in_shape, jnp.float32))

  @jax.jit
  def run(v):
    def body(_, v):
      v = conv_t(conv(v))[0]
      return v / jnp.linalg.norm(v)
    return jnp.linalg.norm(conv(jax.lax.fori_loop(0, iters, body, v)))
  return float(run(jnp.asarray(np.random.default_rng(7).standard_normal(in_shape), jnp.float32)))


def _normalised_conv(module, variables, in_shape):
  kernel = variables['params']['kernel']
  sigma = jax.jit(lambda k: module.apply(variables, k, in_shape[1:3],   # one compilation
                                         method=dcgan.SNConv.sigma))(kernel)
  return lambda v: module._conv(v, kernel / sigma), kernel / sigma


@pytest.mark.parametrize('k,stride,padding', [(3, 1, ((1, 1), (1, 1))), (4, 2, ((1, 1), (1, 1))),
                                              (5, 2, 'SAME')])
def test_snconv_modes_on_a_small_conv(k, stride, padding):
  in_shape = (1, 8, 8, 3)
  x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 8, 8, 3)), jnp.float32)
  for mode in ('kernel', 'operator'):
    module = dcgan.SNConv(6, (k, k), (stride, stride), padding, mode=mode, power_iters=10)
    variables = _init(module, x, seed=1)

    def measure(variables, x):   # one compiled program (op by op: 1-2 s per mode)
      conv, kernel = _normalised_conv(module, variables, in_shape)
      return (jnp.linalg.norm(_conv_matrix(conv, in_shape), 2),   # exact
              jnp.linalg.norm(kernel.reshape(-1, 6), 2),
              module.apply(variables, x), conv(x) + variables['params']['bias'])
    op_norm, mat_norm, applied, expected = jax.jit(measure)(variables, x)
    if mode == 'kernel':
      # SNGAN normalises the reshaped kernel; the conv itself is only <= sqrt(kh kw) bounded.
      assert 0.95 < mat_norm < 1.05
      assert op_norm <= math.sqrt(k * k) * mat_norm + 1e-4
    else:
      assert 0.9 < op_norm < 1.08   # 10 power iterations under-estimate sigma by a few %.
    # The layer applies exactly this normalised kernel, plus the bias.
    np.testing.assert_allclose(applied, expected, rtol=1e-5, atol=1e-5)


def test_snconv_sigma_is_differentiable_with_fixed_vectors():
  module = dcgan.SNConv(4, (3, 3), mode='kernel', power_iters=30)
  x = jnp.ones((1, 5, 5, 2))
  variables = _init(module, x)
  kernel = variables['params']['kernel']
  sigma = lambda w: module.apply(variables, w, (5, 5), method=dcgan.SNConv.sigma)
  np.testing.assert_allclose(sigma(kernel), jnp.linalg.norm(kernel.reshape(-1, 4), 2), rtol=1e-3)
  # d sigma / dW = u v^T at convergence (u, v the top singular vectors).
  u, s, vt = jnp.linalg.svd(kernel.reshape(-1, 4))
  grad = jax.grad(sigma)(kernel).reshape(-1, 4)
  np.testing.assert_allclose(jnp.abs(grad), jnp.abs(jnp.outer(u[:, 0], vt[0])), atol=2e-3)
  with pytest.raises(ValueError, match='mode'):
    jax.eval_shape(lambda: dcgan.SNConv(4, (3, 3), mode='exact').init(jax.random.key(0), x))


def _sn_layers(model, variables, x):
  """(module, input shape) of every SNConv call in model.apply(variables, x) (traced once)."""
  calls = []

  def record(next_fun, args, kwargs, context):
    if isinstance(context.module, dcgan.SNConv) and context.method_name == '__call__':
      calls.append((context.module, args[0].shape))
    return next_fun(*args, **kwargs)
  with nn.intercept_methods(record):
    jax.jit(model.apply).trace(variables, x)
  return calls


@pytest.mark.parametrize('mode', ['kernel', 'operator'])
def test_every_conv_of_an_sn_energy_is_normalised(mode):
  model = dcgan.DCGANEnergy(width=2, spectral_norm=True, sn_mode=mode)
  x = _images(0, 1, (32, 32, 3))
  variables = _init(model, x)
  calls = _sn_layers(model, variables, x)
  assert len(calls) == 7
  for module, shape in calls:
    layer_vars = {'params': variables['params'][module.name]}
    in_shape = (1,) + shape[1:]
    conv, kernel = _normalised_conv(module, layer_vars, in_shape)
    op_norm = _operator_norm(conv, in_shape)
    k = module.kernel_size[0]
    if mode == 'operator':
      assert op_norm < 1.06, (module.name, op_norm)
    else:
      assert float(jnp.linalg.norm(kernel.reshape(-1, kernel.shape[-1]), 2)) < 1.06
      assert op_norm < 1.06 * k, (module.name, op_norm)


# ---------------------------------------------------------------------------------------------
# Time-conditioned energies.
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize('name', sorted(TIME_ENERGIES))
def test_time_energy_accepts_t_and_none_is_zero(name):
  make, shape = TIME_ENERGIES[name]
  model = make()
  x = _images(0, 3, shape)
  t = jnp.array([0.0, 0.3, 0.9])
  variables = _init(model, x[:1], t[:1])
  assert set(variables) == {'params'}

  @jax.jit
  def energies(x, t):   # One compilation for all the calls.
    apply = functools.partial(model.apply, variables)
    return (apply(x, t), apply(x), apply(x, 0.0), apply(x, jnp.zeros(3)), apply(x, 0.5))
  e, e_none, e_scalar0, e_zeros, e_half = energies(x, t)
  assert e.shape == (3,)
  np.testing.assert_allclose(e_none, e_zeros, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(e_none, e_scalar0, rtol=1e-6, atol=1e-6)
  assert not np.allclose(e_half, e_none)
  # Per sample: row i of (x, t) alone decides energy i.
  x_other, t_other = _images(1, 3, shape), jnp.array([0.5, 0.1, 0.2])
  for i in range(3):
    e_mixed = energies(x_other.at[i].set(x[i]), t_other.at[i].set(t[i]))[0]
    np.testing.assert_allclose(e_mixed[i], e[i], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('name', sorted(TIME_ENERGIES))
def test_time_conditioning_gets_a_score_matching_gradient(name):
  """DSM sees grad_x E(x, t) only; the FiLM scale must make it depend on the time parameters."""
  make, shape = TIME_ENERGIES[name]
  model = make()
  x = _images(0, 2, shape)
  t = jnp.array([0.2, 0.7])
  variables = _init(model, x, t)

  def dsm_like(params):
    score = jax.grad(lambda x: model.apply({'params': params}, x, t).sum())(x)
    return jnp.sum(score ** 2)
  grads = jax.jit(jax.grad(dsm_like))(variables['params'])
  time_grads = [g for path, g in jax.tree_util.tree_leaves_with_path(grads)
                if any('film' in str(p) or 'TimeEmbedding' in str(p) for p in path)]
  assert time_grads and any(float(jnp.abs(g).max()) > 0 for g in time_grads)


# ---------------------------------------------------------------------------------------------
# Sizes and the registry.
# ---------------------------------------------------------------------------------------------

def _count(model, *args, **kwargs):
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), *args, **kwargs))
  return sum(math.prod(p.shape) for p in jax.tree.leaves(shapes['params']))


def _conv(k, cin, cout):
  return k * k * cin * cout + cout


def test_full_size_parameter_counts():
  x32, x28, x64 = (jnp.zeros((1,) + s) for s in ((32, 32, 3), (28, 28, 3), (64, 64, 3)))
  # SNGAN standard CNN: 7 convs + a dense head on 4x4x512.
  layers = [(3, 3, 64), (4, 64, 64), (3, 64, 128), (4, 128, 128), (3, 128, 256), (4, 256, 256),
            (3, 256, 512)]
  expected_e = sum(_conv(*l) for l in layers) + 4 * 4 * 512 + 1
  assert expected_e == 2_935_873
  assert _count(dcgan.DCGANEnergy(), x32) == expected_e
  assert _count(dcgan.DCGANEnergy(spectral_norm=True), x32) == expected_e
  expected_g = ((128 + 1) * 8192 + 2 * 512 + _conv(4, 512, 256) + 2 * 256 + _conv(4, 256, 128)
                + 2 * 128 + _conv(4, 128, 64) + 2 * 64 + _conv(3, 64, 3))
  assert _count(dcgan.DCGANGenerator(), jnp.zeros((1, 128)), train=False) == expected_g
  # StackedMNIST CNN.
  assert _count(dcgan.DCGAN28Energy(), x28) == (
      _conv(5, 3, 64) + _conv(5, 64, 128) + _conv(5, 128, 256) + 4 * 4 * 256 + 1)
  assert _count(dcgan.DCGAN28Generator(), jnp.zeros((1, 100)), train=False) == (
      101 * 7 * 7 * 256 + 2 * 256 + _conv(5, 256, 128) + 2 * 128 + _conv(5, 128, 64) + 2 * 64
      + _conv(3, 64, 3))
  # StackedMNIST FC: dense layers, PReLU slopes, the output scale.
  dims_e = [2352, 2000, 1000, 500, 250, 250, 1]
  assert _count(fc.fc_energy(), x28) == sum(
      (a + 1) * b for a, b in zip(dims_e, dims_e[1:])) + 5 + 1
  dims_g = [100, 500, 1000, 2000, 2352]
  assert _count(fc.fc_generator(), jnp.zeros((1, 100)), train=False) == sum(
      (a + 1) * b for a, b in zip(dims_g, dims_g[1:])) + 3 * 1 + 2 * (500 + 1000 + 2000)
  # SNGAN ResNet 64x64, width 64: energy 64..1024 channels, generator 1024..64.
  ch = [3, 64, 128, 256, 512, 1024]
  res_e = sum(_conv(3, a, b) + _conv(3, b, b) + _conv(1, a, b) for a, b in zip(ch, ch[1:]))
  assert _count(resnet.ResNetEnergy(), x64) == res_e + 1024 + 1
  gch = [1024, 512, 256, 128, 64]
  res_g = (129 * 16 * 1024 + sum(2 * a + _conv(3, a, b) + 2 * b + _conv(3, b, b) + _conv(1, a, b)
                                 for a, b in zip(gch, gch[1:])) + 2 * 64 + _conv(3, 64, 3))
  assert _count(resnet.ResNetGenerator(), jnp.zeros((1, 128)), train=False) == res_g
  assert 15e6 < res_e < 25e6 and 10e6 < res_g < 15e6


def test_registry_builds_each_name():
  cases = [
      ('mlp', (28, 28, 3), MLPEnergy, MLPGenerator),
      ('dcgan', (28, 28, 3), dcgan.DCGAN28Energy, dcgan.DCGAN28Generator),
      ('dcgan', (32, 32, 3), dcgan.DCGANEnergy, dcgan.DCGANGenerator),
      ('resnet', (64, 64, 3), resnet.ResNetEnergy, resnet.ResNetGenerator),
  ]
  for name, shape, e_cls, g_cls in cases:
    energy = registry.create_energy({'name': name, 'spectral_norm': True}, shape)
    gen = registry.create_generator({'name': name, 'latent_dim': 16}, shape)
    assert isinstance(energy, e_cls) and isinstance(gen, g_cls)
    assert energy.spectral_norm and gen.latent_dim == 16
    assert tuple(gen.data_shape) == shape
  # Defaults are the modules' own.
  energy = registry.create_energy({'name': 'dcgan'}, (32, 32, 3))
  assert energy.width == dcgan.DCGANEnergy.width and energy.negative_slope == 0.1
  for name, cls in [('mlp', TimeMLPEnergy), ('dcgan', dcgan.TimeDCGANEnergy),
                    ('resnet', resnet.TimeResNetEnergy)]:
    shape = (64, 64, 3) if name == 'resnet' else (32, 32, 3)
    energy = registry.create_energy({'name': name, 'time_scale': 1.0}, shape, True)
    assert isinstance(energy, cls) and energy.time_scale == 1.0
    # The time keys may stay in a section whose run does not condition on time.
    assert not isinstance(registry.create_energy({'name': name, 'time_scale': 1.0}, shape), cls)
  energy = registry.create_energy(
      {'name': 'dcgan', 'width': 8, 'spectral_norm': True, 'sn_mode': 'operator'}, (32, 32, 3))
  assert energy.width == 8 and energy.sn_mode == 'operator'


def test_create_models_with_a_config_dict_and_what_the_bounds_ask_for():
  ml_collections = pytest.importorskip('ml_collections')
  from bibound_jax import models
  from bibound_jax.models import mi, noisy
  cfg = ml_collections.ConfigDict({
      'energy': {'name': 'dcgan', 'width': 8, 'spectral_norm': False},
      'generator': {'name': 'dcgan', 'latent_dim': 128, 'width': 8}})
  nets = models.create_models(cfg, (32, 32, 3))
  assert nets.energy.width == 8 and nets.generator.width == 8 and nets.mi_net is None
  nets = models.create_models(cfg, (32, 32, 3), time_conditioned=True,
                              mi_net={'kind': 'ba', 'hidden': (16,)}, output_noise=(0.1, 0.01))
  assert isinstance(nets.energy, dcgan.TimeDCGANEnergy)
  assert isinstance(nets.mi_net, mi.GaussianEncoder) and nets.mi_net.latent_dim == 128
  assert isinstance(nets.generator, noisy.NoisyGenerator) and nets.generator.latent_dim == 128
  assert isinstance(models.create_models(cfg, (32, 32, 3), mi_net={
      'kind': 'infonce', 'hidden': (16,)}).mi_net, mi.SeparableCritic)


def test_registry_rejects_unknown_names_and_keys():
  with pytest.raises(ValueError, match='valid: mlp, dcgan, resnet'):
    registry.create_energy({'name': 'vit'}, (32, 32, 3))
  with pytest.raises(ValueError, match='valid: mlp, flow, flow_mixture, dcgan, resnet'):
    registry.create_generator({'name': 'stylegan', 'latent_dim': 8}, (32, 32, 3))
  with pytest.raises(ValueError, match='latent_dim'):
    registry.create_generator({'name': 'dcgan'}, (32, 32, 3))
  with pytest.raises(ValueError, match='sn_mode'):
    registry.create_energy({'name': 'dcgan', 'sn_mode': 'exact'}, (32, 32, 3))
  with pytest.raises(ValueError, match='has key\\(s\\) hidden .* DCGANEnergy .* its keys: '):
    registry.create_energy({'name': 'dcgan', 'hidden': (3,)}, (32, 32, 3))
  with pytest.raises(ValueError, match="Energy 'dcgan' is for images"):
    registry.create_energy({'name': 'dcgan'}, (2,))
  with pytest.raises(ValueError, match='no time-conditioned'):
    registry.create_energy({'name': 'dcgan'}, (28, 28, 3), time_conditioned=True)

"""The matrix-product convolutions of `bibound_jax.models.conv` against `jax.lax`, in float64."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from bibound_jax.models import conv


@pytest.fixture(autouse=True)
def _x64():
  with jax.enable_x64(True):
    yield


def _cases(seed, count):
  """Random (x, kernel, strides, forward padding, transposed padding) in 1, 2 and 3-D."""
  rng = np.random.default_rng(seed)
  for n in (1, 2, 3):
    for _ in range(count):
      ks = tuple(int(k) for k in rng.integers(1, 6, n))
      strides = tuple(int(s) for s in rng.integers(1, 4, n))
      sizes = tuple(int(l) for l in rng.integers(max(ks), 10 if n < 3 else 7, n))
      x = jnp.asarray(rng.standard_normal((2, *sizes, 3)))
      kernel = jnp.asarray(rng.standard_normal((*ks, 3, 4)))
      explicit = [tuple(int(p) for p in rng.integers(-1, 4, 2)) for _ in range(n)]
      for pad in ('SAME', 'VALID', explicit):
        tpad = pad if isinstance(pad, str) else [tuple(abs(p) for p in q) for q in pad]
        yield x, kernel, strides, pad, tpad


def _dn(x):
  return conv._channels_last(x.ndim)


def _worst_differences(pairs, cases):
  """max |ours - lax| per case, all cases in ONE compiled program (90 programs of one case
  each cost 10 s of compilation; op-by-op dispatch 3x more)."""
  def diffs(arrays):
    out = []
    for (x, kernel), (_, _, *case) in zip(arrays, cases):
      want, got = pairs(x, kernel, *case)
      assert got.shape == want.shape, (x.shape, kernel.shape, case)
      out.append(jnp.max(jnp.abs(got - want), initial=0.0))
    return jnp.stack(out)
  return np.asarray(jax.jit(diffs)([case[:2] for case in cases]))


def test_conv_matches_lax_values():
  cases = [(x, k, strides, pad) for x, k, strides, pad, _ in _cases(0, 10)]
  pairs = lambda x, k, strides, pad: (
      lax.conv_general_dilated(x, k, strides, pad, dimension_numbers=_dn(x)),
      conv.conv_general_dilated(x, k, strides, pad, dimension_numbers=_dn(x), impl='patches'))
  worst = _worst_differences(pairs, cases)
  assert worst.shape == (90,) and worst.max() < 1e-12


@pytest.mark.parametrize('transpose_kernel', [False, True])
def test_conv_transpose_matches_lax_values(transpose_kernel):
  cases = [(x, k.swapaxes(-1, -2) if transpose_kernel else k, strides, tpad)
           for x, k, strides, _, tpad in _cases(1, 10)]
  pairs = lambda x, k, strides, tpad: (
      lax.conv_transpose(x, k, strides, tpad, dimension_numbers=_dn(x),
                         transpose_kernel=transpose_kernel),
      conv.conv_transpose(x, k, strides, tpad, transpose_kernel, impl='patches'))
  worst = _worst_differences(pairs, cases)
  assert worst.shape == (90,) and worst.max() < 1e-12


def _derivatives(layer, x, k):
  """First derivatives, a JVP, and the gradient-penalty double backward of one layer."""
  sq = lambda x, k: jnp.sum(jnp.sin(layer(x, k)))
  def gp(x, k):
    return jnp.sum(jax.grad(lambda xx: jnp.sum(jnp.tanh(layer(xx, k))))(x) ** 2)
  tx, tk = jnp.cos(x), jnp.sin(k)
  return (jax.grad(sq, argnums=(0, 1))(x, k), jax.jvp(layer, (x, k), (tx, tk)),
          jax.grad(gp, argnums=(0, 1))(x, k))


_DN = ('NHWC', 'HWIO', 'NHWC')
# The DCGAN layer types: kernel shape and (ours, lax) as functions of (x, kernel).
_LAYERS = {
    'conv 4x4/2 pad 1 (energy)': ((4, 4, 3, 5), lambda impl: lambda x, k: (
        conv.conv_general_dilated(x, k, (2, 2), ((1, 1), (1, 1)), dimension_numbers=_DN,
                                  impl=impl))),
    'conv 3x3/1 SAME (energy)': ((3, 3, 3, 5), lambda impl: lambda x, k: (
        conv.conv_general_dilated(x, k, (1, 1), 'SAME', dimension_numbers=_DN, impl=impl))),
    'ConvTranspose 4x4/2 (CIFAR G)': ((4, 4, 5, 3), lambda impl: lambda x, k: (
        conv.conv_transpose(x, k, (2, 2), ((2, 2), (2, 2)), True, impl=impl))),
    'ConvTranspose 5x5/2 SAME (MNIST G)': ((5, 5, 3, 5), lambda impl: lambda x, k: (
        conv.conv_transpose(x, k, (2, 2), 'SAME', impl=impl))),
}


@pytest.mark.parametrize('kind', sorted(_LAYERS))
def test_derivatives_match_lax(kind):
  """d/dx, d/dK, a JVP and d/d(x, K) of ||d/dx tanh-sum||^2 (the GP's double backward)."""
  rng = np.random.default_rng(2)
  shape, make = _LAYERS[kind]
  x = jnp.asarray(rng.standard_normal((2, 6, 6, 3)))
  k = jnp.asarray(rng.standard_normal(shape))
  got, want = _derivatives(make('patches'), x, k), _derivatives(make('lax'), x, k)
  flat_got, flat_want = jax.tree.leaves(got), jax.tree.leaves(want)
  assert len(flat_got) == len(flat_want) == 6
  for a, b in zip(flat_got, flat_want):
    assert a.shape == b.shape
    np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize('kernel_size,padding,transpose_kernel',
                         [(4, ((2, 2), (2, 2)), True), (5, 'SAME', False)])
def test_conv_transpose_module_is_flax_conv_transpose(kernel_size, padding, transpose_kernel):
  x = jax.random.normal(jax.random.key(0), (2, 7, 7, 6), jnp.float64)
  ours = conv.ConvTranspose(5, (kernel_size,) * 2, (2, 2), padding=padding,
                            transpose_kernel=transpose_kernel)
  flax = nn.ConvTranspose(5, (kernel_size,) * 2, (2, 2), padding=padding,
                          transpose_kernel=transpose_kernel)
  p_ours, p_flax = ours.init(jax.random.key(1), x), flax.init(jax.random.key(1), x)
  assert jax.tree.structure(p_ours) == jax.tree.structure(p_flax)
  for a, b in zip(jax.tree.leaves(p_ours), jax.tree.leaves(p_flax)):
    np.testing.assert_array_equal(a, b)
  np.testing.assert_allclose(ours.apply(p_flax, x), flax.apply(p_flax, x), atol=1e-12)


def test_dispatch():
  """'auto' is the matrix-product route on CPU; grouped convs and bad names are handled."""
  assert jax.default_backend() != 'cpu' or conv._resolve('auto') == 'patches'
  assert conv._resolve('lax') == 'lax'
  with conv.impl_scope('lax'):
    assert conv._resolve('auto') == 'lax' and conv._resolve('patches') == 'patches'
  # impl='lax' is lax itself, so test_derivatives_match_lax compares against lax, not itself.
  x4, k4 = jnp.ones((1, 5, 5, 3)), jnp.arange(75.0).reshape(5, 5, 3, 1)
  for impl, want in (('lax', True), ('patches', False)):
    jaxpr = str(jax.make_jaxpr(lambda a, b: conv.conv_transpose(a, b, (2, 2), 'SAME',
                                                                impl=impl))(x4, k4))
    assert ('lhs_dilation=(2, 2)' in jaxpr) == want, impl
  assert conv._resolve('auto') == ('patches' if jax.default_backend() == 'cpu' else 'lax')
  with pytest.raises(ValueError, match="conv impl must be one of"):
    conv._resolve('cudnn')
  with pytest.raises(ValueError, match="padding must be 'SAME', 'VALID'"):
    conv.conv_transpose(jnp.zeros((1, 4, 4, 2)), jnp.zeros((3, 3, 2, 2)), (2, 2), 'FULL')
  rng = np.random.default_rng(3)
  x = jnp.asarray(rng.standard_normal((2, 6, 6, 4)))
  k = jnp.asarray(rng.standard_normal((3, 3, 2, 6)))
  dn = ('NHWC', 'HWIO', 'NHWC')
  np.testing.assert_allclose(
      conv.conv_general_dilated(x, k, (2, 2), 'SAME', dimension_numbers=dn,
                                feature_group_count=2, impl='patches'),
      lax.conv_general_dilated(x, k, (2, 2), 'SAME', dimension_numbers=dn,
                               feature_group_count=2), atol=1e-12)


def test_dcgan_training_gradients_use_no_lax_convolution_on_cpu():
  """The DCGAN pair routes every conv through the matrix products on CPU: the generator's
  parameter gradient and the energy's gradient-penalty double backward contain no lax conv."""
  if jax.default_backend() != 'cpu':
    pytest.skip('the matrix-product route is the CPU one')
  from bibound_jax.models import dcgan
  gen = dcgan.DCGANGenerator(latent_dim=4, width=2)
  energy = dcgan.DCGANEnergy(width=2)
  z, x = jnp.ones((2, 4)), jnp.ones((2, 32, 32, 3))
  gv = jax.jit(gen.init)(jax.random.key(0), z)
  ev = jax.jit(energy.init)(jax.random.key(1), x)
  g_loss = lambda p: jnp.sum(gen.apply({**gv, 'params': p}, z, mutable=['batch_stats'])[0])
  def gp(p):
    gx = jax.grad(lambda xx: jnp.sum(energy.apply({'params': p}, xx)))(x)
    return jnp.sum(gx ** 2)
  for fn, params in ((g_loss, gv['params']), (gp, ev['params'])):
    assert 'conv_general_dilated' not in str(jax.make_jaxpr(jax.grad(fn))(params))
  with conv.impl_scope('lax'):     # ... and the check would see them
    assert 'conv_general_dilated' in str(jax.make_jaxpr(jax.grad(gp))(ev['params']))

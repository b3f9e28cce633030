"""The FID Inception-v3 weights as one .npz file, and the converter from pytorch-fid's weights.

Nothing here downloads anything. Getting the weights takes one conversion, done once by a user
with a network and PyTorch (torch is imported only inside `convert_pytorch_fid_weights`; it is
not a dependency of this package):

  1. Download pytorch-fid's port of the 2015 TF Inception graph (about 91 MB):
       https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth
     (`pip install pytorch-fid` also fetches it into torch's hub cache, ~/.cache/torch/hub/
     checkpoints/, on first use of `pytorch_fid.inception.fid_inception_v3()`).
  2. Convert it:
       python -m bibound_jax.metrics.inception_weights pt_inception-2015-12-05-6726825d.pth \\
           ~/.cache/bibound_jax/inception_fid_2015-12-05.npz
  3. Point the code at the .npz (the default path above, or $BIBOUND_INCEPTION_WEIGHTS, or pass
     the path), and copy it to offline machines as needed.

File format: `np.savez` of the variable tree of `models.inception.InceptionV3` flattened with
'/'-joined keys: `params/Mixed_5b/branch1x1/conv/kernel` (HWIO), `params/.../bn/scale`,
`params/.../bn/bias`, `batch_stats/.../bn/mean`, `batch_stats/.../bn/var`, `params/fc/kernel`
(2048, 1008), `params/fc/bias`; all float32.

The state-dict mapping is one to one because our module names follow PyTorch's:
  <path>.conv.weight (O, I, H, W)  -> params/<path>/conv/kernel (H, W, I, O)
  <path>.bn.weight / .bn.bias      -> params/<path>/bn/scale / bias
  <path>.bn.running_mean / _var    -> batch_stats/<path>/bn/mean / var
  fc.weight (1008, 2048) / fc.bias -> params/fc/kernel (2048, 1008) / params/fc/bias
(`<path>` with '.' for '/', e.g. `Mixed_7c.branch3x3dbl_3a`; `num_batches_tracked` is ignored).
"""
from __future__ import annotations

import argparse
import os
import tempfile
import zipfile
from typing import Mapping

import flax.traverse_util
import jax
import numpy as np

from bibound_jax.models import inception

PYTORCH_FID_URL = ('https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/'
                   'pt_inception-2015-12-05-6726825d.pth')
PYTORCH_FID_FILE = 'pt_inception-2015-12-05-6726825d.pth'
WEIGHTS_ENV = 'BIBOUND_INCEPTION_WEIGHTS'
DEFAULT_FILE = 'inception_fid_2015-12-05.npz'
CONVERT_MODULE = 'bibound_jax.metrics.inception_weights'


class InceptionWeightsError(RuntimeError):
  """The Inception weights file is missing, unreadable or does not fit `InceptionV3`."""


def default_weights_path() -> str:
  """$BIBOUND_INCEPTION_WEIGHTS, else ~/.cache/bibound_jax/inception_fid_2015-12-05.npz."""
  return os.environ.get(WEIGHTS_ENV) or os.path.join(
      os.path.expanduser('~'), '.cache', 'bibound_jax', DEFAULT_FILE)


def conversion_help(path: str) -> str:
  """How to create the weights file at `path` (used in every error)."""
  return (f'Create it once, on a machine with a network and PyTorch: download {PYTORCH_FID_URL} '
          f'and run\n  python -m {CONVERT_MODULE} {PYTORCH_FID_FILE} {path}\n'
          f'(see the docstring of {CONVERT_MODULE}).')


def flatten_variables(variables) -> dict[str, np.ndarray]:
  """{'params': {...}, 'batch_stats': {...}} -> {'params/a/b/kernel': array, ...} (numpy)."""
  flat = flax.traverse_util.flatten_dict(jax.device_get(variables), sep='/')
  return {k: np.asarray(v) for k, v in flat.items()}


def unflatten_variables(flat: Mapping[str, np.ndarray]) -> dict:
  """Inverse of `flatten_variables`, leaves as jax arrays on the default device."""
  tree = flax.traverse_util.unflatten_dict(jax.device_put(dict(flat)), sep='/')
  return dict(tree)


def _expected() -> dict[str, jax.ShapeDtypeStruct]:
  return flax.traverse_util.flatten_dict(inception.abstract_variables(), sep='/')


def check_variables(flat: Mapping[str, np.ndarray], source: str) -> None:
  """Raise `InceptionWeightsError` unless `flat` has exactly `InceptionV3`'s keys and shapes."""
  expected = _expected()
  missing = sorted(set(expected) - set(flat))
  unexpected = sorted(set(flat) - set(expected))
  wrong = sorted(f'{k}: {tuple(np.shape(flat[k]))} != {tuple(expected[k].shape)}'
                 for k in expected if k in flat and tuple(np.shape(flat[k])) != expected[k].shape)
  if missing or unexpected or wrong:
    lines = [f'{source} does not match the FID InceptionV3 variables:']
    for title, items in (('missing', missing), ('unexpected', unexpected), ('wrong shape', wrong)):
      if items:
        shown = ', '.join(items[:5]) + (f', ... ({len(items)} in all)' if len(items) > 5 else '')
        lines.append(f'  {title}: {shown}')
    raise InceptionWeightsError('\n'.join(lines))


def save_inception_weights(path: str, variables) -> None:
  """Write the variable tree (checked against `InceptionV3`) to `path` as one .npz, atomically."""
  flat = flatten_variables(variables)
  check_variables(flat, 'The variables to save')
  flat = {k: v.astype(np.float32, copy=False) for k, v in flat.items()}
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, suffix='.npz.tmp')
  try:
    with os.fdopen(fd, 'wb') as f:   # a file object: np.savez does not append '.npz'
      np.savez(f, **flat)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def load_inception_weights(path: str | None = None) -> dict:
  """The variables {'params', 'batch_stats'} from the .npz at `path` (default:
  `default_weights_path()`). Raises `InceptionWeightsError`, naming the file and the conversion
  command, when it is missing, unreadable or does not match the network."""
  path = path or default_weights_path()
  if not os.path.isfile(path):
    raise InceptionWeightsError(f'Inception weights file not found: {path}\n'
                                + conversion_help(path))
  try:
    data = np.load(path, allow_pickle=False)
    if not isinstance(data, np.lib.npyio.NpzFile):
      raise ValueError('not an .npz archive')
    with data:
      flat = {k: data[k] for k in data.files}
  except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as e:
    raise InceptionWeightsError(f'Cannot read the Inception weights file {path} '
                                f'({type(e).__name__}: {e}).\n' + conversion_help(path)) from e
  try:
    check_variables(flat, f'The Inception weights file {path}')
  except InceptionWeightsError as e:
    raise InceptionWeightsError(f'{e}\n{conversion_help(path)}') from None
  return unflatten_variables({k: v.astype(np.float32, copy=False) for k, v in flat.items()})


def _torch_name(key: str) -> tuple[str, str]:
  """Our flat key -> (state-dict name, layout op) with op in {'conv', 'fc', 'copy'}."""
  collection, *path, leaf = key.split('/')
  module = '.'.join(path)
  if collection == 'batch_stats':
    return f'{module}.running_{leaf}', 'copy'                 # mean / var
  if path[-1] == 'fc':
    return f'{module}.{"weight" if leaf == "kernel" else "bias"}', 'fc' if leaf == 'kernel' else 'copy'
  if path[-1] == 'conv':
    return f'{module}.weight', 'conv'
  return f'{module}.{"weight" if leaf == "scale" else "bias"}', 'copy'   # bn scale / bias


def variables_from_state_dict(state_dict: Mapping[str, np.ndarray],
                              source: str = 'The state dict') -> dict:
  """pytorch-fid `FIDInceptionV3` state dict (numpy arrays) -> our variable tree.

  Conv weights OIHW -> HWIO, fc weight (out, in) -> (in, out), BN weight/bias -> scale/bias and
  running_mean/var -> batch_stats mean/var. Every state-dict entry must be used (apart from
  `num_batches_tracked`), and every variable found.
  """
  flat, used = {}, set()
  for key in _expected():
    name, op = _torch_name(key)
    if name not in state_dict:
      raise InceptionWeightsError(f'{source} has no entry {name!r} (needed for {key}); is it '
                                  f'pytorch-fid\'s {PYTORCH_FID_FILE}?')
    value = np.asarray(state_dict[name], np.float32)
    if op == 'conv':
      value = value.transpose(2, 3, 1, 0)
    elif op == 'fc':
      value = value.T
    flat[key] = np.ascontiguousarray(value)
    used.add(name)
  extra = sorted(k for k in state_dict if k not in used and not k.endswith('num_batches_tracked'))
  if extra:
    raise InceptionWeightsError(f'{source} has entries the FID Inception does not use '
                                f'(e.g. {", ".join(extra[:5])}); is it pytorch-fid\'s '
                                f'{PYTORCH_FID_FILE}?')
  check_variables(flat, source)
  return unflatten_variables(flat)


def state_dict_from_variables(variables) -> dict[str, np.ndarray]:
  """Inverse of `variables_from_state_dict` (PyTorch names and layouts, numpy arrays)."""
  out = {}
  for key, value in flatten_variables(variables).items():
    name, op = _torch_name(key)
    out[name] = (value.transpose(3, 2, 0, 1) if op == 'conv' else value.T if op == 'fc'
                 else value)
  return out


def convert_pytorch_fid_weights(state_dict_path: str, out_path: str) -> dict:
  """Convert pytorch-fid's `pt_inception-2015-12-05-6726825d.pth` to our .npz at `out_path`.

  Needs PyTorch (imported here only). Returns the converted variables.
  """
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise ImportError('Converting the pytorch-fid weights needs PyTorch (`pip install torch`); '
                      'only the conversion does, not the rest of bibound_jax.') from e
  try:
    state = torch.load(state_dict_path, map_location='cpu', weights_only=True)
  except TypeError:   # torch < 1.13 has no weights_only
    state = torch.load(state_dict_path, map_location='cpu')
  if isinstance(state, Mapping) and 'state_dict' in state:
    state = state['state_dict']
  state = {k: v.detach().cpu().numpy() for k, v in state.items()}
  variables = variables_from_state_dict(state, source=str(state_dict_path))
  save_inception_weights(out_path, variables)
  return variables


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(
      prog=f'python -m {CONVERT_MODULE}',
      description='Convert pytorch-fid\'s Inception weights (.pth) to bibound_jax\'s .npz.')
  parser.add_argument('pth', help=f'path of {PYTORCH_FID_FILE} (from {PYTORCH_FID_URL})')
  parser.add_argument('out', nargs='?', default=None,
                      help=f'output .npz (default: {default_weights_path()})')
  args = parser.parse_args(argv)
  out = args.out or default_weights_path()
  variables = convert_pytorch_fid_weights(args.pth, out)
  n = sum(np.size(x) for x in jax.tree.leaves(variables))
  print(f'Wrote {n:,} values to {out}')


if __name__ == '__main__':
  main()

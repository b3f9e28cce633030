"""Metric writers: the run's log lines and TensorBoard event files, without TensorFlow.

clu's `metric_writers` package imports its TensorFlow summary writer when it is imported, and
`clu.periodic_actions` imports that package: TensorFlow's import (and its C++ notices) in a
run that never touches TensorFlow. `import_clu` imports both with that one module
(`clu.metric_writers.summary_writer`) replaced, during the import only, by a stand-in whose
`SummaryWriter` imports TensorFlow when one is built; once it returns, `sys.modules` holds
clu's own modules only (`clu.metric_writers.SummaryWriter` is the stand-in's class; a later
`import clu.metric_writers.summary_writer` loads the real module). Importing the run's
modules and building its writer and progress report took 1.8-2.4 s this way and 4.5-5.8 s
through clu's plain import (3 pairs, a loaded 2-core machine). Importing this module imports no clu writer and changes nothing: the run calls
`import_clu` where it uses clu (`create_writer`, experiments/progress.py).

The run writes TensorBoard files with `TensorBoardWriter`: scalars and text as `tf.Event`
protocol buffers through the `tensorboard` package's own event-file writer, which TensorBoard
reads like any other. That writer reaches files through `tensorboard.compat.tf`, which imports
TensorFlow when it is installed; unless the process has already imported TensorFlow,
`TensorBoardWriter` selects the package's TensorFlow-free stub (its local-file gfile) instead.
"""
from __future__ import annotations

import contextlib
import sys
import time
import types

SUMMARY_WRITER_MODULE = 'clu.metric_writers.summary_writer'


@contextlib.contextmanager
def _summary_writer_deferred():
  """Within: clu's TensorFlow summary-writer module is a stand-in whose SummaryWriter imports
  the real one when built. The stand-in leaves `sys.modules` on exit."""
  stand_in = types.ModuleType(SUMMARY_WRITER_MODULE)

  class SummaryWriter:  # pylint: disable=too-few-public-methods
    """clu's TensorFlow summary writer, imported when built."""

    def __new__(cls, *args, **kwargs):
      from clu.metric_writers.tf import summary_writer  # pylint: disable=import-outside-toplevel
      return summary_writer.SummaryWriter(*args, **kwargs)

  stand_in.SummaryWriter = SummaryWriter
  sys.modules[SUMMARY_WRITER_MODULE] = stand_in
  try:
    yield
  finally:
    if sys.modules.get(SUMMARY_WRITER_MODULE) is stand_in:
      del sys.modules[SUMMARY_WRITER_MODULE]


def import_clu():
  """(metric_writers, periodic_actions): clu's modules, imported without TensorFlow unless
  this process imported them or TensorFlow before (then as they are). Their `SummaryWriter`
  still builds clu's TensorFlow writer, importing TensorFlow then."""
  if 'clu.metric_writers' not in sys.modules and 'tensorflow' not in sys.modules:
    with _summary_writer_deferred():
      # pylint: disable=import-outside-toplevel,unused-import
      import clu.metric_writers
      import clu.periodic_actions
  from clu import metric_writers  # pylint: disable=import-outside-toplevel
  from clu import periodic_actions  # pylint: disable=import-outside-toplevel
  return metric_writers, periodic_actions


class TensorBoardWriter:
  """Scalars, texts and hyperparameters (as a text table) in a TensorBoard event file; a clu
  `MetricWriter` by its methods (figures go to workdir/eval as PNG files)."""

  def __init__(self, logdir: str):
    if 'tensorflow' not in sys.modules:
      # tensorboard.compat.tf resolves to its stub when this module exists (the package's
      # own switch, used by its TensorFlow-free builds); 6 s of TensorFlow import saved.
      sys.modules.setdefault('tensorboard.compat.notf', types.ModuleType('tensorboard.compat.notf'))
    # pylint: disable=import-outside-toplevel
    from tensorboard.compat.proto import event_pb2
    from tensorboard.compat.proto import summary_pb2
    from tensorboard.summary.writer import event_file_writer
    self._event, self._proto = event_pb2.Event, summary_pb2
    self._writer = event_file_writer.EventFileWriter(logdir)

  def _write(self, step: int, values: list) -> None:
    self._writer.add_event(self._event(wall_time=time.time(), step=int(step),
                                       summary=self._proto.Summary(value=values)))

  def write_scalars(self, step, scalars):
    self._write(step, [self._proto.Summary.Value(tag=k, simple_value=float(v))
                       for k, v in scalars.items()])

  def write_texts(self, step, texts):
    from tensorboard.compat.proto import tensor_pb2  # pylint: disable=import-outside-toplevel
    from tensorboard.compat.proto import types_pb2  # pylint: disable=import-outside-toplevel
    p = self._proto
    text = p.SummaryMetadata(plugin_data=p.SummaryMetadata.PluginData(plugin_name='text'))
    self._write(step, [p.Summary.Value(tag=k, metadata=text, tensor=tensor_pb2.TensorProto(
        dtype=types_pb2.DT_STRING, string_val=[str(v).encode()])) for k, v in texts.items()])

  def write_hparams(self, hparams):
    rows = '\n'.join(f'| {k} | {v} |' for k, v in sorted(hparams.items()))
    self.write_texts(0, {'config': '| key | value |\n| --- | --- |\n' + rows})

  def _unsupported(self, *args, **kwargs):
    raise NotImplementedError('TensorBoardWriter writes scalars, texts and hyperparameters; '
                              'figures go to workdir/eval as PNG files.')

  write_summaries = write_images = write_videos = write_audios = write_histograms = _unsupported

  def flush(self):
    self._writer.flush()

  def close(self):
    self._writer.close()


def create_writer(workdir: str, chief: bool):
  """(writer, tensorboard): the run's writer (log lines everywhere, plus TensorBoard files in
  `workdir` on the chief process) and its TensorBoard part (None off the chief)."""
  metric_writers, _ = import_clu()
  if not chief:
    return metric_writers.MultiWriter([metric_writers.LoggingWriter()]), None
  tensorboard = TensorBoardWriter(workdir)
  return metric_writers.MultiWriter([metric_writers.LoggingWriter(), tensorboard]), tensorboard

"""Metric writers: the run's log lines and TensorBoard event files, without TensorFlow.

clu's `metric_writers` package imports its TensorFlow summary writer when it is imported (which
costs seconds and prints TensorFlow's C++ notices), even for runs that never touch TensorFlow.
`defer_tensorflow_summary_writer` registers a stand-in for that module before clu is imported
(experiments/__init__.py does it), which imports the TensorFlow writer only when someone builds
one. The run itself writes TensorBoard files with `TensorBoardWriter`: scalars and text as
`tf.Event` protocol buffers through the `tensorboard` package's own event-file writer, which
TensorBoard reads like any other. That writer reaches files through `tensorboard.compat.tf`,
which imports TensorFlow when it is installed; unless the process has already imported
TensorFlow, `TensorBoardWriter` selects the package's TensorFlow-free stub (its local-file
gfile) instead.
"""
from __future__ import annotations

import sys
import time
import types

SUMMARY_WRITER_MODULE = 'clu.metric_writers.summary_writer'


def defer_tensorflow_summary_writer() -> None:
  """Make `import clu.metric_writers` import TensorFlow only when a clu SummaryWriter is
  built (no-op if clu's writers are already imported)."""
  if SUMMARY_WRITER_MODULE in sys.modules or 'clu.metric_writers' in sys.modules:
    return
  stand_in = types.ModuleType(SUMMARY_WRITER_MODULE)

  class SummaryWriter:  # pylint: disable=too-few-public-methods
    """clu's TensorFlow summary writer, imported when built."""

    def __new__(cls, *args, **kwargs):
      from clu.metric_writers.tf import summary_writer  # pylint: disable=import-outside-toplevel
      return summary_writer.SummaryWriter(*args, **kwargs)

  stand_in.SummaryWriter = SummaryWriter
  sys.modules[SUMMARY_WRITER_MODULE] = stand_in


defer_tensorflow_summary_writer()

# pylint: disable=wrong-import-position
from clu.metric_writers import interface  # noqa: E402
from clu.metric_writers import logging_writer  # noqa: E402
from clu.metric_writers import multi_writer  # noqa: E402


class TensorBoardWriter(interface.MetricWriter):
  """Scalars, texts and hyperparameters (as a text table) in a TensorBoard event file."""

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
  if not chief:
    return multi_writer.MultiWriter([logging_writer.LoggingWriter()]), None
  tensorboard = TensorBoardWriter(workdir)
  return multi_writer.MultiWriter([logging_writer.LoggingWriter(), tensorboard]), tensorboard

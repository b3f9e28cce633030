"""The run's writers load clu without TensorFlow, and importing `experiments` patches nothing."""
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _python(code: str) -> list[str]:
  out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=REPO,
                       timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  return out.stdout.split()


def test_importing_and_writing_import_no_tensorflow_and_leave_no_stand_in(tmp_path):
  code = f'''
import sys
before = dict(sys.modules)
import experiments
print(all(sys.modules.get(name) is module for name, module in before.items()),
      sorted(set(sys.modules) - set(before)) == ['experiments'])
from experiments import run
print('tensorflow' in sys.modules, 'clu.metric_writers' in sys.modules)
from experiments import progress, writers
from configs import toy
writer, tensorboard = writers.create_writer({str(tmp_path)!r}, chief=True)
progress.Progress(toy.get_config(), writer, chief=True)
writer.write_scalars(1, {{'loss': 0.5}})
writer.close()
from clu import metric_writers, periodic_actions
print('tensorflow' in sys.modules, writers.SUMMARY_WRITER_MODULE in sys.modules)
# clu's own TensorFlow writer is still there for whoever builds one.
w = metric_writers.SummaryWriter({str(tmp_path / 'tf')!r})
print(type(w).__module__, 'tensorflow' in sys.modules)
'''
  assert _python(code) == ['True', 'True',            # `import experiments`: nothing else
                           'False', 'False',          # the loop's module: no clu writer yet
                           'False', 'False',          # writers and progress: no TensorFlow
                           'clu.metric_writers.tf.summary_writer', 'True']
  assert any(f.startswith('events.out.tfevents') for f in os.listdir(tmp_path))

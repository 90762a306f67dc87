"""experiments.input_benchmark end to end on a few generated JPEGs: the
three cases (as given, ImageNet-sized, and those prepared once), the
pipeline beside its decode-only ceiling, and a crops-per-call variant."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

pytestmark = pytest.mark.slow  # Each test starts commands.

pytest.importorskip('tensorflow')

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_each_case_reports_the_pipeline_beside_the_decode_ceiling(tmp_path):
  folder, output = tmp_path / 'imagenet_like', tmp_path / 'out.json'
  # The config's case reads the same generated folder as the second case,
  # which the benchmark writes beside --output by default (not in a fixed
  # folder of /tmp that another user may own).
  command = [
      sys.executable, '-m', 'experiments.input_benchmark',
      '--config=configs/default.py', f'--output={output}',
      '--config.dataset=image_folder', f'--config.dataset_dir={folder}',
      f'--config.data_dir={tmp_path / "tfds"}', '--config.cache=False',
      '--config.batch_size=4', '--config.image_size=67',
      '--config.resize_size=76', '--config.validation_fraction=0.25',
      '--imagenet_like=24',
      '--crops_per_call=1', '--warmup=1', '--batches=2', '--repeats=3',
      '--drain=1']
  out = subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                       timeout=300, check=False,
                       env=dict(os.environ, JAX_PLATFORMS='cpu'))
  assert out.returncode == 0, out.stderr[-3000:]
  assert sum(len(files) for _, _, files in os.walk(folder)) >= 24
  # TFDS's INFO lines stay off the console, as in training.
  assert 'dataset_info.py' not in out.stderr, out.stderr[-3000:]
  result = json.loads(output.read_text())
  assert set(result['cases']) == {'config', 'imagenet_like',
                                  'imagenet_like_prepared'}
  rows = [line for line in out.stdout.splitlines()
          if line.startswith(('| config', '| imagenet_like'))]
  assert len(rows) == 6, out.stdout  # Each case, as it is and at 1 per call.
  prepared = result['cases']['imagenet_like_prepared']
  assert prepared['dataset'] == 'tfds_directory'
  assert prepared['dataset_dir'] == f'{folder}_prepared_76'
  assert os.listdir(prepared['dataset_dir'])  # Written by prepare_dataset.
  assert result['flags']['crops_per_call'] == ['1']
  for case in result['cases'].values():
    assert case['image_shape'] == [67, 67, 3]
    decode = case['decode_only']
    for name, crops in (('pipeline', 4), ('pipeline_crops_per_call_1', 1)):
      run = case[name]
      assert run['crops_per_call'] == crops  # gcd(batch 4, 8) = 4.
      assert len(run['windows']) == 3
      assert run['images_per_sec'] == pytest.approx(
          float(np.median(run['windows'])))
      assert run['images_per_sec_per_core'] == pytest.approx(
          run['images_per_sec'] / case['cores'])
      assert run['ratio_to_decode_only'] == pytest.approx(
          run['images_per_sec'] / decode['images_per_sec'])
    assert case['ratio_to_decode_only'] == case['pipeline'][
        'ratio_to_decode_only']
  # The generated JPEGs are about ImageNet's size.
  from PIL import Image  # pylint: disable=g-import-not-at-top
  sizes = [Image.open(os.path.join(d, f)).size
           for d, _, files in os.walk(folder) for f in files
           if f.endswith('.jpg')]
  assert len(sizes) == 24
  assert 300 < np.mean([w for w, _ in sizes]) < 500
  assert 250 < np.mean([h for _, h in sizes]) < 450


def test_a_bad_crops_per_call_fails_naming_the_flag(tmp_path):
  out = subprocess.run(
      [sys.executable, '-m', 'experiments.input_benchmark',
       '--config=configs/default.py', f'--output={tmp_path / "out.json"}',
       '--crops_per_call=8,0'], cwd=ROOT, capture_output=True, text=True,
      timeout=120, check=False)
  assert out.returncode != 0
  assert '--crops_per_call takes positive whole numbers' in out.stderr
  assert not (tmp_path / 'out.json').exists()

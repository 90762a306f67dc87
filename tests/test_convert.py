"""PyTorch <-> Flax weight interchange (alexnet_jax.tools.convert).

The PyTorch models are written here in plain torch (torchvision is not needed):
torchvision's AlexNet for 'owt', and the same modules with grouped conv2/4/5
and LocalResponseNorm for 'paper'. Logits of both frameworks must agree.
"""

from __future__ import annotations

import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alexnet_jax import models
from alexnet_jax import ops
from alexnet_jax.tools import convert
from conftest import ROOT as REPO

TORCH_REASON = 'PyTorch is not installed (pip install torch) to compare logits'


def _model(variant: str, width: float = 1.0,
           num_classes: int = 1000) -> models.AlexNet:
  return models.AlexNet(num_classes=num_classes, variant=variant,
                        groups=convert.DEFAULT_GROUPS[variant],
                        lrn=convert.LAYOUT_LRN[variant], width=width)


def _torch_alexnet(model: models.AlexNet, image_size: int):
  """The PyTorch network whose state_dict has `convert`'s layout."""
  torch = pytest.importorskip('torch', reason=TORCH_REASON)
  nn = torch.nn
  g = model.groups
  c = [models.scaled_width(s.features, model.width, g)
       for s in models.conv_specs(model.variant)]
  fc = models.scaled_width(4096, model.width, 1)
  pool = lambda: nn.MaxPool2d(kernel_size=3, stride=2)
  if model.variant == 'owt':  # torchvision.models.AlexNet.
    features = nn.Sequential(
        nn.Conv2d(3, c[0], 11, stride=4, padding=2), nn.ReLU(), pool(),
        nn.Conv2d(c[0], c[1], 5, padding=2), nn.ReLU(), pool(),
        nn.Conv2d(c[1], c[2], 3, padding=1), nn.ReLU(),
        nn.Conv2d(c[2], c[3], 3, padding=1), nn.ReLU(),
        nn.Conv2d(c[3], c[4], 3, padding=1), nn.ReLU(), pool())
    avgpool, side = nn.AdaptiveAvgPool2d((6, 6)), 6
  else:  # The paper's two towers; PyTorch's LRN divides alpha by n.

    class TowerLRN(nn.Module):
      """LRN within each tower's maps (each GPU normalized its own)."""

      def __init__(self):
        super().__init__()
        self.lrn = nn.LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2.0)

      def forward(self, x):
        return torch.cat([self.lrn(t) for t in x.chunk(g, dim=1)], dim=1)

    lrn = TowerLRN
    features = nn.Sequential(
        nn.Conv2d(3, c[0], 11, stride=4, padding=0), nn.ReLU(), lrn(), pool(),
        nn.Conv2d(c[0], c[1], 5, padding=2, groups=g), nn.ReLU(), lrn(), pool(),
        nn.Conv2d(c[1], c[2], 3, padding=1), nn.ReLU(),
        nn.Conv2d(c[2], c[3], 3, padding=1, groups=g), nn.ReLU(),
        nn.Conv2d(c[3], c[4], 3, padding=1, groups=g), nn.ReLU(), pool())
    side = models.feature_map_size(image_size, 'paper')
    # At 227 torchvision's AdaptiveAvgPool2d(6) is the identity; our paper
    # model has none, so other sizes flatten the whole pool5 map.
    avgpool = nn.AdaptiveAvgPool2d((6, 6)) if side == 6 else nn.Identity()

  class AlexNet(nn.Module):

    def __init__(self):
      super().__init__()
      self.features = features
      self.avgpool = avgpool
      self.classifier = nn.Sequential(
          nn.Dropout(0.5), nn.Linear(c[4] * side * side, fc), nn.ReLU(),
          nn.Dropout(0.5), nn.Linear(fc, fc), nn.ReLU(),
          nn.Linear(fc, model.num_classes))

    def forward(self, x):
      x = self.avgpool(self.features(x))
      return self.classifier(torch.flatten(x, 1))

  torch.manual_seed(0)
  net = AlexNet()
  with torch.no_grad():  # He-normal weights: logits of order 1, not ~0.
    for m in net.modules():
      if isinstance(m, (nn.Conv2d, nn.Linear)):
        fan_in = m.weight[0].numel()
        m.weight.normal_(0.0, (2.0 / fan_in) ** 0.5)
        m.bias.uniform_(-0.1, 0.1)
  return net.eval()


def _torch_logits(net, images_nhwc: np.ndarray) -> np.ndarray:
  torch = pytest.importorskip('torch', reason=TORCH_REASON)
  with torch.no_grad():
    x = torch.from_numpy(np.ascontiguousarray(images_nhwc.transpose(0, 3, 1, 2)))
    return net(x).numpy()


def _state_dict_numpy(net) -> dict[str, np.ndarray]:
  return {k: v.numpy().copy() for k, v in net.state_dict().items()}


def _images(n: int, size: int, seed: int = 0) -> np.ndarray:
  return np.random.default_rng(seed).normal(size=(n, size, size, 3)).astype(
      np.float32)


def _random_params(model: models.AlexNet, size: int, seed: int = 0) -> dict:
  """Random float32 params of `model`'s shapes (NumPy; no compilation)."""
  shapes = jax.eval_shape(lambda: model.init(
      jax.random.key(0), jnp.zeros((1, size, size, 3)), train=False))['params']
  rng = np.random.default_rng(seed)
  return jax.tree_util.tree_map(
      lambda s: rng.normal(size=s.shape).astype(np.float32), shapes)


def _assert_logits_close(ours, theirs):
  # Guard against a vacuous comparison: the logits must spread over > 0.1.
  assert np.std(theirs) > 0.1, np.std(theirs)
  np.testing.assert_array_less(np.abs(ours - theirs).max(), 1e-4)
  np.testing.assert_array_equal(ours.argmax(-1), theirs.argmax(-1))


@pytest.mark.slow
@pytest.mark.parametrize('variant,size', [('owt', 224), ('paper', 227)])
def test_full_width_torch_to_flax_logits_agree(variant, size):
  """The real layouts (61M/62M params, 1000 classes), a batch of 2 images.

  The model is built from the variant alone: its defaults must be the
  layout's (torchvision's AlexNet for 'owt': one tower, no LRN).
  """
  model = models.AlexNet(num_classes=1000, variant=variant)
  net = _torch_alexnet(model, size)
  state_dict = _state_dict_numpy(net)
  images = _images(2, size)
  params = convert.torch_to_flax(state_dict, variant)
  assert models.count_params(params) == {'owt': 61_100_840,
                                         'paper': 60_965_224}[variant]
  ours = np.asarray(jax.jit(model.apply)({'params': params}, images))
  _assert_logits_close(ours, _torch_logits(net, images))
  # And back: torch -> flax -> torch is the identity, key for key.
  back = convert.flax_to_torch(params, variant)
  assert list(back) == list(state_dict)
  for k, v in state_dict.items():
    np.testing.assert_array_equal(back[k], v, err_msg=k)


@pytest.mark.parametrize('variant,size', [
    ('paper', 259),  # pool5 is 7x7: the fc6 permutation in general.
    ('paper', 195),  # 5x5.
    ('owt', 160),  # 4x4 pool5, adaptive-pooled to 6x6.
])
def test_flax_to_torch_logits_agree(variant, size):
  """Our params into PyTorch."""
  model = _model(variant, width=0.25, num_classes=37)
  net = _torch_alexnet(model, size)
  torch = pytest.importorskip('torch', reason=TORCH_REASON)
  params = convert.torch_to_flax(_state_dict_numpy(net), variant)
  # Fresh random params in Flax, pushed to PyTorch.
  params = jax.tree_util.tree_map(
      lambda x: (x + np.random.default_rng(1).normal(
          scale=0.2 * x.std() + 1e-3, size=x.shape)).astype(np.float32), params)
  state_dict = convert.flax_to_torch(params, variant)
  net.load_state_dict({k: torch.from_numpy(v) for k, v in state_dict.items()})
  images = _images(2, size, seed=3)
  ours = np.asarray(jax.jit(model.apply)({'params': params}, images))
  _assert_logits_close(ours, _torch_logits(net, images))


def test_group_to_channel_assignment_matches_torch():
  """Output channel o of a groups=2 conv reads input half o // (out / 2)."""
  torch = pytest.importorskip('torch', reason=TORCH_REASON)
  conv = torch.nn.Conv2d(4, 6, 3, padding=1, groups=2)
  x = np.random.default_rng(0).normal(size=(1, 5, 5, 4)).astype(np.float32)
  with torch.no_grad():
    want = conv(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
  kernel = conv.weight.detach().numpy().transpose(2, 3, 1, 0)
  bias = conv.bias.detach().numpy()
  got = ops.conv(x, kernel, bias, stride=1, padding=1, groups=2)
  np.testing.assert_allclose(np.asarray(got).transpose(0, 3, 1, 2), want,
                             atol=1e-5)


@pytest.mark.parametrize('variant,size', [('owt', 224), ('paper', 227),
                                          ('paper', 259)])
def test_flax_torch_flax_round_trip_is_exact(variant, size):
  params = _random_params(_model(variant, width=0.25, num_classes=11), size)
  state_dict = convert.flax_to_torch(params, variant)
  assert set(state_dict) == {f'{m}.{x}' for m in
                             convert.TORCH_LAYOUTS[variant].values()
                             for x in ('weight', 'bias')}
  back = convert.torch_to_flax(state_dict, variant)
  jax.tree_util.tree_map(np.testing.assert_array_equal, back, params)


def test_fc6_rows_are_permuted_from_chw_to_hwc():
  """fc6 input (c, h, w) in PyTorch is input (h, w, c) here."""
  params = _random_params(_model('paper', width=0.1, num_classes=5), 259)
  state_dict = convert.flax_to_torch(params, 'paper')
  c, side = params['conv5']['kernel'].shape[3], 7
  torch_w = state_dict['classifier.1.weight']  # (out, c * h * w)
  ours = params['fc6']['kernel']  # (h * w * c, out)
  for ch, h, w in [(0, 0, 1), (c - 1, 3, 5), (2, side - 1, 0)]:
    np.testing.assert_array_equal(torch_w[:, ch * side * side + h * side + w],
                                  ours[h * side * c + w * c + ch])


def test_non_square_pool5_needs_pool5_shape():
  model = _model('owt', width=0.1, num_classes=5)
  params = _random_params(model, 224)
  c = params['conv5']['kernel'].shape[3]
  out = params['fc6']['kernel'].shape[1]
  params['fc6']['kernel'] = np.ones((2 * 3 * c, out), np.float32)
  with pytest.raises(convert.ConversionError, match='fc6/kernel.*square'):
    convert.flax_to_torch(params, 'owt')
  state_dict = convert.flax_to_torch(params, 'owt', pool5_shape=(2, 3))
  back = convert.torch_to_flax(state_dict, 'owt', pool5_shape=(2, 3))
  np.testing.assert_array_equal(back['fc6']['kernel'], params['fc6']['kernel'])


def test_errors_name_the_key():
  params = _random_params(_model('paper', width=0.1, num_classes=5), 227)
  state_dict = convert.flax_to_torch(params, 'paper')

  missing = dict(state_dict)
  del missing['features.10.bias']
  with pytest.raises(convert.ConversionError, match=r"missing keys \['features.10.bias'\]"):
    convert.torch_to_flax(missing, 'paper')

  extra = dict(state_dict, **{'features.99.weight': np.zeros(3)})
  with pytest.raises(convert.ConversionError, match='features.99.weight'):
    convert.torch_to_flax(extra, 'paper')

  with pytest.raises(convert.ConversionError, match="'paper' layout"):
    convert.torch_to_flax(state_dict, 'owt')  # Says which layout it is.

  # The paper layout read as ungrouped: conv2's in-channels are half.
  with pytest.raises(convert.ConversionError, match=r'features\.4\.weight.*1 group'):
    convert.torch_to_flax(state_dict, 'paper', groups=1)

  bad = dict(state_dict)
  bad['features.8.bias'] = np.zeros(7, np.float32)
  with pytest.raises(convert.ConversionError, match=r'features\.8\.bias.*\(7,\)'):
    convert.torch_to_flax(bad, 'paper')

  bad = dict(state_dict)
  bad['classifier.4.weight'] = state_dict['classifier.4.weight'][:, :-1]
  with pytest.raises(convert.ConversionError, match=r'classifier\.4\.weight'):
    convert.torch_to_flax(bad, 'paper')

  bad = dict(state_dict)
  bad['features.0.weight'] = state_dict['features.0.weight'][..., :5]
  with pytest.raises(convert.ConversionError, match=r'features\.0\.weight.*11x11'):
    convert.torch_to_flax(bad, 'paper')

  flax_bad = {k: dict(v) for k, v in params.items()}
  flax_bad['conv3']['kernel'] = flax_bad['conv3']['kernel'][0]
  with pytest.raises(convert.ConversionError, match='conv3/kernel.*4-D'):
    convert.flax_to_torch(flax_bad, 'paper')
  with pytest.raises(convert.ConversionError, match=r"missing layers \['fc8'\]"):
    convert.flax_to_torch({k: v for k, v in params.items() if k != 'fc8'},
                          'paper')
  with pytest.raises(convert.ConversionError, match='variant'):
    convert.torch_to_flax(state_dict, 'vgg')


def test_check_model_config_requires_the_layouts_lrn():
  import ml_collections  # pylint: disable=g-import-not-at-top
  ok = ml_collections.ConfigDict({'variant': 'owt', 'lrn': False})
  convert.check_model_config(ok)
  # Unset (None): the variant's own, which is the layout's.
  for variant in ('owt', 'paper'):
    convert.check_model_config(ml_collections.ConfigDict(
        {'variant': variant, 'lrn': None}))
  with pytest.raises(convert.ConversionError, match='config.model.lrn=True'):
    convert.check_model_config(ml_collections.ConfigDict(
        {'variant': 'owt', 'lrn': True}))


def test_npz_and_pth_files_round_trip(tmp_path):
  torch = pytest.importorskip('torch', reason=TORCH_REASON)
  params = _random_params(_model('paper', width=0.1, num_classes=5), 227)
  npz = str(tmp_path / 'params.npz')
  convert.save_npz(params, npz)
  jax.tree_util.tree_map(np.testing.assert_array_equal, convert.load_npz(npz),
                         params)
  pth = str(tmp_path / 'alexnet.pth')
  convert.convert_file(npz, pth, 'paper')
  state_dict = torch.load(pth, weights_only=True)
  assert 'features.12.weight' in state_dict  # conv5 of the paper layout.
  again = str(tmp_path / 'again.npz')
  convert.convert_file(pth, again, 'paper')
  jax.tree_util.tree_map(np.testing.assert_array_equal,
                         convert.load_npz(again), params)
  with pytest.raises(convert.ConversionError, match="not have the 'owt' layout"):
    convert.convert_file(pth, again, 'owt')
  np.savez(str(tmp_path / 'partial.npz'), **{'conv1/kernel': np.zeros(1)})
  with pytest.raises(convert.ConversionError, match='missing entries'):
    convert.load_npz(str(tmp_path / 'partial.npz'))


@pytest.mark.slow
def test_cli_and_imports_need_no_torch(tmp_path):
  """With torch unimportable: convert, evaluate and predict import, and the
  command line converts .npz files."""
  params = _random_params(_model('owt', width=0.1, num_classes=5), 224)
  src, dst = str(tmp_path / 'a.npz'), str(tmp_path / 'b.npz')
  convert.save_npz(params, src)
  code = ('import sys, runpy; sys.modules["torch"] = None; '
          'import alexnet_jax.tools.evaluate, alexnet_jax.tools.predict; '
          'runpy.run_module("alexnet_jax.tools.convert", run_name="__main__", '
          'alter_sys=True)')
  out = subprocess.run(
      [sys.executable, '-c', code, '--variant=owt', f'--input={src}',
       f'--output={dst}'], cwd=REPO, capture_output=True, text=True,
      timeout=300)
  assert out.returncode == 0, out.stderr[-2000:]
  assert f'Wrote {dst} (' in out.stdout
  jax.tree_util.tree_map(np.testing.assert_array_equal, convert.load_npz(dst),
                         params)


def test_evaluate_a_pth_file_on_fake_data(tmp_path):
  """config.checkpoint=.pth: the eval loss is PyTorch's on the same images."""
  torch = pytest.importorskip('torch', reason=TORCH_REASON)
  from alexnet_jax.tools import evaluate  # pylint: disable=g-import-not-at-top
  from alexnet_jax import input_pipeline  # pylint: disable=g-import-not-at-top
  from alexnet_jax import metrics_writer  # pylint: disable=g-import-not-at-top
  from configs import imagenet_eval  # pylint: disable=g-import-not-at-top
  config = imagenet_eval.get_config()
  config.dataset = 'fake'
  config.model.width = 0.1
  config.model.num_classes = 10
  config.image_size = 64
  config.eval_batch_size = 4
  config.fake_data.eval_steps = 2
  net = _torch_alexnet(_model('owt', width=0.1, num_classes=10), 64)
  config.checkpoint = str(tmp_path / 'owt.pth')
  torch.save(net.state_dict(), config.checkpoint)

  metrics = evaluate.evaluate(config, str(tmp_path / 'eval'))

  # The same seed as the evaluation.
  batch = next(input_pipeline.create_data(config).eval_batches())
  images = np.asarray(batch['image']).reshape(-1, 64, 64, 3).astype(np.float32)
  labels = np.asarray(batch['label']).reshape(-1)
  mean = np.array(config.normalization.mean, np.float32)
  std = np.array(config.normalization.std, np.float32)
  logits = torch.from_numpy(_torch_logits(net, (images - mean) / std))
  want = float(torch.nn.functional.cross_entropy(
      logits, torch.tensor(labels, dtype=torch.long)))
  assert metrics['eval_examples'] == 8
  assert abs(metrics['eval_loss'] - want) < 1e-4, (metrics, want)
  rows = metrics_writer.read_metrics(str(tmp_path / 'eval'))
  assert rows == [{'step': 0, **metrics}]
  with open(tmp_path / 'eval' / 'config.json') as f:
    assert json.load(f)['checkpoint'] == config.checkpoint

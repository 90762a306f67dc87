"""alexnet_jax.tools.features: a layer's activations equal those of an
independent forward pass (PyTorch's, read by hooks on its ReLUs), and lead to
the model's own logits."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alexnet_jax import models
from alexnet_jax.tools import convert
from alexnet_jax.tools import features
from test_convert import _images
from test_convert import _state_dict_numpy
from test_convert import _torch_alexnet


def _torch_activations(net, images_nhwc):
  """{layer: the output of its ReLU} of the PyTorch net, NHWC / [B, N]."""
  torch = pytest.importorskip('torch')
  relus = [m for m in net.modules() if isinstance(m, torch.nn.ReLU)]
  assert len(relus) == len(features.LAYERS)
  seen = {}
  for name, relu in zip(features.LAYERS, relus):
    relu.register_forward_hook(
        lambda m, i, out, name=name: seen.__setitem__(name, out.clone()))
  with torch.no_grad():
    net(torch.from_numpy(np.ascontiguousarray(images_nhwc.transpose(0, 3, 1,
                                                                    2))))
  return {k: v.numpy().transpose(0, 2, 3, 1) if v.ndim == 4 else v.numpy()
          for k, v in seen.items()}


@pytest.mark.parametrize('variant,groups,size', [
    ('paper', 2, 67), ('paper', 1, 67), ('owt', 1, 71)])
def test_every_layer_equals_pytorch(variant, groups, size):
  model = models.AlexNet(num_classes=7, variant=variant, groups=groups,
                         width=0.1)
  net = _torch_alexnet(model, size)
  params = convert.torch_to_flax(_state_dict_numpy(net), variant,
                                 groups=groups)
  images = _images(3, size, seed=1)
  want = _torch_activations(net, images)
  read = jax.jit(features.features, static_argnums=(0, 3))
  for layer in features.LAYERS:
    got = np.asarray(read(model, {'params': params}, images, layer))
    assert got.shape == want[layer].shape, layer
    assert want[layer].std() > 0 and (want[layer] == 0).any(), layer
    np.testing.assert_allclose(got, want[layer], rtol=1e-4,
                               atol=1e-4 * np.abs(want[layer]).max(),
                               err_msg=layer)


@pytest.mark.parametrize('variant', ['paper', 'owt'])
def test_fc_layers_lead_to_the_models_logits(variant):
  model = models.AlexNet(num_classes=5, variant=variant, width=0.05,
                         initialization='he')
  x = jax.random.normal(jax.random.key(0), (2, 67, 67, 3))
  variables = jax.tree_util.tree_map(  # Biases too, so they are checked.
      lambda v: v + 0.05 * jax.random.normal(jax.random.key(2), v.shape),
      model.init(jax.random.key(1), x))
  logits = model.apply(variables, x)
  p = variables['params']
  fc6, fc7 = (features.features(model, variables, x, layer)
              for layer in features.FC_LAYERS)
  for got in (fc6, fc7):
    assert (got == 0).any() and (got > 0).any()
  # fc6's activations are what fc7 reads; fc7's what the classifier reads.
  np.testing.assert_allclose(
      jax.nn.relu(fc6 @ p['fc7']['kernel'] + p['fc7']['bias']), fc7,
      rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(fc7 @ p['fc8']['kernel'] + p['fc8']['bias'],
                             logits, rtol=1e-5, atol=1e-5)


def test_unknown_layer_is_named():
  model = models.AlexNet(num_classes=5, width=0.05)
  with pytest.raises(ValueError, match="layer='fc8'; expected one of"):
    features.features(model, {'params': {}}, jnp.zeros((1, 67, 67, 3)), 'fc8')

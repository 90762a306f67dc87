"""The dataset a config names: fake images (JAX alone) or the input pipeline
(TensorFlow, imported only here and only for real data)."""


def create_data(config):
  """The dataset named by `config.dataset`."""
  if config.dataset == 'fake':
    from alexnet_jax import fake_data  # pylint: disable=g-import-not-at-top
    return fake_data.FakeData(config)
  from alexnet_jax import input_pipeline  # pylint: disable=g-import-not-at-top
  return input_pipeline.TFDSData(config)

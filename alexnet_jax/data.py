"""The dataset a config names: fake images (JAX alone) or the input pipeline
(TensorFlow, imported only here and only for real data)."""


def create_data(config, mean_image=None):
  """The dataset named by `config.dataset`. `mean_image`: the per-pixel mean
  a run subtracted (config.normalization.mean_image), used as given instead
  of measured again."""
  if config.dataset == 'fake':
    from alexnet_jax import fake_data  # pylint: disable=g-import-not-at-top
    return fake_data.FakeData(config)
  from alexnet_jax import input_pipeline  # pylint: disable=g-import-not-at-top
  return input_pipeline.TFDSData(config, mean_image=mean_image)

"""A training run, read back for analysis: its recorded config, the params of
one checkpoint and the class names, as the run recorded them (the same reading
as `alexnet_jax.tools.evaluate --workdir=RUN`)."""

from __future__ import annotations

import os


class RunError(ValueError):
  """The run cannot be read (no record, no such step): one line for the
  user."""


def load_run(run_dir: str, step: int | None = None):
  """(config, variables, step, class_names) of the training run `run_dir`.

  `step`: the checkpoint to read (None: the newest that can be read). The
  config and class names are the records in force at that step
  (`config.json`, or the `config.<s>.json` a changed resume wrote).
  """
  from alexnet_jax import config_lib  # pylint: disable=g-import-not-at-top
  from alexnet_jax import input_pipeline  # pylint: disable=g-import-not-at-top
  from alexnet_jax import models  # pylint: disable=g-import-not-at-top
  from alexnet_jax.tools import checkpoint_params  # pylint: disable=g-import-not-at-top
  from alexnet_jax.tools import convert  # pylint: disable=g-import-not-at-top
  from alexnet_jax.tools import evaluate  # pylint: disable=g-import-not-at-top
  from alexnet_jax.tools import predict  # pylint: disable=g-import-not-at-top
  run_dir = os.path.abspath(run_dir)
  try:
    config = evaluate.run_config(run_dir, step)
    params, step = evaluate.load_params(config.checkpoint, config.model)
    evaluate.check_params_fit(params, models.model_from_config(config.model),
                              config.image_size)
    data = input_pipeline.DataOptions.from_config(config)
  except (checkpoint_params.CheckpointNotFoundError,
          checkpoint_params.CheckpointUnreadableError,
          config_lib.ConfigError, convert.ConversionError) as e:
    raise RunError(str(e)) from None
  names = predict.class_names(config.model.num_classes, data, run_dir,
                              step=step)
  return config, {'params': params}, step, names

"""A training run, read back for analysis: its recorded config, the params of
one checkpoint and the class names, as the run recorded them."""

from __future__ import annotations

import os

from alexnet_jax import checkpoint_params
from alexnet_jax import workdir as workdir_lib


class RunError(ValueError):
  """The run cannot be read (no record, no such step): one line for the
  user."""


def load_run(run_dir: str, step: int | None = None):
  """(config, variables, step, class_names) of the training run `run_dir`.

  `step`: the checkpoint to read (None: the newest that can be read). The
  config and class names are the records in force at that step
  (`config.json`, or the `config.<s>.json` a changed resume wrote).
  """
  import ml_collections  # pylint: disable=g-import-not-at-top
  from alexnet_jax import evaluate  # pylint: disable=g-import-not-at-top
  from alexnet_jax import models  # pylint: disable=g-import-not-at-top
  run_dir = os.path.abspath(run_dir)
  try:
    checkpoints = checkpoint_params.find_checkpoints(run_dir)
    if step is not None:
      found = dict((s, d) for d, s in checkpoints)
      if step not in found:
        raise RunError(f'{run_dir} has no checkpoint at step {step} (it has '
                       f'steps {sorted(s for _, s in checkpoints)}).')
      params, step = checkpoint_params.restore_orbax_params(found[step])
    else:
      params, step = checkpoint_params.restore_orbax_params(run_dir)
  except (checkpoint_params.CheckpointNotFoundError,
          checkpoint_params.CheckpointUnreadableError) as e:
    raise RunError(str(e)) from None
  path = workdir_lib.record_path(run_dir, 'config', step)
  if path is None:
    raise RunError(f'{run_dir} holds no config.json: is it the workdir of a '
                   f'training run?')
  try:
    config = ml_collections.ConfigDict(workdir_lib.read_config(path))
    model = models.model_from_config(config)
    evaluate.check_params_fit(params, model, config.image_size)
  except (OSError, ValueError) as e:  # ConversionError is a ValueError.
    raise RunError(f'{path}: {e}') from None
  return config, {'params': params}, step, _class_names(run_dir, step,
                                                        config)


def _class_names(run_dir: str, step: int, config) -> list[str]:
  """The recorded names, else the class indices."""
  path = workdir_lib.record_path(run_dir, 'class_names', step)
  count = config.model.num_classes
  if path is not None:
    with open(path) as f:
      names = [line.strip() for line in f if line.strip()]
    if len(names) == count:
      return names
  return [str(i) for i in range(count)]


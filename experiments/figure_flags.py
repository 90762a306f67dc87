"""The flags of the commands that read a trained run (figure3, figure4): the
run, where to write, and the checkpoint's step."""

from absl import flags

RUN = flags.DEFINE_string('run', None, 'The workdir of a training run.')
WORKDIR = flags.DEFINE_string('workdir', None,
                              'Where to write the figure and its JSON.')
STEP = flags.DEFINE_integer('step', None,
                            'The checkpoint to read (default: the newest).')
flags.mark_flags_as_required(['run', 'workdir'])

"""The ``slurm`` compute target type: run a sweep's cells as SLURM jobs.

A compute file such as::

    type: slurm
    partition: gpu
    sbatchArguments: ["--gres=gpu:1", "--mem=8G", "--time=02:00:00"]
    workspace: ~/.amlrun/slurm        # on the cluster's shared filesystem
    maxParallel: 200                  # cells in the queue at once

runs each cell as a task of a job array (one ``sbatch`` per batch of cells dispatched
together), from the login node itself, or through it over SSH when ``address``,
``username`` and ``privateKeyFile``/``password`` are set. See the README's SLURM section.

Registered through the ``amlrun`` entry-point group, exactly as any third-party plugin.
"""

from __future__ import annotations

from amlrun.hookspec import hookimpl

__version__ = "0.1.0"


@hookimpl
def amlrun_register_targets():
    return {"slurm": "amlrun_slurm.target:SlurmTarget"}  # imported when a slurm target is made

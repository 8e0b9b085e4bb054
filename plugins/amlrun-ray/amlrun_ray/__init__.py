"""The ``ray`` compute target type: each cell of a sweep is one job on a Ray cluster.

A compute file such as::

    type: ray
    address: http://127.0.0.1:8265
    maxParallel: 4
    resources: {num_cpus: 1}

submits every cell to that cluster's job server. Registered through the ``amlrun``
entry-point group, exactly as any third-party plugin. Importing this package imports
nothing heavy: the target module is loaded when a ``ray`` target is made.
"""

from __future__ import annotations

from amlrun.hookspec import hookimpl

__version__ = "0.1.0"


@hookimpl
def amlrun_register_targets():
    return {"ray": "amlrun_ray.target:RayTarget"}  # imported when a ray target is made

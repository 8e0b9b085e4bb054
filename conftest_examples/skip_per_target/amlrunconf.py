"""Skip cells per target: experiments marked ``gpu`` run only on targets with a GPU.

``amlrun_collection_modifyitems`` gets the selected cells and may replace entries; a
``skip`` mark reports the cell as skipped with its reason instead of running it.
A target "has a GPU" here when its compute file says ``nvidiaDocker: true``.
"""

from amlrun.hookspec import hookimpl
from amlrun.matrix import Mark


@hookimpl
def amlrun_collection_modifyitems(session, config, items):
    for index, cell in enumerate(items):
        if "gpu" not in cell.mark_names():
            continue
        compute = session.targets[cell.target].compute
        if not compute.flag("nvidiaDocker"):
            items[index] = cell.with_mark(Mark("skip", reason=f"needs a GPU; target '{cell.target}' has none"))

"""Parameter sets from a YAML file next to the experiments, instead of in each script.

``amlrun_generate_params`` returns a list of ``{name: value}`` dicts; amlrun adds them
after whatever the script declares in ``AMLRUN_PARAMS`` and makes one cell per set.
"""

import itertools
from pathlib import Path

import yaml

from amlrun.errors import ConfigError
from amlrun.hookspec import hookimpl

GRID_FILE = Path(__file__).with_name("grid.yml")


@hookimpl
def amlrun_generate_params(experiment, config):
    data = yaml.safe_load(GRID_FILE.read_text(encoding="utf-8")) or {}
    grid = data.get("grid") or {}
    if not all(isinstance(v, list) for v in grid.values()):
        raise ConfigError("every entry of 'grid' must be a list of values", GRID_FILE.name)
    names = list(grid)
    sets = [dict(zip(names, combo)) for combo in itertools.product(*(grid[n] for n in names))] if names else []
    sets += [dict(entry) for entry in data.get("extra") or []]
    return sets

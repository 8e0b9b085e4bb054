"""A sweep whose accuracy peaks at depth 4."""
AMLRUN_PARAMS = {"depth": [2, 4, 8]}

import argparse

from amlrun_client import log

parser = argparse.ArgumentParser()
parser.add_argument("--depth", type=int)
depth = parser.parse_args().depth
log("accuracy", round(1 - abs(depth - 4) / 10, 3))
log("depth", depth)

"""An evaluation with a sweep. A threshold above 0.95 fails (try: amlrun -p threshold=0.5,0.99)
so the report shows both outcomes."""

AMLRUN_PARAMS = {"threshold": [0.3, 0.5, 0.9]}

import argparse
import sys

from amlrun_client import log

parser = argparse.ArgumentParser()
parser.add_argument("--threshold", type=float)
args = parser.parse_args()

precision = round(0.5 + args.threshold / 2, 3)
log("precision", precision)
if args.threshold > 0.95:
    print("threshold too strict: no positives left", file=sys.stderr)
    sys.exit(1)

"""A stand-in training script: its parameters come from grid.yml via amlrunconf.py."""

import argparse

from amlrun_client import log

parser = argparse.ArgumentParser()
parser.add_argument("--optimizer", required=True)
parser.add_argument("--lr", type=float, required=True)
args = parser.parse_args()

speed = {"sgd": 1.0, "adam": 2.0, "lbfgs": 3.0}[args.optimizer]
log("score", round(speed * args.lr, 4))
print(f"trained with {args.optimizer} at lr={args.lr}")

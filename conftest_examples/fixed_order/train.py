"""A small sweep; its cells run one after another, after prepare.py."""
AMLRUN_PARAMS = {"lr": [0.1, 0.01]}

import argparse

parser = argparse.ArgumentParser()
parser.add_argument("--lr", type=float)
print("training with lr", parser.parse_args().lr)

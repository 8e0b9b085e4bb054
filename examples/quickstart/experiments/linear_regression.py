"""Fit y = w*x + b by gradient descent on synthetic data (standard library only).

amlrun reads AMLRUN_PARAMS without importing this file and runs one cell per
combination: 2 learning rates x 2 epoch counts = 4 cells per target.
"""

AMLRUN_PARAMS = {"lr": [0.05, 0.2], "epochs": [10, 40]}

import argparse
import json
import os
import random

from amlrun_client import log  # on every run's import path; nothing to install


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args()

    rng = random.Random(int(os.environ.get("AMLRUN_SEED", "0")))
    xs = [rng.uniform(-1.0, 1.0) for _ in range(200)]
    data = [(x, 3.0 * x + 0.5 + rng.gauss(0.0, 0.1)) for x in xs]

    w = b = 0.0
    for epoch in range(args.epochs):
        grad_w = sum((w * x + b - y) * x for x, y in data) * 2 / len(data)
        grad_b = sum((w * x + b - y) for x, y in data) * 2 / len(data)
        w -= args.lr * grad_w
        b -= args.lr * grad_b
        mse = sum((w * x + b - y) ** 2 for x, y in data) / len(data)
        log("mse", round(mse, 6), step=epoch)          # a series: one value per step
    log("final_mse", round(mse, 6))                    # the headline number
    print(os.environ.get("QUICKSTART_GREETING", "(not run by amlrun)"))
    print(f"run {os.environ.get('AMLRUN_RUN_ID')}: w={w:.3f} b={b:.3f}")

    os.makedirs("outputs", exist_ok=True)              # outputs/ is kept in the run history
    with open(os.path.join("outputs", "model.json"), "w") as fh:
        json.dump({"w": w, "b": b, "lr": args.lr, "epochs": args.epochs}, fh, indent=2)


if __name__ == "__main__":
    main()

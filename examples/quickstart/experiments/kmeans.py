"""k-means on three synthetic blobs (standard library only); one cell per k."""

AMLRUN_PARAMS = {"k": [2, 3, 4]}

import argparse
import json
import math
import os
import random

from amlrun_client import log


def kmeans(points, k, rng, iterations=20):
    centroids = [rng.choice(points)]
    while len(centroids) < k:  # farthest-point start: one centroid per blob when k allows
        centroids.append(max(points, key=lambda p: min(math.dist(p, c) for c in centroids)))
    for _ in range(iterations):
        clusters = [[] for _ in range(k)]
        for p in points:
            nearest = min(range(k), key=lambda i: math.dist(p, centroids[i]))
            clusters[nearest].append(p)
        centroids = [
            tuple(sum(c) / len(cluster) for c in zip(*cluster)) if cluster else centroids[i]
            for i, cluster in enumerate(clusters)
        ]
    inertia = sum(min(math.dist(p, c) ** 2 for c in centroids) for p in points)
    return centroids, inertia


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--k", type=int, default=3)
    args = parser.parse_args()

    rng = random.Random(int(os.environ.get("AMLRUN_SEED", "0")))
    centers = [(0.0, 0.0), (5.0, 5.0), (0.0, 6.0)]
    points = [(cx + rng.gauss(0, 0.8), cy + rng.gauss(0, 0.8)) for cx, cy in centers for _ in range(60)]

    centroids, inertia = kmeans(points, args.k, rng)
    log("inertia", round(inertia, 4))
    log("k", args.k)
    print(f"k={args.k} inertia={inertia:.2f}")

    os.makedirs("outputs", exist_ok=True)
    with open(os.path.join("outputs", "centroids.json"), "w") as fh:
        json.dump([list(c) for c in centroids], fh, indent=2)


if __name__ == "__main__":
    main()

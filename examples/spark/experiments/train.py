"""Logistic regression with pyspark.ml on data/machines.csv: is a machine faulty?

One cell per regularisation strength; logs the test accuracy and saves the fitted
pipeline under outputs/model (Spark's own format, reload with PipelineModel.load).
"""

AMLRUN_PARAMS = {"reg": [0.0, 1.0]}

import argparse
import csv
import json
import os

from pyspark.ml import Pipeline
from pyspark.ml.classification import LogisticRegression
from pyspark.ml.evaluation import MulticlassClassificationEvaluator
from pyspark.ml.feature import StandardScaler, VectorAssembler
from pyspark.sql import SparkSession

from amlrun_client import log

FEATURES = ["temperature", "vibration", "rpm"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reg", type=float, default=0.01)
    args = parser.parse_args()
    seed = int(os.environ.get("AMLRUN_SEED", "0"))

    spark = SparkSession.builder.appName("machines-logreg").getOrCreate()
    # The CSV ships with the project snapshot, which only the driver sees; read it here
    # and hand the rows to Spark (a big data set would live on HDFS/S3 instead).
    with open("data/machines.csv", newline="") as fh:
        rows = [tuple(float(r[c]) for c in FEATURES) + (int(r["faulty"]),) for r in csv.DictReader(fh)]
    data = spark.createDataFrame(rows, FEATURES + ["label"])
    train, test = data.randomSplit([0.75, 0.25], seed=seed)

    pipeline = Pipeline(stages=[
        VectorAssembler(inputCols=FEATURES, outputCol="raw"),
        StandardScaler(inputCol="raw", outputCol="features"),
        LogisticRegression(regParam=args.reg, maxIter=20),
    ])
    model = pipeline.fit(train)
    accuracy = MulticlassClassificationEvaluator(metricName="accuracy").evaluate(model.transform(test))
    log("accuracy", accuracy)
    log("train_rows", train.count())

    os.makedirs("outputs", exist_ok=True)
    model.write().overwrite().save(os.path.abspath("outputs/model"))
    with open("outputs/summary.json", "w") as fh:
        json.dump({"reg": args.reg, "accuracy": accuracy, "app_id": spark.sparkContext.applicationId}, fh)
    print(f"reg={args.reg} accuracy={accuracy:.3f}")
    spark.stop()


if __name__ == "__main__":
    main()

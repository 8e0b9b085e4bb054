# Please make sure the script runs in the project's root folder (the working directory
# of every Workbench and amlrun run is a copy of the project).
#
# Written in the style of Workbench's classic Iris sample, with the scikit-learn model
# replaced by a nearest-centroid classifier so that it runs on the standard library.

import os
import pickle
import random
import sys

from azureml.logging import get_azureml_logger

# initialize the logger
run_logger = get_azureml_logger()

# a third of the Iris data set: sepal length, sepal width, petal length, petal width, species
IRIS = [
    (5.1, 3.5, 1.4, 0.2, "Iris-setosa"), (4.9, 3.0, 1.4, 0.2, "Iris-setosa"),
    (4.7, 3.2, 1.3, 0.2, "Iris-setosa"), (4.6, 3.1, 1.5, 0.2, "Iris-setosa"),
    (5.0, 3.6, 1.4, 0.2, "Iris-setosa"), (5.4, 3.9, 1.7, 0.4, "Iris-setosa"),
    (4.6, 3.4, 1.4, 0.3, "Iris-setosa"), (5.0, 3.4, 1.5, 0.2, "Iris-setosa"),
    (4.4, 2.9, 1.4, 0.2, "Iris-setosa"), (4.9, 3.1, 1.5, 0.1, "Iris-setosa"),
    (5.4, 3.7, 1.5, 0.2, "Iris-setosa"), (4.8, 3.4, 1.6, 0.2, "Iris-setosa"),
    (4.8, 3.0, 1.4, 0.1, "Iris-setosa"), (4.3, 3.0, 1.1, 0.1, "Iris-setosa"),
    (5.8, 4.0, 1.2, 0.2, "Iris-setosa"), (5.7, 4.4, 1.5, 0.4, "Iris-setosa"),
    (7.0, 3.2, 4.7, 1.4, "Iris-versicolor"), (6.4, 3.2, 4.5, 1.5, "Iris-versicolor"),
    (6.9, 3.1, 4.9, 1.5, "Iris-versicolor"), (5.5, 2.3, 4.0, 1.3, "Iris-versicolor"),
    (6.5, 2.8, 4.6, 1.5, "Iris-versicolor"), (5.7, 2.8, 4.5, 1.3, "Iris-versicolor"),
    (6.3, 3.3, 4.7, 1.6, "Iris-versicolor"), (4.9, 2.4, 3.3, 1.0, "Iris-versicolor"),
    (6.6, 2.9, 4.6, 1.3, "Iris-versicolor"), (5.2, 2.7, 3.9, 1.4, "Iris-versicolor"),
    (5.0, 2.0, 3.5, 1.0, "Iris-versicolor"), (5.9, 3.0, 4.2, 1.5, "Iris-versicolor"),
    (6.0, 2.2, 4.0, 1.0, "Iris-versicolor"), (6.1, 2.9, 4.7, 1.4, "Iris-versicolor"),
    (5.6, 2.9, 3.6, 1.3, "Iris-versicolor"), (6.7, 3.1, 4.4, 1.4, "Iris-versicolor"),
    (6.3, 3.3, 6.0, 2.5, "Iris-virginica"), (5.8, 2.7, 5.1, 1.9, "Iris-virginica"),
    (7.1, 3.0, 5.9, 2.1, "Iris-virginica"), (6.3, 2.9, 5.6, 1.8, "Iris-virginica"),
    (6.5, 3.0, 5.8, 2.2, "Iris-virginica"), (7.6, 3.0, 6.6, 2.1, "Iris-virginica"),
    (4.9, 2.5, 4.5, 1.7, "Iris-virginica"), (7.3, 2.9, 6.3, 1.8, "Iris-virginica"),
    (6.7, 2.5, 5.8, 1.8, "Iris-virginica"), (7.2, 3.6, 6.1, 2.5, "Iris-virginica"),
    (6.5, 3.2, 5.1, 2.0, "Iris-virginica"), (6.4, 2.7, 5.3, 1.9, "Iris-virginica"),
    (6.8, 3.0, 5.5, 2.1, "Iris-virginica"), (5.7, 2.5, 5.0, 2.0, "Iris-virginica"),
    (5.8, 2.8, 5.1, 2.4, "Iris-virginica"), (6.4, 3.2, 5.3, 2.3, "Iris-virginica"),
]

print("Python version: {}".format(sys.version))
print("EXAMPLE_ENV_VAR = {}".format(os.environ.get("EXAMPLE_ENV_VAR")))

# change regularization rate and you will likely get a different accuracy.
reg = 0.01
# load regularization rate from argument if present (Workbench passed it positionally;
# amlrun passes a parameter given with -p reg=... as "--reg VALUE")
args = sys.argv[1:]
if args[:1] == ["--reg"] and len(args) > 1:
    reg = float(args[1])
elif args:
    reg = float(args[0])
print("Regularization rate is {}".format(reg))
run_logger.log("Regularization Rate", reg)

# split the data into a training and a test set
rng = random.Random(0)
rows = IRIS[:]
rng.shuffle(rows)
train, test = rows[:34], rows[34:]

# a nearest-centroid classifier; reg shrinks the centroids towards the overall mean
labels = sorted({r[4] for r in train})
overall = [sum(r[i] for r in train) / len(train) for i in range(4)]
model = {}
for label in labels:
    members = [r for r in train if r[4] == label]
    centroid = [sum(r[i] for r in members) / len(members) for i in range(4)]
    model[label] = [(1 - reg) * c + reg * o for c, o in zip(centroid, overall)]


def predict(row):
    return min(model, key=lambda label: sum((a - b) ** 2 for a, b in zip(row[:4], model[label])))


accuracy = sum(predict(r) == r[4] for r in test) / len(test)
print("Accuracy is {}".format(accuracy))
run_logger.log("Accuracy", accuracy)

# serialize the model on disk in the special 'outputs' folder
print("Export the model to model.pkl")
os.makedirs("./outputs", exist_ok=True)
with open("./outputs/model.pkl", "wb") as f:
    pickle.dump(model, f)

# the shared folder survives runs (nativeSharedDirectory in the compute file)
share = os.environ.get("AZUREML_NATIVE_SHARE_DIRECTORY")
if share:
    with open(os.path.join(share, "runs.txt"), "a") as f:
        f.write("{} {}\n".format(os.environ.get("AMLRUN_RUN_ID"), accuracy))

"""amlrun-mlflow: every finished amlrun run becomes an MLflow run (see :mod:`amlrun_mlflow.plugin`)."""

"""Azure ML Workbench's ``azureml.logging`` for scripts written for Workbench.

``from azureml.logging import get_azureml_logger`` works unchanged and records
metrics in amlrun's history. ``azureml`` here is a namespace-package portion (no
``__init__.py``), so a real Azure ML SDK installed in the environment, which ships a
regular ``azureml`` package, takes precedence.
"""

import amlrun_client


class AzureMLLogger:
    def log(self, name, value, step=None):
        amlrun_client.log(name, value, step=step)
        return self


def get_azureml_logger():
    return AzureMLLogger()

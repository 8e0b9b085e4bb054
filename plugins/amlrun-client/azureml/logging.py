"""Azure ML Workbench's ``azureml.logging`` for scripts written for Workbench.

``from azureml.logging import get_azureml_logger`` works unchanged and records
metrics in amlrun's history. ``azureml`` here is a namespace-package portion (no
``__init__.py``), so a real Azure ML SDK installed in the environment, which ships a
regular ``azureml`` package, takes precedence.
"""

import amlrun_client


class AzureMLLogger:
    """Workbench's run logger; every call goes to :mod:`amlrun_client` (outside a run: printed)."""

    def log(self, name, value, step=None):
        amlrun_client.log(name, value, step=step)
        return self

    def log_list(self, name, values):
        amlrun_client.log_list(name, values)
        return self

    def log_row(self, name, **columns):
        amlrun_client.log_row(name, **columns)
        return self

    def tag(self, name, value=""):
        amlrun_client.tag(name, value)
        return self


def get_azureml_logger():
    return AzureMLLogger()

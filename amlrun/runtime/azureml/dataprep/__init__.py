"""Azure ML Workbench's ``azureml.dataprep`` for scripts written for Workbench.

``from azureml.dataprep.package import run`` executes a Workbench Data Prep package
(``.dprep``) or data source (``.dsource``) whose data are local files, and returns a
pandas DataFrame. Standard library only at import: pandas is imported by ``run``, so it
is the script's dependency (its ``conda_dependencies.yml``), not amlrun's.
"""

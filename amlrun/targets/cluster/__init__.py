"""The ``cluster`` target family: the target (:mod:`.target`) and spark-submit, the
driver's log and a standalone master's UI (:mod:`.spark`), and ``Framework: PySpark`` with a local master
for the local and docker targets (:mod:`.localmaster`)."""

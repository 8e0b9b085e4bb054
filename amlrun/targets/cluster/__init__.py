"""The ``cluster`` target family: the target (:mod:`.target`) and spark-submit, the
driver's log and a standalone master's UI (:mod:`.spark`)."""

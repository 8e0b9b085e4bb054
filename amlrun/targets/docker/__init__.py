"""The ``docker`` target family: the target (:mod:`.target`), environment images
(:mod:`.image`), ``dockerRunArguments`` (:mod:`.runargs`), container ownership and orphan
sweeping (:mod:`.owners`) and tar streams in and out of containers (:mod:`.archive`)."""

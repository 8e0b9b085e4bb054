"""Plumbing of every target reached over SSH: the connection (:mod:`.connection`), detached
runs that survive the network (:mod:`.detached`), incremental transfer (:mod:`.transfer`),
a relayed socket (:mod:`.relay`) and what the targets share on the host (:mod:`.host`)."""

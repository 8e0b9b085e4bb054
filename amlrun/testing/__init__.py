"""The conformance kit for compute targets, built-in or third-party.

::

    from amlrun.testing import TargetConformance

    class TestMyTarget(TargetConformance):
        target_name = "mytarget"
        unsupported = {"process_listing": "a cluster node's processes are not visible"}

        @pytest.fixture
        def target_files(self):
            return {"aml_config/mytarget.compute": "type: mytype\\n"}

Every ``test_*`` method of :class:`TargetConformance` checks one promise of the run
contract (:data:`CHECKS`) against the real target; a failure names the broken promise.
The pytest plugin (entry point ``pytest11``) marks the kit's tests ``amlrun_conformance``
and lists the checks each target declared unsupported at the end of the session.
"""

from amlrun.testing.conformance import CHECKS, TargetConformance
from amlrun.testing.runner import KitRun, KitSession, local_processes

__all__ = ["CHECKS", "KitRun", "KitSession", "TargetConformance", "local_processes"]

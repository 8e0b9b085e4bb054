"""The ``--html`` session report (see :mod:`amlrun.report_html.page`)."""

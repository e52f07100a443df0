"""The retail dashboard load: ``locust -f loadtests/locustfile.py`` (web UI) or with
``--headless``.

The scenario comes from ``RESLAB_SCENARIO`` (a file, a catalog name such as
``postgres-outage``, or a profile such as ``ramp``; default ``baseline``: the default retail
mix at 200 req/s), the API key from ``RESLAB_API_KEY`` or the ``staging.json`` named by
``RESLAB_STAGING``, the host from ``--host`` or that same file. Every request is recorded
raw into a run folder (``RESLAB_RUN_DIR``, default ``runs/<scenario>-<stamp>/``); the other
variables are in `loadtests.config`. The shape ends the test by itself.

    RESLAB_STAGING=.staging RESLAB_SCENARIO=ramp locust -f loadtests/locustfile.py --headless

Distributed: ``--master`` here and ``--worker --master-host <this machine>`` on each worker
machine (see `loadtests.runner`). Import this file from nothing but Locust.
"""

from loadtests.locust_users import ClosedRetailUser, OpenLoopUser, ScenarioShape

__all__ = ["ClosedRetailUser", "OpenLoopUser", "ScenarioShape"]

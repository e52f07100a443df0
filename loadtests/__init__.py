"""Load for the real engine: Locust, an open-loop generator, and raw recording of every
request into the run-folder schema.

- `loadtests.runner` — `run_load` / `start_load`: Locust headless in subprocesses (one
  process, or a master and N workers), with a deadline; returns a `LoadResult`.
- `loadtests.locustfile` — for ``locust -f loadtests/locustfile.py`` (web UI or headless).
- `loadtests.locust_users` — the Locust classes (users, shapes, event listeners); imported
  by locustfiles only, because importing Locust patches the process with gevent.
- `loadtests.openloop` — the arrival schedule (seeded non-homogeneous Poisson), the send
  loop and the lateness account.
- `loadtests.shapes` — the target rate over time and the shapes' logic; the seed's profiles.
- `loadtests.requests_mix` — the request of each of the 16 features.
- `loadtests.recording` — outcomes, part files, the merge into ``requests.parquet``.
- `loadtests.plan`, `loadtests.config` — the plan shared by all processes; the environment.

Nothing in this package but `loadtests.locust_users` (and the locustfile) imports Locust.
"""

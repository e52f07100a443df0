"""A SimPy model of the engine under load and faults, driving the same policy core.

- `run_simulation(scenario, replications, jobs, policy_path, calibration_path, out_dir)`
  runs the replications and writes a run folder (``source: predicted``);
- `format_summary(summary)` renders its summary.json for a terminal;
- `sim.calibrate.calibrate_run(run_dir)` fits the model's parameters to a measured run.
"""

from sim.formatting import format_summary
from sim.replications import run_simulation

__all__ = ["format_summary", "run_simulation"]

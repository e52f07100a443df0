"""Scenarios: the schema of an experiment and the catalog of shipped scenario files.

>>> from scenarios import load_scenario, list_catalog
>>> scenario = load_scenario(list_catalog()[0])

The catalog is the ``*.yaml`` files beside this module; `catalog_dir` and `list_catalog`
find them, and `resolve_scenario_path` accepts a catalog name as well as a path.
"""

from scenarios.loader import (
    Problem,
    ScenarioError,
    catalog_dir,
    list_catalog,
    load_scenario,
    load_scenario_text,
    parse_scenario,
    resolve_scenario_path,
    scenario_hash,
    validate_files,
)
from scenarios.schema import (
    DEFAULT_MIX,
    FEATURE_NAMES,
    TOXIC_ATTRIBUTES,
    TOXICS,
    Abort,
    ClosedLoad,
    Fault,
    FaultBase,
    Load,
    OpenLoad,
    RatePiece,
    Scenario,
    Slo,
    Tolerance,
    WaitRange,
    format_duration,
    parse_duration,
)

__all__ = [
    "DEFAULT_MIX",
    "FEATURE_NAMES",
    "TOXICS",
    "TOXIC_ATTRIBUTES",
    "Abort",
    "ClosedLoad",
    "Fault",
    "FaultBase",
    "Load",
    "OpenLoad",
    "Problem",
    "RatePiece",
    "Scenario",
    "ScenarioError",
    "Slo",
    "Tolerance",
    "WaitRange",
    "catalog_dir",
    "format_duration",
    "list_catalog",
    "load_scenario",
    "load_scenario_text",
    "parse_duration",
    "parse_scenario",
    "resolve_scenario_path",
    "scenario_hash",
    "validate_files",
]

"""Shared fixtures.

Servers for the staging, Toxiproxy and LLM stub tests live in tests/fixtures_staging.py;
the engine and its dependency stack in tests/fixtures_engine.py; a whole staging stack
with the engine on a fast policy, for campaigns, in tests/fixtures_campaign.py.
"""

pytest_plugins = [
    "tests.fixtures_staging",
    "tests.fixtures_engine",
    "tests.fixtures_campaign",
]

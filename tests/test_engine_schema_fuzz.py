"""Schemathesis generates requests from the engine's own OpenAPI schema, valid and
invalid: whatever the input, the engine answers without a server error.

The operations are driven from one test with Hypothesis directly, not through
schemathesis' pytest plugin: the schema's URL is only known once the engine fixture has
started, and the plugin's lazy fixture loading does not support this pytest.
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from tests.fixtures_engine import EngineServer

pytestmark = pytest.mark.integration

EXAMPLES = {GenerationMode.POSITIVE: 10, GenerationMode.NEGATIVE: 6}


@pytest.mark.parametrize("mode", list(EXAMPLES), ids=lambda mode: mode.value)
def test_no_generated_request_gets_a_server_error(
    engine: EngineServer, mode: GenerationMode
) -> None:
    schema = schemathesis.openapi.from_url(f"{engine.url}/openapi.json")
    failures: list[str] = []
    tested = 0
    for result in schema.get_all_operations():
        operation = result.ok()  # type: ignore[union-attr]  # an invalid schema raises here
        tested += 1

        # The ordinary API key: the admin endpoints then answer 403, so the fuzzing
        # cannot force a breaker open and turn the rest of the run into 503s.
        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=EXAMPLES[mode],
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def call(case: schemathesis.Case[Any]) -> None:
            case.call_and_validate(
                base_url=engine.url,
                headers={"X-API-Key": engine.api_key},
                checks=[not_a_server_error],
            )

        try:
            call()
        except Unsatisfiable:
            continue  # no input of this operation can be made invalid (no parameters)
        except Exception as exc:  # collect every operation's failure, not just the first
            failures.append(f"{operation.label}: {exc}")
    assert tested >= 16
    assert not failures, "\n\n".join(failures)

"""The retail dashboard API over PostgreSQL, Redis, S3 and an LLM, protected by the policy core.

`python -m engine.service` serves it on RESLAB_HOST:RESLAB_PORT (settings.py). The modules,
one concern each:

- app.py: `create_app(settings)`, the composition root and its lifespan.
- guard.py: every dependency call through the policy: acquire, bounded call, record.
- db.py, migrations.py, seed.py: PostgreSQL pool, schema, deterministic seed data.
- cache.py, storage.py, llm.py: Redis, S3 and the OpenAI-compatible client.
- features.py, routes_*.py: the 16 features' handlers and their fallbacks (POLICY.md).
- idempotency.py: writes acknowledged after commit and safe to retry.
- resilience_routes.py, event_log.py, flags_file.py: health, status, events, operator controls.
- metrics.py, middleware.py, trace.py: Prometheus metrics, X-Served-By and Server-Timing.
- security.py, settings.py: keys, rate limit, body limit, headers; configuration.
- memo.py: single flight for the heavy aggregates.
- llm_stub.py: the OpenAI-compatible stub that staging runs in place of a real LLM.
"""

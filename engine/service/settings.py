"""The service's settings, read once from the environment.

Secrets (the database DSN, API keys, the admin key, the LLM key) are kept out of `repr`,
so that logging a `Settings` never prints them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path


class SettingsError(ValueError):
    """An environment variable that cannot be used; the message names it."""


def _text(env: Mapping[str, str], name: str, default: str) -> str:
    value = env.get(name, "").strip()
    return value or default


def _integer(env: Mapping[str, str], name: str, default: int, minimum: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}: must be a whole number (got {raw!r})") from None
    if value < minimum:
        raise SettingsError(f"{name}: must be >= {minimum} (got {value})")
    return value


def _number(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name}: must be a number (got {raw!r})") from None
    if not value > 0:
        raise SettingsError(f"{name}: must be > 0 (got {raw})")
    return value


def _items(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in env.get(name, "").split(",") if item.strip())


def _optional_path(env: Mapping[str, str], name: str) -> Path | None:
    raw = env.get(name, "").strip()
    return Path(raw) if raw else None


@dataclass(frozen=True, slots=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8000
    pg_dsn: str = field(default="postgresql://reslab@127.0.0.1:5432/reslab", repr=False)
    redis_url: str = field(default="redis://127.0.0.1:6379/0", repr=False)
    s3_endpoint: str = "http://127.0.0.1:5000"
    s3_bucket: str = "reslab"
    s3_region: str = "us-east-1"
    aws_access_key_id: str = field(default="testing", repr=False)
    aws_secret_access_key: str = field(default="testing", repr=False)
    llm_base_url: str = "http://127.0.0.1:8081/v1"
    llm_api_key: str = field(default="not-a-real-key", repr=False)
    llm_model: str = "gpt-4o-mini"
    api_keys: tuple[str, ...] = field(default=(), repr=False)
    admin_key: str = field(default="", repr=False)
    policy_path: Path | None = None
    flags_file: Path | None = None
    cors_origins: tuple[str, ...] = ()
    # Per key. Generous enough for one load-testing client at the staging rates (500 req/s);
    # set RESLAB_RATE_LIMIT_RPS lower where keys belong to ordinary clients.
    rate_limit_rps: float = 1000.0
    rate_limit_burst: int = 2000
    max_body_bytes: int = 2 * 1024 * 1024
    # Number of SKUs the seed generates on an empty database (the product floor is 10,000).
    seed_skus: int = 10_000
    log_level: str = "info"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read every `RESLAB_*` variable (and boto3's `AWS_*`); unset ones keep the default."""
        env = os.environ if env is None else env
        defaults = cls()
        api_keys = _items(env, "RESLAB_API_KEYS")
        admin_key = _text(env, "RESLAB_ADMIN_KEY", "")
        if not api_keys and not admin_key:
            raise SettingsError(
                "RESLAB_API_KEYS: at least one API key (or RESLAB_ADMIN_KEY) is required"
            )
        return cls(
            host=_text(env, "RESLAB_HOST", defaults.host),
            port=_integer(env, "RESLAB_PORT", defaults.port, minimum=0),
            pg_dsn=_text(env, "RESLAB_PG_DSN", defaults.pg_dsn),
            redis_url=_text(env, "RESLAB_REDIS_URL", defaults.redis_url),
            s3_endpoint=_text(env, "RESLAB_S3_ENDPOINT", defaults.s3_endpoint),
            s3_bucket=_text(env, "RESLAB_S3_BUCKET", defaults.s3_bucket),
            s3_region=_text(env, "AWS_DEFAULT_REGION", defaults.s3_region),
            aws_access_key_id=_text(env, "AWS_ACCESS_KEY_ID", defaults.aws_access_key_id),
            aws_secret_access_key=_text(
                env, "AWS_SECRET_ACCESS_KEY", defaults.aws_secret_access_key
            ),
            llm_base_url=_text(env, "RESLAB_LLM_BASE_URL", defaults.llm_base_url),
            llm_api_key=_text(env, "RESLAB_LLM_API_KEY", defaults.llm_api_key),
            llm_model=_text(env, "RESLAB_LLM_MODEL", defaults.llm_model),
            api_keys=api_keys,
            admin_key=admin_key,
            policy_path=_optional_path(env, "RESLAB_POLICY"),
            flags_file=_optional_path(env, "RESLAB_FLAGS_FILE"),
            cors_origins=_items(env, "RESLAB_CORS_ORIGINS"),
            rate_limit_rps=_number(env, "RESLAB_RATE_LIMIT_RPS", defaults.rate_limit_rps),
            rate_limit_burst=_integer(
                env, "RESLAB_RATE_LIMIT_BURST", defaults.rate_limit_burst, minimum=1
            ),
            max_body_bytes=_integer(
                env, "RESLAB_MAX_BODY_BYTES", defaults.max_body_bytes, minimum=1024
            ),
            seed_skus=_integer(env, "RESLAB_SEED_SKUS", defaults.seed_skus, minimum=1),
            log_level=_text(env, "RESLAB_LOG_LEVEL", defaults.log_level).lower(),
        )

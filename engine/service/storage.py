"""The S3-compatible object store, through boto3 on a thread pool of its own.

boto3 is synchronous; its calls run on a dedicated executor as large as the policy's S3
connection pool, so a slow S3 cannot take the threads that the rest of the process uses.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from engine.policy import Outcome
from engine.service.guard import CallerError, NotFound

T = TypeVar("T")


class ObjectNotFound(NotFound):
    pass


@dataclass(frozen=True, slots=True)
class StoredObject:
    body: bytes
    content_type: str


def _status_of(exc: ClientError) -> int:
    metadata = exc.response.get("ResponseMetadata", {})
    return int(metadata.get("HTTPStatusCode", 0) or 0)


def classify_error(exc: BaseException) -> Outcome:
    """A 4xx other than 429 (a missing key, a bad request) is the caller's; else a failure."""
    if isinstance(exc, CallerError):
        return Outcome.IGNORED
    if isinstance(exc, ClientError):
        status = _status_of(exc)
        if 400 <= status < 500 and status != 429:
            return Outcome.IGNORED
    return Outcome.FAILURE


class ObjectStore:
    def __init__(
        self,
        endpoint_url: str,
        bucket: str,
        region: str,
        access_key_id: str,
        secret_access_key: str,
        pool_size: int,
        call_timeout_s: float,
    ) -> None:
        self.bucket = bucket
        self._executor = ThreadPoolExecutor(max_workers=pool_size, thread_name_prefix="s3")
        self._client: Any = boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region,
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            config=Config(
                connect_timeout=call_timeout_s,
                read_timeout=call_timeout_s,
                # One attempt: the breaker, not botocore, decides about retrying.
                retries={"total_max_attempts": 1, "mode": "standard"},
                max_pool_connections=pool_size,
                s3={"addressing_style": "path"},
            ),
        )

    async def _run(self, function: Callable[..., T], /, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(function, **kwargs))

    async def ensure_bucket(self) -> None:
        try:
            await self._run(self._client.head_bucket, Bucket=self.bucket)
        except ClientError as exc:
            if _status_of(exc) != 404:
                raise
            await self._run(self._client.create_bucket, Bucket=self.bucket)

    async def put(self, key: str, body: bytes, content_type: str) -> None:
        await self._run(
            self._client.put_object,
            Bucket=self.bucket,
            Key=key,
            Body=body,
            ContentType=content_type,
        )

    async def get(self, key: str) -> StoredObject:
        try:
            return await self._run(self._get_blocking, key=key)
        except ClientError as exc:
            if _status_of(exc) == 404:
                raise ObjectNotFound(f"no object {key!r}") from exc
            raise

    def _get_blocking(self, key: str) -> StoredObject:
        # The request and the read of its body in one trip to the executor, not two.
        response = self._client.get_object(Bucket=self.bucket, Key=key)
        data: bytes = response["Body"].read()
        return StoredObject(data, str(response.get("ContentType") or "application/octet-stream"))

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

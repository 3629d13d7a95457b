"""File storage for resumes: a local directory by default; S3-compatible or Cloudinary in prod."""

import asyncio
import contextlib
import hashlib
import os
import re
import secrets
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any, Protocol

import aioboto3
import httpx
from aiobotocore.config import AioConfig
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    ReadTimeoutError,
)

from app.config import Settings
from app.services.circuit_breaker import BreakerRegistry, CircuitBreaker
from app.services.http_client import (
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
    call_upstream,
)

_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,511}$")
# Local uploads: readable and writable by the service user only.
_FILE_MODE = 0o600
_DIR_MODE = 0o700


class StorageNotFound(Exception):
    """No object is stored under the key."""


class Storage(Protocol):
    """Where uploaded files live. Keys are relative paths such as ``resumes/12/abc.pdf``."""

    async def put(self, key: str, data: bytes, content_type: str) -> None: ...

    async def get(self, key: str) -> bytes: ...

    async def delete(self, key: str) -> None: ...


def check_key(key: str) -> str:
    """Reject keys that could escape the storage root."""
    if not _KEY_RE.match(key) or ".." in key.split("/"):
        raise ValueError(f"invalid storage key: {key!r}")
    return key


class LocalStorage:
    """Files under a local directory; writes are atomic (temp file + rename).

    Uploads are personal data: files are created 0600 and directories 0700 (readable by the
    service user only), by the system calls that create them, so no moment exists in which a
    file is readable by others. The umask can only narrow these modes.
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    async def put(self, key: str, data: bytes, content_type: str) -> None:
        await asyncio.to_thread(self._write, self._path(key), data)

    async def get(self, key: str) -> bytes:
        try:
            return await asyncio.to_thread(self._path(key).read_bytes)
        except FileNotFoundError as exc:
            raise StorageNotFound(key) from exc

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self._path(key).unlink, True)

    @staticmethod
    def _write(path: Path, data: bytes) -> None:
        _make_private_dirs(path.parent)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _FILE_MODE)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            tmp.replace(path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


def _make_private_dirs(directory: Path) -> None:
    """Create `directory` and its missing parents, each with mode 0700 (mkdir -p would use the
    default mode for the parents)."""
    missing: list[Path] = []
    while not directory.is_dir():
        missing.append(directory)
        directory = directory.parent
    for each in reversed(missing):
        with contextlib.suppress(FileExistsError):  # made by a concurrent upload
            os.mkdir(each, _DIR_MODE)


class S3Storage:
    """An S3-compatible bucket (AWS S3, Supabase Storage's S3 endpoint, MinIO) via aioboto3.

    One client per process, opened on first use and closed by :meth:`close`; every call goes
    through the ``s3`` breaker within S3_TIMEOUT_SECONDS.
    """

    def __init__(self, settings: Settings, breaker: CircuitBreaker) -> None:
        if not settings.s3_bucket:
            raise ValueError("S3Storage needs S3_BUCKET")
        self._settings = settings
        self._bucket = settings.s3_bucket
        self._breaker = breaker
        self._timeout = settings.s3_timeout_seconds
        self._stack = AsyncExitStack()
        self._client: Any = None
        self._lock = asyncio.Lock()

    async def _get_client(self) -> Any:
        if self._client is None:
            async with self._lock:
                if self._client is None:
                    settings = self._settings
                    session = aioboto3.Session(
                        aws_access_key_id=_secret(settings.s3_access_key_id),
                        aws_secret_access_key=_secret(settings.s3_secret_access_key),
                        region_name=settings.aws_region,
                    )
                    config = AioConfig(
                        connect_timeout=min(3.0, self._timeout),
                        read_timeout=self._timeout,
                        # No botocore retries (their back-off sleeps up to seconds per call):
                        # the breaker handles outages, callers (or the job queue) retry.
                        retries={"max_attempts": 1, "mode": "standard"},
                        max_pool_connections=settings.http_max_connections,
                    )
                    self._client = await self._stack.enter_async_context(
                        session.client("s3", endpoint_url=settings.s3_endpoint_url, config=config)
                    )
        return self._client

    async def _call(self, operation: str, key: str, **params: Any) -> Any:
        client = await self._get_client()

        async def send() -> Any:
            async with asyncio.timeout(self._timeout):
                return await getattr(client, operation)(Bucket=self._bucket, Key=key, **params)

        try:
            return await self._breaker.call(send)
        except ClientError as exc:
            error = exc.response.get("Error", {}).get("Code", "")
            if error in ("NoSuchKey", "404", "NotFound"):
                raise StorageNotFound(key) from exc
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
            if status >= 500:
                raise UpstreamUnavailable(service=self._breaker.name) from exc
            raise UpstreamRejected(service=self._breaker.name) from exc
        except (TimeoutError, ConnectTimeoutError, ReadTimeoutError) as exc:
            raise UpstreamTimeout(service=self._breaker.name) from exc
        except BotoCoreError as exc:
            raise UpstreamUnavailable(service=self._breaker.name) from exc

    async def put(self, key: str, data: bytes, content_type: str) -> None:
        await self._call("put_object", check_key(key), Body=data, ContentType=content_type)

    async def get(self, key: str) -> bytes:
        response = await self._call("get_object", check_key(key))
        async with response["Body"] as body:
            data: bytes = await body.read()
        return data

    async def delete(self, key: str) -> None:
        await self._call("delete_object", check_key(key))

    async def close(self) -> None:
        """Close the client's connection pool (at shutdown)."""
        self._client = None
        await self._stack.aclose()


class CloudinaryStorage:
    """Cloudinary's Upload API: raw, private resources whose public_id is the key.

    Signed requests (parameters sorted, joined, API secret appended, SHA-1: Cloudinary's scheme)
    on the process's shared httpx client, through the ``cloudinary`` breaker.
    """

    def __init__(
        self, settings: Settings, client: httpx.AsyncClient, breaker: CircuitBreaker
    ) -> None:
        cloud, api_key = settings.cloudinary_cloud_name, settings.cloudinary_api_key
        if not cloud or not api_key or settings.cloudinary_api_secret is None:
            raise ValueError("CloudinaryStorage needs the cloud name, API key and API secret")
        self._api = f"{settings.cloudinary_base_url.rstrip('/')}/v1_1/{cloud}/raw"
        self._api_key = api_key
        self._api_secret = settings.cloudinary_api_secret.get_secret_value()
        self._client = client
        self._breaker = breaker
        self._timeout = settings.cloudinary_timeout_seconds

    def _signed(self, params: dict[str, str]) -> dict[str, str]:
        params = {**params, "timestamp": str(int(time.time()))}
        payload = "&".join(f"{name}={params[name]}" for name in sorted(params))
        signature = hashlib.sha1((payload + self._api_secret).encode()).hexdigest()
        return {**params, "api_key": self._api_key, "signature": signature}

    async def put(self, key: str, data: bytes, content_type: str) -> None:
        fields = self._signed({"public_id": check_key(key), "type": "private", "overwrite": "true"})
        files = {"file": (key.rsplit("/", 1)[-1], data, content_type)}
        await call_upstream(
            self._breaker,
            self._timeout,
            lambda: self._client.post(
                f"{self._api}/upload", data=fields, files=files, timeout=self._timeout
            ),
        )

    async def get(self, key: str) -> bytes:
        params = self._signed({"public_id": check_key(key), "type": "private"})
        try:
            response = await call_upstream(
                self._breaker,
                self._timeout,
                lambda: self._client.get(
                    f"{self._api}/download", params=params, timeout=self._timeout
                ),
            )
        except UpstreamRejected as exc:
            if exc.upstream_status == 404:
                raise StorageNotFound(key) from exc
            raise
        return response.content

    async def delete(self, key: str) -> None:
        fields = self._signed(
            {"public_id": check_key(key), "type": "private", "invalidate": "true"}
        )
        await call_upstream(
            self._breaker,
            self._timeout,
            lambda: self._client.post(f"{self._api}/destroy", data=fields, timeout=self._timeout),
        )


def _secret(value: Any) -> str | None:
    return value.get_secret_value() if value is not None else None


def create_storage(
    settings: Settings, breakers: BreakerRegistry, client: httpx.AsyncClient | None = None
) -> Storage:
    """The storage backend chosen by settings (STORAGE_BACKEND).

    Cloudinary needs ``client``, the process's shared httpx client.
    """
    if settings.storage_backend == "s3":
        return S3Storage(settings, breakers.get("s3"))
    if settings.storage_backend == "cloudinary":
        if client is None:
            raise ValueError("STORAGE_BACKEND=cloudinary needs the process's httpx client")
        return CloudinaryStorage(settings, client, breakers.get("cloudinary"))
    return LocalStorage(settings.data_dir / "uploads")


async def close_storage(storage: Storage) -> None:
    """Release the backend's connections, if it holds any of its own."""
    if isinstance(storage, S3Storage):
        await storage.close()

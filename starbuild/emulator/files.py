"""The file service: uploads (stream, base64, url), their store, and the answers it gives."""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
import string
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import partial
from typing import TYPE_CHECKING
from urllib.parse import quote, urlsplit

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .references import Missing

if TYPE_CHECKING:
    from .app import Emulator

UPLOAD_TYPES = {"image/jpeg": "jpg", "image/png": "png", "image/gif": "gif", "image/webp": "webp"}
MAX_FILE_BYTES = 50 * 1024 * 1024
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")
_ID_ALPHABET = string.ascii_lowercase + string.digits


class UploadError(Exception):
    """An upload the file service refuses with 400; ``field`` names the request field."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


def sniff_mime(data: bytes) -> str | None:
    """The image type by content (never by name or declared type), or None."""
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


@dataclass(frozen=True)
class StoredFile:
    file_id: str
    file_name: str
    original_name: str
    mime_type: str
    data: bytes
    upload_path: str
    created: float
    expires_at: float


class FileStore:
    """Uploaded files by id, each until its expiry."""

    def __init__(self) -> None:
        self._files: dict[str, StoredFile] = {}

    def add(self, data: bytes, mime: str, name: str | None, upload_path: str | None,
            now: float, ttl: float) -> StoredFile:
        file_id = "file_" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(16))
        original = name or f"{file_id}.{UPLOAD_TYPES[mime]}"
        safe = _SAFE_NAME.sub("_", original.rsplit("/", 1)[-1]).strip("._")[:120]
        record = StoredFile(file_id, safe or f"{file_id}.{UPLOAD_TYPES[mime]}", original, mime, data,
                            upload_path or "images", now, now + ttl)
        self._files[file_id] = record
        return record

    def record(self, file_id: str) -> StoredFile | None:
        """The file with this id, expired or not (until pruned)."""
        return self._files.get(file_id)

    def get(self, file_id: str, now: float) -> StoredFile | None:
        record = self._files.get(file_id)
        if record is None or now >= record.expires_at:
            return None
        return record

    def prune(self, now: float) -> None:
        for file_id in [f for f, r in self._files.items() if now >= r.expires_at]:
            del self._files[file_id]

    def clear(self) -> None:
        self._files.clear()


def file_url(record: StoredFile, base_url: str) -> str:
    return f"{base_url.rstrip('/')}/cdn/files/{record.file_id}/{quote(record.file_name)}"


def download_url(record: StoredFile, base_url: str) -> str:
    return f"{base_url.rstrip('/')}/api/v1/files/download/{record.file_id}"


def upload_answer(record: StoredFile, base_url: str) -> dict:
    """The documented success answer of every upload endpoint."""
    return {
        "success": True,
        "code": 200,
        "msg": "File uploaded successfully",
        "data": {
            "file_id": record.file_id,
            "file_name": record.file_name,
            "original_name": record.original_name,
            "file_size": len(record.data),
            "mime_type": record.mime_type,
            "upload_path": record.upload_path,
            "file_url": file_url(record, base_url),
            "download_url": download_url(record, base_url),
            "upload_time": _iso(record.created),
            "expires_at": _iso(record.expires_at),
        },
    }


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, timezone.utc).isoformat(timespec="seconds")


Fetch = Callable[[str, Request], Awaitable[bytes]]


async def read_upload(kind: str, request: Request, fetch: Fetch) -> tuple[bytes, str | None, str | None]:
    """(content, file name, upload path) of an upload request of ``kind`` stream, base64 or url."""
    if kind == "stream":
        return await _read_stream(request)
    body = await _json_object(request)
    name, path = _optional_str(body, "file_name"), _optional_str(body, "upload_path")
    if kind == "base64":
        return _decode_base64(body.get("base64_data")), name, path
    url = body.get("file_url")
    if not isinstance(url, str) or not url:
        raise UploadError("file_url", "is required: the URL of an image to copy")
    data = await fetch(url, request)
    return data, name or urlsplit(url).path.rsplit("/", 1)[-1] or None, path


async def _read_stream(request: Request) -> tuple[bytes, str | None, str | None]:
    try:
        async with request.form(max_files=1) as form:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise UploadError("file", "is required: send the image as the multipart field 'file'")
            data = await upload.read(MAX_FILE_BYTES + 1)
            name = form.get("file_name") or upload.filename
            path = form.get("upload_path")
    except UploadError:
        raise
    except Exception as exc:  # malformed multipart bodies surface as several exception types
        raise UploadError("file", f"the multipart body could not be read ({exc})") from exc
    _check_size(data)
    return data, name if isinstance(name, str) else None, path if isinstance(path, str) else None


async def _json_object(request: Request) -> dict:
    try:
        body = json.loads(await request.body())
    except ValueError as exc:
        raise UploadError("body", "is not valid JSON") from exc
    if not isinstance(body, dict):
        raise UploadError("body", "must be a JSON object")
    return body


def _optional_str(body: dict, key: str) -> str | None:
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise UploadError(key, "must be a string")
    return value or None


def _decode_base64(value: object) -> bytes:
    if not isinstance(value, str) or not value.strip():
        raise UploadError("base64_data", "is required: the file as base64 or a data: URL")
    if value.startswith("data:"):
        header, _, value = value.partition(",")
        if ";base64" not in header:
            raise UploadError("base64_data", "data URLs must be base64-encoded")
    try:
        data = base64.b64decode("".join(value.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise UploadError("base64_data", "is not valid base64") from exc
    _check_size(data)
    return data


def _check_size(data: bytes) -> None:
    if not data:
        raise UploadError("file", "is empty")
    if len(data) > MAX_FILE_BYTES:
        raise UploadError("file", f"is larger than {MAX_FILE_BYTES // (1024 * 1024)} MB")


# --- endpoints --------------------------------------------------------------------------------

async def upload_endpoint(emulator: Emulator, request: Request) -> Response:
    """POST /api/v1/files/upload/{stream,base64,url}."""
    kind = request.path_params["kind"]
    if kind not in ("stream", "base64", "url"):
        return emulator.error(404, "not_found", f"No upload endpoint {kind!r}; use stream, base64 or url",
                              files=True)
    if emulator._owner(request) is None:
        return emulator._unauthorized(files=True)
    try:
        data, name, upload_path = await read_upload(kind, request, partial(_fetch_own, emulator))
    except UploadError as exc:
        return emulator.error(400, "invalid_request", str(exc), param=exc.field, files=True)
    mime = sniff_mime(data)
    if mime not in UPLOAD_TYPES:
        return emulator.error(400, "invalid_request", "file: only jpeg, png, gif and webp images are accepted",
                              param="file", files=True)
    now = emulator.clock()
    emulator.files.prune(now)
    record = emulator.files.add(data, mime, name, upload_path, now, emulator.config.file_ttl)
    return JSONResponse(upload_answer(record, emulator.config.files_url))


async def file_endpoint(emulator: Emulator, request: Request) -> Response:
    """GET of a file_url or download_url; public, like the CDN it stands for."""
    record = emulator.files.get(request.path_params["file_id"], emulator.clock())
    if record is None:
        return emulator.error(404, "not_found", "This file does not exist or has expired", files=True)
    headers = {}
    if request.url.path.startswith("/api/v1/files/download/"):
        headers["Content-Disposition"] = f'attachment; filename="{record.file_name}"'
    return Response(record.data, media_type=record.mime_type, headers=headers)


async def _fetch_own(emulator: Emulator, url: str, request: Request) -> bytes:
    """The content at ``url`` for /upload/url, which can only reach the emulator itself."""
    ref = emulator._resolve(url, request)
    if ref is None:
        raise UploadError("file_url", f"could not fetch {url}: only URLs this emulator serves can be "
                                      "fetched (it has no internet access)")
    now = emulator.clock()
    if isinstance(ref, Missing) or not ref.available_from <= now < ref.expires_at:
        raise UploadError("file_url", f"could not fetch {url}: 404 not found")
    return await run_in_threadpool(ref.load)

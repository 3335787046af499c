"""The checks of STARMAGIC_API.md's documented behaviour, in the order ``check-api`` runs them.

Each check asserts only what the document says: status codes, error codes and types, the fields
of task objects and upload answers, result sizes, what is ignored. Wording of messages, the
emulator's fault injection, its ledger and its policies where the document is silent are tested
with the emulator itself (tests/test_emulator_contract.py).
"""

from __future__ import annotations

import base64
import io
import re

from starbuild.api.contract import Check, CheckFailed, Probe, expect, result_urls

TASK_ID = re.compile(r"^task-unified-(\d+)-[a-z0-9]{8}$")
UPLOAD_FIELDS = {"file_id", "file_name", "file_url", "download_url", "mime_type", "file_size", "expires_at"}
BILLING_RULES = {"per_call", "per_token", "per_second", "per_image"}
PROMPT = "a lighthouse on a cliff at dawn, contract check"


def _body(**changes) -> dict:
    return {"model": "gpt-image-2", "prompt": PROMPT, "quality": "low", **changes}


def _png(size=(256, 256), mode="RGB") -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new(mode, size, (200, 30, 30, 128) if mode == "RGBA" else (200, 30, 30)).save(out, "PNG")
    return out.getvalue()


def _image_size(data: bytes) -> tuple[str, tuple[int, int]]:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.format or "", image.size
    except Exception as exc:  # any undecodable content
        raise CheckFailed(f"the result is not an image ({type(exc).__name__})") from None


def _error(response, status: int, code: str, type_: str | None) -> None:
    expect(response.status_code == status, f"answered {response.status_code}, not {status}: "
                                           f"{' '.join(response.text.split())[:160]}")
    try:
        error = response.json()["error"]
    except (ValueError, KeyError, TypeError):
        raise CheckFailed("the answer is not the documented error envelope {\"error\": {...}}") from None
    expect(isinstance(error, dict), "error is not an object")
    expect(error.get("code") in (code, status), f"error code {error.get('code')!r}, not {code!r}")
    if type_ is not None and error.get("code") == code:  # the older envelope has no documented type
        expect(error.get("type") == type_, f"error type {error.get('type')!r}, not {type_!r}")
    expect(isinstance(error.get("message"), str) and bool(error.get("message")), "the error has no message")


# --- free: auth, task ids, refused parameters, uploads ---------------------------------------

async def _unauthorized(probe: Probe) -> None:
    for headers in ({}, {"Authorization": "Basic dXNlcjpwYXNz"}, {"Authorization": "Bearer"}):
        response = await probe.anon.post("/v1/images/generations", json=_body(), headers=headers)
        _error(response, 401, "unauthorized", "authentication_error")
    _error(await probe.anon.get("/v1/tasks/task-unified-1757156493-abcdefgh"), 401, "unauthorized",
           "authentication_error")


async def _upload_unauthorized(probe: Probe) -> None:
    response = await probe.files.post("/api/v1/files/upload/base64", headers={"Authorization": ""},
                                      json={"base64_data": base64.b64encode(_png((64, 64))).decode()})
    expect(response.status_code == 401, f"an upload without a key answered {response.status_code}, not 401")


async def _invalid_task_id(probe: Probe) -> None:
    for task_id in ("abc", "task-1757156493-abcdefgh"):
        _error(await probe.client.get(f"/v1/tasks/{task_id}"), 400, "invalid_task_id", "invalid_request_error")


async def _unknown_task(probe: Probe) -> None:
    _error(await probe.client.get("/v1/tasks/task-unified-1757156493-zzzzzzzz"), 404, "task_not_found",
           "invalid_request_error")


def _refused(changes: dict):
    async def run(probe: Probe) -> None:
        _error(await probe.submit(_body(**changes), billable=False), 400, "invalid_request", "invalid_request_error")
    return run


# (check name, what STARMAGIC_API.md says, the fields that break it)
REFUSALS = [
    ("size-ratio-not-listed", "gpt-image-2 ratios are the listed ones", {"size": "5:3"}),
    ("size-not-multiple-of-16", "WxH: both multiples of 16", {"size": "1000x1000"}),
    ("size-edge-too-long", "WxH: each edge 16-3840", {"size": "4096x1024"}),
    ("size-too-few-pixels", "WxH: at least 655,360 pixels", {"size": "512x512"}),
    ("size-ratio-over-3-1", "WxH: aspect ratio at most 3:1", {"size": "3840x1024"}),
    ("resolution-unknown", "resolution is 1K, 2K or 4K", {"size": "16:9", "resolution": "8K"}),
    ("quality-unknown", "quality is low, medium or high", {"quality": "ultra"}),
    ("n-over-10", "gpt-image-2 takes n 1-10", {"n": 11}),
    ("n-zero", "gpt-image-2 takes n 1-10", {"n": 0}),
    ("gpt-image-1.5-n-2", "gpt-image-1.5 takes n 1 only", {"model": "gpt-image-1.5", "n": 2}),
    ("gpt-image-1.5-size", "gpt-image-1.5 sizes are 1:1, 2:3, 3:2 and their pixel forms",
     {"model": "gpt-image-1.5", "size": "16:9"}),
    ("model-unknown", "model is gpt-image-1.5 or gpt-image-2", {"model": "dall-e-9"}),
    ("prompt-missing", "prompt is required", {"prompt": None}),
    ("prompt-over-32000", "gpt-image-2 prompts up to 32,000 code points", {"prompt": "x" * 32_001}),
    ("background-unknown", "background is opaque or transparent", {"background": "glass"}),
    ("image-urls-empty", "image_urls holds 1-16 URLs", {"image_urls": []}),
    ("image-urls-over-16", "image_urls holds 1-16 URLs",
     {"image_urls": [f"https://images.example.com/{i}.png" for i in range(17)]}),
    ("callback-not-https", "callback_url is HTTPS only", {"callback_url": "http://hooks.example.com/x"}),
    ("callback-loopback", "callback_url: no loopback addresses", {"callback_url": "https://127.0.0.1/x"}),
    ("callback-private", "callback_url: no private addresses", {"callback_url": "https://10.1.2.3/x"}),
    ("callback-too-long", "callback_url at most 2048 characters",
     {"callback_url": "https://hooks.example.com/" + "a" * 2048}),
]


async def _upload(probe: Probe, data: bytes, name: str = "ref.png") -> dict:
    response = await probe.files.post("/api/v1/files/upload/stream", files={"file": (name, data, "image/png")})
    expect(response.status_code == 200, f"upload/stream answered {response.status_code}")
    body = response.json()
    expect(body.get("success") is True and body.get("code") == 200, "the upload answer lacks success/code 200")
    info = body.get("data") or {}
    missing = UPLOAD_FIELDS - set(info)
    expect(not missing, f"the upload answer's data lacks {', '.join(sorted(missing))}")
    expect(info["mime_type"] == "image/png" and info["file_size"] == len(data), "mime_type or file_size is wrong")
    return info


async def _upload_stream(probe: Probe) -> None:
    data = _png((64, 48))
    info = await _upload(probe, data)
    served = await probe.anon.get(info["file_url"])
    expect(served.status_code == 200 and served.content == data, "file_url does not serve the uploaded bytes")


async def _upload_base64(probe: Probe) -> None:
    data = _png((40, 40))
    response = await probe.files.post("/api/v1/files/upload/base64",
                                      json={"base64_data": base64.b64encode(data).decode()})
    expect(response.status_code == 200, f"upload/base64 answered {response.status_code}")
    url = response.json()["data"]["file_url"]
    expect((await probe.anon.get(url)).content == data, "file_url does not serve the uploaded bytes")


async def _upload_url(probe: Probe) -> None:
    source = await _upload(probe, _png((32, 32)))
    response = await probe.files.post("/api/v1/files/upload/url", json={"file_url": source["file_url"]})
    expect(response.status_code == 200, f"upload/url answered {response.status_code}")
    expect(response.json()["data"]["file_id"] != source["file_id"], "upload/url gave the source's file_id")


async def _upload_refuses_text(probe: Probe) -> None:
    response = await probe.files.post("/api/v1/files/upload/stream",
                                      files={"file": ("a.png", b"hello, world", "image/png")})
    expect(400 <= response.status_code < 500, f"a text file was answered {response.status_code}, not 4xx")


# --- billable: tasks ----------------------------------------------------------------------------

async def _task_object(probe: Probe) -> None:
    task = await probe.accepted(_body(size="3:2", resolution="1K", n=2))
    match = TASK_ID.match(task["id"])
    expect(bool(match), f"task id {task['id']!r} is not task-unified-<seconds>-<8 characters>")
    expect(task.get("created") == int(match.group(1)), "created is not the seconds in the task id")
    expect(task.get("object") == "image.generation.task", f"object is {task.get('object')!r}")
    expect(task.get("type") == "image" and task.get("model") == "gpt-image-2", "type or model is wrong")
    expect(task.get("status") in ("pending", "processing"), f"a new task is {task.get('status')!r}")
    expect(isinstance(task.get("progress"), int) and 0 <= task["progress"] <= 100, "progress is not 0-100")
    usage = task.get("usage") or {}
    expect(usage.get("billing_rule") in BILLING_RULES, f"billing_rule {usage.get('billing_rule')!r}")
    expect(isinstance(usage.get("credits_reserved"), (int, float)), "usage.credits_reserved is not a number")
    info = task.get("task_info") or {}
    expect(isinstance(info.get("can_cancel"), bool), "task_info.can_cancel is not a boolean")
    expect(isinstance(info.get("estimated_time"), (int, float)), "task_info.estimated_time is not a number")
    probe.shared["task"] = task


async def _task_completes(probe: Probe) -> None:
    task = probe.shared["task"]
    done = await probe.settle(task["id"])
    expect(done.get("status") == "completed", f"the task ended {done.get('status')}: {done.get('error')}")
    expect(done.get("id") == task["id"] and done.get("created") == task["created"], "id or created changed")
    expect(done.get("progress") == 100, f"progress is {done.get('progress')} when completed")
    expect(len(result_urls(done)) == 2, f"n=2 gave {len(result_urls(done))} results")
    probe.shared["done"] = done


async def _results_public(probe: Probe) -> None:
    for url in result_urls(probe.shared["done"]):
        response = await probe.anon.get(url)  # no key: result links are plain URLs
        expect(response.status_code == 200, f"a result link answered {response.status_code} without a key")
        fmt, size = _image_size(response.content)
        expect(size == (1248, 832), f"3:2 at 1K is {size[0]}x{size[1]}, not the documented 1248x832")


async def _size_of(probe: Probe, body: dict) -> tuple[int, int]:
    done = await probe.completed(body)
    return _image_size((await probe.anon.get(result_urls(done)[0])).content)[1]


async def _resolution_ignored_for_pixels(probe: Probe) -> None:
    size = await _size_of(probe, _body(size="1536x1024", resolution="4K"))
    expect(size == (1536, 1024), f"1536x1024 with resolution 4K gave {size[0]}x{size[1]}")


async def _resolution_ignored_for_auto(probe: Probe) -> None:
    await probe.completed(_body(size="auto", resolution="2K"))


async def _mask_ignored_without_inputs(probe: Probe) -> None:
    await probe.completed(_body(size="1:1", mask_url="https://images.example.com/mask.png"))


async def _gpt15(probe: Probe) -> None:
    size = await _size_of(probe, {"model": "gpt-image-1.5", "prompt": PROMPT, "size": "2:3", "quality": "low"})
    expect(size == (1024, 1536), f"gpt-image-1.5 2:3 gave {size[0]}x{size[1]}, not 1024x1536")


async def _edit_uploaded(probe: Probe) -> None:
    info = await _upload(probe, _png((256, 256)))
    await probe.completed(_body(size="1:1", image_urls=[info["file_url"]]))


async def _edit_mask(probe: Probe) -> None:
    image = await _upload(probe, _png((256, 256)))
    mask = await _upload(probe, _png((256, 256), "RGBA"), "mask.png")
    await probe.completed(_body(size="1:1", image_urls=[image["file_url"]], mask_url=mask["file_url"]))


async def _edit_result(probe: Probe) -> None:
    await probe.completed(_body(size="1:1", image_urls=result_urls(probe.shared["done"])[:1]))


CHECKS: list[Check] = [
    Check("auth.missing-key", "401 unauthorized / authentication_error without a bearer key", _unauthorized),
    Check("auth.upload-missing-key", "the file service takes the same key", _upload_unauthorized),
    Check("task.invalid-id", "400 invalid_task_id for ids not starting task-unified-", _invalid_task_id),
    Check("task.not-found", "404 task_not_found for an unknown task", _unknown_task),
    *[Check(f"submit.refuses.{name}", f"400 invalid_request: {doc}", _refused(changes))
      for name, doc, changes in REFUSALS],
    Check("files.upload-stream", "upload/stream answers the documented data; file_url serves it", _upload_stream),
    Check("files.upload-base64", "upload/base64 takes base64_data", _upload_base64),
    Check("files.upload-url", "upload/url copies a fetchable file_url", _upload_url),
    Check("files.refuses-non-images", "jpeg/png/gif/webp only", _upload_refuses_text),
    Check("submit.task-object", "200 with the documented task object", _task_object, billable=1),
    Check("task.completes", "pending -> processing -> completed, progress 100, n results", _task_completes,
          needs="submit.task-object"),
    Check("results.public-of-documented-size", "result links are plain URLs of the documented pixel size",
          _results_public, needs="task.completes"),
    Check("submit.resolution-ignored-for-pixels", "resolution only applies to ratio sizes",
          _resolution_ignored_for_pixels, billable=1),
    Check("submit.resolution-ignored-for-auto", "resolution only applies to ratio sizes",
          _resolution_ignored_for_auto, billable=1),
    Check("submit.mask-ignored-without-inputs", "mask_url needs image_urls, silently ignored without",
          _mask_ignored_without_inputs, billable=1),
    Check("submit.gpt-image-1.5", "gpt-image-1.5 2:3 is 1024x1536", _gpt15, billable=1),
    Check("edit.uploaded-reference", "an uploaded file_url works in image_urls", _edit_uploaded, billable=1),
    Check("edit.mask", "a PNG mask with alpha of the reference's size", _edit_mask, billable=1),
    Check("edit.result-as-reference", "a result link works in image_urls", _edit_result, billable=1,
          needs="task.completes"),
]

"""The emulator: STARMAGIC_API.md's behaviour plus its own wording, policies and internals.

Runs in-process and over HTTP. The documented behaviour alone, for any server, is
``starbuild check-api URL`` (starbuild/api/contract_checks.py; tests/test_check_api.py).
"""

from __future__ import annotations

import base64
import json
import re

import anyio
import httpx
import pytest

from starbuild import models
from emulator_fixtures import (  # noqa: F401 (fixtures)
    KEY, CallbackReceiver, anyio_backend, api, auth, both_transports, decode, eventually, image_bytes,
    make_api, transport_kind,
)

pytestmark = pytest.mark.anyio

TASK_ID = re.compile(r"^task-unified-(\d+)-[a-z0-9]{8}$")
UPLOAD_FIELDS = {"file_id", "file_name", "file_url", "download_url", "mime_type", "file_size", "expires_at"}


def assert_error(response: httpx.Response, status: int, code: str, type_: str) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert error["type"] == type_
    assert isinstance(error["message"], str) and error["message"]
    return error


# --- submit ---------------------------------------------------------------------------------

@both_transports
async def test_submit_answers_the_documented_task_object(api):
    body = {"model": "gpt-image-2", "prompt": "a red fox", "size": "16:9", "resolution": "2K", "n": 2}
    response = await api.submit(**body)
    assert response.status_code == 200
    task = response.json()
    match = TASK_ID.match(task["id"])
    assert match, task["id"]
    assert task["created"] == int(match.group(1))
    assert task["model"] == "gpt-image-2"
    assert task["object"] == "image.generation.task"
    assert task["type"] == "image"
    assert task["status"] == "pending" and task["progress"] == 0
    assert task["task_info"]["can_cancel"] is True
    assert isinstance(task["task_info"]["estimated_time"], int)
    usage = task["usage"]
    assert usage["billing_rule"] == "per_call" and usage["user_group"] == "default"
    assert task["task_info"]["estimated_time"] == 10
    assert usage["credits_reserved"] == models.estimate_credits(body)


@pytest.mark.parametrize(("latency", "estimate"), [(0.0, 0), (0.3, 1), (2.5, 3), (40.0, 40)])
async def test_submit_estimated_time_is_latency_rounded_up(make_api, latency, estimate):
    api = await make_api(latency=latency)
    assert (await api.accepted())["task_info"]["estimated_time"] == estimate


async def test_submit_ids_are_unique(api):
    ids = {(await api.accepted())["id"] for _ in range(20)}
    assert len(ids) == 20


BAD_BODIES = [
    ({"size": "5:3"}, "size"),
    ({"size": "1000x1000"}, "size"),
    ({"size": "16:9", "resolution": "8K"}, "resolution"),
    ({"quality": "ultra"}, "quality"),
    ({"n": 11}, "n"),
    ({"n": 0}, "n"),
    ({"model": "gpt-image-1.5", "n": 2}, "n"),
    ({"model": "gpt-image-1.5", "size": "16:9"}, "size"),
    ({"model": "gpt-image-1.5", "background": "transparent"}, "background"),
    ({"model": "dall-e-9"}, "model"),
    ({"model": None}, "model"),
    ({"prompt": ""}, "prompt"),
    ({"prompt": None}, "prompt"),
    ({"prompt": "x" * 32_001}, "prompt"),
    ({"background": "glass"}, "background"),
    ({"image_urls": []}, "image_urls"),
    ({"image_urls": [f"https://example.com/{i}.png" for i in range(17)]}, "image_urls"),
    ({"image_urls": ["not a url"]}, "image_urls"),
    ({"image_urls": ["https://example.com/a.png"], "mask_url": 42}, "mask_url"),
]


@pytest.mark.parametrize(("changes", "field"), BAD_BODIES, ids=[f for _, f in BAD_BODIES])
async def test_submit_rejects_invalid_parameters_naming_the_field(api, changes, field):
    body = {"model": "gpt-image-2", "prompt": "a red fox", **changes}
    response = await api.client.post("/v1/images/generations", json=body)
    error = assert_error(response, 400, "invalid_request", "invalid_request_error")
    assert field in error["message"]


@both_transports
async def test_a_mask_without_image_urls_is_ignored_as_documented(api):
    done = await api.generate(mask_url="https://example.com/mask.png", size="1:1")
    assert done["status"] == "completed"


@pytest.mark.parametrize(("size", "pixels"), [("1536x1024", (1536, 1024)), ("auto", (1024, 1024))])
async def test_a_resolution_with_a_pixel_size_or_auto_is_ignored_as_documented(api, size, pixels):
    done = await api.generate(size=size, resolution="4K")
    assert done["status"] == "completed"
    assert decode((await api.download(done["results"][0])).content).size == pixels


async def test_the_file_service_is_a_host_of_its_own(api):
    data = image_bytes()
    on_api_host = await api.client.post("/api/v1/files/upload/stream", files={"file": ("a.png", data)})
    assert on_api_host.status_code == 404
    on_files_host = await api.files.post("/api/v1/files/upload/stream", files={"file": ("a.png", data)})
    assert on_files_host.status_code == 200
    assert on_files_host.json()["data"]["file_url"].startswith(str(api.files.base_url).rstrip("/") + "/")
    assert (await api.files.post("/v1/images/generations", json={"model": "gpt-image-2", "prompt": "x"})
            ).status_code == 404


async def test_submit_requires_a_prompt(api):
    response = await api.client.post("/v1/images/generations", json={"model": "gpt-image-2"})
    assert "prompt" in assert_error(response, 400, "invalid_request", "invalid_request_error")["message"]


@pytest.mark.parametrize("content", [b"{not json", b"[1, 2]", b'"text"', b""])
async def test_submit_rejects_a_body_that_is_not_a_json_object(api, content):
    response = await api.client.post("/v1/images/generations", content=content,
                                     headers={"Content-Type": "application/json"})
    assert_error(response, 400, "invalid_request", "invalid_request_error")


async def test_rejected_submissions_are_not_billed(api):
    await api.submit(size="5:3")
    await api.anon.post("/v1/images/generations", json={"model": "gpt-image-2", "prompt": "x"})
    assert api.emulator.ledger == []


@pytest.mark.parametrize("url", [
    "http://example.com/hook",
    "https://127.0.0.1/hook",
    "https://localhost:8443/hook",
    "https://10.1.2.3/hook",
    "https://192.168.0.7/hook",
    "https://[::1]/hook",
    "https://169.254.169.254/latest",
    "https://[::ffff:127.0.0.1]/hook",
    "https://127.1/hook",
    "https://2130706433/hook",
    "https://0x7f000001/hook",
    "https://0177.0.0.1/hook",
    "https://localhost./hook",
    "ftp://example.com/hook",
    "https://example.com/" + "a" * 2048,
    "not a url",
])
async def test_submit_rejects_callback_urls_the_api_refuses(api, url):
    response = await api.submit(callback_url=url)
    assert "callback_url" in assert_error(response, 400, "invalid_request", "invalid_request_error")["message"]


async def test_submit_accepts_a_public_https_callback_url(api):
    await api.accepted(callback_url="https://hooks.example.com/starmagic?x=1")


# --- auth -----------------------------------------------------------------------------------

@both_transports
@pytest.mark.parametrize("header", [None, "", "Bearer", "Basic dXNlcjpwYXNz", KEY])
async def test_requests_without_a_bearer_key_are_unauthorized(api, header):
    headers = {} if header is None else {"Authorization": header}
    body = {"model": "gpt-image-2", "prompt": "x"}
    submit = await api.anon.post("/v1/images/generations", json=body, headers=headers)
    assert_error(submit, 401, "unauthorized", "authentication_error")
    task_id = (await api.accepted())["id"]
    query = await api.anon.get(f"/v1/tasks/{task_id}", headers=headers)
    assert_error(query, 401, "unauthorized", "authentication_error")
    upload = await api.files.post("/api/v1/files/upload/base64", headers={"Authorization": header or ""},
                                 json={"base64_data": base64.b64encode(image_bytes()).decode()})
    assert_error(upload, 401, "unauthorized", "authentication_error")


async def test_a_configured_key_is_the_only_key_accepted(make_api):
    api = await make_api(api_key="sk-the-one")
    assert_error(await api.submit(), 401, "unauthorized", "authentication_error")
    response = await api.client.post("/v1/images/generations", headers=auth("sk-the-one"),
                                     json={"model": "gpt-image-2", "prompt": "x"})
    assert response.status_code == 200


async def test_a_task_of_another_key_is_permission_denied(api):
    task_id = (await api.accepted())["id"]
    response = await api.anon.get(f"/v1/tasks/{task_id}", headers=auth("sk-someone-else"))
    assert_error(response, 403, "permission_denied", "invalid_request_error")


async def test_a_denied_model_is_model_access_denied(make_api):
    api = await make_api(denied_models=frozenset({"gpt-image-1.5"}))
    response = await api.submit(model="gpt-image-1.5")
    assert_error(response, 403, "model_access_denied", "invalid_request_error")
    assert (await api.submit(model="gpt-image-2")).status_code == 200
    assert len(api.emulator.ledger) == 1


async def test_submissions_past_the_credit_balance_are_insufficient_quota(make_api):
    api = await make_api(credit_balance=2.0)
    for _ in range(2):  # 1K medium gpt-image-2 reserves 1 credit each
        assert (await api.accepted())["usage"]["credits_reserved"] == 1.0
    assert_error(await api.submit(), 402, "insufficient_quota", "insufficient_quota")
    assert len(api.emulator.ledger) == 2


# --- task query and lifecycle ---------------------------------------------------------------

@pytest.mark.parametrize("task_id", ["abc", "task-1757156493-abcdefgh", "unified-1757156493-abcdefgh"])
async def test_query_of_a_malformed_id_is_invalid_task_id(api, task_id):
    assert_error(await api.query(task_id), 400, "invalid_task_id", "invalid_request_error")


async def test_query_of_an_unknown_task_is_task_not_found(api):
    response = await api.query("task-unified-1757156493-zzzzzzzz")
    assert_error(response, 404, "task_not_found", "invalid_request_error")


@both_transports
async def test_task_goes_pending_then_processing_with_rising_progress_then_completed(api):
    task = await api.accepted(n=3)
    seen = []
    for step in [0.5, 1.0, 2.0, 3.0, 3.0]:
        api.clock.advance(step)
        body = (await api.query(task["id"])).json()
        seen.append((body["status"], body["progress"]))
        assert "results" not in body and body["task_info"]["can_cancel"] is True
    assert seen[0] == ("pending", 0)
    processing = [p for s, p in seen if s == "processing"]
    assert len(processing) == 4 and processing == sorted(processing) and 0 < processing[0] < processing[-1] < 100
    api.clock.advance(0.5)
    done = (await api.query(task["id"])).json()
    assert done["status"] == "completed" and done["progress"] == 100
    assert done["task_info"]["can_cancel"] is False
    assert done["id"] == task["id"] and done["created"] == task["created"]
    assert len(done["results"]) == 3 and all(isinstance(url, str) for url in done["results"])


async def test_task_with_no_latency_is_completed_at_the_first_query(make_api):
    api = await make_api()
    task = await api.accepted()
    assert task["status"] == "pending"
    assert (await api.query(task["id"])).json()["status"] == "completed"


@both_transports
async def test_results_are_public_pngs_of_the_requested_size(api):
    done = await api.generate(size="3:2", resolution="1K", n=2)
    assert done["status"] == "completed"
    shas = set()
    for url in done["results"]:
        response = await api.download(url)  # no Authorization header: result links are public
        assert response.status_code == 200
        assert response.headers["content-type"] == "image/png"
        image = decode(response.content)
        assert image.format == "PNG" and image.size == (1248, 832)
        shas.add(response.content)
    assert len(shas) == 2


async def test_result_links_expire_after_the_ttl(make_api):
    api = await make_api(latency=5.0, ttl=3600.0)
    done = await api.generate()
    url = done["results"][0]
    api.clock.advance(3599.0)
    assert (await api.download(url)).status_code == 200
    api.clock.advance(1.0)
    response = await api.download(url)
    assert response.status_code == 404 and "error" in response.json()
    # the task record outlives its links
    assert (await api.query(done["id"])).json()["status"] == "completed"


async def test_task_records_expire_after_the_task_ttl(make_api):
    api = await make_api(task_ttl=7200.0)
    task_id = (await api.accepted())["id"]
    api.clock.advance(7199.0)
    assert (await api.query(task_id)).status_code == 200
    api.clock.advance(1.0)
    assert_error(await api.query(task_id), 404, "task_not_found", "invalid_request_error")


async def test_unknown_result_link_is_not_found(api):
    done = await api.generate()
    url = done["results"][0]
    missing = url.replace("-0.png", "-7.png")
    assert (await api.download(missing)).status_code == 404


# --- uploads --------------------------------------------------------------------------------

def assert_upload_answer(response: httpx.Response, data: bytes, mime: str) -> dict:
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["success"] is True and body["code"] == 200 and isinstance(body["msg"], str)
    info = body["data"]
    assert UPLOAD_FIELDS <= set(info)
    assert info["mime_type"] == mime and info["file_size"] == len(data)
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", info["expires_at"])
    return info


@both_transports
async def test_upload_stream_serves_the_file_at_its_url_without_auth(api):
    data = image_bytes()
    response = await api.files.post("/api/v1/files/upload/stream",
                                     files={"file": ("ref.png", data, "image/png")})
    info = assert_upload_answer(response, data, "image/png")
    assert info["file_name"] == "ref.png"
    for url in (info["file_url"], info["download_url"]):
        served = await api.download(url)
        assert served.status_code == 200 and served.content == data
        assert served.headers["content-type"] == "image/png"


@pytest.mark.parametrize(("fmt", "mime"), [("JPEG", "image/jpeg"), ("GIF", "image/gif"), ("WEBP", "image/webp")])
async def test_upload_base64_accepts_the_documented_types(api, fmt, mime):
    data = image_bytes(fmt=fmt)
    encoded = base64.b64encode(data).decode()
    for payload in (encoded, f"data:{mime};base64,{encoded}"):
        response = await api.files.post("/api/v1/files/upload/base64",
                                         json={"base64_data": payload, "file_name": "x." + fmt.lower()})
        info = assert_upload_answer(response, data, mime)
        assert (await api.download(info["file_url"])).content == data


@pytest.mark.parametrize("data", [b"hello, world", image_bytes(fmt="BMP"), image_bytes(fmt="TIFF")],
                         ids=["text", "bmp", "tiff"])
async def test_upload_refuses_what_is_not_jpeg_png_gif_or_webp(api, data):
    stream = await api.files.post("/api/v1/files/upload/stream", files={"file": ("a.png", data, "image/png")})
    b64 = await api.files.post("/api/v1/files/upload/base64", json={"base64_data": base64.b64encode(data).decode()})
    for response in (stream, b64):
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "invalid_request"


@pytest.mark.parametrize(("path", "payload"), [
    ("base64", {"base64_data": "%%% not base64 %%%"}),
    ("base64", {}),
    ("url", {}),
    ("url", {"file_url": 7}),
])
async def test_upload_refuses_malformed_requests(api, path, payload):
    response = await api.files.post(f"/api/v1/files/upload/{path}", json=payload)
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_request"


async def test_upload_stream_without_a_file_field_is_refused(api):
    response = await api.files.post("/api/v1/files/upload/stream", files={"other": ("a.png", image_bytes())})
    assert response.status_code == 400


@both_transports
async def test_upload_url_copies_a_file_the_service_serves(api):
    data = image_bytes(fmt="JPEG")
    first = await api.files.post("/api/v1/files/upload/stream", files={"file": ("a.jpg", data)})
    source = first.json()["data"]
    response = await api.files.post("/api/v1/files/upload/url", json={"file_url": source["file_url"]})
    info = assert_upload_answer(response, data, "image/jpeg")
    assert info["file_id"] != source["file_id"]
    assert (await api.download(info["file_url"])).content == data


async def test_upload_url_of_an_unreachable_host_is_an_error(api):
    response = await api.files.post("/api/v1/files/upload/url",
                                     json={"file_url": "https://unreachable.invalid/picture.png"})
    assert response.status_code >= 400


async def test_uploaded_files_expire_after_the_file_ttl(make_api):
    api = await make_api(file_ttl=600.0)
    response = await api.files.post("/api/v1/files/upload/stream", files={"file": ("a.png", image_bytes())})
    url = response.json()["data"]["file_url"]
    api.clock.advance(599.0)
    assert (await api.download(url)).status_code == 200
    api.clock.advance(1.0)
    assert (await api.download(url)).status_code == 404


# --- reference images -----------------------------------------------------------------------

async def upload(api, data: bytes, name: str = "ref.png") -> str:
    response = await api.files.post("/api/v1/files/upload/stream", files={"file": (name, data)})
    assert response.status_code == 200, response.text
    return response.json()["data"]["file_url"]


async def test_edit_with_an_uploaded_reference_completes_and_shows_it(api):
    url = await upload(api, image_bytes(size=(300, 200), colour=(250, 0, 0)))
    done = await api.generate(image_urls=[url], size="1:1")
    assert done["status"] == "completed"
    image = decode((await api.download(done["results"][0])).content).convert("RGB")
    assert image.size == (1024, 1024)
    r, g, b = image.getpixel((40, 40))
    assert r > 200 and g < 40 and b < 40


async def test_reference_urls_on_other_hosts_are_taken_as_is(api):
    done = await api.generate(image_urls=["https://images.example.com/a.png"])
    assert done["status"] == "completed"


@both_transports
async def test_a_result_can_be_the_reference_of_another_task(api):
    first = await api.generate(size="1:1")
    done = await api.generate(image_urls=first["results"], size="1:1")
    assert done["status"] == "completed"


async def test_a_missing_or_expired_reference_fails_the_task(make_api):
    api = await make_api(latency=10.0, file_ttl=100.0)
    url = await upload(api, image_bytes())
    missing = url.replace("/cdn/files/file_", "/cdn/files/file_gone")
    done = await api.generate(image_urls=[url, missing])
    assert done["status"] == "failed"
    assert done["error"]["code"] == "image_processing_error" and done["error"]["type"] == "task_error"
    api.clock.advance(100.0)
    expired = await api.generate(image_urls=[url])
    assert expired["error"]["code"] == "image_processing_error"
    assert len(api.emulator.ledger) == 2  # accepted, then failed while fetching: billed like the API


@both_transports
async def test_mask_of_the_reference_size_with_alpha_completes(api):
    image = await upload(api, image_bytes(size=(256, 256)))
    mask = await upload(api, image_bytes(size=(256, 256), mode="RGBA"), "mask.png")
    assert (await api.generate(image_urls=[image], mask_url=mask))["status"] == "completed"


@pytest.mark.parametrize(("mask_data", "why"), [
    (image_bytes(size=(128, 256), mode="RGBA"), "size"),
    (image_bytes(size=(256, 256), mode="RGB"), "alpha"),
    (image_bytes(size=(256, 256), fmt="WEBP"), "png"),
], ids=["other-size", "no-alpha", "not-png"])
async def test_a_mask_that_does_not_fit_fails_with_image_dimension_mismatch(api, mask_data, why):
    image = await upload(api, image_bytes(size=(256, 256)))
    mask = await upload(api, mask_data, "mask.png")
    done = await api.generate(image_urls=[image], mask_url=mask)
    assert done["status"] == "failed", why
    assert done["error"] == {"code": "image_dimension_mismatch", "message": done["error"]["message"],
                             "type": "task_error"}


# --- callbacks ------------------------------------------------------------------------------

@both_transports
async def test_callback_posts_the_task_query_json_once_at_the_terminal_state(make_api):
    api = await make_api(latency=10.0, allow_loopback_callbacks=True)
    with CallbackReceiver() as receiver:
        task = await api.accepted(callback_url=receiver.url, n=2)
        api.clock.advance(5.0)
        await api.query(task["id"])
        await anyio.sleep(0.1)  # real time, for a delivery that must not happen yet
        assert receiver.bodies == [] and api.emulator.callbacks.log == []
        api.clock.advance(5.0)
        [body] = await receiver.wait_for(1)
        assert body == (await api.query(task["id"])).json()
        assert body["status"] == "completed" and len(body["results"]) == 2
    assert len(api.emulator.callbacks.log) == 1


async def test_callback_is_retried_after_a_failed_delivery(make_api):
    api = await make_api(allow_loopback_callbacks=True)  # the documented 1, 2, 4 s schedule
    with CallbackReceiver(fail_first=1) as receiver:
        task = await api.accepted(callback_url=receiver.url)
        [body] = await receiver.wait_for(1, timeout=5.0)
        assert body["id"] == task["id"]
        log = api.emulator.callbacks.log  # written once the receiver's answer is back
        await eventually(lambda: len(log) >= 2, what="the second attempt logged")
    assert [entry["outcome"] for entry in log] == [500, 204]


async def test_callback_gives_up_after_three_retries(make_api):
    api = await make_api(allow_loopback_callbacks=True, callback_retry_delays=(0.01, 0.02, 0.04))
    log = api.emulator.callbacks.log
    with CallbackReceiver(fail_first=99) as receiver:
        await api.accepted(callback_url=receiver.url)
        await eventually(lambda: len(log) >= 4, what="four attempts")
        await anyio.sleep(0.2)  # and no fifth
        assert receiver.attempts == 4
    assert [(entry["attempt"], entry["outcome"]) for entry in log] == [(1, 500), (2, 500), (3, 500), (4, 500)]


async def test_callback_connection_errors_are_retried(make_api):
    api = await make_api(allow_loopback_callbacks=True, callback_retry_delays=(0.01, 0.01, 0.01))
    with CallbackReceiver() as receiver:
        closed = receiver.url  # nothing listens there once the receiver is gone
    await api.accepted(callback_url=closed)
    log = api.emulator.callbacks.log
    await eventually(lambda: len(log) >= 4, what="four attempts")
    assert all(entry["outcome"] == "ConnectError" for entry in log)


# --- ledger, counters, errors ----------------------------------------------------------------

@both_transports
async def test_ledger_lists_accepted_submissions_without_auth_and_never_the_key(api):
    await api.accepted(prompt="one")
    await api.submit(size="5:3")
    second = await api.accepted(prompt="two", n=3)
    response = await api.anon.get("/_emulator/ledger")
    assert response.status_code == 200
    ledger = response.json()
    assert [entry["request"]["prompt"] for entry in ledger["submissions"]] == ["one", "two"]
    entry = ledger["submissions"][1]
    assert entry["task_id"] == second["id"] and entry["model"] == "gpt-image-2"
    assert entry["credits"] == second["usage"]["credits_reserved"]
    assert entry["created"] == api.clock()
    assert ledger["counters"]["submit"] == 3 and ledger["counters"]["status_400"] == 1
    assert KEY not in response.text and KEY not in repr(api.emulator.__dict__)
    assert [e.task_id for e in api.emulator.ledger] == [s["task_id"] for s in ledger["submissions"]]


async def test_counters_count_requests_by_endpoint_and_status(api):
    done = await api.generate()
    await api.download(done["results"][0])
    url = await upload(api, image_bytes())
    await api.download(url)
    await api.query("bad-id")
    counters = api.emulator.counters
    assert counters["submit"] == 1 and counters["task"] == 2 and counters["result"] == 1
    assert counters["upload"] == 1 and counters["file"] == 1
    assert counters["status_200"] == 5 and counters["status_400"] == 1


@both_transports
async def test_unknown_routes_answer_the_error_envelope(api):
    response = await api.client.get("/v1/does-not-exist")
    assert response.status_code == 404 and "error" in response.json()


async def test_reset_clears_tasks_ledger_and_counters(api):
    task_id = (await api.accepted())["id"]
    api.emulator.reset()
    assert api.emulator.ledger == [] and not api.emulator.counters
    assert (await api.query(task_id)).status_code == 404


@both_transports
async def test_serve_in_thread_hands_out_urls_of_the_running_server(make_api, transport_kind):
    api = await make_api()
    done = await api.generate()
    expected = str(api.client.base_url).rstrip("/") if transport_kind == "http" else "http://starmagic.emulator"
    assert done["results"][0].startswith(expected + "/")
    assert json.dumps(done)  # plain JSON all the way

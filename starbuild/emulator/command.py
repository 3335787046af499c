"""``starbuild emulator``: serve the StarMagic emulator over HTTP.

Only click and the light config module are imported here; the web stack loads when the
command runs, so ``starbuild --help`` stays fast.
"""

from __future__ import annotations

import click

from .config import FAILURE_CODES, EmulatorConfig, Faults, rate_fields

# Help for each ``--fault-<name> RATE`` option, by Faults field.
_FAULT_HELP = {
    "rate_429": "429 rate_limit_exceeded without Retry-After (submit and task query)",
    "rate_429_retry_after": "429 rate_limit_exceeded with a Retry-After header",
    "rate_500": "500 internal_error",
    "rate_502": "502 from a gateway (HTML body)",
    "rate_503": "503 from a gateway (plain text body)",
    "rate_reset": "drop the connection without an answer",
    "rate_slow": "answer only after --slow-seconds",
    "rate_task_failed": "accepted tasks end failed (codes from --failure-code)",
    "rate_cancelled": "accepted tasks end with status cancelled",
    "rate_results_null": "completed tasks show results: null for --results-null-seconds",
    "rate_results_objects": "results as [{\"url\": ...}] instead of strings",
    "rate_legacy_envelope": "error answers in the older envelope (integer code, param, fallback_suggestion)",
    "rate_extra_fields": "unknown extra fields; no usage/estimated_time on task queries",
    "rate_usage_missing": "submit answers without usage",
    "rate_usage_nan": "submit answers with credits_reserved NaN",
    "rate_usage_negative": "submit answers with a negative credits_reserved",
    "rate_usage_huge": "submit answers with credits_reserved 1e400 (overflows to infinity)",
    "rate_progress_overflow": "submit answers with progress 1e400",
    "rate_slow_submit": "submissions accepted (and billed) at once but answered after --slow-submit-seconds",
    "rate_echo_headers": "400 whose message echoes the request headers (the key included)",
    "rate_escape_text": "terminal escape sequences in error and task failure messages",
    "rate_drip_task": "task query answers sent one byte every --drip-seconds",
    "rate_drip_result": "result downloads sent one byte every --drip-seconds",
}


def _option_name(field_name: str) -> str:
    return "--fault-" + field_name.removeprefix("rate_").replace("_", "-")


def _fault_options(command):
    for name in reversed(rate_fields()):
        command = click.option(_option_name(name), name, type=click.FloatRange(0.0, 1.0), default=0.0,
                               show_default=True, metavar="RATE",
                               help=f"Rate (0..1) of: {_FAULT_HELP.get(name, name)}.")(command)
    return command


@click.command("emulator")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8787, show_default=True, type=click.IntRange(0, 65535),
              help="Port to listen on (0 picks a free one).")
@click.option("--files-port", default=None, type=click.IntRange(0, 65535),
              help="Port of the file service, a host of its own as on the platform (default: PORT+1, "
                   "or a free one when PORT is 0).")
@click.option("--latency", default=0.0, show_default=True, type=click.FloatRange(min=0.0), metavar="SECONDS",
              help="Time a task takes from submission to completion.")
@click.option("--ttl", default=86400.0, show_default=True, type=click.FloatRange(min=0.0), metavar="SECONDS",
              help="Life of result links.")
@click.option("--task-ttl", default=3 * 86400.0, show_default=True, type=click.FloatRange(min=0.0),
              metavar="SECONDS", help="Life of task records.")
@click.option("--file-ttl", default=72 * 3600.0, show_default=True, type=click.FloatRange(min=0.0),
              metavar="SECONDS", help="Life of uploaded files.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the fault injection.")
@click.option("--api-key", default=None, help="Accept only this bearer key (default: any non-empty key).")
@click.option("--credits", "credit_balance", default=None, type=click.FloatRange(min=0.0),
              help="Credit balance; submissions past it get 402 insufficient_quota.")
@click.option("--deny-model", multiple=True, type=click.Choice(["gpt-image-1.5", "gpt-image-2"]),
              help="Answer 403 model_access_denied for this model (repeatable).")
@click.option("--max-unfinished", default=None, type=click.IntRange(min=0),
              help="Unfinished tasks allowed per key; past it 429 rate_limit_exceeded.")
@click.option("--render", type=click.Choice(["full", "plain"]), default="full", show_default=True,
              help="full: placeholder with text; plain: solid colour, fastest.")
@click.option("--public-url", default=None, help="Base of the result URLs handed out "
              "(default: http://HOST:PORT).")
@click.option("--public-files-url", default=None, help="Base of the file service's URLs handed out "
              "(default: http://HOST:FILES-PORT).")
@click.option("--allow-loopback-callbacks", is_flag=True,
              help="Accept http and private/loopback callback URLs (for local testing).")
@click.option("--estimate-scale", default=1.0, show_default=True, type=click.FloatRange(min=0.0),
              help="estimated_time in answers is the latency times this.")
@click.option("--estimate-round", type=click.Choice(["up", "down"]), default="up", show_default=True,
              help="Round estimated_time up or down to whole seconds.")
@_fault_options
@click.option("--slow-seconds", default=2.0, show_default=True, type=click.FloatRange(min=0.0),
              help="Delay of a slow answer.")
@click.option("--drip-seconds", default=1.0, show_default=True, type=click.FloatRange(min=0.0),
              help="Pause between the bytes of a dripping body under --fault-drip-task/-result.")
@click.option("--results-null-seconds", default=1.0, show_default=True, type=click.FloatRange(min=0.0),
              help="How long a completed task shows results: null under --fault-results-null.")
@click.option("--slow-submit-seconds", default=1.0, show_default=True, type=click.FloatRange(min=0.0),
              help="Delay of a slow submit answer (--fault-slow-submit).")
@click.option("--reserve-per-image", default=None, type=click.FloatRange(min=0.0), metavar="CREDITS",
              help="Reserve (and bill) this many credits per image, whatever starbuild's price table says.")
@click.option("--failure-code", "failure_codes", multiple=True, type=click.Choice(FAILURE_CODES),
              help="Codes failed tasks use (repeatable; default: all documented codes).")
def emulator_command(host, port, files_port, public_files_url, latency, ttl, task_ttl, file_ttl, seed, api_key, credit_balance,
                     deny_model, max_unfinished, render, public_url, allow_loopback_callbacks,
                     estimate_scale, estimate_round, slow_seconds, drip_seconds, results_null_seconds,
                     slow_submit_seconds, reserve_per_image, failure_codes, **rates):
    """Serve the StarMagic API emulator over HTTP until Ctrl-C.

    Point any client at it with STARMAGIC_BASE_URL (and STARMAGIC_FILES_URL for uploads).
    """
    from .app import Emulator
    from .config import DEFAULT_FILES_URL, DEFAULT_PUBLIC_URL
    from .server import serve

    faults = Faults(slow_seconds=slow_seconds, drip_seconds=drip_seconds, results_null_seconds=results_null_seconds,
                    slow_submit_seconds=slow_submit_seconds, reserve_per_image=reserve_per_image,
                    failure_codes=tuple(failure_codes) or FAILURE_CODES, max_unfinished=max_unfinished,
                    **rates)
    config = EmulatorConfig(latency=latency, ttl=ttl, task_ttl=task_ttl, file_ttl=file_ttl, seed=seed,
                            api_key=api_key, credit_balance=credit_balance, denied_models=frozenset(deny_model),
                            render=render, public_url=public_url or DEFAULT_PUBLIC_URL,
                            files_url=public_files_url or DEFAULT_FILES_URL,
                            allow_loopback_callbacks=allow_loopback_callbacks, faults=faults,
                            estimate_scale=estimate_scale, estimate_round=estimate_round)

    def announce(url: str, files: str) -> None:
        click.echo(f"StarMagic emulator listening on {url}, file service on {files} (Ctrl-C to stop)", err=True)
        click.echo(f"  export STARMAGIC_BASE_URL={url} STARMAGIC_FILES_URL={files}", err=True)

    if files_port is None:
        files_port = port + 1 if 0 < port < 65535 else 0
    try:
        serve(Emulator(config), host, port, files_port, announce=announce)
    except KeyboardInterrupt:  # the server re-raises Ctrl-C after shutting down; stopping is the point
        pass
    except OSError as exc:  # a busy port (or an address this machine does not have): say which
        raise click.ClickException(f"cannot listen on {host} port {port} (file service port {files_port}): "
                                   f"{exc.strerror or exc}; choose another with --port, or --port 0 for a free one"
                                   ) from None
    click.echo("StarMagic emulator stopped", err=True)

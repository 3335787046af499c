"""``starbuild check-api URL``: STARMAGIC_API.md's documented behaviour, checked against a server."""

from __future__ import annotations

import os
import sys

import click


@click.command("check-api")
@click.argument("url")
@click.option("--allow-billing", type=click.IntRange(min=0), default=0, show_default=True, metavar="N",
              help="Submit at most N billable tasks; checks that need more are skipped.")
@click.option("--files-url", metavar="URL", help="The file service's base URL (default: STARMAGIC_FILES_URL, else URL).")
@click.option("--key-env", default="STARMAGIC_API_KEY", show_default=True, metavar="NAME",
              help="The environment variable holding the key.")
@click.option("--task-timeout", type=click.FloatRange(min=1), default=300.0, show_default=True, metavar="SECONDS",
              help="How long a task may take before its check fails.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
def check_api_command(url, allow_billing, files_url, key_env, task_timeout, as_json) -> None:
    """Run the API's documented-behaviour checks against the server at URL (the emulator or any other).

    Exit 0 when no check fails, 1 otherwise, 3 without a key.
    """
    from starbuild.api.contract import run_checks
    from starbuild.cli.report import dump_json, render_contract

    key = os.environ.get(key_env, "").strip()
    if not key:
        click.echo(f"error: no API key: set the environment variable {key_env} (any non-empty key for "
                   "`starbuild emulator`)", err=True)
        sys.exit(3)
    if not url.startswith(("http://", "https://")):
        raise click.BadParameter(f"{url!r} is not an http(s) URL", param_hint="URL")
    files_url = files_url or os.environ.get("STARMAGIC_FILES_URL") or url
    report = run_checks(url.rstrip("/"), key, files_url=files_url.rstrip("/"), allowance=allow_billing,
                        task_timeout=task_timeout)
    dump_json(report.to_json()) if as_json else render_contract(report)
    sys.exit(0 if report.ok else 1)

"""The shared remote cache: what it costs a build that has nothing to do, and how fast a fresh clone pulls.

Figures, medians of several runs, each taken pair by pair against the same build without a remote:
- no-op: `starbuild build` of N up-to-date assets with an S3 remote configured vs the same project
  without one (target <= 1.10x: a remote costs nothing when nothing is stale);
- pull: a fresh clone (starbuild.yaml + starbuild.lock only) restoring N images from the remote vs
  the same clone without a remote, which pays for all N again from the emulator (latency 0); also
  the same pull from a shared folder (file://). Requests to the API during a pull: 0.

The S3 server is moto's server mode in this process, on 127.0.0.1; the emulator is served over HTTP
from this process too; builds run as `python -m starbuild` subprocesses.

    python bench/remote.py [--quick] [--images N] [--runs R]
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import cli_env, matrix_project, median, run_measured, spread, starbuild_cmd, verdict  # noqa: E402

TARGET_NOOP_RATIO = 1.10
AWS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_REGION": "us-east-1"}


def start_s3() -> tuple[object, str]:
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    import boto3

    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="bench",
                 aws_secret_access_key="bench").create_bucket(Bucket="bench")
    return server, endpoint


def remote_section(url: str, endpoint: str | None = None) -> str:
    extra = f"    endpoint: {endpoint}\n" if endpoint else ""
    return f"cache:\n  remote:\n    url: {url}\n{extra}"


def clone(src: Path, dest: Path, config: str | None = None) -> Path:
    dest.mkdir(parents=True)
    shutil.copy(src / "starbuild.lock", dest / "starbuild.lock")
    if config is None:
        shutil.copy(src / "starbuild.yaml", dest / "starbuild.yaml")
    else:
        (dest / "starbuild.yaml").write_text(config)
    return dest


def timed(cmd: list[str], env: dict, expect: dict[str, int] | None = None, cpu: bool = False):
    """Wall seconds of a CLI run (and its CPU seconds with ``cpu``), after checking its summary."""
    run = run_measured(cmd, env=env)
    if run.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} exited with {run.returncode}: {run.stderr[-3000:]}")
    if expect:
        summary = run.json()["summary"]
        got = {k: summary[k] for k in expect}
        if got != expect:
            raise SystemExit(f"{' '.join(cmd)}: expected {expect}, got {got}")
    return (run.wall, run.cpu) if cpu else run.wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200 images, 2 runs")
    parser.add_argument("--images", type=int, default=None, help="default 1,000 (200 with --quick)")
    parser.add_argument("--runs", type=int, default=None, help="timing pairs (default 3, 2 with --quick)")
    args = parser.parse_args()
    count = args.images or (200 if args.quick else 1000)
    runs = args.runs or (2 if args.quick else 3)
    os.environ.update(AWS)
    from starbuild.emulator import Emulator, EmulatorConfig, serve_in_thread

    server, endpoint = start_s3()
    emulator = Emulator(EmulatorConfig(render="plain"))
    try:
        with tempfile.TemporaryDirectory() as tmp, serve_in_thread(emulator) as url:
            tmp = Path(tmp)
            s3 = remote_section("s3://bench/team", endpoint)
            shared = remote_section(f"file://{tmp / 'shared'}")
            origin = tmp / "origin"
            matrix_project(origin, count, concurrency=64, extra=s3)
            plain_config = (origin / "starbuild.yaml").read_text().replace(s3, "")
            first = timed(starbuild_cmd(origin, "build", "--json"), cli_env(url, tmp / "cache-origin"),
                          {"built": count})
            print(f"setup: first build of {count} images, pushed to S3 as stored, in {first:.1f} s")
            paid = clone(origin, tmp / "paid-setup", plain_config)
            alone = timed(starbuild_cmd(paid, "build", "--json"), cli_env(url, tmp / "cache-paid-setup"),
                          {"built": count})
            print(f"paid build: {count} images with an S3 remote (leases, pushes) {first:.2f} s vs without a remote "
                  f"{alone:.2f} s: {first / alone:.2f}x (one pair; S3 is moto, in this process)")
            file_config = (origin / "starbuild.yaml").read_text().replace(s3, shared)
            shared_origin = clone(origin, tmp / "origin-file", file_config)
            timed(starbuild_cmd(shared_origin, "cache", "push"), cli_env(None, tmp / "cache-origin"))
            noop(tmp, origin, plain_config, url, max(runs, 9), count)  # cheap, and noisy on a shared machine
            pull(tmp, origin, plain_config, file_config, url, runs, count, emulator)
    finally:
        server.stop()


def noop(tmp: Path, origin: Path, plain_config: str, url: str, runs: int, count: int) -> None:
    bare = tmp / "noop-plain"
    shutil.copytree(origin, bare, symlinks=True)
    (bare / "starbuild.yaml").write_text(plain_config)
    env = cli_env(url, tmp / "cache-origin")
    expect = {"cached": count, "built": 0}
    walls, cpus = [], []
    for _ in range(runs):
        without = timed(starbuild_cmd(bare, "build", "--json"), env, expect, cpu=True)
        with_remote = timed(starbuild_cmd(origin, "build", "--json"), env, expect, cpu=True)
        walls.append(with_remote[0] / without[0])
        cpus.append(with_remote[1] / without[1])
    wall, cpu = median(walls), median(cpus)
    # CPU time is the figure with a target: wall time on a shared two-core machine swings by 2x.
    print(f"noop: build of {count} up-to-date assets with an S3 remote vs without: CPU {cpu:.3f}x "
          f"({spread(cpus, '{:.3f}')}), wall {wall:.2f}x ({spread(walls)}), medians of {runs} pairs; "
          f"target CPU <= {TARGET_NOOP_RATIO:.2f}x: {verdict(cpu <= TARGET_NOOP_RATIO)}")


def pull(tmp: Path, origin: Path, plain_config: str, file_config: str, url: str, runs: int, count: int,
         emulator) -> None:
    s3_times, file_times, paid_times = [], [], []
    for i in range(runs):
        before = len(emulator.ledger)
        paid = clone(origin, tmp / f"paid-{i}", plain_config)
        paid_times.append(timed(starbuild_cmd(paid, "build", "--json"), cli_env(url, tmp / f"cache-paid-{i}"),
                                {"built": count}))
        paid_count = len(emulator.ledger) - before
        s3 = clone(origin, tmp / f"s3-{i}")
        s3_times.append(timed(starbuild_cmd(s3, "build", "--json"), cli_env(url, tmp / f"cache-s3-{i}"),
                              {"pulled": count, "built": 0}))
        folder = clone(origin, tmp / f"file-{i}", file_config)
        file_times.append(timed(starbuild_cmd(folder, "build", "--json"), cli_env(url, tmp / f"cache-file-{i}"),
                                {"pulled": count, "built": 0}))
        if len(emulator.ledger) - before != paid_count:
            raise SystemExit("a pull submitted tasks to the API")
    s3_ratio = median([a / b for a, b in zip(s3_times, paid_times)])
    file_ratio = median([a / b for a, b in zip(file_times, paid_times)])
    print(f"pull: fresh clone restoring {count} images from S3 {median(s3_times):.2f} s "
          f"({count / median(s3_times):.0f} images/s, {spread(s3_times)}), from a shared folder "
          f"{median(file_times):.2f} s ({spread(file_times)}), vs paying for them again without a remote "
          f"{median(paid_times):.2f} s ({spread(paid_times)}): ratios {s3_ratio:.2f}x (S3) and {file_ratio:.2f}x "
          f"(folder), median of {runs}; API submissions during pulls: 0")


if __name__ == "__main__":
    main()

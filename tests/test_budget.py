"""Never spend more than allowed: holds, learned prices, --force and --retry-*, exit codes."""

from __future__ import annotations

import json

import pytest

from conftest import KEY, api_build, matrix_config
from starbuild.emulator import Emulator, EmulatorConfig, Faults, serve_in_thread
from starbuild.engine.outcome import Outcome


def _strict_json(text: str):
    def refuse(constant):
        raise AssertionError(f"the lockfile holds {constant}, which is not JSON")

    return json.loads(text, parse_constant=refuse)


def _billed(em: Emulator) -> float:
    return sum(e.credits for e in em.ledger)


def test_budget_over_reserving_server_at_high_concurrency_never_passes_the_cap(project):
    # The table says 0.11 a low 1K image; this server reserves 1.0, answers slowly, 32 at a time.
    faults = Faults(reserve_per_image=1.0, rate_slow_submit=1.0, slow_submit_seconds=0.05)
    em = Emulator(EmulatorConfig(render="plain", faults=faults))
    project.config(matrix_config(32, concurrency=32))
    report = api_build(project, em, max_credits=5)
    assert _billed(em) <= 5 + 1e-9, f"billed {_billed(em)} against a cap of 5"
    assert len(em.ledger) == 5
    assert report.exit_code == 3 and report.count(Outcome.BUILT) == 5 and report.count(Outcome.SKIPPED) == 27
    assert "27 asset(s) not submitted" in report.stopped and "max_credits 5" in report.stopped
    # What the API reserved is learned and kept: the next plan estimates 1.0 per image.
    plan = project.run("plan", "--json").json
    assert plan["summary"]["credits"] == pytest.approx(27.0)


def test_budget_cli_stopped_build_exits_3_and_names_what_it_skipped(project):
    em = Emulator(EmulatorConfig(render="plain", faults=Faults(reserve_per_image=1.0)))
    project.config(matrix_config(4, concurrency=4))
    with serve_in_thread(em) as url:
        env = {"STARMAGIC_API_KEY": KEY, "STARMAGIC_BASE_URL": url, "STARMAGIC_FILES_URL": url}
        res = project.run("build", "--max-credits", "2", env=env)
    assert res.exit_code == 3, res.stderr
    assert len(em.ledger) == 2 and _billed(em) <= 2
    stopped = [line for line in res.stdout.splitlines() if line.startswith("stopped:")]
    assert len(stopped) == 1 and "2 asset(s) not submitted" in stopped[0]
    assert "icons/i" in stopped[0] and "Traceback" not in res.stderr


@pytest.mark.parametrize("fault", ["rate_usage_missing", "rate_usage_nan", "rate_usage_negative",
                                   "rate_usage_huge"])
def test_budget_learns_no_price_from_an_answer_without_a_usable_one(project, fault):
    em = Emulator(EmulatorConfig(render="plain", faults=Faults(**{fault: 1.0})))
    project.config(matrix_config(2, concurrency=2))
    report = api_build(project, em, max_credits=100)
    assert report.exit_code == 0 and len(em.ledger) == 2
    lock = _strict_json((project.root / "starbuild.lock").read_text())
    assert [e["credits"] for e in lock["assets"].values()] == [None, None]
    manifest = (project.root / "assets" / "current" / "manifest.json").read_text()
    _strict_json(manifest)
    # Unknown prices are counted pessimistically, never as 0.
    assert report.credits_reserved >= 2 * 0.11
    # Nothing was learned: the plan still uses the table's estimate, not 0.
    project.config(matrix_config(3, concurrency=2))
    assert project.run("plan", "--json").json["summary"]["credits"] == pytest.approx(0.11)


def test_budget_a_revert_served_from_the_cache_keeps_the_price_the_api_reserved(project, emulator):
    project.config(matrix_config(1, prompt="first"))
    api_build(project, emulator)
    project.config(matrix_config(1, prompt="second"))
    api_build(project, emulator)
    project.config(matrix_config(1, prompt="first"))
    report = api_build(project, emulator)
    assert report.count(Outcome.CACHED) == 1 and len(emulator.ledger) == 2
    assert project.lock()["assets"]["icons/i0"]["credits"] == pytest.approx(0.11)


def test_budget_poisoned_lockfile_prices_are_not_learned(project, emulator):
    project.config(matrix_config(1))
    api_build(project, emulator)
    for poison in (0.0, -3.0, "NaN"):
        text = (project.root / "starbuild.lock").read_text()
        lock = json.loads(text)
        lock["assets"]["icons/i0"]["credits"] = poison
        (project.root / "starbuild.lock").write_text(json.dumps(lock).replace('"NaN"', "NaN"))
        project.config(matrix_config(4))
        res = project.run("plan", "--json")
        if poison == 0.0:  # a valid number that is no price: not learned
            assert res.json["summary"]["credits"] == pytest.approx(0.33), poison
        else:  # not a price at all: the lockfile is refused, located, before anything is planned
            assert res.exit_code == 2 and "starbuild.lock" in res.stderr and "credits" in res.stderr, poison
        project.config(matrix_config(1))


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "-inf"])
def test_budget_max_credits_must_be_finite_and_not_negative(project, emulator, value):
    project.config(matrix_config(1))
    res = project.run("build", "--offline", f"--max-credits={value}")
    assert res.exit_code == 2 and "max-credits" in res.stderr
    assert not (project.root / "starbuild.lock").exists()


def test_budget_force_is_counted_against_the_budget(project, emulator):
    project.config(matrix_config(3))
    assert api_build(project, emulator).exit_code == 0
    with pytest.raises(Exception) as info:
        api_build(project, emulator, force=("*",), max_credits=0.2)
    assert info.value.exit_code == 3 and "0.33" in str(info.value)
    assert len(emulator.ledger) == 3  # refused before the first submission


def test_budget_retry_failed_respects_the_budget(project):
    faults = Faults(rate_task_failed=1.0, failure_codes=("service_error",))
    em = Emulator(EmulatorConfig(render="plain", faults=faults))
    project.config(matrix_config(1))
    report = api_build(project, em, retry_failed=8, max_credits=0.35)
    assert len(em.ledger) == 3 and _billed(em) <= 0.35  # 3 x 0.11; the 4th would pass the cap
    assert report.exit_code == 3 and "max_credits" in report.stopped


def test_budget_unknown_kind_goes_one_submission_at_a_time_until_priced(project):
    # 8 new images of one kind, a slow submit answer: only the first is on the wire until its
    # answer tells the price; then the others go as fast as the concurrency's slow start allows.
    em = Emulator(EmulatorConfig(render="plain", latency=0.5,
                                 faults=Faults(rate_slow_submit=1.0, slow_submit_seconds=0.2)))
    project.config(matrix_config(8, concurrency=8))
    report = api_build(project, em, max_credits=10)
    assert report.exit_code == 0
    created = sorted(e.created for e in em.ledger)
    assert created[1] - created[0] >= 0.15  # the probe's answer came before the second submission
    assert created[4] - created[1] < 0.15  # and the next ones (slow start: 4) did not wait for one another

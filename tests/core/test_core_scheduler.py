"""The in-server scheduler: a shared job runs once per period whatever the number of processes, a per-process job
runs in each, a failed run is recorded and retried at the next period, and periods are named in Paris time."""

from __future__ import annotations

from datetime import datetime, timezone

from flowbus.scheduler import Job, Scheduler, daily_at, every, last_runs


async def test_one_run_per_period_across_processes(backend, runtime_factory):
    rt = await runtime_factory(backend, workers=False)
    other = await runtime_factory(backend, workers=False, bus_prefix=rt.settings.bus_prefix,
                                  s3_bucket=rt.settings.s3_bucket)
    period = {"n": 1}
    ran: list[str] = []

    async def shared(runtime):
        ran.append(f"shared@{id(runtime)}")
        return len(ran)

    async def local(runtime):
        ran.append(f"local@{id(runtime)}")

    async def failing(runtime):
        if period["n"] == 1:
            raise RuntimeError("S²LOW ne répond pas")
        return "ok"

    jobs = [Job("shared", lambda now: str(period["n"]), shared, "partagé"),
            Job("local", lambda now: str(period["n"]), local, "par processus", shared=False),
            Job("failing", lambda now: str(period["n"]), failing, "en échec")]
    first, second = Scheduler(rt, jobs), Scheduler(other, jobs)
    assert await first.run_due() == ["shared", "local", "failing"]
    assert await second.run_due() == ["local"]
    assert await first.run_due() == [] and await second.run_due() == []
    assert sorted(ran) == sorted([f"shared@{id(rt)}", f"local@{id(rt)}", f"local@{id(other)}"])
    async with rt.store.transaction() as tx:
        runs = {r["job"].name: r["run"] for r in await last_runs(tx, jobs)}
    assert "local" not in runs, "per-process jobs are not recorded"
    assert runs["shared"]["outcome"] == "done" and runs["shared"]["detail"] == "1"
    assert runs["failing"]["outcome"] == "failed" and "S²LOW ne répond pas" in runs["failing"]["detail"]
    assert runs["failing"]["finished_at"] is not None

    period["n"] = 2  # the next period: each shared job runs once more, somewhere
    assert set(await second.run_due()) == {"shared", "local", "failing"}
    assert await first.run_due() == ["local"]
    async with rt.store.transaction() as tx:
        runs = {r["job"].name: r["run"] for r in await last_runs(tx, jobs)}
    assert (runs["failing"]["slot"], runs["failing"]["outcome"]) == ("2", "done")
    assert runs["failing"]["process"] == second.process != first.process


def test_periods_are_named_in_paris_time():
    seven = daily_at(7)
    # 3 December (winter, UTC+1): 05:59 UTC is 06:59 in Paris — still yesterday's period
    assert seven(datetime(2026, 12, 3, 5, 59, tzinfo=timezone.utc)) == "2026-12-02"
    assert seven(datetime(2026, 12, 3, 6, 0, tzinfo=timezone.utc)) == "2026-12-03"
    # 1 July (summer, UTC+2): 05:00 UTC is 07:00 in Paris
    assert seven(datetime(2026, 7, 1, 4, 59, tzinfo=timezone.utc)) == "2026-06-30"
    assert seven(datetime(2026, 7, 1, 5, 0, tzinfo=timezone.utc)) == "2026-07-01"
    quarter = every(900)
    assert quarter(datetime(2026, 12, 3, 8, 14, 59, tzinfo=timezone.utc)) == \
        quarter(datetime(2026, 12, 3, 8, 0, tzinfo=timezone.utc))
    assert quarter(datetime(2026, 12, 3, 8, 15, tzinfo=timezone.utc)) != \
        quarter(datetime(2026, 12, 3, 8, 14, 59, tzinfo=timezone.utc))

-- Scheduled work inside the server (flowbus.scheduler): one row per job and period, inserted by the process
-- that runs it (the primary key makes every other process skip that period), with its outcome.
CREATE TABLE scheduled_runs (
    job TEXT NOT NULL,
    slot TEXT NOT NULL,
    process TEXT NOT NULL,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    outcome TEXT NOT NULL,
    detail TEXT,
    PRIMARY KEY (job, slot)
);
CREATE INDEX scheduled_runs_started ON scheduled_runs (job, started_at);
CREATE INDEX scheduled_runs_age ON scheduled_runs (started_at);

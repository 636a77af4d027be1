"""Schedules. Retraining is weekly and stopped by default: turn it on in the Dagster UI."""

import dagster as dg

from recsys_pipeline.jobs import full_pipeline_job

full_pipeline_job_schedule = dg.ScheduleDefinition(
    job=full_pipeline_job,
    cron_schedule="0 3 * * 1",  # Mondays 03:00
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Weekly retraining: re-ingest, re-prepare and retrain on the current lake.",
)

all_schedules = [full_pipeline_job_schedule]

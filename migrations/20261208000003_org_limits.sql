-- Per-organisation limits on the job system, so one organisation cannot fill the queues or the
-- workers of a shared installation. Null means the installation's default (queued: 100,000 steps;
-- running: no limit).
alter table org add column max_queued_steps integer
    constraint org_max_queued_steps_positive check (max_queued_steps > 0);
alter table org add column max_running_steps integer
    constraint org_max_running_steps_positive check (max_running_steps > 0);

comment on column org.max_queued_steps is 'steps the organisation may have queued at once (null: 100,000)';
comment on column org.max_running_steps is 'steps of the organisation that run at once (null: no limit)';

-- Monitoring: a trained model applied to another period, or another area, of its project.

-- Such a prediction run acquires windows of its own: the project's windows keep the imagery the model
-- learnt from. These are the run's windows, with what its acquisition made of each.
create table run_window (
    run_id uuid not null references pipeline_run (id) on delete cascade,
    project_id uuid not null references project (id) on delete cascade,
    id text not null,
    epsg integer not null,
    size integer not null,
    resolution double precision not null,
    grid_column bigint not null,
    grid_row bigint not null,
    geometry jsonb not null,
    status text not null
        constraint run_window_status_valid check (status in ('acquired', 'quarantined', 'empty')),
    reason text,
    scenes jsonb not null default '{}',
    objects text[] not null default '{}',
    step_id uuid references step (id) on delete set null,
    updated_at timestamptz not null default now(),
    primary key (run_id, id)
);
create index run_window_project on run_window (project_id);

-- A project's schedule: every month, quarter or year, the server starts a prediction of the latest
-- full period (a year-long project: the latest 12 months; a shorter one: the latest passed occurrence
-- of its own months), for the member who set it, and compares its map with the previous one.
create table project_schedule (
    project_id uuid primary key references project (id) on delete cascade,
    org_id uuid not null references org (id),
    cadence text not null
        constraint project_schedule_cadence_valid check (cadence in ('monthly', 'quarterly', 'yearly')),
    stac text not null,
    profile jsonb not null,
    max_cloud double precision,
    -- The model; null: the project's best trained model when the schedule fires.
    training_run_id uuid references pipeline_run (id) on delete set null,
    -- A `change.alert` webhook event when a change class (from one class to another) covers more.
    change_alert_km2 double precision,
    created_by uuid not null references app_user (id),
    -- The beat: firings fall on anchor_at + k × cadence.
    anchor_at timestamptz not null,
    -- When it is due next (a firing that could not start for a passing reason keeps it and retries
    -- at retry_at, which also holds a schedule while one server fires it).
    next_at timestamptz not null,
    retry_at timestamptz,
    -- The period of the last run started, and the last period whose run succeeded.
    last_period_end date,
    mapped_period_end date,
    last_run_id uuid references pipeline_run (id) on delete set null,
    -- Whether the last run's map was compared with the one before (and, if it finished, kept); a
    -- server comparing it holds it until checking_until.
    last_run_checked boolean not null default true,
    checking_until timestamptz,
    last_output_id uuid references output (id) on delete set null,
    last_change_map_id uuid references change_map (id) on delete set null,
    last_error text,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
);
create index project_schedule_due on project_schedule (next_at);

-- Webhook events: a finished run, or a change alert of a scheduled run.
alter table webhook_delivery add column event text not null default 'run.finished'
    constraint webhook_delivery_event_valid check (event in ('run.finished', 'change.alert'));
alter table webhook_delivery add column detail jsonb not null default '{}';
drop index webhook_delivery_pending_once;
create unique index webhook_delivery_pending_once on webhook_delivery (run_id, event) where state = 'pending';

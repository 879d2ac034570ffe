-- Foundation schema: organisations, projects, the pipeline job tables and the worker registry.
-- Dispatch itself goes through apalis (schema `apalis`, created by its own migrations); these tables hold
-- the domain state users and admins see and the guarantees apalis does not give (per-step lease, cancel,
-- dependencies, attempt-scoped outputs).

create table org (
    id uuid primary key,
    name text not null constraint org_name_unique unique,
    created_at timestamptz not null default now()
);

-- Until accounts exist everything belongs to this organisation.
insert into org (id, name) values ('00000000-0000-0000-0000-000000000001', 'default');

create table project (
    id uuid primary key,
    org_id uuid not null references org (id),
    name text not null,
    description text not null default '',
    aoi jsonb not null,
    -- bbox columns index the AOI without PostGIS.
    bbox_west double precision not null,
    bbox_south double precision not null,
    bbox_east double precision not null,
    bbox_north double precision not null,
    area_km2 double precision not null,
    start_date date not null,
    end_date date not null,
    task text not null constraint project_task_valid check (task in ('classification', 'segmentation', 'regression')),
    classes jsonb not null default '[]',
    modalities text[] not null,
    model_size text not null constraint project_model_size_valid check (model_size in ('nano', 'tiny', 'base', 'large')),
    patch_size integer not null constraint project_patch_size_valid check (patch_size between 1 and 8),
    window_size integer not null constraint project_window_size_valid check (window_size between 8 and 1024),
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    constraint project_dates_ordered check (end_date >= start_date)
);
create index project_org_id on project (org_id, id desc);

create table pipeline_run (
    id uuid primary key,
    org_id uuid not null references org (id),
    project_id uuid not null references project (id) on delete cascade,
    state text not null default 'queued'
        constraint pipeline_run_state_valid check (state in ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    idempotency_key text,
    created_at timestamptz not null default now(),
    started_at timestamptz,
    finished_at timestamptz,
    constraint pipeline_run_idempotency unique (project_id, idempotency_key)
);
create index pipeline_run_project on pipeline_run (project_id, id desc);

create table worker (
    id uuid primary key,
    name text not null,
    pool text not null,
    queues text[] not null,
    concurrency integer not null,
    capabilities jsonb not null default '{}',
    version text not null,
    -- Admin state; `offline` is derived from last_heartbeat_at, never stored.
    admin_state text not null default 'active'
        constraint worker_admin_state_valid check (admin_state in ('active', 'draining', 'paused')),
    started_at timestamptz not null default now(),
    last_heartbeat_at timestamptz not null default now(),
    stopped_at timestamptz
);
create index worker_pool on worker (pool);

create table step (
    id uuid primary key,
    run_id uuid not null references pipeline_run (id) on delete cascade,
    name text not null,
    kind text not null,
    args jsonb not null default '{}',
    queue text not null,
    state text not null default 'queued'
        constraint step_state_valid check (state in ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    -- attempt counts started attempts; a failed attempt below max_attempts returns the step to `queued`.
    attempt integer not null default 0,
    max_attempts integer not null default 3 constraint step_max_attempts_positive check (max_attempts >= 1),
    backoff_base_ms integer not null default 5000,
    run_at timestamptz not null default now(),
    progress real not null default 0,
    message text not null default '',
    lease_owner uuid references worker (id) on delete set null,
    lease_expires_at timestamptz,
    heartbeat_at timestamptz,
    cancel_requested boolean not null default false,
    -- Set when this step was cancelled because an upstream step failed or was cancelled; retrying that
    -- upstream step re-queues it.
    cancelled_by_upstream boolean not null default false,
    error text,
    errors jsonb not null default '[]',
    output jsonb,
    -- apalis task id of the latest dispatch, so the reaper can tell a lost dispatch from a pending one.
    dispatch_id text,
    created_at timestamptz not null default now(),
    started_at timestamptz,
    finished_at timestamptz,
    constraint step_name_unique unique (run_id, name),
    constraint step_finished_iff_terminal check ((finished_at is not null) = (state in ('succeeded', 'failed', 'cancelled')))
);
create index step_run on step (run_id);
create index step_running_lease on step (lease_expires_at) where state = 'running';
create index step_queued on step (queue, run_at) where state = 'queued';
create index step_open on step (run_id) where state in ('queued', 'running');

create table step_dependency (
    step_id uuid not null references step (id) on delete cascade,
    depends_on uuid not null references step (id) on delete cascade,
    primary key (step_id, depends_on)
);
create index step_dependency_upstream on step_dependency (depends_on);

-- Results a step commits together with its `succeeded` transition. Keys are unique per step, so a
-- re-run replaces rather than duplicates; `attempt` records which attempt produced them.
create table step_artifact (
    step_id uuid not null references step (id) on delete cascade,
    name text not null,
    attempt integer not null,
    uri text,
    metadata jsonb not null default '{}',
    created_at timestamptz not null default now(),
    primary key (step_id, name)
);

-- Busy time per worker, for the pools' utilisation over the last hour.
create table step_attempt (
    step_id uuid not null references step (id) on delete cascade,
    attempt integer not null,
    worker_id uuid references worker (id) on delete set null,
    started_at timestamptz not null default now(),
    finished_at timestamptz,
    outcome text,
    primary key (step_id, attempt)
);
create index step_attempt_worker on step_attempt (worker_id, started_at);

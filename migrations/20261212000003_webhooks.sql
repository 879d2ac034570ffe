-- A project's webhook: called (POST, JSON, signed with HMAC-SHA256 of the body under its secret) when one
-- of the project's runs finishes.
create table project_webhook (
    project_id uuid primary key references project (id) on delete cascade,
    url text not null,
    secret text not null,
    created_at timestamptz not null default now()
);

-- One delivery each time a run finishes, for a project that has a webhook, sent by the server's maintenance task
-- and retried with backoff.
create table webhook_delivery (
    id uuid primary key,
    project_id uuid not null references project (id) on delete cascade,
    run_id uuid not null references pipeline_run (id) on delete cascade,
    state text not null default 'pending'
        constraint webhook_delivery_state_valid check (state in ('pending', 'delivered', 'failed')),
    attempts integer not null default 0,
    next_at timestamptz not null default now(),
    last_status integer,
    last_error text,
    created_at timestamptz not null default now(),
    delivered_at timestamptz
);
-- A run that finishes again (after a retry) is announced again, but never twice at once.
create unique index webhook_delivery_pending_once on webhook_delivery (run_id) where state = 'pending';
create index webhook_delivery_due on webhook_delivery (next_at) where state = 'pending';
create index webhook_delivery_project on webhook_delivery (project_id, created_at desc);

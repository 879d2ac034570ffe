-- Device time: what each step attempt spent and on which kind of device, the measured cost of a unit
-- of work per step kind, model size and device kind (the estimates' source), installation-set prices
-- and per-organisation monthly quotas, and runs held until an administrator approves them.

-- The device an attempt ran on (`gpu` when its worker's model device was CUDA) and whether the
-- installation paid for it (a worker without a worker token) or the organisation's own worker did.
alter table step_attempt add column device_kind text not null default 'cpu'
    constraint step_attempt_device_kind_valid check (device_kind in ('cpu', 'gpu'));
alter table step_attempt add column installation boolean not null default true;
create index step_attempt_started on step_attempt (started_at);

-- Seconds of device time per unit of work (`predict`: a window; `train`: a training example for one
-- epoch), learned from finished steps as a moving average.
create table device_rate (
    step_kind text not null,
    model_size text not null,
    device_kind text not null constraint device_rate_device_kind_valid check (device_kind in ('cpu', 'gpu')),
    seconds_per_unit double precision not null constraint device_rate_positive check (seconds_per_unit > 0),
    samples integer not null default 1,
    updated_at timestamptz not null default now(),
    primary key (step_kind, model_size, device_kind)
);

-- What an hour of a device kind costs, as the installation's administrators set it.
create table device_price (
    device_kind text primary key constraint device_price_device_kind_valid check (device_kind in ('cpu', 'gpu')),
    per_hour numeric(14, 4) not null constraint device_price_non_negative check (per_hour >= 0),
    currency text not null constraint device_price_currency check (currency ~ '^[A-Z]{3}$')
);

-- Device-hours an organisation may spend on the installation's workers per calendar month (UTC).
create table device_quota (
    org_id uuid not null references org (id) on delete cascade,
    device_kind text not null constraint device_quota_device_kind_valid check (device_kind in ('cpu', 'gpu')),
    monthly_hours double precision not null constraint device_quota_non_negative check (monthly_hours >= 0),
    primary key (org_id, device_kind)
);

-- The estimate a run was started with, and whether it waits for an administrator's approval (its
-- steps are not claimed until then).
alter table pipeline_run add column estimate jsonb;
alter table pipeline_run add column awaiting_approval boolean not null default false;
alter table pipeline_run add column approved_at timestamptz;
alter table pipeline_run add column approved_by text;
create index pipeline_run_awaiting_approval on pipeline_run (created_at) where awaiting_approval;

-- Trained models: the training curve of each `train` step (one row per epoch, upserted so a resumed
-- attempt continues the same curve) and the evaluation reports of `evaluate` steps.

create table training_epoch (
    run_id uuid not null references pipeline_run (id) on delete cascade,
    step_id uuid not null references step (id) on delete cascade,
    epoch integer not null constraint training_epoch_positive check (epoch >= 1),
    phase text not null constraint training_epoch_phase_valid check (phase in ('frozen', 'unfrozen')),
    train_loss double precision not null,
    val_loss double precision,
    val_metric double precision,
    metric text not null,
    seconds double precision not null,
    created_at timestamptz not null default now(),
    primary key (step_id, epoch)
);
create index training_epoch_run on training_epoch (run_id, epoch);

create table evaluation (
    id uuid primary key,
    org_id uuid not null references org (id),
    run_id uuid not null references pipeline_run (id) on delete cascade,
    project_id uuid not null references project (id) on delete cascade,
    -- The evaluate step that wrote it: a re-run replaces its report instead of adding one.
    step_id uuid references step (id) on delete set null constraint evaluation_step_unique unique,
    label_set_version integer,
    -- Object-store key of the evaluated model's model.json.
    model_key text not null,
    report jsonb not null,
    created_at timestamptz not null default now()
);
create index evaluation_project on evaluation (project_id, id desc);
create index evaluation_run on evaluation (run_id, id desc);

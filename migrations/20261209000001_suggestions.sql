-- Active learning: the points a `suggest` step proposes for labelling next.
alter table step drop constraint step_kind_valid;
alter table step add constraint step_kind_valid
    check (kind in ('acquire', 'acquire_summary', 'train', 'evaluate', 'predict', 'combine', 'publish',
                    'suggest', 'sleep', 'fail', 'noop'));

create table label_suggestion (
    run_id uuid not null references pipeline_run (id) on delete cascade,
    -- 1 = label first.
    rank integer not null check (rank >= 1),
    project_id uuid not null references project (id) on delete cascade,
    window_id text not null,
    -- The suggested pixel inside its window (row, column from the top left).
    pixel_row integer not null,
    pixel_col integer not null,
    lon double precision not null,
    lat double precision not null,
    -- `diverse`: chosen to cover the embedding space (before labels of two classes exist);
    -- `uncertain`: the frozen-embedding baseline is unsure here, and it is unlike what is labelled.
    reason text not null check (reason in ('diverse', 'uncertain')),
    -- The baseline's guess (a class id of the project) and the margin between its two best classes.
    predicted_class integer,
    margin double precision,
    status text not null default 'open' check (status in ('open', 'labelled', 'skipped', 'unsure')),
    updated_at timestamptz not null default now(),
    primary key (run_id, rank)
);
create index label_suggestion_project on label_suggestion (project_id, run_id);

-- Accuracy assessments of published class maps (Olofsson et al. 2014): a stratified random sample
-- with the map classes as strata, reference labels given blind (the map class is not shown), and the
-- estimates computed from them.
create table assessment (
    id uuid primary key,
    org_id uuid not null references org (id) on delete cascade,
    project_id uuid not null references project (id) on delete cascade,
    output_id uuid not null references output (id) on delete cascade,
    created_by uuid references app_user (id) on delete set null,
    created_at timestamptz not null default now(),
    -- target_se, min_per_class, expected_users, seed, as used.
    design jsonb not null,
    -- [{class_id, name, mapped_pixels, sample_size}], in legend order.
    strata jsonb not null,
    pixel_area_m2 float8 not null constraint assessment_pixel_area_positive check (pixel_area_m2 > 0),
    epsg integer not null
);
create index assessment_output on assessment (output_id, id desc);

create table assessment_sample (
    assessment_id uuid not null references assessment (id) on delete cascade,
    id integer not null,
    -- The map class of the pixel (its stratum) and its inclusion probability (n_h / N_h).
    stratum integer not null,
    inclusion_probability float8 not null,
    col integer not null,
    row integer not null,
    x float8 not null,
    y float8 not null,
    lon float8 not null,
    lat float8 not null,
    -- The reference class given by a reviewer; `unsure` samples count in no estimate.
    reference integer,
    unsure boolean not null default false,
    labelled_by uuid references app_user (id) on delete set null,
    labelled_at timestamptz,
    primary key (assessment_id, id),
    constraint assessment_sample_label check (not (unsure and reference is not null))
);

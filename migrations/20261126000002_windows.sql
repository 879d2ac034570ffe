-- Windows: a project's AOI cut into square cells on a UTM grid (10 m/px), with what acquisition made of
-- each. The id is the grid cell's stable id (`{epsg}_{res}m_{size}px_{column}_{row}`), so re-planning
-- the same AOI upserts rather than duplicates.
create table project_window (
    project_id uuid not null references project (id) on delete cascade,
    id text not null,
    epsg integer not null,
    crs text not null,
    size integer not null,
    resolution double precision not null,
    grid_column bigint not null,
    grid_row bigint not null,
    geotransform jsonb not null,
    utm_bounds jsonb not null,
    bbox_west double precision not null,
    bbox_south double precision not null,
    bbox_east double precision not null,
    bbox_north double precision not null,
    geometry jsonb not null,
    status text not null default 'pending'
        constraint project_window_status_valid check (status in ('pending', 'acquired', 'quarantined')),
    reason text,
    scenes jsonb not null default '{}',
    objects text[] not null default '{}',
    step_id uuid references step (id) on delete set null,
    updated_at timestamptz not null default now(),
    primary key (project_id, id)
);
create index project_window_status on project_window (project_id, status);

-- Published prediction outputs: one row per raster a prediction run produced (class map, per-class
-- probabilities, or values), with its UTM COG and web-mercator COG object keys, what it covers, the
-- legend, and where it came from (model, checkpoint, labels, metrics, input scenes). A re-run of the
-- publish step replaces the run's row of the same kind rather than adding one.
create table output (
    id uuid primary key,
    org_id uuid not null references org (id),
    project_id uuid not null references project (id) on delete cascade,
    run_id uuid not null references pipeline_run (id) on delete cascade,
    kind text not null constraint output_kind_valid check (kind in ('class', 'probability', 'value')),
    utm_key text not null,
    web_key text not null,
    epsg integer not null,
    width integer not null,
    height integer not null,
    bands integer not null,
    -- [west, south, east, north] in EPSG:4326, and [minx, miny, maxx, maxy] in EPSG:3857.
    bbox_west double precision not null,
    bbox_south double precision not null,
    bbox_east double precision not null,
    bbox_north double precision not null,
    bounds_3857 jsonb not null,
    min_zoom smallint not null,
    max_zoom smallint not null,
    -- [{id, name, color}] of the project when the output was made.
    classes jsonb not null default '[]',
    -- Value range {min, max} of value rasters, for the colour ramp.
    stats jsonb not null default '{}',
    lineage jsonb not null default '{}',
    created_at timestamptz not null default now(),
    constraint output_run_kind unique (run_id, kind)
);
create index output_project on output (org_id, project_id, created_at desc);

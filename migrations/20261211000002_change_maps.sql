-- Change maps: two class maps of the same project compared pixel by pixel on the earlier map's grid.
-- The row keeps the exact from-to pixel counts; areas are the counts times `pixel_area_m2`. The change
-- raster (a COG, `ProjectKeys::change_map`) holds each pixel's from-to pair.
create table change_map (
    id uuid primary key,
    org_id uuid not null references org (id) on delete cascade,
    project_id uuid not null references project (id) on delete cascade,
    -- The earlier map and the later one.
    from_output_id uuid not null references output (id) on delete cascade,
    to_output_id uuid not null references output (id) on delete cascade,
    created_by uuid references app_user (id) on delete set null,
    created_at timestamptz not null default now(),
    cog_key text not null,
    epsg integer not null,
    width integer not null,
    height integer not null,
    pixel_area_m2 float8 not null constraint change_map_pixel_area_positive check (pixel_area_m2 > 0),
    -- Whether the later map was resampled (nearest neighbour) onto the earlier map's grid.
    resampled boolean not null,
    -- [{id, name, color}]: the classes of the matrix's rows and columns, in order.
    classes jsonb not null,
    -- matrix[i][j]: pixels of classes[i] in the earlier map and classes[j] in the later one.
    matrix jsonb not null,
    -- [{code, from, to, pixels}]: the pairs that changed, with their values in the change raster.
    pairs jsonb not null,
    -- Pixels of the grid that are nodata in either map.
    nodata_pixels bigint not null,
    constraint change_map_two_maps check (from_output_id <> to_output_id)
);
create index change_map_project on change_map (org_id, project_id, id desc);
create index change_map_from on change_map (from_output_id);
create index change_map_to on change_map (to_output_id);

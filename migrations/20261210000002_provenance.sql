-- What a published map covers and under which terms it may be used.
--
-- `output.footprint`: the outline of the data itself (GeoJSON Polygon or MultiPolygon, EPSG:4326),
-- computed from the raster's valid pixels when it is published; the bbox columns then hold that
-- outline's bounds rather than the web-mercator tile grid's extent. Outputs published before this
-- migration keep null and their grid bounds.
alter table output add column footprint jsonb;

-- The licence of a project's published maps: an SPDX licence identifier (CC-BY-4.0 by default, the
-- licence most open EO datasets use and one Copernicus data allows) or `other`, which needs a link
-- to the terms.
alter table project add column license text not null default 'CC-BY-4.0'
    constraint project_license_form check (license ~ '^[A-Za-z0-9][A-Za-z0-9.+-]{0,63}$');
alter table project add column license_url text
    constraint project_license_url_form check (license_url is null or (license_url ~ '^https?://' and length(license_url) <= 2000));
alter table project add constraint project_other_license_linked
    check (license <> 'other' or license_url is not null);

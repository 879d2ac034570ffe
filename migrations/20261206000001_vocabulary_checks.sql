-- Step kinds and project modalities are closed vocabularies (`groundwork-types`): the database refuses
-- names the code does not know, as it already does for states, tasks and model sizes. A test compares
-- these lists with the Rust enums.
alter table step add constraint step_kind_valid
    check (kind in ('acquire', 'acquire_summary', 'train', 'evaluate', 'predict', 'combine', 'publish',
                    'sleep', 'fail', 'noop'));
alter table project add constraint project_modalities_valid
    check (modalities <@ array['sentinel2_l2a', 'sentinel1', 'landsat']::text[]);

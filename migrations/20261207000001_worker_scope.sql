-- Which workers may run an organisation's steps.
--
-- A worker registered with an organisation's worker token (worker.worker_token_id set) serves that
-- organisation alone: its pollers read the queues `{queue}@{org id}`. Workers without a token (the
-- server's in-process workers, and workers started before any token existed) are the installation's:
-- they read `cpu` and `gpu` and run the steps of every organisation allowed to use them.
alter table org add column installation_workers boolean not null default true;

comment on column org.installation_workers is
    'whether the installation''s workers (those registered without a worker token) may run this organisation''s steps';

-- The id of the latest dispatch's message to the organisation's own queue (`dispatch_id` holds the one
-- to the installation's queue); a claim retires both.
alter table step add column own_dispatch_id text;

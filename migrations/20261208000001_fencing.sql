-- Fencing: every claim of a step gets a fresh id, and every write the holder makes (heartbeat,
-- progress, success, failure, cancel, a step's own output rows) is conditional on it. A retry resets
-- `attempt`, so (lease owner, attempt) could match a stale execution on the same worker; a claim id
-- never repeats.
alter table step add column claim_id uuid;

comment on column step.claim_id is
    'the fencing token of the current (or latest) claim; null before the first claim';

-- Leases lost (the worker stopped answering) count apart from the body's failures: a lost lease does
-- not use up one of `max_attempts`, and has its own cap.
alter table step add column lost_leases integer not null default 0;

comment on column step.lost_leases is
    'claims of this step whose lease expired (worker killed, partitioned); attempts used by failures are attempt - lost_leases';

-- One row per claim: a retried step numbers its attempts from 1 again, so (step, attempt) no longer
-- names one claim.
alter table step_attempt add column claim_id uuid;
update step_attempt set claim_id = gen_random_uuid() where claim_id is null;
alter table step_attempt alter column claim_id set not null;
alter table step_attempt drop constraint step_attempt_pkey;
alter table step_attempt add primary key (claim_id);
create index step_attempt_step on step_attempt (step_id, started_at);

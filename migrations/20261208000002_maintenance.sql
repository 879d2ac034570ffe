-- Object-store prefixes whose objects must go (a deleted project's window tensors, checkpoints, models
-- and outputs). Queued in the transaction that deletes the rows; the server's maintenance task lists
-- and deletes the objects, then marks the row done.
create table object_cleanup (
    id bigserial primary key,
    prefix text not null constraint object_cleanup_prefix_nonempty check (length(prefix) > 0),
    reason text not null,
    requested_at timestamptz not null default now(),
    attempts integer not null default 0,
    last_error text,
    done_at timestamptz
);
create index object_cleanup_pending on object_cleanup (id) where done_at is null;

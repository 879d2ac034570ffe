-- Read-only share links of published outputs: a link opens one output's map page, tiles, downloads and
-- STAC Item without an account, until it is revoked or expires. Only the SHA-256 digest of the link's
-- secret is stored (the secret is shown once, when the link is made), as for API tokens.
create table share_link (
    id uuid primary key,
    org_id uuid not null references org (id) on delete cascade,
    output_id uuid not null references output (id) on delete cascade,
    token_hash bytea not null constraint share_link_hash_unique unique,
    -- What the link is for, so people can tell their links apart (may be empty).
    label text not null default '',
    created_by uuid references app_user (id) on delete set null,
    created_at timestamptz not null default now(),
    -- The link stops working at this moment; null: only when revoked.
    expires_at timestamptz,
    revoked_at timestamptz
);
create index share_link_output on share_link (org_id, output_id, id desc);

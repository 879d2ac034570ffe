-- Accounts and access control: users, memberships with roles, sessions, invitations, API tokens,
-- worker tokens, login attempts (rate limiting across server processes) and the audit log.
-- Every secret (session, invitation, API and worker token) is stored as its SHA-256 digest only: the
-- tokens are 256-bit random values, so a fast hash is enough and a database dump reveals none of them.

create table app_user (
    id uuid primary key,
    email text not null,
    -- Argon2id PHC string.
    password_hash text not null,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
);
-- Emails are compared case-insensitively.
create unique index app_user_email_unique on app_user (lower(email));

create table membership (
    org_id uuid not null references org (id) on delete cascade,
    user_id uuid not null references app_user (id) on delete cascade,
    role text not null constraint membership_role_valid check (role in ('owner', 'admin', 'member', 'viewer')),
    created_at timestamptz not null default now(),
    primary key (org_id, user_id)
);
create index membership_user on membership (user_id);

create table user_session (
    id uuid primary key,
    token_hash bytea not null constraint user_session_token_unique unique,
    user_id uuid not null references app_user (id) on delete cascade,
    -- The organisation the session acts in; null when the user belongs to none.
    org_id uuid references org (id) on delete set null,
    -- Echoed by cookie-authenticated form posts and state-changing API calls.
    csrf_token text not null,
    created_at timestamptz not null default now(),
    expires_at timestamptz not null,
    ip text
);
create index user_session_user on user_session (user_id);

create table invitation (
    id uuid primary key,
    org_id uuid not null references org (id) on delete cascade,
    email text not null,
    role text not null constraint invitation_role_valid check (role in ('owner', 'admin', 'member', 'viewer')),
    token_hash bytea not null constraint invitation_token_unique unique,
    created_by uuid references app_user (id) on delete set null,
    created_at timestamptz not null default now(),
    expires_at timestamptz not null,
    accepted_at timestamptz,
    accepted_by uuid references app_user (id) on delete set null
);
create index invitation_org on invitation (org_id, id desc);

create table api_token (
    id uuid primary key,
    user_id uuid not null references app_user (id) on delete cascade,
    org_id uuid not null references org (id) on delete cascade,
    name text not null,
    scope text not null constraint api_token_scope_valid check (scope in ('read', 'write')),
    token_hash bytea not null constraint api_token_hash_unique unique,
    -- The first characters of the token, so people can tell their tokens apart.
    prefix text not null,
    created_at timestamptz not null default now(),
    expires_at timestamptz,
    last_used_at timestamptz,
    revoked_at timestamptz
);
create index api_token_org on api_token (org_id, id desc);

create table worker_token (
    id uuid primary key,
    org_id uuid not null references org (id) on delete cascade,
    name text not null,
    token_hash bytea not null constraint worker_token_hash_unique unique,
    prefix text not null,
    created_by uuid references app_user (id) on delete set null,
    created_at timestamptz not null default now(),
    last_used_at timestamptz,
    revoked_at timestamptz
);
create index worker_token_org on worker_token (org_id, id desc);

-- Failed and successful sign-ins; failures in the last 15 minutes per account and per client address
-- decide the rate limit. Old rows are pruned when new ones are written.
create table login_attempt (
    id bigserial primary key,
    email text not null,
    ip text not null,
    succeeded boolean not null,
    created_at timestamptz not null default now()
);
create index login_attempt_email on login_attempt (email, created_at) where not succeeded;
create index login_attempt_ip on login_attempt (ip, created_at) where not succeeded;

-- Who did what, where and when. Rows outlive the users, tokens and organisations they name.
create table audit_log (
    id uuid primary key,
    org_id uuid,
    user_id uuid,
    -- The API token used, when the action came through one.
    token_id uuid,
    action text not null,
    target_type text not null,
    target_id text,
    ip text,
    details jsonb not null default '{}',
    created_at timestamptz not null default now()
);
create index audit_log_org on audit_log (org_id, id desc);

-- Workers belong to an organisation: the one of the worker token they registered with, or the default
-- organisation for in-process and tokenless workers.
alter table worker add column org_id uuid not null default '00000000-0000-0000-0000-000000000001'
    references org (id) on delete cascade;
alter table worker add column worker_token_id uuid references worker_token (id) on delete set null;
create index worker_org on worker (org_id, id desc);

-- A window's imagery is stale once the project's area, dates, modalities or window size changed after
-- it was acquired: training and prediction refuse the project until it is acquired again, which
-- records a fresh outcome for every window of the new plan (and quarantines those the new area left).
alter table project_window add column stale boolean not null default false;

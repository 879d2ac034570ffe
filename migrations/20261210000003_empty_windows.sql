-- A window that was read without error but holds no imagery (no scene covers it in the project's
-- period, or every pixel of every month is masked) is `empty`, with the reason, rather than
-- `acquired`: it counts against the acquisition's success threshold and is never trained on or mapped.
alter table project_window drop constraint project_window_status_valid;
alter table project_window add constraint project_window_status_valid
    check (status in ('pending', 'acquired', 'quarantined', 'empty'));

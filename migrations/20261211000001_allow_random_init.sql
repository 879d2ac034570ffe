-- Whether a project may train from random encoder weights when no pretrained OlmoEarth checkpoint is
-- available to the worker. Off by default: training then fails and says how to install a checkpoint
-- (`groundwork model import` / `model fetch`). The offline demo turns it on; maps trained from random
-- weights are much less accurate.
alter table project add column allow_random_init boolean not null default false;

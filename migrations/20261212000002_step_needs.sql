-- What a step needs of the worker that claims it. `memory_mib`: the memory of the worker's model
-- device (GPU memory on a worker that computes on CUDA, RAM otherwise). Empty: any worker of its queue.
alter table step add column needs jsonb not null default '{}';

-- The kind of a worker's model device, from its capabilities: `gpu` when it computes on CUDA.
create function worker_device_kind(capabilities jsonb) returns text
language sql immutable as $$
    select case when capabilities->>'candle_device' like 'cuda%' then 'gpu' else 'cpu' end
$$;

-- The memory of a worker's model device in MiB, from its capabilities (null when it did not say).
create function worker_memory_mib(capabilities jsonb) returns double precision
language sql immutable as $$
    select case
        when worker_device_kind(capabilities) = 'gpu' then
            case when jsonb_typeof(capabilities->'gpu_memory_mib') = 'number'
                 then (capabilities->>'gpu_memory_mib')::float8 end
        else
            case when jsonb_typeof(capabilities->'memory_bytes') = 'number'
                 then (capabilities->>'memory_bytes')::float8 / 1048576 end
    end
$$;

-- An organisation's policy for GPU steps no GPU worker can take: after this many seconds without a
-- live GPU worker it may use, its queued GPU steps move to the CPU queue (null: they wait).
alter table org add column cpu_fallback_after_secs integer
    constraint org_cpu_fallback_positive check (cpu_fallback_after_secs > 0);

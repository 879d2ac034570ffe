//! Device time: what each step attempt spent and on which kind of device, the measured seconds per
//! unit of work that estimates come from, the installation's prices and each organisation's monthly
//! quotas.
//!
//! An attempt's device kind is fixed when it is claimed: `gpu` when its worker's model device is
//! CUDA, `cpu` otherwise. It is paid by the installation unless the worker joined with the
//! organisation's own worker token; quotas count the installation's device time only.

use crate::Result;
use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};
use groundwork_types::{DeviceKind, StepKind};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

/// Device time of one kind.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeviceTime {
    /// `cpu` or `gpu`.
    #[sqlx(try_from = "String")]
    pub device_kind: DeviceKind,
    /// Seconds of every attempt (running ones up to now), on any worker.
    pub seconds: f64,
    /// Of those, seconds on the installation's workers (what quotas count).
    pub installation_seconds: f64,
}

/// Device time of a run's step attempts, by device kind (kinds it did not use are left out).
pub async fn run_device_time(pool: &PgPool, run_id: Uuid) -> Result<Vec<DeviceTime>> {
    Ok(runs_device_time(pool, &[run_id])
        .await?
        .into_iter()
        .map(|(_, t)| t)
        .collect())
}

/// Device time of several runs at once: `(run, time)` rows.
pub async fn runs_device_time(pool: &PgPool, runs: &[Uuid]) -> Result<Vec<(Uuid, DeviceTime)>> {
    #[derive(sqlx::FromRow)]
    struct Row {
        run_id: Uuid,
        #[sqlx(flatten)]
        time: DeviceTime,
    }
    let rows: Vec<Row> = sqlx::query_as(
        "select s.run_id, a.device_kind, \
             coalesce(sum(extract(epoch from coalesce(a.finished_at, now()) - a.started_at)), 0)::float8 as seconds, \
             coalesce(sum(extract(epoch from coalesce(a.finished_at, now()) - a.started_at)) filter (where a.installation), 0)::float8 \
                 as installation_seconds \
         from step_attempt a join step s on s.id = a.step_id where s.run_id = any($1) \
         group by s.run_id, a.device_kind order by s.run_id, a.device_kind",
    )
    .bind(runs)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|r| (r.run_id, r.time)).collect())
}

/// A calendar month (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Month(NaiveDate);

impl Month {
    /// The month of `t`.
    #[must_use]
    pub fn of(t: DateTime<Utc>) -> Self {
        Self(NaiveDate::from_ymd_opt(t.year(), t.month(), 1).unwrap_or(NaiveDate::MIN))
    }

    /// The current month.
    #[must_use]
    pub fn now() -> Self {
        Self::of(Utc::now())
    }

    /// Its first instant and the next month's.
    #[must_use]
    pub fn range(self) -> (DateTime<Utc>, DateTime<Utc>) {
        let start = self.0;
        let next = if start.month() == 12 {
            NaiveDate::from_ymd_opt(start.year() + 1, 1, 1)
        } else {
            NaiveDate::from_ymd_opt(start.year(), start.month() + 1, 1)
        }
        .unwrap_or(NaiveDate::MAX);
        let at = |d: NaiveDate| Utc.from_utc_datetime(&d.and_hms_opt(0, 0, 0).unwrap_or_default());
        (at(start), at(next))
    }
}

impl std::str::FromStr for Month {
    type Err = String;
    /// `YYYY-MM`.
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not a month (YYYY-MM)");
        let (y, m) = s.split_once('-').ok_or_else(bad)?;
        if y.len() != 4 || m.len() != 2 {
            return Err(bad());
        }
        let (y, m): (i32, u32) = (y.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
        NaiveDate::from_ymd_opt(y, m, 1).map(Self).ok_or_else(bad)
    }
}

impl std::fmt::Display for Month {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04}-{:02}", self.0.year(), self.0.month())
    }
}

/// An organisation's use of one device kind in a month, with its quota and price.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeviceUsage {
    /// `cpu` or `gpu`.
    pub device_kind: DeviceKind,
    /// Device-hours of every attempt in the month (running ones up to now).
    pub hours: f64,
    /// Of those, hours on the installation's workers: what the quota counts and the price applies to.
    pub installation_hours: f64,
    /// The monthly quota in device-hours (null: none).
    pub quota_hours: Option<f64>,
    /// The quota less the installation hours used (null: no quota).
    pub remaining_hours: Option<f64>,
    /// Price of a device-hour (null: no price set).
    pub price_per_hour: Option<f64>,
    /// ISO 4217 currency of the price.
    pub currency: Option<String>,
    /// `installation_hours × price_per_hour`.
    pub cost: Option<f64>,
}

/// Installation-set prices and an organisation's quotas, by device kind.
#[derive(Debug, Clone, Default)]
pub struct Terms {
    prices: Vec<(DeviceKind, f64, String)>,
    quotas: Vec<(DeviceKind, f64)>,
}

impl Terms {
    /// Price per hour and currency of `kind`.
    #[must_use]
    pub fn price(&self, kind: DeviceKind) -> Option<(f64, &str)> {
        self.prices
            .iter()
            .find(|p| p.0 == kind)
            .map(|p| (p.1, p.2.as_str()))
    }

    /// Monthly quota of `kind` in hours.
    #[must_use]
    pub fn quota(&self, kind: DeviceKind) -> Option<f64> {
        self.quotas.iter().find(|q| q.0 == kind).map(|q| q.1)
    }
}

/// The prices and `org_id`'s quotas.
pub async fn terms(pool: &PgPool, org_id: Uuid) -> Result<Terms> {
    let prices: Vec<(String, f64, String)> =
        sqlx::query_as("select device_kind, per_hour::float8, currency from device_price")
            .fetch_all(pool)
            .await?;
    let quotas: Vec<(String, f64)> =
        sqlx::query_as("select device_kind, monthly_hours from device_quota where org_id = $1")
            .bind(org_id)
            .fetch_all(pool)
            .await?;
    Ok(Terms {
        prices: prices
            .into_iter()
            .filter_map(|(k, p, c)| Some((k.parse().ok()?, p, c)))
            .collect(),
        quotas: quotas
            .into_iter()
            .filter_map(|(k, h)| Some((k.parse().ok()?, h)))
            .collect(),
    })
}

/// Whether `org_id` may use the installation's workers (what its quotas cap); an unknown
/// organisation is taken to use them.
pub async fn uses_installation_workers(pool: &PgPool, org_id: Uuid) -> Result<bool> {
    Ok(
        sqlx::query_scalar("select installation_workers from org where id = $1")
            .bind(org_id)
            .fetch_optional(pool)
            .await?
            .unwrap_or(true),
    )
}

/// `org_id`'s device time in `month`, one row per device kind (both kinds, even unused). Attempts
/// that straddle the month's ends count only their part inside it.
pub async fn month_usage(pool: &PgPool, org_id: Uuid, month: Month) -> Result<Vec<DeviceUsage>> {
    let (start, end) = month.range();
    let rows: Vec<(String, f64, f64)> = sqlx::query_as(
        "with a as (select a.device_kind, a.installation, \
                        greatest(0, extract(epoch from least(coalesce(a.finished_at, now()), $3) - greatest(a.started_at, $2)))::float8 as s \
                    from step_attempt a join step st on st.id = a.step_id join pipeline_run r on r.id = st.run_id \
                    where r.org_id = $1 and a.started_at < $3 and coalesce(a.finished_at, now()) > $2) \
         select device_kind, coalesce(sum(s), 0)::float8, coalesce(sum(s) filter (where installation), 0)::float8 \
         from a group by device_kind",
    )
    .bind(org_id)
    .bind(start)
    .bind(end)
    .fetch_all(pool)
    .await?;
    let terms = terms(pool, org_id).await?;
    Ok(DeviceKind::ALL
        .iter()
        .map(|&kind| {
            let (seconds, installation) = rows
                .iter()
                .find(|r| r.0 == kind.name())
                .map_or((0.0, 0.0), |r| (r.1, r.2));
            usage_row(kind, seconds, installation, &terms)
        })
        .collect())
}

fn usage_row(kind: DeviceKind, seconds: f64, installation: f64, terms: &Terms) -> DeviceUsage {
    let installation_hours = installation / 3600.0;
    let quota_hours = terms.quota(kind);
    let price = terms.price(kind);
    DeviceUsage {
        device_kind: kind,
        hours: seconds / 3600.0,
        installation_hours,
        quota_hours,
        remaining_hours: quota_hours.map(|q| remaining_hours(q, installation_hours, 0.0)),
        price_per_hour: price.map(|p| p.0),
        currency: price.map(|p| p.1.to_owned()),
        cost: price.map(|p| p.0 * installation_hours),
    }
}

/// Every organisation's device time in `month`: `(org id, org name, usage)`, organisations with
/// neither use nor quota left out.
pub async fn installation_usage(
    pool: &PgPool,
    month: Month,
) -> Result<Vec<(Uuid, String, Vec<DeviceUsage>)>> {
    let (start, end) = month.range();
    let orgs: Vec<(Uuid, String)> = sqlx::query_as(
        "select o.id, o.name from org o where exists (select 1 from device_quota q where q.org_id = o.id) \
            or exists (select 1 from step_attempt a join step st on st.id = a.step_id \
                       join pipeline_run r on r.id = st.run_id \
                       where r.org_id = o.id and a.started_at < $2 and coalesce(a.finished_at, now()) > $1) \
         order by o.name",
    )
    .bind(start)
    .bind(end)
    .fetch_all(pool)
    .await?;
    let mut out = Vec::with_capacity(orgs.len());
    for (id, name) in orgs {
        let usage = month_usage(pool, id, month).await?;
        out.push((id, name, usage));
    }
    Ok(out)
}

/// Sets (`Some`) or removes `org_id`'s monthly quota of `kind` in device-hours.
pub async fn set_quota(
    pool: &PgPool,
    who: &crate::audit::Who,
    org_id: Uuid,
    kind: DeviceKind,
    hours: Option<f64>,
) -> Result<()> {
    crate::audit::record(
        pool,
        &crate::audit::Entry {
            org_id: Some(org_id),
            who,
            action: "org.quota",
            target_type: "org",
            target_id: Some(org_id.to_string()),
            details: serde_json::json!({"device_kind": kind, "monthly_hours": hours}),
        },
    )
    .await?;
    match hours {
        Some(h) => {
            sqlx::query(
                "insert into device_quota (org_id, device_kind, monthly_hours) values ($1, $2, $3) \
                 on conflict (org_id, device_kind) do update set monthly_hours = excluded.monthly_hours",
            )
            .bind(org_id)
            .bind(kind.name())
            .bind(h)
            .execute(pool)
            .await?;
        }
        None => {
            sqlx::query("delete from device_quota where org_id = $1 and device_kind = $2")
                .bind(org_id)
                .bind(kind.name())
                .execute(pool)
                .await?;
        }
    }
    Ok(())
}

/// Sets `org_id`'s GPU fallback: after `after_secs` without a live GPU worker it may use, its queued
/// GPU steps move to the CPU queue (`None`: they wait for a GPU).
pub async fn set_cpu_fallback(
    pool: &PgPool,
    who: &crate::audit::Who,
    org_id: Uuid,
    after_secs: Option<i32>,
) -> Result<()> {
    let n = sqlx::query("update org set cpu_fallback_after_secs = $2 where id = $1")
        .bind(org_id)
        .bind(after_secs)
        .execute(pool)
        .await?
        .rows_affected();
    if n == 0 {
        return Err(crate::Error::NotFound {
            what: "organisation",
            id: org_id,
        });
    }
    crate::audit::record(
        pool,
        &crate::audit::Entry {
            org_id: Some(org_id),
            who,
            action: "org.cpu_fallback",
            target_type: "org",
            target_id: Some(org_id.to_string()),
            details: serde_json::json!({"cpu_fallback_after_secs": after_secs}),
        },
    )
    .await
}

/// Sets (`Some((per hour, ISO 4217 currency))`) or removes the price of a device-hour of `kind`.
pub async fn set_price(pool: &PgPool, kind: DeviceKind, price: Option<(f64, &str)>) -> Result<()> {
    match price {
        Some((per_hour, currency)) => {
            sqlx::query(
                "insert into device_price (device_kind, per_hour, currency) values ($1, $2::numeric, $3) \
                 on conflict (device_kind) do update set per_hour = excluded.per_hour, currency = excluded.currency",
            )
            .bind(kind.name())
            .bind(per_hour)
            .bind(currency)
            .execute(pool)
            .await?;
        }
        None => {
            sqlx::query("delete from device_price where device_kind = $1")
                .bind(kind.name())
                .execute(pool)
                .await?;
        }
    }
    Ok(())
}

/// The unit of work a step kind's rate is measured in.
#[must_use]
pub const fn unit_of(kind: StepKind) -> Option<&'static str> {
    match kind {
        StepKind::Predict => Some("window"),
        StepKind::Train => Some("training example × epoch"),
        _ => None,
    }
}

/// Seconds per unit assumed until a worker has measured one: rough figures for Nano on a 2-core CPU
/// (0.45 s per predicted window of 64 × 64 px, 0.06 s per training example and epoch), scaled by the
/// encoder's size, and a GPU twenty times faster.
#[must_use]
pub fn assumed_seconds_per_unit(kind: StepKind, model_size: &str, device: DeviceKind) -> f64 {
    let base = if kind == StepKind::Train { 0.06 } else { 0.45 };
    let size = match model_size {
        "tiny" => 3.0,
        "base" => 20.0,
        "large" => 60.0,
        _ => 1.0,
    };
    let device = match device {
        DeviceKind::Cpu => 1.0,
        DeviceKind::Gpu => 1.0 / 20.0,
    };
    base * size * device
}

/// A measured rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Seconds of device time per unit.
    pub seconds_per_unit: f64,
    /// Steps it was learned from.
    pub samples: i32,
}

/// The measured rate of `kind` for `model_size` on `device`, if any step has measured it.
pub async fn rate(
    pool: &PgPool,
    kind: StepKind,
    model_size: &str,
    device: DeviceKind,
) -> Result<Option<Rate>> {
    let row: Option<(f64, i32)> = sqlx::query_as(
        "select seconds_per_unit, samples from device_rate \
         where step_kind = $1 and model_size = $2 and device_kind = $3",
    )
    .bind(kind.name())
    .bind(model_size)
    .bind(device.name())
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|(seconds_per_unit, samples)| Rate {
        seconds_per_unit,
        samples,
    }))
}

/// Learns from a succeeded `predict` or `train` attempt (the claim `claim_id`): its device time per
/// unit of work joins the rate of its step kind, model size and device kind (the mean of the first
/// ten steps, then a moving average that follows newer hardware and code). Steps of other kinds, or
/// that did no work, teach nothing.
pub async fn learn_rate(pool: &PgPool, claim_id: Uuid) -> Result<()> {
    sqlx::query(
        "with s as (select st.kind, st.output, a.device_kind, p.model_size as project_size, \
                        extract(epoch from a.finished_at - a.started_at)::float8 as secs \
                    from step_attempt a join step st on st.id = a.step_id \
                    join pipeline_run r on r.id = st.run_id join project p on p.id = r.project_id \
                    where a.claim_id = $1 and a.outcome = 'succeeded' and st.kind in ('predict', 'train')), \
         num as (select kind, device_kind, secs, \
                        coalesce(output->'model'->>'model_size', project_size) as size, \
                        case when kind = 'predict' and jsonb_typeof(output->'windows') = 'number' \
                                 then (output->>'windows')::float8 \
                             when kind = 'train' and jsonb_typeof(output->'examples'->'train') = 'number' \
                                  and jsonb_typeof(output->'epochs_run') = 'number' \
                                 then (output->'examples'->>'train')::float8 * (output->>'epochs_run')::float8 \
                        end as units \
                 from s) \
         insert into device_rate (step_kind, model_size, device_kind, seconds_per_unit, samples, updated_at) \
         select kind, size, device_kind, secs / units, 1, now() from num \
         where units > 0 and secs > 0 and size in ('nano', 'tiny', 'base', 'large') \
         on conflict (step_kind, model_size, device_kind) do update set \
             seconds_per_unit = device_rate.seconds_per_unit \
                 + (excluded.seconds_per_unit - device_rate.seconds_per_unit) / least(device_rate.samples + 1, 10), \
             samples = device_rate.samples + 1, updated_at = now()",
    )
    .bind(claim_id)
    .execute(pool)
    .await?;
    Ok(())
}

/// What is left of a quota of `quota_hours` after `used_hours` and the `committed_hours` unfinished runs
/// hold (never below zero).
#[must_use]
pub fn remaining_hours(quota_hours: f64, used_hours: f64, committed_hours: f64) -> f64 {
    (quota_hours - used_hours - committed_hours).max(0.0)
}

/// The device-hours of `kind` that the organisation's unfinished runs are still expected to spend
/// on the installation's workers: each queued or running run's estimate, less what its attempts on
/// installation workers have used so far (never below zero). A quota check counts them, so runs
/// started one after another cannot each fit alone and together exceed the quota.
pub async fn committed_hours<'e, E: sqlx::PgExecutor<'e>>(
    db: E,
    org_id: Uuid,
    kind: DeviceKind,
) -> Result<f64> {
    Ok(sqlx::query_scalar(
        "select coalesce(sum(greatest((r.estimate->>'device_hours')::float8 \
             - coalesce((select sum(extract(epoch from coalesce(a.finished_at, now()) - a.started_at)) \
                         from step_attempt a join step s on s.id = a.step_id \
                         where s.run_id = r.id and a.installation and a.device_kind = $2), 0)::float8 / 3600.0, 0)), 0)::float8 \
         from pipeline_run r \
         where r.org_id = $1 and r.state in ('queued', 'running') and r.estimate->>'device_kind' = $2 \
           and jsonb_typeof(r.estimate->'device_hours') = 'number'",
    )
    .bind(org_id)
    .bind(kind.name())
    .fetch_one(db)
    .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_parse_print_and_span_their_days() {
        let m: Month = "2026-12".parse().unwrap();
        assert_eq!(m.to_string(), "2026-12");
        let (a, b) = m.range();
        assert_eq!(a.to_rfc3339(), "2026-12-01T00:00:00+00:00");
        assert_eq!(b.to_rfc3339(), "2027-01-01T00:00:00+00:00");
        for bad in ["2026-13", "2026-1", "26-12", "2026/12", "", "2026-00"] {
            assert!(bad.parse::<Month>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn assumed_rates_grow_with_the_model_and_shrink_on_a_gpu() {
        let cpu = |s| assumed_seconds_per_unit(StepKind::Predict, s, DeviceKind::Cpu);
        assert!(
            cpu("nano") < cpu("tiny") && cpu("tiny") < cpu("base") && cpu("base") < cpu("large")
        );
        assert!(
            assumed_seconds_per_unit(StepKind::Train, "base", DeviceKind::Gpu)
                < assumed_seconds_per_unit(StepKind::Train, "base", DeviceKind::Cpu)
        );
    }
}

//! `groundwork admin …`: users, organisations, members, API and worker tokens, straight against the
//! database.

use super::db::{Database, DbArgs};
use anyhow::Context;
use clap::{Args, Subcommand};
use groundwork_store::accounts;
use groundwork_store::audit::Who;
use groundwork_store::usage;

#[derive(Debug, Args)]
pub struct AdminArgs {
    #[command(flatten)]
    db: DbArgs,
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Create a user; the password is read from the first line of standard input.
    CreateUser {
        /// Email.
        #[arg(long)]
        email: String,
        /// Read the password from standard input (required: passwords never go on the command line).
        #[arg(long)]
        password_stdin: bool,
    },
    /// Set a user's password (read from standard input); their sessions end.
    SetPassword {
        /// Email.
        #[arg(long)]
        email: String,
        /// Read the password from standard input (required).
        #[arg(long)]
        password_stdin: bool,
    },
    /// Create an organisation.
    CreateOrg {
        /// Unique name.
        #[arg(long)]
        name: String,
        /// Make this user its owner.
        #[arg(long)]
        owner_email: Option<String>,
    },
    /// Let the installation's workers (those started without a worker token, and `serve`'s own) run an
    /// organisation's steps, or not: `--installation-workers false` leaves them to the workers that
    /// joined with the organisation's worker tokens.
    SetOrgWorkers {
        /// Organisation name.
        #[arg(long)]
        org: String,
        /// `true` or `false`.
        #[arg(long, value_parser = clap::builder::BoolishValueParser::new())]
        installation_workers: bool,
    },
    /// Limit an organisation's share of the job system: steps it may have queued at once (a run past
    /// it is refused, 429 `limit_reached`) and steps of it that run at once (further ones wait). `0`
    /// restores the default (100,000 queued; no limit on running); a limit not given stays as it is.
    SetOrgLimits {
        /// Organisation name.
        #[arg(long)]
        org: String,
        /// Queued steps at once (0: the default, 100,000).
        #[arg(long)]
        max_queued_steps: Option<u32>,
        /// Running steps at once (0: no limit).
        #[arg(long)]
        max_running_steps: Option<u32>,
    },
    /// Cap an organisation's device time on the installation's workers per calendar month (UTC): a
    /// training or prediction run whose estimate exceeds what is left is refused (429
    /// `quota_exceeded`) or, when its starter asks, held until `approve-run`. `--hours` omitted
    /// removes the quota.
    SetQuota {
        /// Organisation name.
        #[arg(long)]
        org: String,
        /// `cpu` or `gpu`.
        #[arg(long)]
        device: String,
        /// Device-hours per month (0 or more).
        #[arg(long)]
        hours: Option<f64>,
    },
    /// Set what an hour of a device kind costs (estimates and usage show money from it); `--per-hour`
    /// omitted removes the price.
    SetPrice {
        /// `cpu` or `gpu`.
        #[arg(long)]
        device: String,
        /// Price of one device-hour (0 or more).
        #[arg(long)]
        per_hour: Option<f64>,
        /// ISO 4217 currency (EUR, USD, …).
        #[arg(long, default_value = "EUR")]
        currency: String,
    },
    /// Let an organisation's queued GPU steps move to the CPU queue when no GPU worker it may use has
    /// been live for a while (`--after-minutes 0`: they wait for a GPU, the default).
    SetGpuFallback {
        /// Organisation name.
        #[arg(long)]
        org: String,
        /// Minutes without a live GPU worker before the steps move.
        #[arg(long)]
        after_minutes: u32,
    },
    /// Every organisation's device time in a month, with quotas and cost.
    Usage {
        /// `YYYY-MM` (default: this month, UTC).
        #[arg(long)]
        month: Option<String>,
    },
    /// Runs held for approval because they would exceed their organisation's quota.
    PendingRuns,
    /// Approve a run held for approval: its steps start.
    ApproveRun {
        /// The run's id.
        run: uuid::Uuid,
    },
    /// Add a user to an organisation, or change their role there.
    AddMember {
        /// Organisation name.
        #[arg(long)]
        org: String,
        /// User email.
        #[arg(long)]
        email: String,
        /// owner, admin, member or viewer.
        #[arg(long)]
        role: String,
    },
    /// Create an API token for a member of an organisation and print it (shown once).
    CreateToken {
        /// Organisation name.
        #[arg(long)]
        org: String,
        /// User email.
        #[arg(long)]
        email: String,
        /// read or write.
        #[arg(long)]
        scope: String,
        /// Label.
        #[arg(long, default_value = "cli")]
        name: String,
    },
    /// Create a worker token for an organisation and print it (shown once).
    CreateWorkerToken {
        /// Organisation name.
        #[arg(long)]
        org: String,
        /// Label.
        #[arg(long, default_value = "worker")]
        name: String,
    },
}

fn read_password() -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .context("reading the password from standard input")?;
    let password = line.trim_end_matches(['\r', '\n']).to_owned();
    accounts::validate_password(&password).map_err(anyhow::Error::msg)?;
    Ok(password)
}

async fn org_named(pool: &groundwork_store::PgPool, name: &str) -> anyhow::Result<accounts::Org> {
    accounts::org_by_name(pool, name)
        .await?
        .with_context(|| format!("no organisation is named {name:?}"))
}

async fn user_with(pool: &groundwork_store::PgPool, email: &str) -> anyhow::Result<accounts::User> {
    accounts::user_by_email(pool, email)
        .await?
        .with_context(|| format!("no user has the email {email:?}"))
}

/// `groundwork admin`.
pub async fn admin(args: AdminArgs) -> anyhow::Result<()> {
    let db = Database::open(&args.db, 2).await?;
    let result = admin_command(&db.pool, args.command).await;
    db.close().await;
    result
}

async fn admin_command(
    pool: &groundwork_store::PgPool,
    command: AdminCommand,
) -> anyhow::Result<()> {
    let who = Who::cli();
    match command {
        AdminCommand::CreateUser {
            email,
            password_stdin,
        } => {
            anyhow::ensure!(
                password_stdin,
                "pass --password-stdin and the password on standard input"
            );
            let email = accounts::validate_email(&email).map_err(anyhow::Error::msg)?;
            let password = read_password()?;
            let user = accounts::create_user(pool, &who, &email, &password).await?;
            println!("user {} created ({})", user.email, user.id);
        }
        AdminCommand::SetPassword {
            email,
            password_stdin,
        } => {
            anyhow::ensure!(
                password_stdin,
                "pass --password-stdin and the password on standard input"
            );
            let user = user_with(pool, &email).await?;
            let password = read_password()?;
            accounts::set_password(pool, &who, user.id, &password, None).await?;
            println!("password of {} set; their sessions have ended", user.email);
        }
        AdminCommand::CreateOrg { name, owner_email } => {
            let name = accounts::validate_org_name(&name).map_err(anyhow::Error::msg)?;
            let owner = match owner_email {
                Some(e) => Some(user_with(pool, &e).await?.id),
                None => None,
            };
            let org = accounts::create_org(pool, &who, &name, owner).await?;
            println!("organisation {} created ({})", org.name, org.id);
        }
        AdminCommand::SetOrgWorkers {
            org,
            installation_workers,
        } => {
            let org = org_named(pool, &org).await?;
            accounts::set_installation_workers(pool, &who, org.id, installation_workers).await?;
            println!(
                "organisation {}: installation workers {}",
                org.name,
                if installation_workers {
                    "allowed"
                } else {
                    "not allowed"
                }
            );
        }
        AdminCommand::SetOrgLimits {
            org,
            max_queued_steps,
            max_running_steps,
        } => {
            let org = org_named(pool, &org).await?;
            let limit =
                |v: Option<u32>| v.map(|n| (n > 0).then(|| i32::try_from(n).unwrap_or(i32::MAX)));
            accounts::set_org_limits(
                pool,
                &who,
                org.id,
                limit(max_queued_steps),
                limit(max_running_steps),
            )
            .await?;
            println!("organisation {}: limits updated", org.name);
        }
        AdminCommand::SetQuota { org, device, hours } => {
            let device: groundwork_types::DeviceKind = device.parse()?;
            anyhow::ensure!(
                hours.is_none_or(|h| h.is_finite() && h >= 0.0),
                "--hours must be 0 or more"
            );
            let org = org_named(pool, &org).await?;
            usage::set_quota(pool, &who, org.id, device, hours).await?;
            match hours {
                Some(h) => println!("organisation {}: {h} {device}-hours a month", org.name),
                None => println!("organisation {}: no {device} quota", org.name),
            }
        }
        AdminCommand::SetPrice {
            device,
            per_hour,
            currency,
        } => {
            let device: groundwork_types::DeviceKind = device.parse()?;
            anyhow::ensure!(
                per_hour.is_none_or(|p| p.is_finite() && p >= 0.0),
                "--per-hour must be 0 or more"
            );
            let currency = currency.trim().to_ascii_uppercase();
            anyhow::ensure!(
                currency.len() == 3 && currency.bytes().all(|b| b.is_ascii_uppercase()),
                "--currency must be an ISO 4217 code such as EUR or USD"
            );
            usage::set_price(pool, device, per_hour.map(|p| (p, currency.as_str()))).await?;
            match per_hour {
                Some(p) => println!("{device}: {p} {currency} per hour"),
                None => println!("{device}: no price"),
            }
        }
        AdminCommand::SetGpuFallback { org, after_minutes } => {
            let org = org_named(pool, &org).await?;
            let secs = (after_minutes > 0)
                .then(|| i32::try_from(u64::from(after_minutes) * 60).unwrap_or(i32::MAX));
            usage::set_cpu_fallback(pool, &who, org.id, secs).await?;
            match secs {
                Some(_) => println!(
                    "organisation {}: GPU steps move to the CPU after {after_minutes} min without a GPU worker",
                    org.name
                ),
                None => println!("organisation {}: GPU steps wait for a GPU worker", org.name),
            }
        }
        AdminCommand::Usage { month } => {
            let month: usage::Month = match month {
                Some(m) => m.parse().map_err(anyhow::Error::msg)?,
                None => usage::Month::now(),
            };
            println!(
                "device time in {month} (UTC), hours on the installation's workers of all hours"
            );
            for (_, name, rows) in usage::installation_usage(pool, month).await? {
                for u in rows {
                    let quota = u
                        .quota_hours
                        .map_or("no quota".to_owned(), |q| format!("quota {q:.2} h"));
                    let cost = match (u.cost, &u.currency) {
                        (Some(c), Some(cur)) => format!(", {c:.2} {cur}"),
                        _ => String::new(),
                    };
                    println!(
                        "{name}\t{}\t{:.3} of {:.3} h\t{quota}{cost}",
                        u.device_kind, u.installation_hours, u.hours
                    );
                }
            }
        }
        AdminCommand::PendingRuns => {
            let pending = groundwork_store::jobs::pending_approvals(pool).await?;
            if pending.is_empty() {
                println!("no run is waiting for approval");
            }
            for p in pending {
                let hours = p
                    .estimate
                    .as_ref()
                    .and_then(|e| Some((e["device_hours"].as_f64()?, e["device_kind"].as_str()?)))
                    .map_or(String::new(), |(h, d)| format!("\t~{h:.2} {d}-hours"));
                println!(
                    "{}\t{}\t{}\t{}{hours}",
                    p.run_id,
                    p.org_name,
                    p.project_name,
                    p.created_at.format("%Y-%m-%d %H:%M UTC")
                );
            }
        }
        AdminCommand::ApproveRun { run } => {
            groundwork_store::jobs::approve_run(
                pool,
                run,
                "installation administrator (command line)",
            )
            .await?;
            println!("run {run} approved: its steps start");
        }
        AdminCommand::AddMember { org, email, role } => {
            let role: accounts::Role = role.parse().map_err(anyhow::Error::msg)?;
            let org = org_named(pool, &org).await?;
            let user = user_with(pool, &email).await?;
            let member = match accounts::role_in(pool, org.id, user.id).await? {
                Some(_) => accounts::set_role(pool, &who, org.id, user.id, role).await?,
                None => accounts::add_member(pool, &who, org.id, user.id, role).await?,
            };
            println!("{} is {} of {}", member.email, member.role, org.name);
        }
        AdminCommand::CreateToken {
            org,
            email,
            scope,
            name,
        } => {
            let scope: accounts::Scope = scope.parse().map_err(anyhow::Error::msg)?;
            let org = org_named(pool, &org).await?;
            let user = user_with(pool, &email).await?;
            let (token, _) =
                accounts::create_api_token(pool, &who, user.id, org.id, &name, scope, None).await?;
            println!("{token}");
        }
        AdminCommand::CreateWorkerToken { org, name } => {
            let org = org_named(pool, &org).await?;
            let (token, _) = accounts::create_worker_token(pool, &who, org.id, &name).await?;
            println!("{token}");
        }
    }
    Ok(())
}

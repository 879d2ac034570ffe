//! `groundwork admin …`: users, organisations, members, API and worker tokens, straight against the
//! database.

use super::db::{Database, DbArgs};
use anyhow::Context;
use clap::{Args, Subcommand};
use groundwork_store::accounts;
use groundwork_store::audit::Who;

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

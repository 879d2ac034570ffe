//! The worker process: registry entry, apalis workers per queue, step execution with lease heartbeats,
//! admin-state polling (drain/pause) and the reaper.

use crate::wake::Wakes;
use crate::{Progress, Registry, StepContext, StepError};
use apalis::prelude::{
    BackendExt, BoxDynError, Data, Strategy, TaskId, WorkerBuilder, WorkerBuilderExt, WorkerContext,
};
use apalis_postgres::{Config, PostgresStorage};
use groundwork_store::PgPool;
use groundwork_store::jobs::{self, Beat, Claimed, Completion, Dispatch, FailOutcome};
use groundwork_store::workers::{self, Registration};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, info_span, warn};
use uuid::Uuid;

/// How often an idle poller looks for work when no notification woke it.
const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// Worker settings.
#[derive(Clone)]
pub struct WorkerConfig {
    /// Display name.
    pub name: String,
    /// Pool to join.
    pub pool: String,
    /// Queues to serve.
    pub queues: Vec<String>,
    /// Steps run at once.
    pub concurrency: usize,
    /// Dispatch messages each slot fetches per poll (1 = none held back; more saves round trips on
    /// short steps, and a held message a busy slot has not reached is re-dispatched after 15 s).
    pub prefetch: usize,
    /// Lease length; a worker silent this long is presumed gone.
    pub lease: Duration,
    /// Heartbeat period (progress, cancel checks, admin state).
    pub heartbeat: Duration,
    /// Reaper period.
    pub reap_every: Duration,
    /// Capabilities document.
    pub capabilities: serde_json::Value,
    /// Object store for steps that read or write imagery, tensors and outputs.
    pub objects: Option<std::sync::Arc<dyn object_store::ObjectStore>>,
    /// Worker token presented at registration (joins the token's organisation). Without one, a
    /// worker may register only while no worker token exists, and joins the default organisation.
    pub token: Option<String>,
    /// Runs inside `groundwork serve`: trusted, joins the default organisation, needs no token.
    pub in_process: bool,
    /// Root of the pretrained OlmoEarth checkpoints for training steps.
    pub model_dir: Option<std::path::PathBuf>,
    /// What steps may fetch or open when a user names it (catalogues, asset hrefs, token
    /// endpoints); the default is the strictest policy.
    pub outbound: groundwork_imagery::OutboundPolicy,
}

impl WorkerConfig {
    /// What the worker tells the registry about itself; refuses settings no worker can serve with.
    fn registration(&self) -> anyhow::Result<Registration> {
        anyhow::ensure!(self.concurrency >= 1, "concurrency must be at least 1");
        anyhow::ensure!(
            !self.queues.is_empty(),
            "a worker must serve at least one queue"
        );
        Ok(Registration {
            name: self.name.clone(),
            pool: self.pool.clone(),
            queues: self.queues.clone(),
            concurrency: i32::try_from(self.concurrency).unwrap_or(i32::MAX),
            capabilities: self.capabilities.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
        })
    }

    /// Default of [`WorkerConfig::prefetch`].
    pub const DEFAULT_PREFETCH: usize = 2;

    /// Defaults for a worker in `pool` serving `queues`.
    #[must_use]
    pub fn new(pool: &str, queues: Vec<String>) -> Self {
        let host = std::fs::read_to_string("/etc/hostname")
            .map_or_else(|_| "host".into(), |h| h.trim().to_owned());
        Self {
            name: format!("{host}-{}", std::process::id()),
            pool: pool.to_owned(),
            queues,
            concurrency: 1,
            prefetch: Self::DEFAULT_PREFETCH,
            lease: Duration::from_secs(20),
            heartbeat: Duration::from_secs(2),
            reap_every: Duration::from_secs(5),
            capabilities: crate::detect_capabilities(),
            objects: None,
            token: None,
            in_process: false,
            model_dir: None,
            outbound: groundwork_imagery::OutboundPolicy::default(),
        }
    }
}

impl std::fmt::Debug for WorkerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerConfig")
            .field("name", &self.name)
            .field("pool", &self.pool)
            .field("queues", &self.queues)
            .field("concurrency", &self.concurrency)
            .finish_non_exhaustive()
    }
}

/// Where the runtime records claims and outcomes: the database itself, or the server's worker API.
#[derive(Clone)]
enum Backend {
    Local(PgPool),
    Remote(Arc<crate::remote::Client>),
}

impl Backend {
    fn data(&self) -> crate::data::DataAccess {
        match self {
            Self::Local(pool) => crate::data::DataAccess::Local(pool.clone()),
            Self::Remote(c) => crate::data::DataAccess::Remote(c.clone()),
        }
    }

    async fn beat(
        &self,
        claimed: &Claimed,
        lease: Duration,
        fraction: f32,
        message: &str,
    ) -> anyhow::Result<Beat> {
        match self {
            Self::Local(pool) => {
                Ok(jobs::heartbeat(pool, claimed, lease, fraction, message).await?)
            }
            Self::Remote(c) => c.beat(claimed, lease, fraction, message).await,
        }
    }

    async fn complete(
        &self,
        claimed: &Claimed,
        out: &crate::StepOutput,
        message: &str,
    ) -> anyhow::Result<Completion> {
        match self {
            Self::Local(pool) => Ok(jobs::complete_with_message(
                pool,
                claimed,
                &out.output,
                &out.artifacts,
                Some(message),
            )
            .await?),
            Self::Remote(c) => {
                c.complete(claimed, &out.output, &out.artifacts, Some(message))
                    .await
            }
        }
    }

    async fn fail(
        &self,
        claimed: &Claimed,
        error: &str,
        retryable: bool,
    ) -> anyhow::Result<FailOutcome> {
        match self {
            Self::Local(pool) => Ok(jobs::fail(pool, claimed, error, retryable).await?),
            Self::Remote(c) => c.fail(claimed, error, retryable).await,
        }
    }

    async fn cancelled(&self, claimed: &Claimed) -> anyhow::Result<bool> {
        match self {
            Self::Local(pool) => Ok(jobs::mark_cancelled(pool, claimed).await?),
            Self::Remote(c) => c.cancelled(claimed).await,
        }
    }

    async fn worker_beat(&self, worker_id: Uuid) -> anyhow::Result<String> {
        match self {
            Self::Local(pool) => Ok(workers::heartbeat(pool, worker_id).await?),
            Self::Remote(c) => c.worker_beat().await,
        }
    }

    async fn deregister(&self, worker_id: Uuid) -> anyhow::Result<()> {
        match self {
            Self::Local(pool) => Ok(workers::deregister(pool, worker_id).await?),
            Self::Remote(c) => c.deregister().await,
        }
    }
}

struct Shared {
    backend: Backend,
    worker_id: Uuid,
    config: WorkerConfig,
    registry: Registry,
    slots: Semaphore,
    shutdown: CancellationToken,
    /// Whether the admin state lets the worker take new steps.
    polling: std::sync::atomic::AtomicBool,
}

impl Shared {
    fn pool(&self) -> Option<&PgPool> {
        match &self.backend {
            Backend::Local(pool) => Some(pool),
            Backend::Remote(_) => None,
        }
    }
}

/// A running worker. Stop it with [`Worker::shutdown`] (finishes running steps) or by dropping the
/// process (the reaper re-queues its steps when their leases expire).
pub struct Worker {
    shared: Arc<Shared>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("id", &self.shared.worker_id)
            .finish_non_exhaustive()
    }
}

async fn handle(
    dispatch: Dispatch,
    message: TaskId,
    shared: Data<Arc<Shared>>,
) -> Result<(), BoxDynError> {
    let shared: Arc<Shared> = (*shared).clone();
    let Ok(_permit) = shared.slots.acquire().await else {
        return Ok(());
    };
    let Some(pool) = shared.pool() else {
        return Ok(());
    };
    match jobs::claim(
        pool,
        dispatch.step_id,
        shared.worker_id,
        shared.config.lease,
        Some(&message.to_string()),
    )
    .await
    {
        Ok(Some(claimed)) => {
            let span = info_span!("step", step_id = %claimed.id, kind = %claimed.kind, attempt = claimed.attempt);
            execute(&shared, claimed).instrument(span).await;
        }
        Ok(None) => {
            // Refused for want of memory: offered again in 2 s, to a larger worker of the queue.
            if let Err(e) = jobs::redispatch_refused(pool, dispatch.step_id, shared.worker_id).await
            {
                warn!(step_id = %dispatch.step_id, error = %e, "could not dispatch a refused step again");
            }
        }
        // The reaper re-dispatches a ready step whose message was lost.
        Err(e) => warn!(step_id = %dispatch.step_id, error = %e, "claim failed"),
    }
    Ok(())
}

async fn execute(shared: &Shared, claimed: Claimed) {
    // Not a child of the shutdown token: a graceful shutdown lets running steps finish, and one that
    // outlasts the process is re-queued when its lease expires, never recorded as cancelled.
    let cancel = CancellationToken::new();
    let progress = Progress::default();
    tracing::debug!("step started");
    let ctx = StepContext {
        step_id: claimed.id,
        run_id: claimed.run_id,
        project_id: claimed.project_id,
        org_id: claimed.org_id,
        attempt: claimed.attempt,
        claim_id: claimed.claim_id,
        args: claimed.args.clone(),
        progress: progress.clone(),
        cancel: cancel.clone(),
        data: shared.backend.data(),
        objects: shared.config.objects.clone(),
        model_dir: shared.config.model_dir.clone(),
        outbound: shared.config.outbound.clone(),
    };
    let Some(run) = shared.registry.run(claimed.kind, ctx) else {
        let msg = format!(
            "unknown step kind `{}` (this worker knows {:?})",
            claimed.kind,
            shared.registry.names()
        );
        record_failure(shared, &claimed, &msg, false).await;
        return;
    };
    let body = tokio::spawn(run);
    let abort = body.abort_handle();
    tokio::pin!(body);
    let mut beat = tokio::time::interval(shared.config.heartbeat);
    beat.tick().await;
    // Self-fencing: when no heartbeat has been recorded for most of a lease, the reaper may
    // hand the step to another worker at any moment, so this execution stops on its own.
    let fence_after = shared.config.lease.mul_f64(0.8);
    let mut last_beat = tokio::time::Instant::now();
    loop {
        tokio::select! {
            joined = &mut body => {
                match joined {
                    Ok(Ok(out)) => match shared.backend.complete(&claimed, &out, &progress.get().1).await {
                        Ok(Completion::Succeeded) => info!("step succeeded"),
                        Ok(Completion::Cancelled) => info!("step finished after a cancel was requested; result discarded, step cancelled"),
                        Ok(Completion::LeaseLost) => warn!("step finished after its lease was lost; result discarded"),
                        Err(e) => warn!(error = %e, "could not record success; the lease will expire and the step re-run"),
                    },
                    Ok(Err(StepError::Retryable(e))) => record_failure(shared, &claimed, &format!("{e:#}"), true).await,
                    Ok(Err(e @ (StepError::Permanent(_) | StepError::Cancelled))) => {
                        if cancel.is_cancelled() {
                            record_cancel(shared, &claimed).await;
                        } else {
                            record_failure(shared, &claimed, &format!("{e:#}"), false).await;
                        }
                    }
                    Err(join) => {
                        let msg = if join.is_panic() { "the step panicked" } else { "the step was aborted" };
                        record_failure(shared, &claimed, msg, true).await;
                    }
                }
                return;
            }
            _ = beat.tick() => {
                let (fraction, message) = progress.get();
                // Bounded, so a database that does not answer cannot hold the loop past the fence.
                let until_fence = fence_after.saturating_sub(last_beat.elapsed());
                let beat_result = tokio::time::timeout(
                    until_fence,
                    shared.backend.beat(&claimed, shared.config.lease, fraction, &message),
                )
                .await
                .map_err(|_| "the database did not answer in time".to_owned())
                .and_then(|r| r.map_err(|e| e.to_string()));
                match beat_result {
                    Ok(Beat::Continue) => last_beat = tokio::time::Instant::now(),
                    Ok(Beat::Cancel) => {
                        cancel.cancel();
                        abort.abort();
                        record_cancel(shared, &claimed).await;
                        return;
                    }
                    Ok(Beat::LeaseLost) => {
                        warn!("lease lost; stopping without recording");
                        cancel.cancel();
                        abort.abort();
                        return;
                    }
                    Err(e) if last_beat.elapsed() >= fence_after => {
                        warn!(error = %e, silent_ms = last_beat.elapsed().as_millis() as u64,
                              "no heartbeat has been recorded for most of the lease; stopping the step (it will be re-queued)");
                        cancel.cancel();
                        abort.abort();
                        return;
                    }
                    Err(e) => warn!(error = %e, "heartbeat failed"),
                }
            }
        }
    }
}

async fn record_cancel(shared: &Shared, claimed: &Claimed) {
    match shared.backend.cancelled(claimed).await {
        Ok(_) => info!("step cancelled"),
        Err(e) => warn!(error = %e, "could not record the cancel; the reaper will"),
    }
}

async fn record_failure(shared: &Shared, claimed: &Claimed, error: &str, retryable: bool) {
    match shared.backend.fail(claimed, error, retryable).await {
        Ok(FailOutcome::Retrying(after)) => info!(
            error,
            retry_in_ms = after.as_millis() as u64,
            "step attempt failed; will retry"
        ),
        Ok(FailOutcome::Failed) => warn!(error, "step failed"),
        Ok(FailOutcome::Cancelled) => info!(
            error,
            "step cancelled (its cancel was requested before it failed)"
        ),
        Ok(FailOutcome::LeaseLost) => warn!(error, "step failed after its lease was lost"),
        Err(e) => warn!(error = %e, "could not record the failure; the lease will expire"),
    }
}

/// Runs the reaper every `every` until `stop` is cancelled. After a pass fails (the database was
/// away), it waits until the database answers again and then one `lease` more before reaping: steps
/// whose workers are alive get a full lease to heartbeat again before their leases count as expired.
pub async fn run_reaper(pool: PgPool, every: Duration, lease: Duration, stop: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    let mut outage = false;
    let mut hold_until: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if outage {
            if sqlx::query("select 1").execute(&pool).await.is_err() {
                continue;
            }
            outage = false;
            hold_until = Some(tokio::time::Instant::now() + lease);
            info!(
                wait_ms = lease.as_millis() as u64,
                "the database answers again; reaping resumes after one lease"
            );
        }
        if hold_until.is_some_and(|t| tokio::time::Instant::now() < t) {
            continue;
        }
        hold_until = None;
        match jobs::reap(&pool).await {
            Ok(r) if r != jobs::Reaped::default() => info!(?r, "reaper"),
            Ok(_) => {}
            Err(e) => {
                warn!(error = %e, "reaper pass failed");
                outage = true;
            }
        }
    }
}

/// The apalis contexts of the worker's pollers, as they are now (a restarted poller has a new one), so
/// the control loop can pause and resume them.
#[derive(Clone, Default)]
struct Contexts(Arc<std::sync::Mutex<std::collections::HashMap<String, WorkerContext>>>);

impl Contexts {
    /// Sets the context of the poller named `key`.
    fn set(&self, key: &str, ctx: WorkerContext) {
        if let Ok(mut all) = self.0.lock() {
            all.insert(key.to_owned(), ctx);
        }
    }

    fn current(&self) -> Vec<WorkerContext> {
        self.0
            .lock()
            .map(|all| all.values().cloned().collect())
            .unwrap_or_default()
    }
}

/// One poller of `queue`: fetches dispatch messages and runs their steps until shutdown. When apalis
/// stops with an error (a lost database connection ends its stream), the poller starts again after a
/// pause, so a database outage does not leave the worker deaf.
async fn run_poller(
    shared: Arc<Shared>,
    wakes: Wakes,
    contexts: Contexts,
    queue: String,
    slot: usize,
) {
    let key = format!("{}-{queue}-{slot}", shared.worker_id);
    let mut restarts = 0u32;
    loop {
        // A restarted poller registers with apalis under a new name: the old registration may still
        // hold its advisory lock on a pooled connection.
        let name = if restarts == 0 {
            key.clone()
        } else {
            format!("{key}-r{restarts}")
        };
        let ctx = WorkerContext::new(&name);
        contexts.set(&key, ctx.clone());
        // Woken through the worker's one listener for apalis's insert notifications; the interval
        // catches anything scheduled with a backoff or missed while reconnecting.
        let wake = Strategy::new()
            .stream(wakes.stream(&queue))
            .interval(POLL_INTERVAL);
        let Some(pool) = shared.pool() else {
            return;
        };
        let backend = PostgresStorage::<Dispatch>::new(pool)
            .with_config(
                Config::default()
                    .queue(queue.as_str())
                    .batch_size(shared.config.prefetch.max(1))
                    .lock_tasks(false)
                    // The claim retires the message in its own statement; no separate ack.
                    .persist_results(false)
                    .heartbeat_interval(Duration::from_secs(5))
                    .missed_heartbeats(6),
            )
            .poll_with_strategy(wake);
        let apalis_worker = WorkerBuilder::new(&ctx)
            .backend(backend)
            .data(shared.clone())
            .concurrency(1)
            .build(handle);
        let stop = shared.shutdown.clone();
        let result = apalis_worker
            .run_until(async move {
                stop.cancelled().await;
                Ok::<(), std::io::Error>(())
            })
            .await;
        if shared.shutdown.is_cancelled() {
            return;
        }
        restarts += 1;
        let pause = Duration::from_millis(500 * u64::from(restarts.min(10)));
        match result {
            Err(e) => {
                warn!(%queue, error = %e, restart_in_ms = pause.as_millis() as u64, "poller stopped with an error; restarting")
            }
            Ok(()) => {
                warn!(%queue, restart_in_ms = pause.as_millis() as u64, "poller stopped; restarting")
            }
        }
        tokio::select! {
            () = shared.shutdown.cancelled() => return,
            () = tokio::time::sleep(pause) => {}
        }
    }
}

impl Worker {
    /// Registers the worker and starts serving its queues.
    pub async fn start(
        pool: PgPool,
        config: WorkerConfig,
        registry: Registry,
    ) -> anyhow::Result<Self> {
        let registration = config.registration()?;
        let worker_id = if config.in_process {
            workers::register(&pool, &registration).await?
        } else {
            workers::register_with_token(&pool, &registration, config.token.as_deref()).await?
        };
        // A worker that joined an organisation with its token reads that organisation's queues only.
        let message_queues = workers::message_queues(&pool, worker_id).await?;
        info!(%worker_id, pool = %config.pool, queues = ?message_queues, concurrency = config.concurrency, "worker registered");
        let shared = Arc::new(Shared {
            slots: Semaphore::new(config.concurrency),
            backend: Backend::Local(pool.clone()),
            worker_id,
            config,
            registry,
            shutdown: CancellationToken::new(),
            polling: std::sync::atomic::AtomicBool::new(true),
        });
        let mut tasks = Vec::new();
        let contexts = Contexts::default();
        let wakes = Wakes::new(&message_queues, shared.config.concurrency);
        tasks.push(tokio::spawn(
            wakes.clone().listen(pool.clone(), shared.shutdown.clone()),
        ));
        // One apalis poller per slot and queue, each taking up to `prefetch` messages at a time (default
        // `DEFAULT_PREFETCH`, 2; a held message its slot has not reached within 15 s is re-dispatched by
        // the reaper to another worker), slots in parallel. A poller that stops with an error (the
        // database went away) is started again.
        for queue in &message_queues {
            for slot in 0..shared.config.concurrency {
                tasks.push(tokio::spawn(run_poller(
                    shared.clone(),
                    wakes.clone(),
                    contexts.clone(),
                    queue.clone(),
                    slot,
                )));
            }
        }
        tasks.push(tokio::spawn(control_loop(shared.clone(), contexts)));
        tasks.push(tokio::spawn(run_reaper(
            pool,
            shared.config.reap_every,
            shared.config.lease,
            shared.shutdown.clone(),
        )));
        Ok(Self { shared, tasks })
    }

    /// Joins a pool through the server's worker API with only a worker token (`client` has it): the
    /// token's organisation's private pool. Claims are long polls; heartbeats, outcomes, the step
    /// bodies' data and objects all go through the server. Without an object store of its own in
    /// `config`, the worker reads and writes objects through the server.
    ///
    /// # Errors
    /// A refused token, an unreachable server, or an empty queue list.
    pub async fn start_remote(
        client: Arc<crate::remote::Client>,
        mut config: WorkerConfig,
        registry: Registry,
    ) -> anyhow::Result<Self> {
        let registration = config.registration()?;
        let reg = client.register(&registration).await?;
        if config.objects.is_none() {
            config.objects = Some(client.objects()?);
        }
        info!(worker_id = %reg.worker_id, server = %client.server(), queues = ?reg.queues,
              concurrency = config.concurrency, "worker registered through the worker API");
        let shared = Arc::new(Shared {
            slots: Semaphore::new(config.concurrency),
            backend: Backend::Remote(client),
            worker_id: reg.worker_id,
            config,
            registry,
            shutdown: CancellationToken::new(),
            polling: std::sync::atomic::AtomicBool::new(true),
        });
        let mut tasks = Vec::new();
        for _ in 0..shared.config.concurrency {
            tasks.push(tokio::spawn(remote_slot(shared.clone())));
        }
        tasks.push(tokio::spawn(control_loop(
            shared.clone(),
            Contexts::default(),
        )));
        Ok(Self { shared, tasks })
    }

    /// The registry id.
    #[must_use]
    pub fn id(&self) -> Uuid {
        self.shared.worker_id
    }

    /// Stops taking work, lets running steps finish, and deregisters.
    pub async fn shutdown(self) {
        self.shared.shutdown.cancel();
        for t in self.tasks {
            let _ = t.await;
        }
        // Wait for in-flight steps (they hold slots).
        let n = u32::try_from(self.shared.config.concurrency).unwrap_or(u32::MAX);
        let _ =
            tokio::time::timeout(Duration::from_secs(30), self.shared.slots.acquire_many(n)).await;
        if let Err(e) = self.shared.backend.deregister(self.shared.worker_id).await {
            warn!(error = %e, "could not deregister");
        }
    }
}

/// One slot of a remote worker: long-polls the server for a step, runs it, and asks again. A claim
/// whose answer is lost (the connection dropped, the worker shut down meanwhile) is re-queued by the
/// server's reaper when its lease expires.
async fn remote_slot(shared: Arc<Shared>) {
    let Backend::Remote(client) = &shared.backend else {
        return;
    };
    let mut failures = 0u32;
    loop {
        if shared.shutdown.is_cancelled() {
            return;
        }
        if !shared.polling.load(std::sync::atomic::Ordering::Relaxed) {
            tokio::select! {
                () = shared.shutdown.cancelled() => return,
                () = tokio::time::sleep(shared.config.heartbeat) => continue,
            }
        }
        let Ok(permit) = shared.slots.acquire().await else {
            return;
        };
        let claim = tokio::select! {
            () = shared.shutdown.cancelled() => return,
            r = client.claim(crate::remote::CLAIM_WAIT, shared.config.lease) => r,
        };
        match claim {
            Ok(Some(claimed)) => {
                failures = 0;
                let span = info_span!("step", step_id = %claimed.id, kind = %claimed.kind, attempt = claimed.attempt);
                execute(&shared, claimed).instrument(span).await;
            }
            Ok(None) => failures = 0,
            Err(e) => {
                failures += 1;
                let pause = Duration::from_millis(500 * u64::from(failures.min(20)));
                warn!(error = %e, retry_in_ms = pause.as_millis() as u64, "could not ask the server for work");
                drop(permit);
                tokio::select! {
                    () = shared.shutdown.cancelled() => return,
                    () = tokio::time::sleep(pause) => continue,
                }
            }
        }
        drop(permit);
    }
}

/// Heartbeats the registry and follows the admin state: `active` polls for work; `draining` and
/// `paused` stop polling (running steps go on). The state is applied to every poller on every beat,
/// so a poller that was restarted (or had not started yet) follows it too.
async fn control_loop(shared: Arc<Shared>, contexts: Contexts) {
    let mut tick = tokio::time::interval(shared.config.heartbeat);
    let mut polling = true;
    loop {
        tokio::select! {
            () = shared.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let state = match shared.backend.worker_beat(shared.worker_id).await {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "registry heartbeat failed");
                continue;
            }
        };
        let want = state == "active";
        shared
            .polling
            .store(want, std::sync::atomic::Ordering::Relaxed);
        for ctx in contexts.current() {
            // A poller that has not started yet is left alone; the next beat catches it.
            if want && ctx.is_paused() {
                let _ = ctx.resume();
            } else if !want && ctx.is_running() {
                let _ = ctx.pause();
            }
        }
        if want != polling {
            info!(admin_state = %state, "polling {}", if want { "resumed" } else { "paused" });
            polling = want;
        }
    }
}

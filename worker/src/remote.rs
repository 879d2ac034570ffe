//! A worker that joins a pool over HTTPS with only a worker token (`groundwork worker --server
//! https://… --token gwk_…`): no database or object-store credentials leave the server.
//!
//! Everything the installation's workers do against the database and the object store, a remote
//! worker asks of the server's worker API (`/api/v1/worker/…`):
//!
//! - registration, the registry heartbeat and deregistration;
//! - claims (a long poll), step heartbeats with progress, completion, failure and cancellation, under
//!   the same lease and fencing rules (the server runs the same store functions);
//! - the step bodies' data questions and fenced writes ([`crate::data::DataRequest`]);
//! - object reads and writes ([`RemoteObjects`]: `GET` with ranges, `PUT`, `HEAD`, `DELETE`), limited
//!   by the server to the worker's organisation and the shared pretrained checkpoints.
//!
//! Every call carries the token (`Authorization: Bearer`) and, after registration, the worker's id
//! (`X-Groundwork-Worker`). A dropped connection is retried a few times; a worker that cannot reach
//! the server stops its steps before their leases expire (the runtime's self-fencing), and the
//! server's reaper hands them to another worker.

use crate::StepError;
use crate::data::{DataRequest, Scope};
use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use groundwork_store::jobs::{Artifact, Beat, Claimed, Completion, FailOutcome};
use groundwork_store::workers::Registration;
use object_store::path::Path as ObjectPath;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, UploadPart,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use uuid::Uuid;

/// The header that names the calling worker.
pub const WORKER_HEADER: &str = "x-groundwork-worker";

/// How long a claim request waits on the server for a step.
pub const CLAIM_WAIT: Duration = Duration::from_secs(15);

/// Attempts of a call that failed on the way (connection dropped, 502/503/504).
const ATTEMPTS: u32 = 4;

/// What registration answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Registered {
    /// The worker's registry id.
    pub worker_id: Uuid,
    /// The organisation its token binds it to.
    pub org_id: Uuid,
    /// The queues it reads (its organisation's private pool).
    pub queues: Vec<String>,
}

/// A failed call.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The request did not get an answer (connection refused or dropped, timeout).
    #[error("the server did not answer: {0}")]
    Transport(String),
    /// The server answered with an error status.
    #[error("the server answered {status}: {message}")]
    Status {
        /// HTTP status.
        status: u16,
        /// The error body's message.
        message: String,
    },
}

impl CallError {
    fn worth_retrying(&self) -> bool {
        match self {
            Self::Transport(_) => true,
            Self::Status { status, .. } => matches!(status, 502..=504),
        }
    }
}

/// The worker API's client.
pub struct Client {
    http: reqwest::Client,
    server: String,
    token: String,
    worker_id: OnceLock<Uuid>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

/// Whether `host` (a URL's host) is this machine, where plain HTTP carries a token safely.
fn is_loopback(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|a| a.is_loopback())
}

impl Client {
    /// A client of the server at `server` (`https://…`; plain `http://` only to this machine)
    /// presenting the worker token `token`.
    ///
    /// # Errors
    /// When the URL is not an HTTP(S) URL, is plain HTTP to another machine, or the token is empty.
    pub fn new(server: &str, token: &str) -> anyhow::Result<Self> {
        let url = reqwest::Url::parse(server.trim())
            .map_err(|e| anyhow::anyhow!("--server {server:?} is not a URL: {e}"))?;
        let host = url
            .host_str()
            .ok_or_else(|| anyhow::anyhow!("--server {server:?} names no host"))?;
        match url.scheme() {
            "https" => {}
            "http" if is_loopback(host) => {}
            "http" => anyhow::bail!(
                "--server must be an https:// URL: a worker token is not sent in clear text to another machine"
            ),
            other => anyhow::bail!("--server must be an https:// URL, not {other}://"),
        }
        anyhow::ensure!(
            !token.trim().is_empty(),
            "a remote worker needs a worker token (--token or GROUNDWORK_WORKER_TOKEN)"
        );
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()?;
        Ok(Self {
            http,
            server: url.as_str().trim_end_matches('/').to_owned(),
            token: token.trim().to_owned(),
            worker_id: OnceLock::new(),
        })
    }

    /// The server's base URL.
    #[must_use]
    pub fn server(&self) -> &str {
        &self.server
    }

    fn url(&self, path: &str) -> String {
        format!("{}/api/v1/worker/{path}", self.server)
    }

    fn with_auth(&self, rb: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        let rb = rb.bearer_auth(&self.token);
        match self.worker_id.get() {
            Some(id) => rb.header(WORKER_HEADER, id.to_string()),
            None => rb,
        }
    }

    /// One POST with a JSON body; `None` for `204 No Content`.
    async fn post_once<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &Value,
        timeout: Duration,
    ) -> Result<Option<T>, CallError> {
        let res = self
            .with_auth(self.http.post(self.url(path)))
            .timeout(timeout)
            .json(body)
            .send()
            .await
            .map_err(|e| CallError::Transport(without_url(&e)))?;
        let status = res.status();
        if status == reqwest::StatusCode::NO_CONTENT {
            return Ok(None);
        }
        if status.is_success() {
            return res
                .json::<T>()
                .await
                .map(Some)
                .map_err(|e| CallError::Transport(without_url(&e)));
        }
        let text = res.text().await.unwrap_or_default();
        let message = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| {
                v.pointer("/error/message")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_owned());
        Err(CallError::Status {
            status: status.as_u16(),
            message,
        })
    }

    /// [`Client::post_once`], retried a few times when the answer was lost on the way.
    async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: Value,
        timeout: Duration,
    ) -> Result<Option<T>, CallError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.post_once(path, &body, timeout).await {
                Err(e) if e.worth_retrying() && attempt < ATTEMPTS => {
                    tracing::debug!(path, error = %e, attempt, "worker API call failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500 << attempt)).await;
                }
                other => return other,
            }
        }
    }

    async fn post_some<T: DeserializeOwned>(&self, path: &str, body: Value) -> anyhow::Result<T> {
        self.post(path, body, Duration::from_secs(60))
            .await?
            .ok_or_else(|| anyhow::anyhow!("the server sent no answer to {path}"))
    }

    /// Registers the worker with its token; later calls name it.
    ///
    /// # Errors
    /// A refused token, or a server that cannot be reached.
    pub async fn register(&self, r: &Registration) -> anyhow::Result<Registered> {
        let reg: Registered = self.post_some("register", json!(r)).await?;
        let _ = self.worker_id.set(reg.worker_id);
        Ok(reg)
    }

    /// The registry heartbeat: the admin state to follow.
    ///
    /// # Errors
    /// When the server cannot be reached.
    pub async fn worker_beat(&self) -> anyhow::Result<String> {
        #[derive(Deserialize)]
        struct State {
            state: String,
        }
        let s: State = self.post_some("heartbeat", json!({})).await?;
        Ok(s.state)
    }

    /// Marks the worker stopped.
    ///
    /// # Errors
    /// When the server cannot be reached.
    pub async fn deregister(&self) -> anyhow::Result<()> {
        self.post::<Value>("deregister", json!({}), Duration::from_secs(10))
            .await?;
        Ok(())
    }

    /// Claims the next ready step, waiting up to `wait` on the server.
    ///
    /// # Errors
    /// When the server cannot be reached or refuses the worker.
    pub async fn claim(&self, wait: Duration, lease: Duration) -> anyhow::Result<Option<Claimed>> {
        let body =
            json!({"wait_ms": wait.as_millis() as u64, "lease_ms": lease.as_millis() as u64});
        // One attempt: a lost answer leaves a claim the worker does not know of, which the reaper
        // re-queues when its lease expires.
        Ok(self
            .post_once("claim", &body, wait + Duration::from_secs(20))
            .await?)
    }

    fn step_path(claimed: &Claimed, what: &str) -> String {
        format!("steps/{}/claims/{}/{what}", claimed.id, claimed.claim_id)
    }

    /// A step heartbeat with progress.
    ///
    /// # Errors
    /// When the server cannot be reached.
    pub async fn beat(
        &self,
        claimed: &Claimed,
        lease: Duration,
        progress: f32,
        message: &str,
    ) -> anyhow::Result<Beat> {
        #[derive(Deserialize)]
        struct Answer {
            beat: Beat,
        }
        let body =
            json!({"lease_ms": lease.as_millis() as u64, "progress": progress, "message": message});
        // One attempt: the runtime's next beat is the retry, and its self-fencing counts the silence.
        let a: Answer = self
            .post_once(&Self::step_path(claimed, "heartbeat"), &body, lease / 2)
            .await?
            .ok_or_else(|| anyhow::anyhow!("the server sent no answer to a heartbeat"))?;
        Ok(a.beat)
    }

    /// Records success.
    ///
    /// # Errors
    /// When the server cannot be reached.
    pub async fn complete(
        &self,
        claimed: &Claimed,
        output: &Value,
        artifacts: &[Artifact],
        message: Option<&str>,
    ) -> anyhow::Result<Completion> {
        #[derive(Deserialize)]
        struct Answer {
            completion: Completion,
        }
        let a: Answer = self
            .post_some(
                &Self::step_path(claimed, "complete"),
                json!({"output": output, "artifacts": artifacts, "message": message}),
            )
            .await?;
        Ok(a.completion)
    }

    /// Records a failed attempt.
    ///
    /// # Errors
    /// When the server cannot be reached.
    pub async fn fail(
        &self,
        claimed: &Claimed,
        error: &str,
        retryable: bool,
    ) -> anyhow::Result<FailOutcome> {
        #[derive(Deserialize)]
        struct Answer {
            outcome: FailOutcome,
        }
        let a: Answer = self
            .post_some(
                &Self::step_path(claimed, "fail"),
                json!({"error": error, "retryable": retryable}),
            )
            .await?;
        Ok(a.outcome)
    }

    /// Records that the step stopped for its cancel.
    ///
    /// # Errors
    /// When the server cannot be reached.
    pub async fn cancelled(&self, claimed: &Claimed) -> anyhow::Result<bool> {
        #[derive(Deserialize)]
        struct Answer {
            cancelled: bool,
        }
        let a: Answer = self
            .post_some(&Self::step_path(claimed, "cancelled"), json!({}))
            .await?;
        Ok(a.cancelled)
    }

    /// Asks a step body's data question of the server.
    ///
    /// # Errors
    /// [`StepError::Permanent`] when the server refuses the request (422), otherwise retryable.
    pub async fn data(&self, scope: &Scope, req: &DataRequest) -> Result<Value, StepError> {
        let path = format!("steps/{}/claims/{}/data", scope.step_id, scope.claim_id);
        let body = serde_json::to_value(req).map_err(|e| StepError::Permanent(e.into()))?;
        match self
            .post::<Value>(&path, body, Duration::from_secs(300))
            .await
        {
            Ok(v) => Ok(v.unwrap_or(Value::Null)),
            Err(CallError::Status {
                status: 400 | 403 | 404 | 422,
                message,
            }) => Err(StepError::Permanent(anyhow::anyhow!("{message}"))),
            Err(e) => Err(StepError::Retryable(e.into())),
        }
    }

    /// The object store, through the server.
    ///
    /// # Errors
    /// When the store cannot be set up from the server's URL.
    pub fn objects(self: &Arc<Self>) -> anyhow::Result<Arc<dyn ObjectStore>> {
        let base = self.url("objects");
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {}", self.token).parse()?,
        );
        if let Some(id) = self.worker_id.get() {
            headers.insert(WORKER_HEADER, id.to_string().parse()?);
        }
        let inner = object_store::http::HttpBuilder::new()
            .with_url(base.clone())
            .with_client_options(
                object_store::ClientOptions::new()
                    .with_allow_http(true)
                    .with_default_headers(headers)
                    .with_timeout(Duration::from_secs(300)),
            )
            .build()?;
        Ok(Arc::new(RemoteObjects {
            inner,
            client: self.clone(),
            base,
        }))
    }
}

/// A reqwest error's text without its URL (which is the server's, and says nothing new).
fn without_url(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    if let Some(u) = e.url() {
        s = s.replace(u.as_str(), "the server");
    }
    s
}

/// The object store as a remote worker sees it: the server's `/api/v1/worker/objects/…`.
#[derive(Debug)]
pub struct RemoteObjects {
    inner: object_store::http::HttpStore,
    client: Arc<Client>,
    base: String,
}

impl std::fmt::Display for RemoteObjects {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RemoteObjects({})", self.client.server)
    }
}

fn store_error(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> object_store::Error {
    object_store::Error::Generic {
        store: "RemoteObjects",
        source: e.into(),
    }
}

#[async_trait]
impl ObjectStore for RemoteObjects {
    async fn put_opts(
        &self,
        location: &ObjectPath,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    /// Parts go to a temporary file, sent in one streamed `PUT` on completion: bounded memory on
    /// both sides, whatever the object's size.
    async fn put_multipart_opts(
        &self,
        location: &ObjectPath,
        _opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        let file = tempfile::tempfile().map_err(store_error)?;
        let mut url = reqwest::Url::parse(&self.base).map_err(store_error)?;
        url.path_segments_mut()
            .map_err(|()| store_error("the server URL cannot have a path"))?
            .extend(location.parts().map(|p| p.as_ref().to_owned()));
        Ok(Box::new(FileUpload {
            file: Arc::new(file),
            written: 0,
            client: self.client.clone(),
            url: url.to_string(),
        }))
    }

    async fn get_opts(
        &self,
        location: &ObjectPath,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<ObjectPath>>,
    ) -> BoxStream<'static, object_store::Result<ObjectPath>> {
        self.inner.delete_stream(locations)
    }

    fn list(
        &self,
        prefix: Option<&ObjectPath>,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(
        &self,
        prefix: Option<&ObjectPath>,
    ) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &ObjectPath,
        to: &ObjectPath,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

/// A multipart upload spooled to a temporary file (deleted when dropped).
#[derive(Debug)]
struct FileUpload {
    file: Arc<std::fs::File>,
    written: u64,
    client: Arc<Client>,
    url: String,
}

#[async_trait]
impl MultipartUpload for FileUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        // Parts are handed over in order; each is written at its own offset, so they may complete in
        // any order.
        let at = self.written;
        self.written += data.content_length() as u64;
        let file = self.file.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                use std::os::unix::fs::FileExt;
                let mut pos = at;
                for chunk in data.iter() {
                    file.write_all_at(chunk, pos)?;
                    pos += chunk.len() as u64;
                }
                Ok::<(), std::io::Error>(())
            })
            .await
            .map_err(store_error)?
            .map_err(store_error)
        })
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        let file = self.file.try_clone().map_err(store_error)?;
        let len = self.written;
        // Read back a MiB at a time; after a read error the stream ends.
        let chunks = futures::stream::unfold((Some(file), 0u64), move |(file, pos)| async move {
            let file = file?;
            if pos >= len {
                return None;
            }
            let n = (len - pos).min(1 << 20);
            let read = tokio::task::spawn_blocking(move || {
                use std::os::unix::fs::FileExt;
                let mut buf = vec![0u8; usize::try_from(n).unwrap_or(0)];
                file.read_exact_at(&mut buf, pos).map(|()| (file, buf))
            })
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))
            .and_then(|r| r);
            Some(match read {
                Ok((file, buf)) => (Ok(Bytes::from(buf)), (Some(file), pos + n)),
                Err(e) => (Err(e), (None, len)),
            })
        });
        let res = self
            .client
            .with_auth(self.client.http.put(&self.url))
            .header(reqwest::header::CONTENT_LENGTH, len)
            .body(reqwest::Body::wrap_stream(chunks.boxed()))
            .send()
            .await
            .map_err(|e| store_error(without_url(&e)))?;
        if !res.status().is_success() {
            return Err(store_error(format!(
                "the server answered {} to an upload",
                res.status()
            )));
        }
        Ok(PutResult {
            e_tag: None,
            version: None,
            extensions: Default::default(),
        })
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        Ok(())
    }
}

//! One LISTEN connection per worker process that turns apalis's insert notifications into wake-ups for
//! that worker's idle pollers. Each poller listening on its own connection would make PostgreSQL deliver,
//! and the worker parse, every notification once per poller.

use futures::stream::{BoxStream, Stream, StreamExt};
use groundwork_store::PgPool;
use serde::Deserialize;
use sqlx::postgres::PgListener;
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// The channel apalis-postgres notifies on every inserted message.
const CHANNEL: &str = "apalis::job::insert";

#[derive(Deserialize)]
struct InsertEvent {
    job_type: String,
}

/// Wake-up counters per queue. A notification adds one permit (up to the number of pollers of the
/// queue, since a woken poller keeps fetching until its queue is empty); each permit wakes one poller.
#[derive(Clone, Default)]
pub(crate) struct Wakes {
    queues: Arc<HashMap<String, (Arc<Semaphore>, usize)>>,
}

impl Wakes {
    /// Counters for `queues`, each served by `pollers` pollers.
    pub(crate) fn new(queues: &[String], pollers: usize) -> Self {
        let map = queues
            .iter()
            .map(|q| (q.clone(), (Arc::new(Semaphore::new(0)), pollers.max(1))))
            .collect();
        Self {
            queues: Arc::new(map),
        }
    }

    fn notify(&self, queue: &str) {
        if let Some((sem, cap)) = self.queues.get(queue)
            && sem.available_permits() < *cap
        {
            sem.add_permits(1);
        }
    }

    /// A stream that yields once per wake-up meant for `queue` (never, for a queue it does not know).
    pub(crate) fn stream(&self, queue: &str) -> WakeStream {
        let sem = self.queues.get(queue).map(|(s, _)| s.clone());
        let inner = futures::stream::unfold(sem, |sem| async move {
            let s = sem?;
            s.acquire().await.ok()?.forget();
            Some(((), Some(s)))
        })
        .boxed();
        WakeStream(Mutex::new(inner))
    }

    /// Listens until `stop`, reconnecting after errors (pollers still poll on their interval meanwhile).
    pub(crate) async fn listen(self, pool: PgPool, stop: CancellationToken) {
        loop {
            let run = async {
                let mut listener = PgListener::connect_with(&pool).await?;
                listener.listen(CHANNEL).await?;
                loop {
                    let n = listener.recv().await?;
                    if let Ok(ev) = serde_json::from_str::<InsertEvent>(n.payload()) {
                        self.notify(&ev.job_type);
                    }
                }
                #[expect(unreachable_code, reason = "the loop only ends with an error")]
                Ok::<(), sqlx::Error>(())
            };
            tokio::select! {
                () = stop.cancelled() => return,
                result = run => {
                    if let Err(e) = result {
                        warn!(error = %e, "dispatch listener failed; reconnecting");
                    }
                }
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(Duration::from_secs(1)) => debug!("dispatch listener reconnecting"),
            }
        }
    }
}

/// A poller's wake-ups (`Sync`, as apalis's poll strategies require).
pub(crate) struct WakeStream(Mutex<BoxStream<'static, ()>>);

impl Stream for WakeStream {
    type Item = ();

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<()>> {
        match self.get_mut().0.get_mut() {
            Ok(s) => s.poll_next_unpin(cx),
            Err(_) => Poll::Ready(None),
        }
    }
}

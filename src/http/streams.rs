//! Where an HTTP/2 stream's task runs. hyper hands every stream of an HTTP/2 connection to an executor as its own
//! future; with `TokioExecutor` each became a tokio task, so a response from the cache (ready at once) paid a task
//! spawn, a hop to the other worker thread that stole it, and a wake-up back to the connection's task: the largest
//! part of what made a request over h2c cost more CPU than over HTTP/1.1. [`FirstPollInline`] polls the stream once
//! where it is handed over, inside the connection's own poll, and spawns it only if it is not finished then (a body
//! larger than the stream may queue, a request that waits for the key set).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Waker};

/// An executor that runs a future's first poll inline and spawns the rest on tokio.
///
/// Why a no-op waker is enough for the first poll: a future that returns `Pending` has registered the waker it
/// was given, and registers the current one again on its next poll. The spawned task's first poll comes after the
/// inline one in every case, so a wake-up that went to the no-op waker in between is never needed.
#[derive(Debug, Clone, Copy, Default)]
pub struct FirstPollInline;

impl<F> hyper::rt::Executor<F> for FirstPollInline
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, fut: F) {
        let mut fut: Pin<Box<F>> = Box::pin(fut);
        let mut cx = Context::from_waker(Waker::noop());
        if fut.as_mut().poll(&mut cx).is_pending() {
            tokio::spawn(fut);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;
    use hyper::rt::Executor;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[tokio::test]
    async fn a_ready_future_runs_inline_and_a_pending_one_finishes_on_a_task() {
        let done = Arc::new(AtomicUsize::new(0));
        let d = Arc::clone(&done);
        FirstPollInline.execute(async move {
            d.fetch_add(1, Ordering::SeqCst);
        });
        assert_eq!(done.load(Ordering::SeqCst), 1, "ran within execute");

        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let d = Arc::clone(&done);
        FirstPollInline.execute(async move {
            rx.await.unwrap();
            d.fetch_add(1, Ordering::SeqCst);
        });
        assert_eq!(done.load(Ordering::SeqCst), 1, "waits for its message");
        tx.send(()).unwrap();
        for _ in 0..100 {
            if done.load(Ordering::SeqCst) == 2 {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("the spawned rest never ran after its wake-up");
    }
}

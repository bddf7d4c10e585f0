//! Sending a streamed response's queued bytes while the application's
//! thread makes the next ones (PEP 3333: the server must "continue
//! transmission even while the application is producing its next block"),
//! and after the application has finished, without holding its thread.
//!
//! The senders run on a thread of their own, with a runtime of its own,
//! not as tasks of the lane or of the worker's runtime. A lane task runs
//! only on a loop, and every loop may be held by an application thread
//! waiting for its own client past --response-buffer: a response whose
//! thread was freed would then wait for one of them. A task of the
//! worker's runtime is woken onto the waking thread's LIFO slot, which no
//! other thread may take, and the waking thread here is the producer,
//! which goes on to call the application or to wait for its client: the
//! bytes would wait for it. A wake-up across threads costs a system call,
//! paid only by responses larger than the socket takes at once.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::runtime::Handle;
use tokio::sync::{oneshot, Notify};

use crate::exchange::{Exchange, ExchangeState};
use crate::liveness::Slot;

/// How soon a sender looks again at an exchange whose lock the
/// application's side holds (`lock`).
const LOCK_RETRY: Duration = Duration::from_millis(1);

/// The thread the senders run on, for as long as it lives.
pub struct SenderThread {
    handle: Handle,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl SenderThread {
    pub fn start() -> std::io::Result<SenderThread> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("ferrule-sender".into())
            .spawn(move || {
                // Ends when told, or when the SenderThread is dropped; the
                // senders still running are dropped with the runtime.
                let _ = runtime.block_on(stopped);
            })?;
        Ok(SenderThread {
            handle,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Every `period`, sends into `runtime` a task that stamps `slot`'s
    /// tick (`liveness`): from this thread, outside `runtime`, the task
    /// goes to the runtime's shared queue and so runs on any free thread.
    pub fn stamp_every(&self, period: Duration, runtime: Handle, slot: Arc<Slot>) {
        self.handle.spawn(async move {
            let mut every = tokio::time::interval(period);
            loop {
                every.tick().await;
                let slot = slot.clone();
                runtime.spawn(async move { slot.tick() });
            }
        });
    }
}

impl Drop for SenderThread {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The sender of one streamed response: the producer (the application's
/// thread, `finish_on_this_thread`) queues bytes and says so; the sender
/// writes them as the client takes them. Both write under the exchange's
/// lock, so the bytes go out in order.
pub struct SendAhead {
    shared: Arc<SendAheadState>,
    stopped: Option<oneshot::Receiver<()>>,
}

struct SendAheadState {
    /// Bytes were queued, or the application's iterator ended.
    more: Notify,
    producer_done: AtomicBool,
}

impl SendAhead {
    pub fn start(thread: &SenderThread, exchange: &Arc<Exchange>) -> SendAhead {
        let shared = Arc::new(SendAheadState {
            more: Notify::new(),
            producer_done: AtomicBool::new(false),
        });
        let (stopped_tx, stopped) = oneshot::channel();
        let task_state = shared.clone();
        let exchange = exchange.clone();
        thread.handle.spawn(async move {
            send_ahead(&exchange, &task_state).await;
            // Let go of the exchange before the connection hears of it, so
            // that its next request can reuse the request's objects.
            drop(exchange);
            drop(task_state);
            let _ = stopped_tx.send(());
        });
        SendAhead {
            shared,
            stopped: Some(stopped),
        }
    }

    pub fn queued(&self) {
        self.shared.more.notify_one();
    }

    /// No more chunks: the sender sends what is queued and stops; the
    /// receiver hears when it has (or that the sender was dropped, when
    /// the worker stops).
    pub fn producer_done(mut self) -> oneshot::Receiver<()> {
        self.stopped.take().expect("taken once")
    }
}

impl Drop for SendAhead {
    /// However the producer ends (a panic included), the sender is told.
    fn drop(&mut self) {
        self.shared.producer_done.store(true, Ordering::Release);
        self.shared.more.notify_one();
    }
}

async fn send_ahead(exchange: &Exchange, state: &SendAheadState) {
    // A descriptor of its own: registered for the sender's readiness (the
    // connection has the socket registered under its own runtime), written
    // to, and open for as long as the sender may write. Without one the
    // connection sends the rest itself once the application is done.
    // SAFETY: F_DUPFD_CLOEXEC duplicates a descriptor open for the
    // exchange's life; the new one is owned below.
    let dup = unsafe { libc::fcntl(exchange.output.fd, libc::F_DUPFD_CLOEXEC, 0) };
    if dup < 0 {
        return;
    }
    // SAFETY: `dup` was just made and nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(dup) };
    // SAFETY: the OwnedFd is a valid descriptor the AsyncFd owns, so it
    // stays open, on the same socket, for the AsyncFd's life.
    let registered = unsafe { AsyncFd::register_with_interest(fd, Interest::WRITABLE) };
    let Ok(ready) = registered else {
        return;
    };
    // Written through its own descriptor (and the TLS session, if any).
    let wire = exchange.output.through(ready.get_ref().as_raw_fd());
    loop {
        let (all_sent, queued, producer_done) = {
            let mut st = lock(exchange).await;
            if st.write_failed {
                return;
            }
            // Read before flushing, under the lock the producer writes
            // under: if it was done then, everything it made is in `out` or
            // (TLS) in the session now, and a flush that sends it all is
            // the end.
            let producer_done = state.producer_done.load(Ordering::Acquire);
            (st.flush_now(&wire), st.out.len(), producer_done)
        };
        match all_sent {
            Err(_) => return,
            Ok(true) if producer_done => return,
            Ok(true) => state.more.notified().await,
            Ok(false) => {
                let writable = tokio::select! {
                    w = tokio::time::timeout(exchange.socket_timeout, ready.writable()) => Some(w),
                    // The producer queued more, or is done: look again.
                    _ = state.more.notified() => None,
                };
                match writable {
                    None => {}
                    Some(Ok(Ok(mut guard))) => guard.clear_ready(),
                    Some(_) => {
                        // No writable edge for --socket-timeout: the client
                        // failed, unless the producer's writes went on.
                        let mut st = lock(exchange).await;
                        if st.out.len() >= queued {
                            st.write_failed = true;
                            return;
                        }
                    }
                }
            }
        }
    }
}

/// The exchange's lock, without blocking the sender thread, which sends
/// every streamed response of the worker: the application's side may hold
/// the lock across a blocking read or write of up to --socket-timeout
/// (`wsgi.input` under --stream-uploads, the `write()` callable), and one
/// slow client must not hold up the others' responses.
async fn lock(exchange: &Exchange) -> MutexGuard<'_, ExchangeState> {
    loop {
        if let Some(guard) = exchange.try_lock() {
            return guard;
        }
        tokio::time::sleep(LOCK_RETRY).await;
    }
}

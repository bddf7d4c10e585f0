//! The lane: where connections run. Each connection is a task of the lane,
//! and the lane's tasks are run by one loop (a task of the tokio runtime)
//! while the application answers quickly, and by one more loop for each
//! call to the application that turns out slow.
//!
//! Python runs one thread at a time, so with several application threads
//! (`--threads`) that each take connections as they come, the threads only
//! contend: measured on one core with nine keep-alive clients, p99 latency
//! was 0.19 ms with one thread, 3.73 ms with two and 12.40 ms with four,
//! the threads taking turns on the core (about 900 preemptions a second
//! each) with connections waiting in each one's queue. One loop keeps the
//! work on one thread while the others sleep.
//!
//! A call that has run for `SLOW_CALL` is most likely waiting (a sleep, a
//! database, a large upload) with the GIL released. Another loop then
//! starts on a free thread and takes the connections queued behind the
//! slow call; when a slow call ends, a loop beyond the ones needed stops.
//! This is the hand-off Go's scheduler makes for a thread stuck in a system
//! call. A watchdog thread looks for slow calls every `WATCH_PERIOD` while
//! calls run; a connection that becomes ready while every loop is busy
//! looks too, when a free thread polls the I/O driver. The watchdog cannot
//! be left out: the thread that gets stuck may be the one that was polling
//! the driver, and then no connection becomes ready until another loop
//! starts and its thread takes the driver over.

use std::cell::Cell;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::Thread;
use std::time::{Duration, Instant};

use tokio::runtime::Handle;

use crate::liveness;

/// How long a call runs before another loop takes the connections queued
/// behind it: about twice what the benchmark's Django view takes, short
/// enough to keep the wait behind a slow call under a millisecond or two.
pub const SLOW_CALL: Duration = Duration::from_micros(500);

/// How often the watchdog looks while calls run. A wake-up costs the
/// serving core about 6 us, so it looks less often than `SLOW_CALL`;
/// connections that become ready meanwhile look sooner.
const WATCH_PERIOD: Duration = Duration::from_millis(1);

/// Tasks a loop runs before it lets the runtime poll for I/O and run its
/// own tasks (the accept loops).
const BATCH: usize = 64;

/// How often waits past their deadline are ended (`timeout`).
const SWEEP_PERIOD: Duration = Duration::from_millis(100);

/// How long an idle watchdog sleeps before checking again that its lane
/// still exists.
const IDLE_CHECK: Duration = Duration::from_secs(1);

/// A thread's call word: bit 0 while the thread is in a call, bit 1 once
/// the call is found slow, and above them when the call began, in
/// nanoseconds since the lane's epoch.
const IN_CALL: u64 = 1;
const SLOW: u64 = 2;
const TIME_SHIFT: u32 = 2;

type BoxedFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

pub struct Lane {
    queue: Mutex<Queue>,
    /// Every task not yet finished, so that `close` can drop them all.
    live: Mutex<HashMap<usize, Arc<Task>>>,
    /// One call word per thread of the runtime, by `thread_index()`: a
    /// loop may run on any of them.
    calls: Box<[AtomicU64]>,
    /// Most loops at once: the application threads (`--threads`), so that
    /// no more calls to the application run at once than that.
    max_loops: usize,
    epoch: Instant,
    /// Calls found slow and still running.
    slow: AtomicUsize,
    /// The server is stopping: waits wrapped in `unless_stopping` end.
    stopping: AtomicBool,
    closed: AtomicBool,
    runtime: OnceLock<Handle>,
    watchdog: OnceLock<Thread>,
    watchdog_idle: AtomicBool,
}

struct Queue {
    ready: VecDeque<Arc<Task>>,
    /// Loops waiting for a task.
    idle_loops: Vec<Waker>,
    /// Loops running or waiting.
    loops: usize,
}

impl Lane {
    /// A lane for `threads` application threads, on a runtime of
    /// `runtime_threads` threads.
    pub fn new(threads: usize, runtime_threads: usize) -> Arc<Lane> {
        Arc::new(Lane {
            queue: Mutex::new(Queue {
                ready: VecDeque::new(),
                idle_loops: Vec::new(),
                loops: 0,
            }),
            live: Mutex::new(HashMap::new()),
            calls: (0..runtime_threads.max(threads))
                .map(|_| AtomicU64::new(0))
                .collect(),
            max_loops: threads,
            epoch: Instant::now(),
            slow: AtomicUsize::new(0),
            stopping: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            runtime: OnceLock::new(),
            watchdog: OnceLock::new(),
            watchdog_idle: AtomicBool::new(false),
        })
    }

    /// Starts the first loop on `runtime`, and with more than one thread
    /// the watchdog.
    pub fn start(self: &Arc<Lane>, runtime: Handle) -> std::io::Result<()> {
        let lane = Arc::downgrade(self);
        runtime.spawn(sweep(lane));
        let _ = self.runtime.set(runtime);
        self.queue.lock().unwrap().loops += 1;
        self.spawn_loop();
        if self.max_loops > 1 {
            let lane = Arc::downgrade(self);
            let thread = std::thread::Builder::new()
                .name("ferrule-watchdog".into())
                .spawn(move || watch(lane))?;
            let _ = self.watchdog.set(thread.thread().clone());
        }
        Ok(())
    }

    /// Runs `future` as a task of the lane.
    pub fn spawn(self: &Arc<Lane>, future: impl Future<Output = ()> + Send + 'static) {
        if self.closed.load(Ordering::Acquire) {
            return;
        }
        // A loop limits how long its tasks run, not the runtime's budget,
        // which is one for all of a loop's tasks.
        let task = Arc::new(Task {
            lane: Arc::downgrade(self),
            state: AtomicU8::new(QUEUED),
            deadline: AtomicU64::new(0),
            future: Mutex::new(Some(Box::pin(tokio::task::unconstrained(future)))),
        });
        self.live
            .lock()
            .unwrap()
            .insert(Arc::as_ptr(&task) as usize, task.clone());
        self.push(task);
    }

    fn push(self: &Arc<Lane>, task: Arc<Task>) {
        // A loop that queues a task runs it itself. Waking an idle loop from
        // a loop's thread would put that loop in the thread's LIFO slot,
        // which no other thread may take, behind a call that may turn slow.
        let in_loop = IN_LOOP.with(Cell::get);
        let idle = {
            let mut queue = self.queue.lock().unwrap();
            queue.ready.push_back(task);
            if in_loop {
                None
            } else {
                queue.idle_loops.pop()
            }
        };
        match idle {
            Some(waker) => waker.wake(),
            // Every loop is busy. Seen from outside the loops (the I/O
            // driver, on a free thread), one may be stuck in a slow call.
            None if !in_loop && self.watchdog.get().is_some() => self.hand_off_slow_calls(),
            None => {}
        }
    }

    /// Starts a loop; `queue.loops` already counts it.
    fn spawn_loop(self: &Arc<Lane>) {
        let Some(runtime) = self.runtime.get() else {
            return;
        };
        let lane = self.clone();
        runtime.spawn(std::future::poll_fn(move |cx| lane.run_loop(cx)));
    }

    /// One turn of a loop: runs up to `BATCH` ready tasks. Ends the loop
    /// when it is one more than the calls need, or the lane is closed.
    fn run_loop(self: &Arc<Lane>, cx: &mut Context<'_>) -> Poll<()> {
        IN_LOOP.with(|l| l.set(true));
        let turn = self.run_batch(cx);
        IN_LOOP.with(|l| l.set(false));
        turn
    }

    fn run_batch(self: &Arc<Lane>, cx: &mut Context<'_>) -> Poll<()> {
        for _ in 0..BATCH {
            let task = {
                let mut queue = self.queue.lock().unwrap();
                let needed = 1 + self.slow.load(Ordering::Acquire);
                if queue.loops > needed || self.closed.load(Ordering::Acquire) {
                    queue.loops -= 1;
                    // A wake-up meant for this loop goes to another.
                    let other = if queue.ready.is_empty() {
                        None
                    } else {
                        queue.idle_loops.pop()
                    };
                    drop(queue);
                    if let Some(waker) = other {
                        waker.wake();
                    }
                    return Poll::Ready(());
                }
                match queue.ready.pop_front() {
                    Some(task) => task,
                    None => {
                        queue.idle_loops.push(cx.waker().clone());
                        return Poll::Pending;
                    }
                }
            };
            task.run(self);
            if YIELD_TO_RUNTIME.with(|y| y.replace(false)) {
                break;
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// Marks the start of a call to the application on this thread, until
    /// the returned guard is dropped. Nothing may be awaited meanwhile: the
    /// task could resume on another thread.
    pub fn call(&self) -> Call<'_> {
        let mut thread = usize::MAX;
        if self.watchdog.get().is_some() {
            thread = thread_index();
            if let Some(word) = self.calls.get(thread) {
                word.store(self.now() << TIME_SHIFT | IN_CALL, Ordering::SeqCst);
                if self.watchdog_idle.load(Ordering::SeqCst) {
                    if let Some(watchdog) = self.watchdog.get() {
                        watchdog.unpark();
                    }
                }
            }
        }
        Call { lane: self, thread }
    }

    /// Nanoseconds since the lane's epoch.
    fn now(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// Whether a call is running that has not been found slow.
    fn quick_call_running(&self) -> bool {
        self.calls
            .iter()
            .any(|w| w.load(Ordering::SeqCst) & (IN_CALL | SLOW) == IN_CALL)
    }

    /// Finds the calls that have run for `SLOW_CALL` slow, and starts a
    /// loop for each (up to one per application thread) to take the
    /// connections queued behind them.
    fn hand_off_slow_calls(self: &Arc<Lane>) {
        let now = self.now();
        let slow_since = now.saturating_sub(SLOW_CALL.as_nanos() as u64);
        for word in self.calls.iter() {
            let seen = word.load(Ordering::SeqCst);
            if seen & (IN_CALL | SLOW) != IN_CALL || seen >> TIME_SHIFT > slow_since {
                continue;
            }
            // Unless the call ended meanwhile.
            if word
                .compare_exchange(seen, seen | SLOW, Ordering::SeqCst, Ordering::SeqCst)
                .is_err()
            {
                continue;
            }
            let needed = (2 + self.slow.fetch_add(1, Ordering::AcqRel)).min(self.max_loops);
            // An idle loop, else a new one, takes what waits in the queue.
            let (idle, spawn) = {
                let mut queue = self.queue.lock().unwrap();
                match queue.idle_loops.pop() {
                    Some(waker) => (Some(waker), false),
                    None if queue.loops < needed => {
                        queue.loops += 1;
                        (None, true)
                    }
                    None => (None, false),
                }
            };
            if let Some(waker) = idle {
                waker.wake();
            }
            if spawn {
                self.spawn_loop();
            }
        }
    }

    /// The server begins to stop: every task is woken, so that each wait
    /// wrapped in `unless_stopping` ends. (A flag and one wake-up per task
    /// at the stop, instead of a stop signal every wait subscribes to and
    /// unsubscribes from: two locked list operations per request.)
    pub fn stop_waiting(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        let tasks: Vec<Arc<Task>> = self.live.lock().unwrap().values().cloned().collect();
        for task in tasks {
            task.wake_by_ref();
        }
    }

    /// Whether the server is stopping (`stop_waiting`).
    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Drops every task: the connections still open when the server stops.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        let wakers = std::mem::take(&mut self.queue.lock().unwrap().idle_loops);
        wakers.into_iter().for_each(Waker::wake);
        let tasks: Vec<Arc<Task>> = self.live.lock().unwrap().drain().map(|(_, t)| t).collect();
        for task in tasks {
            // A task being run now is dropped by its loop afterwards.
            let future = task.future.try_lock().ok().and_then(|mut f| f.take());
            drop(future);
        }
        self.queue.lock().unwrap().ready.clear();
    }
}

impl Drop for Lane {
    fn drop(&mut self) {
        if let Some(watchdog) = self.watchdog.get() {
            watchdog.unpark();
        }
    }
}

thread_local! {
    /// The task being run on this thread, for `timeout`.
    static CURRENT_TASK: Cell<*const Task> = const { Cell::new(std::ptr::null()) };
    /// True on a thread while it runs a loop.
    static IN_LOOP: Cell<bool> = const { Cell::new(false) };
    /// Set by `yield_to_runtime`: the loop returns to the runtime after the
    /// current task.
    static YIELD_TO_RUNTIME: Cell<bool> = const { Cell::new(false) };
}

/// Lets the lane's other ready tasks run before the current one continues:
/// it goes to the back of the queue, where another loop can take it if a
/// slow call holds this one. (`tokio::task::yield_now` would park the task
/// until this thread next polls for I/O, out of every other loop's reach.)
pub fn yield_to_ready_tasks() -> impl Future<Output = ()> {
    yield_once(false)
}

/// Lets the runtime run its own ready tasks (an accept loop just woken on
/// this thread) before the current task continues.
pub fn yield_to_runtime() -> impl Future<Output = ()> {
    yield_once(true)
}

/// Makes the loop running the current task return to the runtime once the
/// task's poll ends, without the task yielding: a task it woke on this
/// thread (an accept loop waiting for a free thread) sits in the thread's
/// LIFO slot, which no other thread may take, and must not wait there
/// behind the loop's next tasks, which may block in the application.
pub fn return_to_runtime_after_this_task() {
    YIELD_TO_RUNTIME.with(|y| y.set(true));
}

fn yield_once(to_runtime: bool) -> impl Future<Output = ()> {
    let mut yielded = false;
    std::future::poll_fn(move |cx| {
        if std::mem::replace(&mut yielded, true) {
            return Poll::Ready(());
        }
        if to_runtime {
            YIELD_TO_RUNTIME.with(|y| y.set(true));
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    })
}

/// Runs `future` until it ends, or until the server is stopping
/// (`Lane::stop_waiting`, which wakes the task): `None` then. The flag is
/// read before each poll, so a stop that comes while the task runs wakes it
/// again and is seen at the next poll.
pub async fn unless_stopping<F: Future>(lane: &Lane, future: F) -> Option<F::Output> {
    let mut future = std::pin::pin!(future);
    std::future::poll_fn(|cx| {
        if lane.stopping() {
            return Poll::Ready(None);
        }
        future.as_mut().poll(cx).map(Some)
    })
    .await
}

/// A wait that reached its deadline (`timeout`).
#[derive(Debug)]
pub struct Elapsed;

/// The deadline `wait` from now, for `timeout_at`.
pub fn deadline_after(wait: Duration) -> u64 {
    liveness::now_ms().saturating_add(wait.as_millis().min(u64::MAX as u128) as u64)
}

/// Waits for `future` for at most `wait`; see `timeout_at`.
pub fn timeout<F: Future>(
    wait: Duration,
    future: F,
) -> impl Future<Output = Result<F::Output, Elapsed>> {
    timeout_at(deadline_after(wait), future)
}

/// Waits for `future` until `deadline` (`deadline_after`), for a task of
/// the lane. Connection timeouts are seconds long, so instead of a timer
/// per wait (registered and cancelled in the runtime's timer wheel, about
/// 1,500 instructions a request, measured), the task notes its deadline
/// and the lane wakes the tasks past theirs every `SWEEP_PERIOD`: a wait
/// ends up to that much late. A task has one deadline at a time.
pub async fn timeout_at<F: Future>(deadline: u64, future: F) -> Result<F::Output, Elapsed> {
    let mut future = std::pin::pin!(future);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(out) = future.as_mut().poll(cx) {
            return Poll::Ready(Ok(out));
        }
        if liveness::now_ms() >= deadline {
            return Poll::Ready(Err(Elapsed));
        }
        CURRENT_TASK.with(|task| {
            let task = task.get();
            debug_assert!(!task.is_null(), "a lane timeout outside the lane");
            // SAFETY: CURRENT_TASK points at the task being run on this
            // thread, which its loop holds for the whole poll.
            if let Some(task) = unsafe { task.as_ref() } {
                task.deadline.store(deadline, Ordering::Release);
            }
        });
        Poll::Pending
    })
    .await
}

/// Every `SWEEP_PERIOD`, wakes the tasks whose deadline has passed.
async fn sweep(lane: Weak<Lane>) {
    let mut every = tokio::time::interval(SWEEP_PERIOD);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut expired = Vec::new();
    loop {
        every.tick().await;
        let Some(lane) = lane.upgrade() else { return };
        let now = liveness::now_ms();
        expired.extend(lane.live.lock().unwrap().values().filter_map(|task| {
            let deadline = task.deadline.load(Ordering::Acquire);
            let due = deadline != 0
                && deadline <= now
                && task
                    .deadline
                    .compare_exchange(deadline, 0, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok();
            due.then(|| task.clone())
        }));
        for task in expired.drain(..) {
            task.wake_by_ref();
        }
    }
}

/// A call in progress (`Lane::call`).
pub struct Call<'a> {
    lane: &'a Lane,
    thread: usize,
}

impl Drop for Call<'_> {
    fn drop(&mut self) {
        if let Some(word) = self.lane.calls.get(self.thread) {
            if word.fetch_and(!(IN_CALL | SLOW), Ordering::SeqCst) & SLOW != 0 {
                self.lane.slow.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }
}

/// A task's states: waiting to be woken, in the ready queue, being run,
/// being run and woken meanwhile (to be queued again), finished.
const IDLE: u8 = 0;
const QUEUED: u8 = 1;
const RUNNING: u8 = 2;
const RUNNING_WOKEN: u8 = 3;
const DONE: u8 = 4;

struct Task {
    lane: Weak<Lane>,
    state: AtomicU8,
    /// When the task's current wait ends (`timeout`), on the coarse
    /// monotonic clock in milliseconds; 0 for none.
    deadline: AtomicU64,
    future: Mutex<Option<BoxedFuture>>,
}

impl Task {
    fn run(self: Arc<Task>, lane: &Arc<Lane>) {
        self.state.store(RUNNING, Ordering::Release);
        let waker = Waker::from(self.clone());
        let mut cx = Context::from_waker(&waker);
        let finished = {
            let mut slot = self.future.lock().unwrap();
            match slot.as_mut() {
                Some(future) => {
                    let outer = CURRENT_TASK.with(|c| c.replace(Arc::as_ptr(&self)));
                    // A panic (a bug in ferrule: nothing the application
                    // or a client does may cause one) ends this task and
                    // closes its connection, not the loop: a loop lost to
                    // a panic would stay counted and never run again.
                    let polled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        future.as_mut().poll(&mut cx)
                    }));
                    CURRENT_TASK.with(|c| c.set(outer));
                    let ready = match polled {
                        Ok(poll) => poll.is_ready(),
                        Err(payload) => {
                            crate::log_at!(
                                Critical,
                                "a connection's task panicked (a bug in ferrule): {}; its \
                                 connection is closed and the worker goes on",
                                panic_message(&*payload)
                            );
                            true
                        }
                    };
                    if ready || lane.closed.load(Ordering::Acquire) {
                        // Dropping a future runs its clean-up, which must
                        // not take the loop with it either.
                        let done = slot.take();
                        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(done)))
                            .is_err()
                        {
                            crate::log_at!(Critical, "a connection's task panicked as it ended");
                        }
                        true
                    } else {
                        false
                    }
                }
                None => true,
            }
        };
        if finished {
            self.state.store(DONE, Ordering::Release);
            lane.live
                .lock()
                .unwrap()
                .remove(&(Arc::as_ptr(&self) as usize));
            return;
        }
        if self
            .state
            .compare_exchange(RUNNING, IDLE, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            // Woken while it ran: to the back of the queue.
            self.state.store(QUEUED, Ordering::Release);
            lane.push(self);
        }
    }
}

/// What a panic said, when it said it with a string.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a panic without a message")
}

impl Wake for Task {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let mut state = self.state.load(Ordering::Acquire);
        loop {
            let next = match state {
                IDLE => QUEUED,
                RUNNING => RUNNING_WOKEN,
                _ => return,
            };
            match self
                .state
                .compare_exchange(state, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => break,
                Err(now) => state = now,
            }
        }
        if state == IDLE {
            match self.lane.upgrade() {
                Some(lane) if !lane.closed.load(Ordering::Acquire) => lane.push(self.clone()),
                _ => {}
            }
        }
    }
}

/// The watchdog's loop: every `WATCH_PERIOD` while calls run, it hands
/// off the slow ones; while no call runs it sleeps. It ends with the lane.
fn watch(lane: Weak<Lane>) {
    loop {
        let idle = {
            let Some(lane) = lane.upgrade() else { return };
            lane.hand_off_slow_calls();
            let mut idle = !lane.quick_call_running();
            if idle {
                // The flag is raised before looking again, so a call that
                // begins meanwhile is either seen here or wakes us.
                lane.watchdog_idle.store(true, Ordering::SeqCst);
                idle = !lane.quick_call_running();
                if !idle {
                    lane.watchdog_idle.store(false, Ordering::SeqCst);
                }
            }
            idle
        };
        if idle {
            std::thread::park_timeout(IDLE_CHECK);
            if let Some(lane) = lane.upgrade() {
                lane.watchdog_idle.store(false, Ordering::SeqCst);
            }
        } else {
            std::thread::sleep(WATCH_PERIOD);
        }
    }
}

thread_local! {
    /// This application thread's index, from 0, in the worker's liveness
    /// page and its lane.
    static THREAD_INDEX: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// The calling application thread's index (usize::MAX off those threads).
pub fn thread_index() -> usize {
    THREAD_INDEX.with(Cell::get)
}

/// Records the calling thread's index, when the runtime starts it.
pub fn set_thread_index(index: usize) {
    THREAD_INDEX.with(|i| i.set(index));
}

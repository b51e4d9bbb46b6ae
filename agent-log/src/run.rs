//! The running log agent: one reader thread drives the [`Tailer`] (file
//! IO, framing and chunk building never run on the async runtime, which
//! keeps the transport responsive), fed by `notify` watches on the globs'
//! folders, a periodic rescan and the acknowledgements; an async task
//! forwards its chunks to agent-core's outputs, one named output per group,
//! and reports the agent's counters each interval.
//!
//! Invariants:
//! - Bounded everywhere: [`CHUNKS_QUEUED`] chunks between the thread and
//!   the forwarder, at most [`WINDOW`] chunks handed to the pipeline and not
//!   yet spooled; file-system events beyond [`WAKE_QUEUE`] become one
//!   rescan. With the spool full, the thread waits in `send`: it stops
//!   reading.
//! - On shutdown the thread reads what is there for a bounded time, sends
//!   what it holds, applies the acks that arrive within [`ACK_WAIT`] and
//!   saves its checkpoints; the loop returns within [`STOP_LIMIT`].

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use agent_core::{Fate, Metrics, Payload, Sample, Source, SourceContext, SourceError};
use notify::{EventKind, RecursiveMode, Watcher};
use tokio_util::sync::CancellationToken;

use crate::checkpoint::CheckpointFile;
use crate::framing::Framer;
use crate::settings::LogSettings;
use crate::tail::{Delivery, LogCounters, Outgoing, Resumed, Stopped, Tailer, Ticket};

/// Chunks queued between the reader thread and the forwarder.
pub const CHUNKS_QUEUED: usize = 2;
/// Chunks handed to the pipeline and not yet spooled.
pub const WINDOW: usize = 4;
/// File-system events queued before they are folded into one rescan.
pub const WAKE_QUEUE: usize = 4096;
/// How long reading goes on after shutdown.
const DRAIN_TIME: Duration = Duration::from_millis(100);
/// How long acks are waited for after that (the transport stops with the
/// agent: only acks already on their way can come).
pub const ACK_WAIT: Duration = Duration::from_millis(50);
/// When the forwarder gives up on a blocked send after shutdown; with the
/// wait for the reader's last checkpoint, the loop returns within agent-core's
/// 400 ms.
pub const STOP_LIMIT: Duration = Duration::from_millis(250);
/// How long the loop waits for the reader thread's last checkpoint.
const READER_WAIT: Duration = Duration::from_millis(100);
/// Least time between two rescans asked for by events.
const RESCAN_GAP: Duration = Duration::from_millis(50);
/// Checkpoints are saved at least this often when they changed.
const SAVE_EVERY: Duration = Duration::from_secs(1);

enum Wake {
    /// Paths that changed; `structural` when files came or went.
    Fs(Vec<PathBuf>, bool),
    /// Something the thread should look at (acks, an overflow).
    Poke,
}

/// Builds the log agent's loop.
pub fn build(settings: LogSettings, cx: SourceContext) -> Result<Source, SourceError> {
    Ok(Box::pin(run(Arc::new(settings), cx)))
}

/// What became of a send: spooled (`None`), then settled.
type Acked = Arc<Mutex<Vec<(Ticket, Option<Fate>)>>>;

async fn run(settings: Arc<LogSettings>, cx: SourceContext) -> Result<(), SourceError> {
    let cx = Arc::new(cx);
    let counters = Arc::new(LogCounters::default());
    let (wake_tx, wake_rx) = std::sync::mpsc::sync_channel::<Wake>(WAKE_QUEUE);
    let overflow = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Acked = Arc::new(Mutex::new(Vec::new()));
    let (out_tx, mut out_rx) = tokio::sync::mpsc::channel::<Outgoing>(CHUNKS_QUEUED);
    let hard_stop = CancellationToken::new();

    let watcher = {
        let wake = wake_tx.clone();
        let overflow = overflow.clone();
        notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            let wake_msg = match event {
                Ok(ev) if !ev.need_rescan() => {
                    let structural = matches!(
                        ev.kind,
                        EventKind::Create(_)
                            | EventKind::Remove(_)
                            | EventKind::Modify(notify::event::ModifyKind::Name(_))
                            | EventKind::Any
                            | EventKind::Other
                    );
                    Wake::Fs(ev.paths, structural)
                }
                _ => {
                    overflow.store(true, Ordering::Relaxed);
                    Wake::Poke
                }
            };
            if wake.try_send(wake_msg).is_err() {
                overflow.store(true, Ordering::Relaxed);
            }
        })
        .map_err(|e| SourceError::msg(format!("cannot watch files: {e}")))?
    };

    let reader = Reader {
        settings: settings.clone(),
        counters: counters.clone(),
        wake: wake_rx,
        overflow,
        stop: stop.clone(),
        acked: acked.clone(),
        checkpoints: CheckpointFile::new(&cx.data_dir),
        watcher,
        delivery: Channel {
            tx: out_tx,
            handle: tokio::runtime::Handle::current(),
            hard_stop: hard_stop.clone(),
            cx: cx.clone(),
        },
    };
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("log-reader".into())
        .spawn(move || {
            let _ = done_tx.send(reader.run());
        })
        .map_err(|e| SourceError::msg(format!("cannot start the reader thread: {e}")))?;

    let window = Arc::new(tokio::sync::Semaphore::new(WINDOW));
    let mut report = tokio::time::interval(settings.interval);
    report.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stopping = false;
    loop {
        tokio::select! {
            next = out_rx.recv() => {
                let Some(out) = next else { break };
                let permit = tokio::select! {
                    p = window.clone().acquire_owned() => match p {
                        Ok(p) => p,
                        Err(_) => break,
                    },
                    () = hard_stop.cancelled() => break,
                };
                let output = cx.out.named(&out.source);
                output.records_read(out.batch.records);
                let receipt = tokio::select! {
                    r = output.send(out.batch) => match r {
                        Ok(r) => r,
                        Err(_) => break,
                    },
                    () = hard_stop.cancelled() => break,
                };
                let (acked, wake, tickets) = (acked.clone(), wake_tx.clone(), out.tickets);
                tokio::spawn(async move {
                    let mut receipt = receipt;
                    if receipt.spooled().await.is_ok()
                        && let Ok(mut list) = acked.lock()
                    {
                        list.extend(tickets.iter().map(|&t| (t, None)));
                    }
                    drop(permit);
                    let fate = receipt.settled().await;
                    if let Ok(mut list) = acked.lock() {
                        list.extend(tickets.iter().map(|&t| (t, Some(fate.clone()))));
                    }
                    let _ = wake.try_send(Wake::Poke);
                });
            }
            () = cx.shutdown.cancelled(), if !stopping => {
                stopping = true;
                stop.store(true, Ordering::Relaxed);
                let _ = wake_tx.try_send(Wake::Poke);
                let hard = hard_stop.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(STOP_LIMIT).await;
                    hard.cancel();
                });
            }
            _ = report.tick(), if !stopping => {
                let samples = counters
                    .readings()
                    .into_iter()
                    .map(|(name, v)| Sample::new(name, v as f64))
                    .collect();
                let metrics = Payload::Metrics(Metrics { time: SystemTime::now(), samples });
                tokio::select! {
                    _ = cx.out.send_all(vec![metrics]) => {}
                    () = cx.shutdown.cancelled() => {}
                }
            }
        }
    }
    // The reader saves its checkpoints before it ends.
    hard_stop.cancel();
    match tokio::time::timeout(READER_WAIT, done_rx).await {
        Ok(Ok(Err(e))) => Err(SourceError::msg(e)),
        _ => Ok(()),
    }
}

/// The thread's side of the outputs.
struct Channel {
    tx: tokio::sync::mpsc::Sender<Outgoing>,
    handle: tokio::runtime::Handle,
    hard_stop: CancellationToken,
    cx: Arc<SourceContext>,
}

impl Delivery for Channel {
    fn resume(&mut self, source: &str) -> Resumed {
        match self.handle.block_on(self.cx.resume(source)) {
            Ok(r) => Resumed {
                spooled: r.spooled,
                acked: r.acked,
            },
            Err(e) => {
                tracing::warn!(source, error = %e, "Cannot read the spool's cursor.");
                Resumed::default()
            }
        }
    }

    fn send(&mut self, out: Outgoing) -> Result<(), Stopped> {
        let (tx, stop) = (&self.tx, &self.hard_stop);
        self.handle.block_on(async {
            tokio::select! {
                r = tx.send(out) => r.map_err(|_| Stopped),
                () = stop.cancelled() => Err(Stopped),
            }
        })
    }

    fn send_within(&mut self, out: Outgoing, limit: Duration) -> Result<Option<Outgoing>, Stopped> {
        let (tx, stop) = (&self.tx, &self.hard_stop);
        self.handle.block_on(async {
            tokio::select! {
                permit = tx.reserve() => match permit {
                    Ok(permit) => {
                        permit.send(out);
                        Ok(None)
                    }
                    Err(_) => Err(Stopped),
                },
                () = tokio::time::sleep(limit) => Ok(Some(out)),
                () = stop.cancelled() => Err(Stopped),
            }
        })
    }
}

struct Reader {
    settings: Arc<LogSettings>,
    counters: Arc<LogCounters>,
    wake: std::sync::mpsc::Receiver<Wake>,
    overflow: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    acked: Acked,
    checkpoints: CheckpointFile,
    watcher: notify::RecommendedWatcher,
    delivery: Channel,
}

impl Reader {
    fn run(mut self) -> Result<(), String> {
        let saved = self.checkpoints.load();
        let mut tailer: Tailer<Framer> =
            Tailer::new(self.settings.clone(), saved, self.counters.clone());
        let mut watched: HashSet<PathBuf> = HashSet::new();
        let mut last_rescan = Instant::now();
        tailer.rescan(last_rescan, &mut self.delivery);
        self.watch(&tailer, &mut watched);
        self.save(&mut tailer);
        let mut last_save = Instant::now();
        let mut rescan_asked = false;
        loop {
            if self.stop.load(Ordering::Relaxed) {
                break;
            }
            let now = Instant::now();
            let mut wait = tailer
                .next_due(now)
                .unwrap_or(Duration::from_secs(1))
                .min((last_rescan + self.settings.rescan).saturating_duration_since(now));
            if tailer.changed() {
                wait = wait.min((last_save + SAVE_EVERY).saturating_duration_since(now));
            }
            if rescan_asked {
                wait = wait.min((last_rescan + RESCAN_GAP).saturating_duration_since(now));
            }
            let first = match self.wake.recv_timeout(wait.max(Duration::from_millis(1))) {
                Ok(w) => Some(w),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => None,
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            };
            let mut pending: Vec<Wake> = first.into_iter().collect();
            while let Ok(w) = self.wake.try_recv() {
                pending.push(w);
            }
            for w in pending {
                if let Wake::Fs(paths, structural) = w {
                    for p in &paths {
                        tailer.touched(p);
                    }
                    rescan_asked |= structural;
                }
            }
            if self.overflow.swap(false, Ordering::Relaxed) {
                rescan_asked = true;
            }
            let now = Instant::now();
            let since = now.duration_since(last_rescan);
            let due = since >= self.settings.rescan
                || (rescan_asked && since >= RESCAN_GAP)
                || (since >= Duration::from_millis(500) && tailer.wants_rescan());
            if due {
                rescan_asked = false;
                last_rescan = now;
                tailer.rescan(now, &mut self.delivery);
                self.watch(&tailer, &mut watched);
            }
            self.apply_acks(&mut tailer);
            if tailer.poll(Instant::now(), &mut self.delivery).is_err() {
                break;
            }
            let urgent = tailer.take_urgent();
            if tailer.changed() && (urgent || last_save.elapsed() >= SAVE_EVERY) {
                self.save(&mut tailer);
                last_save = Instant::now();
            }
        }
        // Stopping: read what is there, send it, take the acks that come.
        let _ = tailer.drain(Instant::now() + DRAIN_TIME, &mut self.delivery);
        let until = Instant::now() + ACK_WAIT;
        loop {
            self.apply_acks(&mut tailer);
            let now = Instant::now();
            if tailer.all_settled() || now >= until {
                break;
            }
            let _ = self.wake.recv_timeout(until - now);
        }
        self.save(&mut tailer);
        Ok(())
    }

    fn apply_acks(&self, tailer: &mut Tailer<Framer>) {
        let list = match self.acked.lock() {
            Ok(mut l) => std::mem::take(&mut *l),
            Err(p) => std::mem::take(&mut *p.into_inner()),
        };
        for (ticket, fate) in list {
            match fate {
                None => tailer.spooled(ticket),
                Some(fate) => tailer.settled(ticket, &fate),
            }
        }
    }

    fn save(&self, tailer: &mut Tailer<Framer>) {
        let entries = tailer.checkpoint();
        if let Err(e) = self.checkpoints.save(&entries) {
            tracing::warn!(error = %e, "Checkpoint write failed.");
        }
    }

    fn watch(&mut self, tailer: &Tailer<Framer>, watched: &mut HashSet<PathBuf>) {
        let want: HashSet<PathBuf> = tailer.dirs().iter().cloned().collect();
        for gone in watched.difference(&want) {
            let _ = self.watcher.unwatch(gone);
        }
        watched.retain(|d| want.contains(d));
        for dir in want {
            if !watched.contains(&dir)
                && self
                    .watcher
                    .watch(&dir, RecursiveMode::NonRecursive)
                    .is_ok()
            {
                watched.insert(dir);
            }
        }
    }
}

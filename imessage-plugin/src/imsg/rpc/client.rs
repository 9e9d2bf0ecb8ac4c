//! The `imsg rpc` client: one child process, three tasks (writer, reader, stderr drain) plus
//! a process task, requests matched to replies by id only (imsg-protocol.md §A1–§A8).
//!
//! Reading never waits on writing: imsg blocks when its stdout pipe is full, and a lenient
//! server then stops reading stdin, so a client that writes before it reads can deadlock.

use crate::support::sync::LockExt;
use std::collections::{HashMap, VecDeque};
use std::process::Stdio;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::value::RawValue;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, oneshot, Semaphore};

use super::framing::{Line, LineSplitter, DEFAULT_MAX_LINE_BYTES};
use super::wire::{self, Incoming, RpcError};

/// Why a call failed.
#[derive(Debug, Clone, PartialEq)]
pub enum CallError {
    /// imsg answered with a JSON-RPC error.
    Rpc(RpcError),
    Timeout {
        method: String,
        after: Duration,
    },
    /// The child exited or its pipes broke while the request was pending.
    ChildExited {
        status: String,
        stderr: String,
    },
    /// imsg cannot read the Messages database (Full Disk Access).
    PermissionDenied(String),
    /// The child could not be started.
    Spawn(String),
}

impl CallError {
    /// imsg cannot read the Messages database (Full Disk Access): the child said so on
    /// stdout or stderr, or answered −32002. One rule for the probe and the watcher.
    pub fn is_permission(&self) -> bool {
        match self {
            CallError::PermissionDenied(_) => true,
            CallError::Rpc(r) => r.code == -32002 || wire::is_permission_text(&r.text()),
            CallError::ChildExited { stderr, .. } => wire::is_permission_text(stderr),
            _ => false,
        }
    }
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Rpc(e) => write!(f, "imsg error: {}", e.describe()),
            CallError::Timeout { method, after } => {
                write!(
                    f,
                    "imsg did not answer {method} within {} ms",
                    after.as_millis()
                )
            }
            CallError::ChildExited { status, stderr } if stderr.trim().is_empty() => {
                write!(f, "imsg exited ({status})")
            }
            // Its stderr may quote a handle or a message, and this text reaches logs above
            // debug and status: the lines are logged at debug level as they are read.
            CallError::ChildExited { status, .. } => {
                write!(
                    f,
                    "imsg exited ({status}); its stderr is logged at debug level"
                )
            }
            CallError::PermissionDenied(text) => {
                write!(f, "imsg cannot read the Messages database: {text}")
            }
            CallError::Spawn(e) => write!(f, "{e}"),
        }
    }
}

/// Something the child said that is not a reply. The stream ends (`recv` returns `None`)
/// when the child is gone; pending requests have failed by then.
#[derive(Debug)]
pub enum Event {
    /// A `message` notification, parsed in the reader: the typed message, or why it could not
    /// be used (the consumer counts it as malformed).
    Message {
        subscription: Option<i64>,
        message: Result<Box<crate::imsg::message::ImsgMessage>, crate::imsg::message::Malformed>,
    },
    /// Any other notification.
    Notification {
        method: String,
        params: Option<Box<RawValue>>,
    },
}

/// How to start `imsg rpc`.
#[derive(Debug, Clone)]
pub struct SpawnConfig {
    /// The executable (already `~`-expanded).
    pub program: String,
    /// Arguments after the program (`rpc`, optionally `--db PATH`).
    pub args: Vec<String>,
    pub max_line_bytes: usize,
}

impl SpawnConfig {
    pub fn rpc(program: &str, db_path: Option<&str>) -> Self {
        let mut args = vec!["rpc".to_string()];
        if let Some(db) = db_path {
            args.push("--db".into());
            args.push(db.into());
        }
        SpawnConfig {
            program: program.to_string(),
            args,
            max_line_bytes: max_line_bytes(),
        }
    }
}

/// The line cap: `IMESSAGE_MAX_LINE_BYTES` when set to a positive integer, else 32 MiB.
pub fn max_line_bytes() -> usize {
    std::env::var("IMESSAGE_MAX_LINE_BYTES")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or(DEFAULT_MAX_LINE_BYTES)
}

type Waiter = oneshot::Sender<Result<Box<RawValue>, CallError>>;

struct Inner {
    next_id: AtomicI64,
    pending: Mutex<HashMap<i64, Waiter>>,
    writer: Mutex<Option<mpsc::UnboundedSender<String>>>,
    /// Set once the child is gone (or unusable): later calls fail at once with it.
    dead: Mutex<Option<CallError>>,
    in_flight: Semaphore,
    stderr_tail: Mutex<VecDeque<u8>>,
    /// Non-JSON lines waiting to be logged as one entry.
    noise: Mutex<Vec<String>>,
    shutdown: Mutex<Option<oneshot::Sender<()>>>,
    pid: Option<u32>,
}

const STDERR_TAIL: usize = 16 * 1024;
/// Notifications buffered between the reader and the consumer.
pub const EVENT_QUEUE: usize = 1024;
const MAX_IN_FLIGHT: usize = 32;

/// A handle on one running `imsg rpc` child. Cloning shares the child.
#[derive(Clone)]
pub struct RpcClient {
    inner: Arc<Inner>,
}

/// A freshly started client and its event stream.
pub struct Started {
    pub client: RpcClient,
    pub events: mpsc::Receiver<Event>,
    /// Resolves when the child has been reaped (or the I/O ended).
    pub done: oneshot::Receiver<()>,
}

impl RpcClient {
    /// Spawns `program args…` in its own process group, without a shell.
    pub fn spawn(config: &SpawnConfig) -> Result<Started, CallError> {
        let mut cmd = tokio::process::Command::new(&config.program);
        cmd.args(&config.args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .process_group(0);
        let mut child = cmd.spawn().map_err(|e| {
            CallError::Spawn(match e.kind() {
                std::io::ErrorKind::NotFound => format!("imsg not found at {}", config.program),
                std::io::ErrorKind::PermissionDenied => {
                    format!("{} is not executable", config.program)
                }
                _ => format!("starting {}: {e}", config.program),
            })
        })?;
        let stdin = child.stdin.take().expect("piped");
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        let pid = child.id();
        let (started, eof_rx) =
            Self::start(stdin, stdout, Some(stderr), pid, config.max_line_bytes);
        let inner = started.client.inner.clone();
        let (shutdown_tx, shutdown_rx) = oneshot::channel();
        *inner.shutdown.locked() = Some(shutdown_tx);
        let (done_tx, done_rx) = oneshot::channel();
        crate::support::task::spawn(
            "imsg process",
            supervise_process(child, inner, eof_rx, shutdown_rx, done_tx),
        );
        Ok(Started {
            client: started.client,
            events: started.events,
            done: done_rx,
        })
    }

    /// A client over arbitrary streams (tests and benchmarks stand in for the child).
    pub fn from_io<R, W>(reader: R, writer: W) -> Started
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let (started, eof_rx) = Self::start(
            writer,
            reader,
            None::<tokio::io::Empty>,
            None,
            DEFAULT_MAX_LINE_BYTES,
        );
        let inner = started.client.inner.clone();
        let (done_tx, done_rx) = oneshot::channel();
        crate::support::task::spawn("imsg stream", async move {
            let _ = eof_rx.await;
            inner.fail_all(CallError::ChildExited {
                status: "stream closed".into(),
                stderr: String::new(),
            });
            let _ = done_tx.send(());
        });
        Started {
            client: started.client,
            events: started.events,
            done: done_rx,
        }
    }

    fn start<W, R, E>(
        stdin: W,
        stdout: R,
        stderr: Option<E>,
        pid: Option<u32>,
        max_line: usize,
    ) -> (Started, oneshot::Receiver<()>)
    where
        W: AsyncWrite + Unpin + Send + 'static,
        R: AsyncRead + Unpin + Send + 'static,
        E: AsyncRead + Unpin + Send + 'static,
    {
        let (write_tx, write_rx) = mpsc::unbounded_channel::<String>();
        // Bounded: when the consumer lags, the reader stops reading, the pipe fills and imsg
        // waits, instead of the backlog growing in memory.
        let (event_tx, event_rx) = mpsc::channel(EVENT_QUEUE);
        let inner = Arc::new(Inner {
            next_id: AtomicI64::new(1),
            pending: Mutex::new(HashMap::new()),
            writer: Mutex::new(Some(write_tx)),
            dead: Mutex::new(None),
            in_flight: Semaphore::new(MAX_IN_FLIGHT),
            stderr_tail: Mutex::new(VecDeque::new()),
            noise: Mutex::new(Vec::new()),
            shutdown: Mutex::new(None),
            pid,
        });
        crate::support::task::spawn("imsg writer", write_loop(stdin, write_rx, inner.clone()));
        let (eof_tx, eof_rx) = oneshot::channel();
        crate::support::task::spawn(
            "imsg reader",
            read_loop(stdout, inner.clone(), event_tx, max_line, eof_tx),
        );
        if let Some(stderr) = stderr {
            crate::support::task::spawn("imsg stderr", drain_stderr(stderr, inner.clone()));
        }
        let done = oneshot::channel().1;
        (
            Started {
                client: RpcClient { inner },
                events: event_rx,
                done,
            },
            eof_rx,
        )
    }

    pub fn pid(&self) -> Option<u32> {
        self.inner.pid
    }

    /// The error every call now fails with, once the child is gone.
    pub fn dead(&self) -> Option<CallError> {
        self.inner.dead.lock().ok().and_then(|d| d.clone())
    }

    /// The last 16 KiB of stderr.
    pub fn stderr_tail(&self) -> String {
        self.inner.stderr_tail()
    }

    /// Sends one request and waits for its reply, at most `timeout`.
    pub async fn request(
        &self,
        method: &str,
        params: Value,
        timeout: Duration,
    ) -> Result<Value, CallError> {
        let raw = self.request_raw(method, params, timeout).await?;
        serde_json::from_str(raw.get()).map_err(|e| {
            CallError::Rpc(RpcError {
                code: -32700,
                message: format!("unreadable result: {e}"),
                data: None,
            })
        })
    }

    pub async fn request_raw(
        &self,
        method: &str,
        params: Value,
        timeout: Duration,
    ) -> Result<Box<RawValue>, CallError> {
        if let Some(e) = self.dead() {
            return Err(e);
        }
        let _permit = self
            .inner
            .in_flight
            .acquire()
            .await
            .map_err(|_| CallError::Spawn("client closed".into()))?;
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let params = if params.is_null() {
            Value::Object(Default::default())
        } else {
            params
        };
        let line =
            serde_json::json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
                .to_string();
        let (tx, rx) = oneshot::channel();
        self.inner.pending.locked().insert(id, tx);
        // The child may have died between the check above and the insert.
        if let Some(e) = self.dead() {
            self.inner.pending.locked().remove(&id);
            return Err(e);
        }
        let sent = self
            .inner
            .writer
            .locked()
            .as_ref()
            .map(|w| w.send(line).is_ok())
            .unwrap_or(false);
        if !sent {
            self.inner.pending.locked().remove(&id);
            return Err(self.dead().unwrap_or(CallError::ChildExited {
                status: "stdin closed".into(),
                stderr: self.stderr_tail(),
            }));
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(self.dead().unwrap_or(CallError::ChildExited {
                status: "unknown".into(),
                stderr: self.stderr_tail(),
            })),
            // No blind retry and no timeout counting: a watcher request that times out
            // restarts the child, and a sender whose outcome is unknown is replaced (§A7).
            Err(_) => {
                self.inner.pending.locked().remove(&id);
                Err(CallError::Timeout {
                    method: method.to_string(),
                    after: timeout,
                })
            }
        }
    }

    /// Stops the child: close stdin, wait up to `grace`, SIGTERM, 1 s later SIGKILL, reap.
    /// Returns once the child is reaped (or at once for stream clients).
    pub async fn shutdown(self, done: oneshot::Receiver<()>, grace: Duration) {
        self.inner.writer.locked().take();
        let tx = self.inner.shutdown.locked().take();
        if let Some(tx) = tx {
            let _ = tx.send(());
            let _ = tokio::time::timeout(grace + Duration::from_secs(5), done).await;
        }
    }
}

impl Inner {
    fn stderr_tail(&self) -> String {
        let tail = self.stderr_tail.locked();
        let bytes: Vec<u8> = tail.iter().copied().collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Marks the child dead and fails every pending request with `error`.
    fn fail_all(&self, error: CallError) {
        {
            let mut dead = self.dead.locked();
            if dead.is_none() {
                *dead = Some(error.clone());
            }
        }
        let waiters: Vec<Waiter> = self.pending.locked().drain().map(|(_, w)| w).collect();
        let error = self.dead.locked().clone().unwrap_or(error);
        for w in waiters {
            let _ = w.send(Err(error.clone()));
        }
        self.flush_noise();
    }

    fn flush_noise(&self) {
        let lines: Vec<String> = std::mem::take(&mut *self.noise.locked());
        if !lines.is_empty() {
            // The lines themselves may quote a message or a handle: debug only.
            tracing::warn!(
                lines = lines.len(),
                "imsg wrote non-JSON output (the lines are logged at debug level)"
            );
            tracing::debug!("imsg wrote non-JSON output: {}", lines.join(" | "));
        }
    }

    fn on_noise(&self, line: &str) {
        if wire::is_permission_text(line) && self.dead.locked().is_none() {
            // Fail now instead of waiting for timeouts, and refuse later requests: respawning
            // into the same error would loop.
            self.noise.locked().push(truncate(line, 200));
            self.fail_all(CallError::PermissionDenied(line.trim().to_string()));
            return;
        }
        let mut noise = self.noise.locked();
        if noise.len() < 64 {
            noise.push(truncate(line, 200));
        }
    }
}

fn truncate(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_string(),
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(
    mut stdin: W,
    mut rx: mpsc::UnboundedReceiver<String>,
    inner: Arc<Inner>,
) {
    while let Some(mut line) = rx.recv().await {
        line.push('\n');
        let result = async {
            stdin.write_all(line.as_bytes()).await?;
            stdin.flush().await
        }
        .await;
        if let Err(e) = result {
            // EPIPE and friends are values, never signals: the child is gone.
            tracing::warn!("writing to imsg failed: {e}");
            let supervisor = inner.shutdown.locked().take();
            match supervisor {
                // The process task fails every pending request once stdout has been read
                // to its end, so a startup banner (e.g. Full Disk Access) written just before
                // the exit still names the cause instead of a bare "child exited".
                Some(tx) => {
                    let _ = tx.send(());
                }
                None => inner.fail_all(CallError::ChildExited {
                    status: format!("stdin write failed: {e}"),
                    stderr: inner.stderr_tail(),
                }),
            }
            break;
        }
    }
    let _ = stdin.shutdown().await;
}

async fn read_loop<R: AsyncRead + Unpin>(
    mut stdout: R,
    inner: Arc<Inner>,
    events: mpsc::Sender<Event>,
    max_line: usize,
    eof: oneshot::Sender<()>,
) {
    let mut splitter = LineSplitter::new(max_line);
    let mut buf = vec![0u8; 64 * 1024];
    let mut ready: Vec<Event> = Vec::new();
    loop {
        let n = match stdout.read(&mut buf).await {
            Ok(0) | Err(_) => 0,
            Ok(n) => n,
        };
        // Lines are parsed straight from the read buffer where they fit in it; only the
        // events (which own their data) wait for the consumer.
        let mut on_line = |line: Line<'_>| match line {
            Line::Oversized => tracing::error!(
                "imsg output line exceeded max_line_bytes ({max_line}); line discarded"
            ),
            Line::Text(text) => {
                if let Some(event) = dispatch(&text, &inner) {
                    ready.push(event);
                }
            }
        };
        if n == 0 {
            splitter.finish_with(&mut on_line);
        } else {
            splitter.feed(&buf[..n], &mut on_line);
        }
        for event in ready.drain(..) {
            if events.send(event).await.is_err() {
                // Nobody listens any more; keep draining stdout for replies.
                tracing::trace!("notification dropped: no consumer");
            }
        }
        if n == 0 {
            break;
        }
    }
    inner.flush_noise();
    let _ = eof.send(());
}

/// Handles one line; a notification is returned for the consumer.
fn dispatch(line: &str, inner: &Inner) -> Option<Event> {
    // The hot case first: one typed pass over a message notification.
    if let Some((subscription, message)) = crate::imsg::message::parse_message_line(line) {
        inner.flush_noise();
        return Some(Event::Message {
            subscription,
            message: Ok(Box::new(message)),
        });
    }
    let incoming = wire::classify(line);
    if !matches!(incoming, Incoming::Noise) {
        inner.flush_noise();
    }
    match incoming {
        Incoming::Reply { id, outcome } => {
            let waiter = inner.pending.locked().remove(&id);
            match waiter {
                Some(w) => {
                    let _ = w.send(outcome.map_err(CallError::Rpc));
                }
                None => tracing::debug!(id, "reply for a request no longer pending"),
            }
        }
        Incoming::StrayReply { id, error } => {
            // imsg's error may quote the request line, which may hold a message's text.
            tracing::error!(id = %id, "imsg could not read a request line (its error is logged at debug level)");
            tracing::debug!(
                id = %id,
                error = %error.map(|e| e.describe()).unwrap_or_default(),
                "imsg could not read a request line"
            )
        }
        // A `message` line the fast pass refused: its slow parse says what is wrong with it.
        Incoming::Notification { method, params } if method == "message" => {
            return Some(
                match crate::imsg::message::parse_notification(params.as_deref()) {
                    Ok((subscription, message)) => Event::Message {
                        subscription,
                        message: Ok(Box::new(message)),
                    },
                    Err(bad) => Event::Message {
                        subscription: bad.subscription,
                        message: Err(bad),
                    },
                },
            );
        }
        Incoming::Notification { method, params } => {
            return Some(Event::Notification { method, params });
        }
        Incoming::Unroutable(e) => {
            tracing::warn!(
                code = e.code,
                "imsg wrote an error without id (its text is logged at debug level)"
            );
            tracing::debug!("imsg wrote an error without id: {}", e.describe())
        }
        Incoming::Noise => inner.on_noise(line),
    }
    None
}

async fn drain_stderr<E: AsyncRead + Unpin>(stderr: E, inner: Arc<Inner>) {
    let mut reader = BufReader::new(stderr);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                {
                    let mut tail = inner.stderr_tail.locked();
                    tail.extend(line.iter().copied());
                    while tail.len() > STDERR_TAIL {
                        tail.pop_front();
                    }
                }
                let text = String::from_utf8_lossy(&line);
                let text = text.trim_end();
                // imsg's diagnostics may quote a handle or a message: debug only.
                if !text.is_empty() {
                    tracing::debug!(target: "imsg::stderr", "{}", truncate(text, 500));
                }
            }
        }
    }
}

fn describe_status(status: std::io::Result<std::process::ExitStatus>) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Ok(s) => match (s.code(), s.signal()) {
            (Some(code), _) => format!("exit status {code}"),
            (None, Some(sig)) => format!("killed by signal {sig}"),
            _ => "unknown status".into(),
        },
        Err(e) => format!("wait failed: {e}"),
    }
}

fn signal_group(pid: Option<u32>, signal: i32) {
    if let Some(pid) = pid {
        // SAFETY: signalling the child's own process group (it was spawned with pgid = pid).
        unsafe {
            libc::kill(-(pid as i32), signal);
        }
    }
}

/// Owns the child: reaps it when it exits on its own, or runs the shutdown sequence.
async fn supervise_process(
    mut child: tokio::process::Child,
    inner: Arc<Inner>,
    eof: oneshot::Receiver<()>,
    shutdown: oneshot::Receiver<()>,
    done: oneshot::Sender<()>,
) {
    let pid = child.id();
    let mut eof = eof;
    let mut eof_seen = false;
    let status = tokio::select! {
        status = child.wait() => describe_status(status),
        _ = &mut eof => {
            eof_seen = true;
            // stdout closed: the child is gone or about to be; give it a moment to exit.
            match tokio::time::timeout(Duration::from_millis(500), child.wait()).await {
                Ok(status) => describe_status(status),
                Err(_) => stop_child(&mut child, pid, Duration::ZERO).await,
            }
        }
        _ = shutdown => stop_child(&mut child, pid, Duration::from_secs(2)).await,
    };
    if !eof_seen {
        // The exit can be seen before the reader has drained stdout: let it finish (a
        // banner written just before exiting explains the exit), within a bound, since a
        // grandchild (an ssh wrapper's) may hold the pipe open.
        let _ = tokio::time::timeout(Duration::from_millis(500), &mut eof).await;
    }
    tracing::debug!(pid, status = %status, "imsg rpc child ended");
    let error = CallError::ChildExited {
        status,
        stderr: inner.stderr_tail(),
    };
    inner.fail_all(error);
    let _ = done.send(());
}

async fn stop_child(
    child: &mut tokio::process::Child,
    pid: Option<u32>,
    grace: Duration,
) -> String {
    if let Ok(status) = tokio::time::timeout(grace, child.wait()).await {
        return describe_status(status);
    }
    signal_group(pid, libc::SIGTERM);
    if let Ok(status) = tokio::time::timeout(Duration::from_secs(1), child.wait()).await {
        return describe_status(status);
    }
    signal_group(pid, libc::SIGKILL);
    let _ = child.start_kill();
    describe_status(child.wait().await)
}

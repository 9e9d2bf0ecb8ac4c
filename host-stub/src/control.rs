//! The running gateway's local control socket (issue 13): `host-stub gateway` listens on a Unix
//! domain socket in its state folder, and the CLI's `channels status`, `message send` and
//! `pairing …` use it when a gateway answers, so they see and act through the plugin
//! instance that is actually running (its live state, its sender process, its echo registry)
//! instead of a fresh one-shot instance.
//!
//! `<stateDir>/host-stub/control.sock`, mode 0600 inside a 0700 folder, never a network port.
//! Only the same user may connect: the file permissions, and the peer's uid checked on every
//! connection. One request per connection, as versioned JSON lines: the client writes one
//! [`Request`] line, the gateway answers one [`Response`] line and closes.
//!
//! A socket left by a killed gateway refuses connections: the next gateway removes it and
//! binds again; the CLI treats it as "no gateway running" and falls back to one-shot mode.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use plugin_abi::contract::ErrorCode;
use plugin_abi::types::{PluginError, SendRequest, StatusRequest};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::channel::Channel;
use crate::failure::Failure;

/// The protocol version both sides write; a gateway answers a request of another version with
/// an error naming both.
pub const VERSION: u32 = 1;
/// The longest request line a gateway reads.
const MAX_REQUEST: u64 = 4 << 20;

pub fn socket_path(state_dir: &Path) -> PathBuf {
    state_dir.join("host-stub").join("control.sock")
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Request {
    pub v: u32,
    /// The channel id (`imessage`).
    pub channel: String,
    #[serde(flatten)]
    pub op: Op,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase")]
pub enum Op {
    Status {
        request: StatusRequest,
    },
    Send {
        request: SendRequest,
    },
    /// A plugin `call` (`pairing.list`, `pairing.approve`, `pairing.revoke`, …).
    Call {
        method: String,
        payload: Value,
    },
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Response {
    pub v: u32,
    /// The gateway's process id.
    pub pid: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<PluginError>,
}

/// "Is a gateway there?": answered before any channel is looked up.
fn ping() -> Request {
    Request {
        v: VERSION,
        channel: String::new(),
        op: Op::Call {
            method: "ping".into(),
            payload: Value::Null,
        },
    }
}

/// The peer's uid on a connected Unix socket.
fn peer_uid(stream: &UnixStream) -> std::io::Result<u32> {
    use std::os::unix::io::AsRawFd;
    #[cfg(target_os = "linux")]
    {
        let mut cred = libc::ucred {
            pid: 0,
            uid: 0,
            gid: 0,
        };
        let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
        // SAFETY: `cred` and `len` are valid for writes of the sizes passed.
        let rc = unsafe {
            libc::getsockopt(
                stream.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERCRED,
                &mut cred as *mut libc::ucred as *mut libc::c_void,
                &mut len,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(cred.uid)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let (mut uid, mut gid) = (0, 0);
        // SAFETY: both out-pointers are valid.
        let rc = unsafe { libc::getpeereid(stream.as_raw_fd(), &mut uid, &mut gid) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(uid)
    }
}

fn my_uid() -> u32 {
    // SAFETY: no arguments, cannot fail.
    unsafe { libc::geteuid() }
}

/// The listening side, owned by `host-stub gateway`.
pub struct Server {
    path: PathBuf,
    closing: Arc<AtomicBool>,
    accept: Option<std::thread::JoinHandle<()>>,
}

/// Why the gateway runs without a control socket.
#[derive(Debug)]
pub enum NotServing {
    /// Another gateway answers on this state folder.
    OtherGateway(u32),
    Io(String),
}

impl Server {
    /// Binds the socket (replacing a stale one) and serves `channels` on a thread.
    pub fn start(path: &Path, channels: Arc<Vec<Channel>>) -> Result<Server, NotServing> {
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)
            .map_err(|e| NotServing::Io(format!("{}: {e}", dir.display())))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| NotServing::Io(format!("{}: {e}", dir.display())))?;
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            if !meta.file_type().is_socket() {
                return Err(NotServing::Io(format!(
                    "{} exists and is not a socket; not replacing it",
                    path.display()
                )));
            }
            match ask(path, &ping(), Some(PING_TIMEOUT)) {
                Ok(response) => return Err(NotServing::OtherGateway(response.pid)),
                Err(_) => {
                    // Nobody answers: a killed gateway's socket.
                    tracing::info!(path = %path.display(), "removing a stale control socket");
                    let _ = std::fs::remove_file(path);
                }
            }
        }
        // Bound under a private name, made 0600, then renamed into place: a client that
        // checks the socket's mode never sees it between bind and chmod.
        let fresh = dir.join(format!(".control.sock.{}", std::process::id()));
        let _ = std::fs::remove_file(&fresh);
        let listener = UnixListener::bind(&fresh)
            .map_err(|e| NotServing::Io(format!("binding {}: {e}", fresh.display())))?;
        std::fs::set_permissions(&fresh, std::fs::Permissions::from_mode(0o600))
            .and_then(|()| std::fs::rename(&fresh, path))
            .map_err(|e| {
                let _ = std::fs::remove_file(&fresh);
                NotServing::Io(format!("{}: {e}", path.display()))
            })?;
        let closing = Arc::new(AtomicBool::new(false));
        let stop = closing.clone();
        let accept = std::thread::Builder::new()
            .name("control".into())
            .spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let channels = channels.clone();
                    // One thread per connection: a slow send must not hold up a status call.
                    let _ = std::thread::Builder::new()
                        .name("control-conn".into())
                        .spawn(move || serve_one(stream, &channels));
                }
            })
            .map_err(|e| NotServing::Io(format!("starting the control thread: {e}")))?;
        Ok(Server {
            path: path.to_path_buf(),
            closing,
            accept: Some(accept),
        })
    }

    /// Stops listening and removes the socket.
    pub fn close(mut self) {
        self.closing.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = UnixStream::connect(&self.path);
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

fn serve_one(stream: UnixStream, channels: &[Channel]) {
    let pid = std::process::id();
    let answer = |mut stream: &UnixStream, result: Result<Value, PluginError>| {
        let (result, error) = match result {
            Ok(v) => (Some(v), None),
            Err(e) => (None, Some(e)),
        };
        let mut line = serde_json::to_vec(&Response {
            v: VERSION,
            pid,
            result,
            error,
        })
        .unwrap_or_default();
        line.push(b'\n');
        let _ = stream.write_all(&line);
    };
    match peer_uid(&stream) {
        Ok(uid) if uid == my_uid() => {}
        Ok(uid) => {
            tracing::warn!(
                uid,
                "control socket: refused a connection from another user"
            );
            return;
        }
        Err(e) => {
            tracing::warn!("control socket: cannot tell who connected ({e}); refused");
            return;
        }
    }
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut line = String::new();
    if BufReader::new((&stream).take(MAX_REQUEST))
        .read_line(&mut line)
        .is_err()
    {
        return;
    }
    let request: Request = match serde_json::from_str(&line) {
        Ok(r) => r,
        Err(e) => {
            return answer(
                &stream,
                Err(PluginError::new(
                    ErrorCode::BadRequest,
                    format!("control request: {e}"),
                )),
            );
        }
    };
    if request.v != VERSION {
        return answer(
            &stream,
            Err(PluginError::new(
                ErrorCode::BadRequest,
                format!(
                    "control protocol {} requested; this gateway speaks {VERSION}",
                    request.v
                ),
            )),
        );
    }
    if let Op::Call { method, .. } = &request.op {
        if method == "ping" {
            return answer(&stream, Ok(Value::Null));
        }
    }
    let Some(channel) = channels.iter().find(|c| c.id == request.channel) else {
        return answer(
            &stream,
            Err(PluginError::new(
                ErrorCode::NotRunning,
                format!("channel {} is not running in this gateway", request.channel),
            )),
        );
    };
    let result = match request.op {
        Op::Status { request } => channel
            .client
            .status(&request)
            .map(|r| serde_json::to_value(r).unwrap_or(Value::Null)),
        Op::Send { request } => channel
            .client
            .send(&request)
            .map(|r| serde_json::to_value(r).unwrap_or(Value::Null)),
        Op::Call { method, payload } => channel.client.call(&method, &payload),
    };
    answer(&stream, result);
}

/// How long a ping may take: something that accepts but never answers is no gateway.
const PING_TIMEOUT: Duration = Duration::from_secs(3);

/// Sends one request on `path` and reads the answer, waiting at most `timeout` for it.
fn ask(path: &Path, request: &Request, timeout: Option<Duration>) -> std::io::Result<Response> {
    let mut stream = UnixStream::connect(path)?;
    stream.set_read_timeout(timeout)?;
    let mut line = serde_json::to_vec(request)?;
    line.push(b'\n');
    stream.write_all(&line)?;
    let mut answer = String::new();
    BufReader::new(&stream).read_line(&mut answer)?;
    serde_json::from_str(&answer).map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("the gateway's answer is not a control response: {e}"),
        )
    })
}

/// A running gateway reached through its control socket.
pub struct Gateway {
    path: PathBuf,
    pub pid: u32,
}

impl Gateway {
    /// The gateway running on `state_dir`, `None` when none answers (no socket, or a stale one
    /// left by a killed gateway). A socket that is not this user's, or not private, is refused:
    /// a clear error, never a silent fallback.
    pub fn find(state_dir: &Path) -> Result<Option<Gateway>, Failure> {
        let path = socket_path(state_dir);
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(_) => return Ok(None),
        };
        if !meta.file_type().is_socket() {
            return Err(Failure::runtime(format!(
                "{} is not a socket; refusing to use it as the gateway's control socket",
                path.display()
            )));
        }
        if meta.uid() != my_uid() {
            return Err(Failure::runtime(format!(
                "{} belongs to uid {}, not to you (uid {}); refusing to use it",
                path.display(),
                meta.uid(),
                my_uid()
            )));
        }
        let mode = meta.mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(Failure::runtime(format!(
                "{} has mode {mode:04o}; a control socket must be 0600 (only you may connect); refusing to use it",
                path.display()
            )));
        }
        match ask(&path, &ping(), Some(PING_TIMEOUT)) {
            Ok(response) => Ok(Some(Gateway {
                path,
                pid: response.pid,
            })),
            Err(e) => {
                tracing::debug!("no gateway answers on {}: {e}", path.display());
                Ok(None)
            }
        }
    }

    /// One request to the running gateway.
    pub fn request(&self, channel: &str, op: Op) -> Result<Value, PluginError> {
        let request = Request {
            v: VERSION,
            channel: channel.to_string(),
            op,
        };
        // No read timeout: a send through the gateway takes as long as the plugin's own
        // `sendTimeoutMs` allows, and the plugin bounds it.
        let response = ask(&self.path, &request, None).map_err(|e| {
            PluginError::new(
                ErrorCode::GatewayUnreachable,
                format!("the running gateway (pid {}) did not answer: {e}", self.pid),
            )
        })?;
        match (response.result, response.error) {
            (_, Some(e)) => Err(e),
            (Some(v), None) => Ok(v),
            (None, None) => Ok(Value::Null),
        }
    }
}

//! One resource's gRPC server on its Unix socket: started on a private
//! name and linked into place, stopped in bulk with one grace period.

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use grpcio::{Environment, Server, ServerBuilder, ServerCredentials};

use super::service::{DevicePluginService, RegistrationService};
use crate::api::pluginregistration_grpc::create_registration;
use crate::api::v1beta1_grpc::create_device_plugin;
use crate::cli::Registration;
use crate::core::state::ResourceState;
use crate::socket::{self, OwnedSocket, SocketError};
use crate::util::{block_on_timeout, unix_target};

/// Calls each server can accept at once before the next is queued.
const REQUEST_SLOTS: usize = 16;
/// How long a server may take to finish its calls when stopped before they
/// are cancelled (a whole shutdown must fit in 1 s).
const SHUTDOWN_GRACE: Duration = Duration::from_millis(300);

/// Serves `state` on `path`: gRPC binds a private name in the same
/// directory, which is then hard-linked to `path` (never replacing a file).
///
/// # Errors
///
/// When the socket cannot be prepared, bound or published.
pub(crate) fn start(
    env: &Arc<Environment>,
    state: &Arc<ResourceState>,
    path: &Path,
    mode: Registration,
) -> Result<(Server, OwnedSocket), SocketError> {
    socket::prepare(path)?;
    // grpcio pre-allocates 1024 request slots per server by default (about
    // 0.4 MB each); the kubelet makes a few calls at a time per resource.
    let mut builder = ServerBuilder::new(env.clone())
        .requests_slot_per_cq(REQUEST_SLOTS)
        .register_service(create_device_plugin(DevicePluginService {
            state: state.clone(),
        }));
    if mode == Registration::PluginWatcher {
        builder = builder.register_service(create_registration(RegistrationService {
            state: state.clone(),
        }));
    }
    let io_err = |action: &'static str, e: grpcio::Error| SocketError::Io {
        path: path.into(),
        action,
        source: io::Error::other(e.to_string()),
    };
    let mut server = builder
        .build()
        .map_err(|e| io_err("build the gRPC server", e))?;
    // gRPC binds a private name and unlinks only that one (at shutdown);
    // the public name is linked to it afterwards, never replaced.
    let dir = path.parent().unwrap_or(Path::new("."));
    let temp = socket::temp_name(dir);
    if let Err(e) = server.add_listening_port(unix_target(&temp), ServerCredentials::insecure()) {
        return Err(bind_error(path, &e));
    }
    server.start();
    match socket::publish(&temp, path) {
        Ok(owned) => Ok((server, owned)),
        Err(e) => {
            stop_all(vec![server], Late::Cancel);
            Err(e)
        }
    }
}

/// A failed bind, with its likely cause named: gRPC reports no errno (only
/// its address, a temporary name), so the directory and the open-file
/// limit are looked at here. The text is the same on every retry, so a
/// repeat is logged at debug only.
pub(crate) fn bind_error(path: &Path, _e: &grpcio::Error) -> SocketError {
    let dir = path.parent().unwrap_or(Path::new("."));
    let why = if let Some((open, limit)) = crate::limits::open_files().filter(|(o, l)| o + 8 >= *l)
    {
        format!(
            "{open} of the {limit} open files allowed are in use (raise LimitNOFILE / ulimit -n)"
        )
    } else if let Err(e) = writable(dir) {
        format!("the directory is not writable: {e}")
    } else {
        "gRPC could not bind a Unix socket there".to_string()
    };
    SocketError::Io {
        path: path.into(),
        action: "bind",
        source: io::Error::other(why),
    }
}

/// `access(dir, W_OK)`: whether this process may create files in `dir`.
fn writable(dir: &Path) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: a NUL-terminated path; access(2) only reads it.
    if unsafe { libc::access(c.as_ptr(), libc::W_OK) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// What happens to a server still busy when the grace period is over.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Late {
    /// Cancel its calls, so it can be freed (a re-serve or a retire).
    Cancel,
    /// Leave it to the process exit that follows (daemon shutdown): with
    /// thousands of servers, cancelling one by one takes longer than the
    /// exit, and the kubelet sees the same end of its connections.
    Abandon,
}

/// Stops servers whose streams were told to end: all are shut down at
/// once, given one shared grace period to finish, then `late` applies.
pub(crate) fn stop_all(servers: Vec<Server>, late: Late) {
    let deadline = Instant::now() + SHUTDOWN_GRACE;
    let pending: Vec<_> = servers
        .into_iter()
        .map(|mut server| {
            let f = server.shutdown();
            (server, f)
        })
        .collect();
    let mut abandoned = 0;
    for (mut server, f) in pending {
        if block_on_timeout(f, deadline.saturating_duration_since(Instant::now())).is_none() {
            match late {
                Late::Cancel => server.cancel_all_calls(),
                Late::Abandon => {
                    abandoned += 1;
                    std::mem::forget(server);
                }
            }
        }
    }
    if abandoned > 0 {
        log::debug!("{abandoned} server(s) still finishing calls are left to the exit");
    }
}

//! Entry point: parse arguments, set up logging, run, map errors to exit codes.

use std::io::Write;
use std::process::ExitCode;

use k8s_hostpath_device_plugin::cli::{self, Command};
use k8s_hostpath_device_plugin::{logging, run_command, Failure};

fn main() -> ExitCode {
    prefer_poll();
    let mut opts = match cli::parse(std::env::args().skip(1)) {
        Ok(o) => o,
        Err(e) => return report(&Failure::Usage(e)),
    };
    let env = |k: &str| std::env::var(k).ok();
    if let Err(e) = cli::resolve_generic(&mut opts, &env, &|p| p.exists()) {
        return report(&Failure::Usage(e));
    }
    logging::init(opts.log_format, opts.log_filter());
    let result = run_command(&opts);
    let code = match &result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => report(e),
    };
    if opts.command == Command::Run {
        exit_now(result.as_ref().map_or_else(Failure::exit_code, |()| 0));
    }
    code
}

/// gRPC's poller is `poll(2)` unless `GRPC_POLL_STRATEGY` says otherwise.
/// Its default, `epoll1`, holds an epoll instance for the completion queue
/// and another for its event engine: two descriptors more, for a daemon
/// whose gRPC waits on a listening socket and a connection per resource
/// (README, Performance; issue 26).
fn prefer_poll() {
    if std::env::var_os("GRPC_POLL_STRATEGY").is_none() {
        // Before any thread exists: nothing reads the environment meanwhile.
        std::env::set_var("GRPC_POLL_STRATEGY", "poll");
    }
}

/// The daemon's end (B9, issue 26): by now its sockets are gone and its
/// streams ended, and the log says so; all the kubelet can see is done.
/// What a normal exit would still do (gRPC's runtime torn down, its threads
/// joined, C++ static destructors, atexit handlers) only makes the node
/// wait: the kernel reclaims all of it. So the process ends here.
fn exit_now(code: i32) -> ! {
    log::logger().flush();
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    // SAFETY: _exit ends the process without running destructors or atexit
    // handlers; nothing left in this process holds state another process
    // needs (files written are written, sockets removed, streams ended).
    unsafe { libc::_exit(code) }
}

fn report(e: &Failure) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(1))
}

//! Entry point: parse arguments, set up logging, run, map errors to exit codes.

use std::process::ExitCode;

use k8s_hostpath_device_plugin::{cli, logging, run_command, Failure};

fn main() -> ExitCode {
    let mut opts = match cli::parse(std::env::args().skip(1)) {
        Ok(o) => o,
        Err(e) => return report(&Failure::Usage(e)),
    };
    let env = |k: &str| std::env::var(k).ok();
    if let Err(e) = cli::resolve_generic(&mut opts, &env, &|p| p.exists()) {
        return report(&Failure::Usage(e));
    }
    logging::init(opts.log_format, opts.log_filter());
    match run_command(&opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => report(&e),
    }
}

fn report(e: &Failure) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(1))
}

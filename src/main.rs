//! Entry point: parse arguments, set up logging, run, map errors to exit codes.

use std::process::ExitCode;

use k8s_hostpath_device_plugin::{cli, run_command, Failure};

fn main() -> ExitCode {
    let opts = match cli::parse(std::env::args().skip(1)) {
        Ok(o) => o,
        Err(e) => return report(&Failure::Usage(e)),
    };
    let default_level = if opts.debug { "debug" } else { "info" };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default_level))
        .format_timestamp_millis()
        .init();
    match run_command(&opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => report(&e),
    }
}

fn report(e: &Failure) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(1))
}

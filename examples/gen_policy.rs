//! `make policy`: print the admission policy for a config file.
//!
//! Usage: gen_policy CONFIG — the policy YAML goes to stdout.

use std::path::Path;
use std::process::ExitCode;

use k8s_hostpath_device_plugin::core::config;
use k8s_hostpath_device_plugin::policy;

fn main() -> ExitCode {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: gen_policy CONFIG");
        return ExitCode::from(2);
    };
    match config::load(
        Path::new(&path),
        Path::new("/var/lib/kubelet/device-plugins"),
    ) {
        Ok(loaded) => {
            print!("{}", policy::render(&loaded.config, &path));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(2)
        }
    }
}

//! `make policy`: print the admission policy for a config file; `make
//! dra-classes`: its DRA DeviceClasses.
//!
//! Usage: gen_policy CONFIG | gen_policy --device-classes CONFIG [DRIVER]
//! — the YAML goes to stdout.

use std::path::Path;
use std::process::ExitCode;

use k8s_hostpath_device_plugin::core::config;
use k8s_hostpath_device_plugin::dra::classes;
use k8s_hostpath_device_plugin::policy;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (classes, rest) = match args.first().map(String::as_str) {
        Some("--device-classes") => (true, &args[1..]),
        _ => (false, &args[..]),
    };
    let Some(path) = rest.first().cloned() else {
        eprintln!("usage: gen_policy CONFIG | gen_policy --device-classes CONFIG [DRIVER]");
        return ExitCode::from(2);
    };
    let driver = rest.get(1).map_or(
        k8s_hostpath_device_plugin::cli::DEFAULT_DRIVER,
        String::as_str,
    );
    match config::load(
        Path::new(&path),
        Path::new("/var/lib/kubelet/device-plugins"),
    ) {
        Ok(loaded) => {
            if classes {
                print!("{}", classes::render(&loaded.config, driver, &path));
            } else {
                print!("{}", policy::render(&loaded.config, &path));
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(2)
        }
    }
}

//! `probe` (B11): is every configured resource answering on its socket?

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use grpcio::{CallOption, EnvBuilder};

use crate::api::pluginregistration::InfoRequest;
use crate::api::pluginregistration_grpc::RegistrationClient;
use crate::api::v1beta1::Empty;
use crate::api::v1beta1_grpc::DevicePluginClient;
use crate::core::config::Config;
use crate::core::resource::Api;
use crate::util::unix_channel;

/// Per-call deadline of the probe.
pub const PROBE_DEADLINE: Duration = Duration::from_secs(1);

/// Calls GetDevicePluginOptions on each resource's socket in `socket_dir`
/// and, for resources served through DRA, GetInfo on the driver's
/// registration socket `dra_registration` (once). Returns the resources
/// that did not answer, each with the reason.
pub fn probe(config: &Config, socket_dir: &Path, dra_registration: &Path) -> Vec<(String, String)> {
    let env = Arc::new(EnvBuilder::new().cq_count(1).name_prefix("probe").build());
    let mut failed = Vec::new();
    let mut dra: Option<Result<(), String>> = None;
    for r in &config.resources {
        if r.api == Api::Dra {
            let answer = dra.get_or_insert_with(|| {
                let client = RegistrationClient::new(unix_channel(&env, dra_registration));
                let opt = CallOption::default().timeout(PROBE_DEADLINE);
                client
                    .get_info(&InfoRequest::new(), opt)
                    .map(|_| ())
                    .map_err(|e| format!("{}: {e}", dra_registration.display()))
            });
            if let Err(e) = answer {
                failed.push((r.resource_name.clone(), e.clone()));
            }
            continue;
        }
        let path = socket_dir.join(&r.socket_name);
        if !path.exists() {
            failed.push((
                r.resource_name.clone(),
                format!("{} does not exist", path.display()),
            ));
            continue;
        }
        let channel = unix_channel(&env, &path);
        let client = DevicePluginClient::new(channel);
        let opt = CallOption::default().timeout(PROBE_DEADLINE);
        if let Err(e) = client.get_device_plugin_options(&Empty::new(), opt) {
            failed.push((r.resource_name.clone(), format!("{}: {e}", path.display())));
        }
    }
    failed
}

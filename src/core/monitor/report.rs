//! A check's result into the resource's state, logged once per change.

use crate::core::health::Health;
use crate::core::state::{Change, ResourceState};
use crate::kubelet::{HEALTHY, UNHEALTHY};

/// Records one check's result; a change of health or of its reason is
/// logged once, and a change of health reaches every stream. The first
/// result of a resource is logged as it is.
pub fn publish(state: &ResourceState, h: &Health) {
    let r = state.resource();
    let reason = match h {
        Health::Healthy => String::new(),
        Health::Unhealthy(why) => why.to_string(),
    };
    let (res, path) = (r.resource_name.as_str(), r.host_path.as_str());
    match state.set_health(h.is_healthy(), &reason) {
        Some(Change::First) => match h {
            Health::Healthy => {
                log::info!(resource = res, event = "healthy", path = path; "{res}: {path} is {h}")
            }
            Health::Unhealthy(_) => {
                log::warn!(resource = res, event = "unhealthy", path = path; "{res}: {path} is {h}")
            }
        },
        Some(Change::From(was)) => {
            let old = if was { HEALTHY } else { UNHEALTHY };
            match h {
                Health::Healthy => log::info!(
                    resource = res, event = "healthy", path = path;
                    "{res}: {path} {old} -> {HEALTHY}"
                ),
                Health::Unhealthy(why) => log::warn!(
                    resource = res, event = "unhealthy", path = path;
                    "{res}: {path} {old} -> {UNHEALTHY}: {why}"
                ),
            }
        }
        None => {}
    }
}

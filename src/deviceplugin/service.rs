//! The gRPC services a resource serves through the device-plugin API:
//! `v1beta1.DevicePlugin` (B5, B7, B8) and, in plugin-watcher mode,
//! `pluginregistration.Registration` (B14).
//!
//! Handlers run on grpcio's completion-queue thread: they never block and
//! never panic. Each resource has one [`ResourceState`] (the core's); a
//! ListAndWatch stream waits on it and sends its list, rendered here.

use std::sync::Arc;

use futures::{SinkExt, StreamExt};
use grpcio::{RpcContext, RpcStatus, RpcStatusCode, ServerStreamingSink, UnarySink, WriteFlags};

use super::alloc::{
    allocate, allocate_found, build_list, check_held, found_list, options, preferred, show_id,
    Refusal,
};
use crate::api::pluginregistration::{
    InfoRequest, PluginInfo, RegistrationStatus, RegistrationStatusResponse,
};
use crate::api::pluginregistration_grpc::Registration;
use crate::api::v1beta1::{
    AllocateRequest, AllocateResponse, DevicePluginOptions, Empty, ListAndWatchResponse,
    PreStartContainerRequest, PreStartContainerResponse, PreferredAllocationRequest,
    PreferredAllocationResponse,
};
use crate::api::v1beta1_grpc::DevicePlugin;
use crate::core::state::{Listing, ResourceState, Step};
use crate::core::stats::AllocateResult;
use crate::kubelet::{API_VERSION, DEVICE_PLUGIN_TYPE};

/// The ListAndWatch answer for a listing.
pub fn render(listing: Listing<'_>) -> ListAndWatchResponse {
    match listing {
        Listing::Fixed { n, healthy } => build_list(n, healthy),
        Listing::Found(devices) => found_list(devices),
    }
}

/// The DevicePlugin service of one resource.
#[derive(Clone)]
pub struct DevicePluginService {
    pub state: Arc<ResourceState>,
}

fn reply<T: 'static + Send>(
    ctx: &RpcContext<'_>,
    sink: UnarySink<T>,
    result: Result<T, RpcStatus>,
    what: &'static str,
    resource: String,
) {
    let f = async move {
        let sent = match result {
            Ok(v) => sink.success(v).await,
            Err(status) => sink.fail(status).await,
        };
        if let Err(e) = sent {
            log::debug!("{resource}: {what}: reply not delivered: {e}");
        }
    };
    ctx.spawn(f);
}

impl DevicePlugin for DevicePluginService {
    fn get_device_plugin_options(
        &mut self,
        ctx: RpcContext,
        _req: Empty,
        sink: UnarySink<DevicePluginOptions>,
    ) {
        let name = self.state.resource().resource_name.clone();
        log::debug!("{name}: GetDevicePluginOptions from {}", ctx.peer());
        reply(
            &ctx,
            sink,
            Ok(options(self.state.handing_over())),
            "GetDevicePluginOptions",
            name,
        );
    }

    fn list_and_watch(
        &mut self,
        ctx: RpcContext,
        _req: Empty,
        mut sink: ServerStreamingSink<ListAndWatchResponse>,
    ) {
        let state = self.state.clone();
        let sub = state.subscribe();
        let (name, epoch, mut rx) = (sub.name, sub.epoch, sub.wakeups);
        log::debug!("{name}: ListAndWatch opened by {}", ctx.peer());
        let f = async move {
            let mut last_sent = 0;
            let mut clean = true;
            loop {
                match state.next_step(epoch, last_sent, render) {
                    Step::Send(list, version) => {
                        let n = list.devices.len();
                        if let Err(e) = sink.send((list, WriteFlags::default())).await {
                            log::debug!("{name}: ListAndWatch stream gone: {e}");
                            clean = false;
                            break;
                        }
                        log::debug!("{name}: ListAndWatch sent {n} devices (version {version})");
                        last_sent = version;
                        if n >= crate::util::TRIM_AFTER {
                            crate::util::trim_heap();
                        }
                    }
                    Step::Wait => {
                        if rx.next().await.is_none() {
                            break;
                        }
                    }
                    Step::End { empty_first } => {
                        if empty_first {
                            let _ = sink
                                .send((ListAndWatchResponse::new(), WriteFlags::default()))
                                .await;
                        }
                        break;
                    }
                }
            }
            if clean {
                if let Err(e) = sink.close().await {
                    log::debug!("{name}: ListAndWatch close: {e}");
                }
            }
            state.unsubscribe();
            log::debug!("{name}: ListAndWatch ended");
        };
        ctx.spawn(f);
    }

    fn get_preferred_allocation(
        &mut self,
        ctx: RpcContext,
        req: PreferredAllocationRequest,
        sink: UnarySink<PreferredAllocationResponse>,
    ) {
        let name = self.state.resource().resource_name.clone();
        log::debug!(
            "{name}: GetPreferredAllocation for {} container(s)",
            req.container_requests.len()
        );
        reply(
            &ctx,
            sink,
            Ok(preferred(&req, &self.state.held_ids())),
            "GetPreferredAllocation",
            name,
        );
    }

    fn allocate(
        &mut self,
        ctx: RpcContext,
        req: AllocateRequest,
        sink: UnarySink<AllocateResponse>,
    ) {
        let began = std::time::Instant::now();
        let resource = self.state.resource();
        let name = resource.resource_name.clone();
        let result = check_held(&name, &req, &self.state.held_ids()).and_then(|()| {
            if resource.is_dynamic() {
                self.state
                    .with_devices(|r, set| allocate_found(r, &req, set))
            } else {
                allocate(&resource, &req)
            }
        });
        let mut outcome = AllocateResult::Ok;
        let result = result.map_err(|refusal| {
            let code;
            (code, outcome) = match refusal {
                Refusal::UnknownIds { .. } | Refusal::Gone { .. } | Refusal::SamePath { .. } => {
                    (RpcStatusCode::INVALID_ARGUMENT, AllocateResult::Invalid)
                }
                Refusal::TooLarge { .. } => {
                    (RpcStatusCode::RESOURCE_EXHAUSTED, AllocateResult::TooLarge)
                }
                Refusal::HeldElsewhere { .. } => {
                    (RpcStatusCode::FAILED_PRECONDITION, AllocateResult::Held)
                }
            };
            let msg = refusal.to_string();
            self.state.log_refusal(&msg);
            RpcStatus::with_message(code, msg)
        });
        if result.is_ok() {
            log::debug!("{name}: Allocate {}", describe_ids(&req));
        }
        self.state
            .stats
            .allocated(outcome, req.container_requests.len(), began.elapsed());
        reply(&ctx, sink, result, "Allocate", name);
    }

    fn pre_start_container(
        &mut self,
        ctx: RpcContext,
        req: PreStartContainerRequest,
        sink: UnarySink<PreStartContainerResponse>,
    ) {
        let name = self.state.resource().resource_name.clone();
        log::debug!(
            "{name}: PreStartContainer for {} device(s)",
            req.devices_ids.len()
        );
        reply(
            &ctx,
            sink,
            Ok(PreStartContainerResponse::new()),
            "PreStartContainer",
            name,
        );
    }
}

/// The device IDs of each container request, for the log: at most a few
/// per container, each cut short (they come from the client).
fn describe_ids(req: &AllocateRequest) -> String {
    const SHOWN: usize = 8;
    let per_container: Vec<String> = req
        .container_requests
        .iter()
        .take(SHOWN)
        .map(|c| {
            let mut ids: Vec<String> = c
                .devices_ids
                .iter()
                .take(SHOWN)
                .map(|s| show_id(s))
                .collect();
            if c.devices_ids.len() > SHOWN {
                ids.push(format!("… {} in all", c.devices_ids.len()));
            }
            format!("[{}]", ids.join(", "))
        })
        .collect();
    let mut out = per_container.join(" ");
    if req.container_requests.len() > SHOWN {
        out.push_str(&format!(" … {} containers", req.container_requests.len()));
    }
    out
}

/// The plugin-watcher registration service of one resource (B14).
#[derive(Clone)]
pub struct RegistrationService {
    pub state: Arc<ResourceState>,
}

impl Registration for RegistrationService {
    fn get_info(&mut self, ctx: RpcContext, _req: InfoRequest, sink: UnarySink<PluginInfo>) {
        let name = self.state.resource().resource_name.clone();
        log::debug!("{name}: GetInfo");
        let mut info = PluginInfo::new();
        info.type_ = DEVICE_PLUGIN_TYPE.to_string();
        info.name = name.clone();
        info.supported_versions = vec![API_VERSION.to_string()];
        reply(&ctx, sink, Ok(info), "GetInfo", name);
    }

    fn notify_registration_status(
        &mut self,
        ctx: RpcContext,
        req: RegistrationStatus,
        sink: UnarySink<RegistrationStatusResponse>,
    ) {
        let name = self.state.resource().resource_name.clone();
        if req.plugin_registered {
            log::info!("{name}: registered (plugin watcher)");
        } else {
            log::warn!(
                "{name}: the kubelet refused the registration: {}",
                req.error
            );
        }
        reply(
            &ctx,
            sink,
            Ok(RegistrationStatusResponse::new()),
            "NotifyRegistrationStatus",
            name,
        );
    }
}

//! The simulated kubelet's calls into a registered plugin: Allocate and
//! GetPreferredAllocation, as the kubelet's device manager makes them.

use std::time::Duration;

use grpcio::{CallOption, RpcStatus, RpcStatusCode};

use super::SimKubelet;
use crate::api::v1beta1::{
    AllocateRequest, AllocateResponse, ContainerAllocateRequest,
    ContainerPreferredAllocationRequest, PreferredAllocationRequest,
};
use crate::api::v1beta1_grpc::DevicePluginClient;
use crate::util::lock;

/// Each call's deadline.
fn call() -> CallOption {
    CallOption::default().timeout(Duration::from_secs(5))
}

impl SimKubelet {
    /// The client of `resource`'s current connection.
    fn client(&self, resource: &str) -> grpcio::Result<DevicePluginClient> {
        let conn = lock(&self.shared.current).get(resource).cloned();
        conn.map(|c| c.client).ok_or_else(|| {
            grpcio::Error::RpcFailure(RpcStatus::with_message(
                RpcStatusCode::NOT_FOUND,
                format!("{resource} is not registered"),
            ))
        })
    }

    /// Calls Allocate on the current connection of `resource`, one container
    /// request per element of `containers`.
    ///
    /// # Errors
    ///
    /// The gRPC error, or `NOT_FOUND` when the resource is not registered.
    pub fn allocate(
        &self,
        resource: &str,
        containers: &[&[&str]],
    ) -> grpcio::Result<AllocateResponse> {
        let client = self.client(resource)?;
        let mut req = AllocateRequest::new();
        for ids in containers {
            let mut c = ContainerAllocateRequest::new();
            c.devices_ids = ids.iter().map(|s| s.to_string()).collect();
            req.container_requests.push(c);
        }
        client.allocate(&req, call())
    }

    /// Calls GetPreferredAllocation on the current connection of
    /// `resource`: one container choosing `size` of `available`.
    ///
    /// # Errors
    ///
    /// The gRPC error, or `NOT_FOUND` when the resource is not registered.
    pub fn preferred(
        &self,
        resource: &str,
        available: &[&str],
        size: i32,
    ) -> grpcio::Result<Vec<String>> {
        let client = self.client(resource)?;
        let mut req = PreferredAllocationRequest::new();
        let mut c = ContainerPreferredAllocationRequest::new();
        c.available_deviceIDs = available.iter().map(|s| s.to_string()).collect();
        c.allocation_size = size;
        req.container_requests.push(c);
        let resp = client.get_preferred_allocation(&req, call())?;
        Ok(resp
            .container_responses
            .first()
            .map(|c| c.deviceIDs.clone())
            .unwrap_or_default())
    }
}

//! The simulated kubelet's calls into a registered plugin: Allocate and
//! GetPreferredAllocation, as the kubelet's device manager makes them.

use std::time::Duration;

use grpcio::{CallOption, RpcStatus, RpcStatusCode};

use super::SimKubelet;
use crate::api::v1beta1::{
    AllocateRequest, AllocateResponse, ContainerAllocateRequest,
    ContainerPreferredAllocationRequest, PreferredAllocationRequest,
};
use crate::util::lock;

impl SimKubelet {
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
        let conn = lock(&self.shared.current).get(resource).cloned();
        let Some(conn) = conn else {
            return Err(grpcio::Error::RpcFailure(RpcStatus::with_message(
                RpcStatusCode::NOT_FOUND,
                format!("{resource} is not registered"),
            )));
        };
        let mut req = AllocateRequest::new();
        for ids in containers {
            let mut c = ContainerAllocateRequest::new();
            c.devices_ids = ids.iter().map(|s| s.to_string()).collect();
            req.container_requests.push(c);
        }
        conn.client
            .allocate(&req, CallOption::default().timeout(Duration::from_secs(5)))
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
        let conn = lock(&self.shared.current).get(resource).cloned();
        let Some(conn) = conn else {
            return Err(grpcio::Error::RpcFailure(RpcStatus::with_message(
                RpcStatusCode::NOT_FOUND,
                format!("{resource} is not registered"),
            )));
        };
        let mut req = PreferredAllocationRequest::new();
        let mut c = ContainerPreferredAllocationRequest::new();
        c.available_deviceIDs = available.iter().map(|s| s.to_string()).collect();
        c.allocation_size = size;
        req.container_requests.push(c);
        let resp = conn.client.get_preferred_allocation(
            &req,
            CallOption::default().timeout(Duration::from_secs(5)),
        )?;
        Ok(resp
            .container_responses
            .first()
            .map(|c| c.deviceIDs.clone())
            .unwrap_or_default())
    }
}

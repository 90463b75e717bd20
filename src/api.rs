//! Generated protobuf messages and grpcio stubs for the kubelet APIs.
//!
//! `build.rs` writes the code to `OUT_DIR`; this is the one place that
//! includes it and holds the lint allowances generated code needs.
//! Modules, one per file of `proto/`: `v1beta1` (device plugin and
//! classic registration), `pluginregistration` (plugin watcher),
//! `dra_v1` and `dra_v1beta1` (the DRA kubelet plugin), `health_v1alpha1`
//! and `health_v1` (DRA device health); each with a `_grpc` module of
//! stubs under the `daemon` feature.

#![allow(clippy::all, clippy::pedantic, missing_docs, unused_qualifications)]

include!(concat!(env!("OUT_DIR"), "/api_mod.rs"));

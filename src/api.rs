//! Generated protobuf messages and grpcio stubs for the kubelet APIs.
//!
//! `build.rs` writes the code to `OUT_DIR`; this is the one place that
//! includes it and holds the lint allowances generated code needs.
//! Modules: `v1beta1` / `v1beta1_grpc` (device plugin and classic
//! registration), `pluginregistration` / `pluginregistration_grpc`
//! (plugin-watcher registration).

#![allow(clippy::all, clippy::pedantic, missing_docs, unused_qualifications)]

include!(concat!(env!("OUT_DIR"), "/api_mod.rs"));

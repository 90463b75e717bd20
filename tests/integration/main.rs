//! Integration tests: the real daemon binary, over real Unix sockets,
//! against the simulated kubelet from the library.

mod cli;
mod corpus;
mod devices;
mod devices_trust;
mod dra;
mod dra_publish;
mod generic_cli;
mod handover;
mod harness;
mod health;
mod hostile;
mod inprocess;
mod kube;
mod kubelet;
mod layout;
mod lifecycle;
mod metrics;
mod node_events;
mod observe_hostile;
mod reload;
mod safety;
mod serve;
mod static_binary;
mod usb_nodes;
mod watcher;

//! Fuzz target: see `k8s_hostpath_device_plugin::fuzzing::config`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    k8s_hostpath_device_plugin::fuzzing::config(data);
});

//! Fuzz target: see `k8s_hostpath_device_plugin::fuzzing::glob`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    k8s_hostpath_device_plugin::fuzzing::glob(data);
});

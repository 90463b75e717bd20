//! Replays the fuzz corpus (`fuzz/corpus/<target>/`) through the same
//! invariant checks the fuzz targets run, so found crashes stay fixed.

use std::fs;
use std::path::Path;

fn replay(target: &str, check: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut n = 0;
    for entry in fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let data = fs::read(&path).unwrap();
        let outcome = std::panic::catch_unwind(|| check(&data));
        assert!(
            outcome.is_ok(),
            "{target}: {} breaks an invariant",
            path.display()
        );
        n += 1;
    }
    assert!(n > 0, "{}: empty corpus", dir.display());
}

#[test]
fn config_corpus() {
    replay("config", k8s_hostpath_device_plugin::fuzzing::config);
}

#[test]
fn allocate_corpus() {
    replay("allocate", k8s_hostpath_device_plugin::fuzzing::allocate);
}

#[test]
fn preferred_corpus() {
    replay("preferred", k8s_hostpath_device_plugin::fuzzing::preferred);
}

#[test]
fn glob_corpus() {
    replay("glob", k8s_hostpath_device_plugin::fuzzing::glob);
}

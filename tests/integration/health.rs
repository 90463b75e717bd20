//! Host-path health (B6, issue 4): kinds, flips, deep parents, mount points,
//! --host-root with symlinks, scale.

use std::fs;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use k8s_hostpath_device_plugin::sim::SimKubelet;

use crate::harness::{wait_counts, wait_until, Daemon, TestDir, WAIT};

/// A resource entry with a long interval: any flip seen quickly came from inotify.
fn entry(name: &str, path: &Path, ty: &str, extra: &str) -> String {
    format!(
        "  - resourceName: example.com/{name}\n    numDevices: 2\n    hostPath: {{path: {}, type: \"{ty}\"}}\n    healthCheckInterval: 1h\n{extra}",
        path.display()
    )
}

fn block_device() -> Option<PathBuf> {
    use std::os::unix::fs::FileTypeExt;
    fs::read_dir("/dev")
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| fs::metadata(p).is_ok_and(|m| m.file_type().is_block_device()))
}

#[test]
fn every_kind_healthy_and_wrong_kind() {
    let dir = TestDir::new();
    let d_ok = dir.host("dir");
    let f_ok = dir.host("file");
    let s_ok = dir.host("sock");
    fs::create_dir_all(&d_ok).unwrap();
    fs::write(&f_ok, b"").unwrap();
    let _listener = UnixListener::bind(&s_ok).unwrap();
    let null = PathBuf::from("/dev/null");
    let mut entries = vec![
        entry("dir-ok", &d_ok, "Directory", ""),
        entry("dir-bad", &f_ok, "Directory", ""),
        entry("file-ok", &f_ok, "File", ""),
        entry("file-bad", &d_ok, "File", ""),
        entry("sock-ok", &s_ok, "Socket", ""),
        entry("sock-bad", &f_ok, "Socket", ""),
        entry("char-ok", &null, "CharDevice", ""),
        entry("char-bad", &d_ok, "CharDevice", ""),
        entry("block-bad", &null, "BlockDevice", ""),
        entry("any-dir", &d_ok, "", ""),
        entry("any-char", &null, "", ""),
        entry("dor-ok", &d_ok, "DirectoryOrCreate", ""),
        entry("dor-bad", &f_ok, "DirectoryOrCreate", ""),
        entry("for-ok", &f_ok, "FileOrCreate", ""),
        entry("for-bad", &d_ok, "FileOrCreate", ""),
    ];
    let block = block_device();
    match &block {
        Some(b) => entries.push(entry("block-ok", b, "BlockDevice", "")),
        None => println!("no block device in /dev: skipping the healthy BlockDevice case"),
    }
    let k = SimKubelet::start(&dir.dp()).unwrap();
    let d = Daemon::start(&dir, &format!("resources:\n{}", entries.concat()), &[]);
    for ok in [
        "dir-ok", "file-ok", "sock-ok", "char-ok", "any-dir", "any-char", "dor-ok", "for-ok",
    ] {
        wait_counts(&k, &d, &format!("example.com/{ok}"), (2, 2));
    }
    if block.is_some() {
        wait_counts(&k, &d, "example.com/block-ok", (2, 2));
    }
    for bad in [
        "dir-bad",
        "file-bad",
        "sock-bad",
        "char-bad",
        "block-bad",
        "dor-bad",
        "for-bad",
    ] {
        wait_counts(&k, &d, &format!("example.com/{bad}"), (0, 2));
    }
    let log = d.log();
    for reason in [
        "example.com/dir-bad: ",
        "is a regular file, expected Directory",
        "is a directory, expected File",
        "is a regular file, expected Socket",
        "is a directory, expected CharDevice",
        "is a character device, expected BlockDevice",
        "is a regular file, expected DirectoryOrCreate",
        "is a directory, expected FileOrCreate",
    ] {
        assert!(log.contains(reason), "log lacks {reason:?}:\n{log}");
    }
}

#[test]
fn flips_by_delete_recreate_rename_and_replace() {
    let dir = TestDir::new();
    let d_path = dir.host("d");
    let f_path = dir.host("f");
    fs::create_dir_all(&d_path).unwrap();
    fs::write(&f_path, b"x").unwrap();
    let k = SimKubelet::start(&dir.dp()).unwrap();
    let config = format!(
        "resources:\n{}{}",
        entry("d", &d_path, "Directory", ""),
        entry("f", &f_path, "File", "")
    );
    let d = Daemon::start(&dir, &config, &[]);
    let (dn, fnm) = ("example.com/d", "example.com/f");
    wait_counts(&k, &d, dn, (2, 2));
    wait_counts(&k, &d, fnm, (2, 2));
    let mut flips = Vec::new();

    fs::remove_dir(&d_path).unwrap();
    flips.push(wait_counts(&k, &d, dn, (0, 2)));
    fs::create_dir(&d_path).unwrap();
    flips.push(wait_counts(&k, &d, dn, (2, 2)));
    // A directory renamed into place.
    fs::remove_dir(&d_path).unwrap();
    flips.push(wait_counts(&k, &d, dn, (0, 2)));
    let staged = dir.host("staged");
    fs::create_dir(&staged).unwrap();
    fs::rename(&staged, &d_path).unwrap();
    flips.push(wait_counts(&k, &d, dn, (2, 2)));
    // Directory replaced by a file.
    fs::remove_dir(&d_path).unwrap();
    fs::write(&d_path, b"").unwrap();
    flips.push(wait_counts(&k, &d, dn, (0, 2)));

    // A FIFO renamed over the file: wrong kind.
    let fifo = dir.host("fifo");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    fs::rename(&fifo, &f_path).unwrap();
    flips.push(wait_counts(&k, &d, fnm, (0, 2)));
    // A regular file renamed over it again: healthy.
    let tmp = dir.host("tmp");
    fs::write(&tmp, b"y").unwrap();
    fs::rename(&tmp, &f_path).unwrap();
    flips.push(wait_counts(&k, &d, fnm, (2, 2)));
    d.wait_log("is a FIFO, expected File");
    let max = flips.iter().max().unwrap();
    assert!(*max < Duration::from_secs(2), "flips took {flips:?}");
    println!("health flips seen by the kubelet after: {flips:?}");
}

#[test]
fn path_whose_parents_do_not_exist_yet() {
    let dir = TestDir::new();
    let deep = dir.host("a/b/c");
    let k = SimKubelet::start(&dir.dp()).unwrap();
    let d = Daemon::start(
        &dir,
        &format!("resources:\n{}", entry("deep", &deep, "Directory", "")),
        &[],
    );
    wait_counts(&k, &d, "example.com/deep", (0, 2));
    fs::create_dir_all(&deep).unwrap();
    let took = wait_counts(&k, &d, "example.com/deep", (2, 2));
    assert!(took < Duration::from_secs(2), "{took:?}");
    // Removing an ancestor takes it away again.
    fs::remove_dir_all(dir.host("a")).unwrap();
    wait_counts(&k, &d, "example.com/deep", (0, 2));
    println!("mkdir -p of a path with missing parents -> Healthy after {took:?}");
}

#[test]
fn or_create_paths_are_created_again() {
    let dir = TestDir::new();
    let dp = dir.host("made/here");
    let fp = dir.host("made-file");
    let k = SimKubelet::start(&dir.dp()).unwrap();
    let config = format!(
        "resources:\n{}{}",
        entry("dor", &dp, "DirectoryOrCreate", ""),
        entry("for", &fp, "FileOrCreate", "")
    );
    let d = Daemon::start(&dir, &config, &[]);
    wait_counts(&k, &d, "example.com/dor", (2, 2));
    wait_counts(&k, &d, "example.com/for", (2, 2));
    for _ in 0..3 {
        fs::remove_dir(&dp).unwrap();
        fs::remove_file(&fp).unwrap();
        assert!(
            crate::harness::wait_until(WAIT, || dp.is_dir() && fp.is_file()),
            "{}",
            d.log()
        );
    }
    assert_eq!(k.recorded().counts("example.com/dor"), Some((2, 2)));
}

/// Unmounts on drop, so a failing test leaves no mount behind.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn mount_tmpfs(at: &Path) -> Result<Mounted, String> {
    let out = Command::new("mount")
        .args(["-t", "tmpfs", "none"])
        .arg(at)
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(Mounted(at.to_path_buf()))
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

#[test]
fn require_mount_point() {
    let dir = TestDir::new();
    let mnt = dir.host("mnt");
    fs::create_dir_all(&mnt).unwrap();
    // Probe first: mounting needs root (CAP_SYS_ADMIN).
    match mount_tmpfs(&mnt) {
        Ok(m) => drop(m),
        Err(e) => {
            println!("SKIPPED require_mount_point: cannot mount tmpfs here ({e})");
            return;
        }
    }
    let k = SimKubelet::start(&dir.dp()).unwrap();
    let d = Daemon::start(
        &dir,
        &format!(
            "resources:\n{}",
            entry("disk", &mnt, "Directory", "    requireMountPoint: true\n")
        ),
        &[],
    );
    // The empty directory of an unmounted disk is not healthy.
    wait_counts(&k, &d, "example.com/disk", (0, 2));
    d.wait_log("not a mount point");
    let m = mount_tmpfs(&mnt).unwrap();
    let up = wait_counts(&k, &d, "example.com/disk", (2, 2));
    drop(m);
    let down = wait_counts(&k, &d, "example.com/disk", (0, 2));
    // With a 1 h interval, only the mount-table poll can have seen these.
    assert!(d.log().contains("mount table changed"), "{}", d.log());
    assert!(
        up < Duration::from_secs(2) && down < Duration::from_secs(2),
        "{up:?} {down:?}"
    );
    println!("mount seen after {up:?}, unmount after {down:?}");
}

#[test]
fn host_root_resolves_symlinks_inside_it() {
    let dir = TestDir::new();
    let root = dir.path.join("host");
    fs::create_dir_all(root.join("data/real")).unwrap();
    // An absolute symlink inside the host tree: on the host it points to
    // /data/real; seen from here it must resolve under the host root.
    std::os::unix::fs::symlink("/data/real", root.join("link")).unwrap();
    let k = SimKubelet::start(&dir.dp()).unwrap();
    let config = "resources:\n  - resourceName: example.com/link\n    numDevices: 2\n    hostPath: {path: /link, type: Directory}\n    healthCheckInterval: 1h\n";
    let d = Daemon::start(&dir, config, &["--host-root", root.to_str().unwrap()]);
    wait_counts(&k, &d, "example.com/link", (2, 2));
    let c = &k
        .allocate("example.com/link", &[&["0"]])
        .unwrap()
        .container_responses[0];
    assert_eq!(
        c.mounts[0].host_path, "/link",
        "paths sent to the kubelet never include the host root"
    );
    // Removing the target behind the link is seen.
    fs::remove_dir(root.join("data/real")).unwrap();
    wait_counts(&k, &d, "example.com/link", (0, 2));
    fs::create_dir(root.join("data/real")).unwrap();
    wait_counts(&k, &d, "example.com/link", (2, 2));
}

#[test]
fn sensitive_paths_are_refused_at_start() {
    let dir = TestDir::new();
    for (path, rule) in [
        ("/", "a system directory"),
        (
            "/var/lib/kubelet/pods",
            "the state or socket of the kubelet",
        ),
        (
            "/run/containerd/containerd.sock",
            "the state or socket of the kubelet, etcd, a container runtime",
        ),
        ("/proc/1/root", "a kernel interface"),
        ("/etc/shadow", "credentials"),
    ] {
        let mut d = Daemon::start(
            &dir,
            &format!("resourceName: example.com/x\nhostPath: {{path: {path}}}\n"),
            &[],
        );
        assert_eq!(d.wait_exit(WAIT).code(), Some(2));
        let log = d.log();
        assert!(
            log.contains(rule) && log.contains("allowSensitivePath"),
            "{path}: {log}"
        );
    }
    assert!(dir.sockets().is_empty());
}

#[test]
fn hundred_thousand_devices() {
    use k8s_hostpath_device_plugin::api::v1beta1::{Device, ListAndWatchResponse};
    use protobuf::Message;
    let dir = TestDir::new();
    fs::create_dir_all(dir.host("big")).unwrap();
    let k = SimKubelet::start(&dir.dp()).unwrap();
    let t = Instant::now();
    let d = Daemon::start(
        &dir,
        &format!(
            "resources:\n{}",
            entry("big", &dir.host("big"), "Directory", "")
                .replace("numDevices: 2", "numDevices: 100000")
        ),
        &[],
    );
    wait_counts(&k, &d, "example.com/big", (100_000, 100_000));
    let first = t.elapsed();
    let rec = k.recorded();
    let mut msg = ListAndWatchResponse::new();
    for (id, h) in &rec.devices["example.com/big"] {
        let mut dev = Device::new();
        dev.ID = id.clone();
        dev.health = h.clone();
        msg.devices.push(dev);
    }
    let size = msg.compute_size();
    assert!(size < 4 * 1024 * 1024, "{size} bytes");
    assert_eq!(rec.devices["example.com/big"][99_999].0, "99999");
    fs::remove_dir(dir.host("big")).unwrap();
    wait_counts(&k, &d, "example.com/big", (0, 100_000));
    println!("100000 devices: list of {size} bytes, at the kubelet {first:?} after the daemon was started");
}

#[test]
fn fifty_resources_in_one_daemon() {
    let dir = TestDir::new();
    fs::create_dir_all(dir.host("p")).unwrap();
    let entries: String = (0..50)
        .map(|i| entry(&format!("r{i}"), &dir.host("p"), "Directory", ""))
        .collect();
    let k = SimKubelet::start(&dir.dp()).unwrap();
    let d = Daemon::start(&dir, &format!("resources:\n{entries}"), &[]);
    for i in 0..50 {
        wait_counts(&k, &d, &format!("example.com/r{i}"), (2, 2));
    }
    assert_eq!(dir.sockets().len(), 51);
    fs::remove_dir(dir.host("p")).unwrap();
    for i in 0..50 {
        wait_counts(&k, &d, &format!("example.com/r{i}"), (0, 2));
    }
    assert!(k.allocate("example.com/r49", &[&["1"]]).is_ok());
}

/// The names of the daemon's threads now.
fn thread_names(pid: u32) -> Vec<String> {
    fs::read_dir(format!("/proc/{pid}/task"))
        .map(|tasks| {
            tasks
                .filter_map(|t| fs::read_to_string(t.ok()?.path().join("comm")).ok())
                .map(|n| n.trim().to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn an_idle_health_worker_ends_and_the_next_change_is_still_checked() {
    let dir = TestDir::new();
    let path = dir.host("d");
    fs::create_dir_all(&path).unwrap();
    let k = SimKubelet::start(&dir.dp()).unwrap();
    let config = format!("resources:\n{}", entry("d", &path, "Directory", ""));
    let d = Daemon::start(&dir, &config, &[]);
    let name = "example.com/d";
    wait_counts(&k, &d, name, (2, 2));
    let pid = d.child.id();
    let workers = || {
        thread_names(pid)
            .iter()
            .filter(|n| *n == "health-check")
            .count()
    };
    // The first check ran on a worker; with nothing due for 10 s it ends
    // after its linger (1 s).
    assert!(
        wait_until(Duration::from_secs(10), || workers() == 0),
        "a health-check worker is still there: {:?}",
        thread_names(pid)
    );
    fs::remove_dir(&path).unwrap();
    wait_counts(&k, &d, name, (0, 2));
    fs::create_dir(&path).unwrap();
    wait_counts(&k, &d, name, (2, 2));
}

/// How many of the daemon's descriptors are its mount table.
fn mount_tables_held(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |fds| {
        fds.filter_map(|f| fs::read_link(f.ok()?.path()).ok())
            .filter(|t| t.ends_with("mountinfo"))
            .count()
    })
}

#[test]
fn the_mount_table_is_followed_only_while_a_resource_asks_for_a_mount_point() {
    let dir = TestDir::new();
    let data = dir.host("data");
    let mnt = dir.host("mnt");
    fs::create_dir_all(&data).unwrap();
    fs::create_dir_all(&mnt).unwrap();
    match mount_tmpfs(&mnt) {
        Ok(m) => drop(m),
        Err(e) => {
            println!("SKIPPED: cannot mount tmpfs here ({e})");
            return;
        }
    }
    let k = SimKubelet::start(&dir.dp()).unwrap();
    let plain = format!("resources:\n{}", entry("data", &data, "Directory", ""));
    let d = Daemon::start(&dir, &plain, &[]);
    wait_counts(&k, &d, "example.com/data", (2, 2));
    let pid = d.child.id();
    assert_eq!(
        mount_tables_held(pid),
        0,
        "no resource asks for a mount point"
    );

    dir.replace_config(&format!(
        "{plain}{}",
        entry("disk", &mnt, "Directory", "    requireMountPoint: true\n")
    ));
    wait_counts(&k, &d, "example.com/disk", (0, 2));
    assert!(
        wait_until(WAIT, || mount_tables_held(pid) == 1),
        "the mount table is not followed"
    );
    // A 1 h interval: only the mount table can tell.
    let m = mount_tmpfs(&mnt).unwrap();
    wait_counts(&k, &d, "example.com/disk", (2, 2));
    drop(m);
    wait_counts(&k, &d, "example.com/disk", (0, 2));

    dir.replace_config(&plain);
    assert!(
        wait_until(WAIT, || mount_tables_held(pid) == 0),
        "the mount table is still held"
    );
}

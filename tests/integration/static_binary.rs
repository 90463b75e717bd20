//! The shipped binary is fully static and runs in an empty root (issue 5).

use std::fs;
use std::process::{Command, Stdio};
use std::time::Duration;

use k8s_hostpath_device_plugin::sim::SimKubelet;

use crate::harness::{bin, TestDir, WAIT};

/// Whether an ELF file asks for a program interpreter (a dynamic loader).
fn has_interpreter(elf: &[u8]) -> bool {
    assert_eq!(&elf[..4], b"\x7fELF", "not an ELF file");
    assert_eq!(elf[4], 2, "64-bit ELF expected");
    let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]) as usize;
    let u64_at = |o: usize| u64::from_le_bytes(elf[o..o + 8].try_into().unwrap()) as usize;
    let (phoff, phentsize, phnum) = (u64_at(0x20), u16_at(0x36), u16_at(0x38));
    (0..phnum).any(|i| {
        let o = phoff + i * phentsize;
        u32::from_le_bytes(elf[o..o + 4].try_into().unwrap()) == 3 // PT_INTERP
    })
}

#[test]
fn binary_is_static() {
    // Control: the check does recognise a dynamically linked program.
    if let Ok(sh) = fs::read("/bin/sh") {
        assert!(has_interpreter(&sh), "/bin/sh should need a loader");
    }
    let elf = fs::read(bin()).unwrap();
    assert!(!has_interpreter(&elf), "{} needs a dynamic loader", bin());
    match Command::new("ldd").arg(bin()).output() {
        Ok(o) => {
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
            assert!(
                text.contains("statically linked") || text.contains("not a dynamic executable"),
                "ldd: {text}"
            );
        }
        Err(e) => println!("ldd not available ({e}); the ELF check above stands"),
    }
}

#[test]
fn runs_in_an_empty_chroot() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("SKIPPED runs_in_an_empty_chroot: chroot needs root");
        return;
    }
    let dir = TestDir::new();
    let root = dir.path.join("root");
    for d in ["dp", "data"] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    fs::copy(bin(), root.join("plugin")).unwrap();
    fs::write(
        root.join("config.yaml"),
        "resourceName: example.com/data\nnumDevices: 3\nhostPath: {path: /data, type: Directory}\n",
    )
    .unwrap();
    let k = SimKubelet::start(&root.join("dp")).unwrap();
    let mut child = Command::new("chroot")
        .arg(&root)
        .args([
            "/plugin",
            "--config",
            "/config.yaml",
            "--device-plugin-dir",
            "/dp",
        ])
        .stdout(Stdio::null())
        .stderr(fs::File::create(dir.path.join("chroot.log")).unwrap())
        .spawn()
        .unwrap();
    let log = || fs::read_to_string(dir.path.join("chroot.log")).unwrap_or_default();
    let listed = k.wait_for(WAIT, |r| {
        r.counts("example.com/data").filter(|c| *c == (3, 3))
    });
    if listed.is_none() {
        let _ = child.kill();
        panic!("no healthy list from the chrooted daemon:\n{}", log());
    }
    assert!(k.allocate("example.com/data", &[&["2"]]).is_ok());
    let probe = Command::new("chroot")
        .arg(&root)
        .args([
            "/plugin",
            "probe",
            "--config",
            "/config.yaml",
            "--device-plugin-dir",
            "/dp",
        ])
        .output()
        .unwrap();
    assert_eq!(
        probe.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&probe.stderr)
    );
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(std::time::Instant::now() < deadline, "no exit:\n{}", log());
        std::thread::sleep(Duration::from_millis(5));
    };
    assert_eq!(status.code(), Some(0), "{}", log());
    let left: Vec<_> = fs::read_dir(root.join("dp"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(left, ["kubelet.sock"]);
}

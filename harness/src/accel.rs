//! Choosing the accelerator. `/dev/kvm` existing proves nothing: on this project's machines it
//! is a paravirtual nested KVM on which a stock kernel hangs right after boot starts
//! (docs/facts.md §1). So KVM is used only when a bounded test boot of a real kernel reaches our
//! agent; the result is cached per host kernel so the probe's cost is paid once.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::console::ConsoleWatch;
use crate::vm::{Accel, VmConfig};

/// How long the probe boot may take. A working KVM boots our initramfs in 1-3 s.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccelChoice {
    pub accel: Accel,
    pub reason: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct ProbeCache {
    host_release: String,
    kvm_boots: bool,
    detail: String,
}

fn host_release() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn kvm_usable() -> Result<(), String> {
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        Ok(_) => Ok(()),
        Err(e) => Err(format!("/dev/kvm cannot be opened ({e})")),
    }
}

fn cache_file(cache: &Path) -> PathBuf {
    cache.join("accel-probe.json")
}

/// Reads the cached probe verdict for this host kernel, if any.
pub fn cached_probe(cache: &Path) -> Option<(bool, String)> {
    let c: ProbeCache =
        serde_json::from_str(&std::fs::read_to_string(cache_file(cache)).ok()?).ok()?;
    (c.host_release == host_release()).then_some((c.kvm_boots, c.detail))
}

/// Picks the accelerator: the user's choice, else KVM only if a probe boot works.
pub async fn choose(
    requested: Option<Accel>,
    qemu: &Path,
    kernel: &Path,
    initrd: &Path,
    cache: &Path,
    scratch: &Path,
) -> AccelChoice {
    if let Some(a) = requested {
        return AccelChoice {
            accel: a,
            reason: "chosen with --accel".into(),
        };
    }
    if let Err(why) = kvm_usable() {
        return AccelChoice {
            accel: Accel::Tcg,
            reason: why,
        };
    }
    let (ok, detail) = match cached_probe(cache) {
        Some(v) => v,
        None => {
            let (ok, detail) = probe_kvm(qemu, kernel, initrd, scratch).await;
            let _ = std::fs::write(
                cache_file(cache),
                serde_json::to_string_pretty(&ProbeCache {
                    host_release: host_release(),
                    kvm_boots: ok,
                    detail: detail.clone(),
                })
                .unwrap_or_default(),
            );
            (ok, detail)
        }
    };
    if ok {
        AccelChoice {
            accel: Accel::Kvm,
            reason: format!("a KVM test boot worked ({detail})"),
        }
    } else {
        AccelChoice {
            accel: Accel::Tcg,
            reason: format!("/dev/kvm exists but a KVM test boot failed ({detail}); using TCG. Delete {} to probe again", cache_file(cache).display()),
        }
    }
}

/// Boots the kernel under KVM with `e4race.probe`; true if the agent says so in time.
pub async fn probe_kvm(
    qemu: &Path,
    kernel: &Path,
    initrd: &Path,
    scratch: &Path,
) -> (bool, String) {
    let _ = std::fs::create_dir_all(scratch);
    let sock = scratch.join("probe-ctl.sock");
    let _ = std::fs::remove_file(&sock);
    // QEMU connects to the control socket at start-up, so something must listen there.
    let _listener = match tokio::net::UnixListener::bind(&sock) {
        Ok(l) => l,
        Err(e) => return (false, format!("cannot listen on {}: {e}", sock.display())),
    };
    let cfg = VmConfig {
        qemu: qemu.to_path_buf(),
        accel: Accel::Kvm,
        cpus: 1,
        memory_mib: 256,
        kernel: kernel.to_path_buf(),
        initrd: initrd.to_path_buf(),
        extra_append: vec!["e4race.probe".into()],
        disk: None,
        control_socket: sock.clone(),
        bios: crate::vm::default_bios(),
    };
    let t0 = std::time::Instant::now();
    let child = tokio::process::Command::new(qemu)
        .args(cfg.to_args())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(
            match std::fs::File::create(scratch.join("probe-qemu.stderr")) {
                Ok(f) => Stdio::from(f),
                Err(_) => Stdio::null(),
            },
        )
        .process_group(0)
        .kill_on_drop(true)
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => return (false, format!("cannot start QEMU: {e}")),
    };
    let Some(out) = child.stdout.take() else {
        return (false, "no stdout".into());
    };
    let console = match ConsoleWatch::spawn(out, scratch.join("probe-console.log")) {
        Ok(c) => c,
        Err(e) => return (false, e.to_string()),
    };
    let mut rx = console.subscribe();
    let res = tokio::time::timeout(PROBE_TIMEOUT, async {
        loop {
            if console.text().contains(e4race_agent::CONSOLE_PROBE_OK) {
                return true;
            }
            if rx.changed().await.is_err() || *rx.borrow() == u64::MAX {
                return console.text().contains(e4race_agent::CONSOLE_PROBE_OK);
            }
        }
    })
    .await;
    let _ = child.kill().await;
    let _ = std::fs::remove_file(&sock);
    match res {
        Ok(true) => (
            true,
            format!("booted in {:.1} s", t0.elapsed().as_secs_f64()),
        ),
        Ok(false) => {
            let stderr =
                std::fs::read_to_string(scratch.join("probe-qemu.stderr")).unwrap_or_default();
            (
                false,
                format!(
                    "QEMU exited before the guest reached userspace: {}",
                    stderr.trim()
                ),
            )
        }
        Err(_) => (
            false,
            format!(
                "the guest did not reach userspace within {} s",
                PROBE_TIMEOUT.as_secs()
            ),
        ),
    }
}

//! The init-side plumbing: pseudo file systems, modules, the control port, power.

use std::ffi::CString;
use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::mount::{mount, MsFlags};

use crate::{console, err, errno_err, io_err, AResult, CONTROL_PORT_NAME};

/// The list the host wrote: `PATH required|optional` per line, in load order.
const MODULES_LIST: &str = "/etc/e4race/modules.list";

pub fn mount_pseudo_filesystems() {
    for (src, target, fstype) in [
        ("proc", "/proc", "proc"),
        ("sysfs", "/sys", "sysfs"),
        ("devtmpfs", "/dev", "devtmpfs"),
        ("tmpfs", "/tmp", "tmpfs"),
    ] {
        let _ = std::fs::create_dir_all(target);
        if let Err(e) = mount(
            Some(src),
            target,
            Some(fstype),
            MsFlags::empty(),
            None::<&str>,
        ) {
            console(&format!("mount {fstype} on {target}: {e}"));
        }
    }
}

/// Loads the modules with finit_module(2); returns the names loaded.
pub fn load_modules() -> AResult<Vec<String>> {
    let list = std::fs::read_to_string(MODULES_LIST).unwrap_or_default();
    let mut loaded = Vec::new();
    for line in list.lines() {
        let mut it = line.split_whitespace();
        let (Some(path), kind) = (it.next(), it.next()) else {
            continue;
        };
        let optional = kind == Some("optional");
        let name = Path::new(path)
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let f = File::open(path).map_err(|e| io_err(format!("open module {path}"), e))?;
        let params = CString::default();
        match nix::kmod::finit_module(&f, &params, nix::kmod::ModuleInitFlags::empty()) {
            Ok(()) => loaded.push(name),
            Err(nix::errno::Errno::EEXIST) => {}
            Err(e) if optional => console(&format!("optional module {name} not loaded: {e}")),
            Err(e) => return Err(errno_err(format!("loading module {name} ({path})"), e)),
        }
    }
    Ok(loaded)
}

/// Config options whose drivers are missing in the running kernel.
pub fn missing_drivers() -> Vec<String> {
    let mut missing = Vec::new();
    let fs = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
    if !fs
        .lines()
        .any(|l| l.split_whitespace().last() == Some("ext4"))
    {
        missing.push("CONFIG_EXT4_FS".to_string());
    }
    // Give the PCI drivers a moment to bind after the modules loaded.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let have_ports = Path::new("/sys/class/virtio-ports").exists();
        let have_virtio = Path::new("/sys/bus/virtio/devices")
            .read_dir()
            .map(|mut d| d.next().is_some())
            .unwrap_or(false);
        let have_blk = Path::new("/sys/block/vda").exists();
        if (have_ports && have_virtio && have_blk) || Instant::now() > deadline {
            if !have_virtio {
                missing.push("CONFIG_VIRTIO_PCI".into());
            }
            if !have_blk {
                missing.push("CONFIG_VIRTIO_BLK".into());
            }
            if !have_ports {
                missing.push("CONFIG_VIRTIO_CONSOLE".into());
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    missing
}

/// Finds `/dev/vportNpM` whose name is [`CONTROL_PORT_NAME`].
pub fn find_control_port(timeout: Duration) -> AResult<String> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(rd) = std::fs::read_dir("/sys/class/virtio-ports") {
            for e in rd.flatten() {
                let name = std::fs::read_to_string(e.path().join("name")).unwrap_or_default();
                if name.trim() == CONTROL_PORT_NAME {
                    let dev = format!("/dev/{}", e.file_name().to_string_lossy());
                    if Path::new(&dev).exists() {
                        return Ok(dev);
                    }
                }
            }
        }
        if Instant::now() > deadline {
            return Err(err(
                "finding the control port",
                format!("no virtio port named {CONTROL_PORT_NAME} after {timeout:?}"),
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn drop_caches() -> AResult<()> {
    nix::unistd::sync();
    std::fs::write("/proc/sys/vm/drop_caches", "3").map_err(|e| io_err("drop_caches", e))
}

/// Runs a program, returning (exit status, stdout, stderr). A signal death is 128+signo.
pub fn exec(argv: &[String]) -> AResult<(i32, String, String)> {
    let Some((prog, args)) = argv.split_first() else {
        return Err(err("exec", "empty argv"));
    };
    let out = std::process::Command::new(prog)
        .args(args)
        .output()
        .map_err(|e| io_err(format!("exec {prog}"), e))?;
    use std::os::unix::process::ExitStatusExt;
    let status = out
        .status
        .code()
        .unwrap_or_else(|| 128 + out.status.signal().unwrap_or(0));
    Ok((
        status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// Drains `/dev/kmsg` without blocking, formatted like dmesg: `[  secs.usecs] text`.
pub fn read_kmsg() -> String {
    use std::os::unix::fs::OpenOptionsExt;
    let mut out = String::new();
    let Ok(mut f) = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("/dev/kmsg")
    else {
        return out;
    };
    let mut buf = vec![0u8; 8192];
    loop {
        // One record per read (Documentation/ABI/testing/dev-kmsg): "pri,seq,usec,flags;text\n".
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                let rec = String::from_utf8_lossy(&buf[..n]);
                let Some((hdr, text)) = rec.split_once(';') else {
                    continue;
                };
                let usec: u64 = hdr
                    .split(',')
                    .nth(2)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                let first = text.lines().next().unwrap_or("");
                out.push_str(&format!(
                    "[{:5}.{:06}] {first}\n",
                    usec / 1_000_000,
                    usec % 1_000_000
                ));
            }
            // EPIPE: a record was overwritten while reading; keep going.
            Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue,
            Err(_) => break,
        }
    }
    out
}

pub fn power_off() -> ! {
    nix::unistd::sync();
    if std::process::id() == 1 {
        let _ = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_POWER_OFF);
    }
    std::process::exit(0)
}

//! `e4race doctor`: what this machine offers.

use e4race_guest_image as image;

use crate::accel;
use crate::vm;

pub async fn doctor(kernel: &str, reprobe: bool) -> i32 {
    let mut ok = true;
    match vm::find_qemu() {
        Ok(q) => {
            let v = tokio::process::Command::new(&q)
                .arg("--version")
                .output()
                .await;
            let v = v
                .map(|o| {
                    String::from_utf8_lossy(&o.stdout)
                        .lines()
                        .next()
                        .unwrap_or("")
                        .to_string()
                })
                .unwrap_or_else(|e| format!("cannot run it: {e}"));
            println!("{:<20} {} ({v})", "qemu", q.display());
        }
        Err(e) => {
            ok = false;
            println!("{:<20} MISSING: {e}", "qemu");
        }
    }
    for tool in [
        "qemu-storage-daemon",
        "e2fsck",
        "mkfs.ext4",
        "e4defrag",
        "chattr",
        "debugfs",
        "busybox",
        "depmod",
        "dpkg-deb",
        "apt-get",
    ] {
        match host_tools::find_host_tool(tool) {
            Some(p) => println!("{tool:<20} {}", p.display()),
            None => println!("{tool:<20} missing"),
        }
    }
    let cache = image::default_cache_dir();
    println!("cache:       {}", cache.display());
    match image::kernel::cached_kernels(&cache) {
        Ok(k) if !k.is_empty() => {
            for k in k {
                println!("  kernel     {k}");
            }
        }
        _ => println!("  kernels    none cached yet (the first run fetches them)"),
    }
    // Every series Debian serves: the host's apt, then e4race's own suites in the cache.
    let archive = debian_archive::Archive::new(&cache);
    match archive.newest_per_series(&|s: &str| eprintln!("{s}")) {
        Ok(ks) => {
            for k in &ks {
                let tested = if image::KNOWN_SERIES.contains(&k.series.as_str()) {
                    ""
                } else {
                    " (untested)"
                };
                println!(
                    "  fetchable  --kernel {:<6} {} {} [{}]{tested}",
                    k.series, k.package.name, k.package.version, k.package.source
                );
            }
            if let Some(k) = ks.iter().max_by_key(|k| k.sort_key()) {
                println!("  fetchable  --kernel latest = {}", k.release);
            }
        }
        Err(e) => {
            ok = false;
            println!("  fetchable  cannot list Debian's kernels: {e}");
        }
    }
    let root = crate::config::mutants_root(None);
    match mutant::list(&root) {
        Ok(ms) => {
            for m in ms {
                println!(
                    "  mutant     {} (kernels {}, scenario {}): reverts \"{}\"",
                    m.name,
                    m.kernels.join(", "),
                    m.scenario,
                    m.reverts
                );
            }
        }
        Err(e) => println!("  mutants    none readable in {}: {e}", root.display()),
    }
    let kvm = std::path::Path::new("/dev/kvm").exists();
    println!("/dev/kvm:    {}", if kvm { "present" } else { "absent" });
    if reprobe {
        let _ = std::fs::remove_file(cache.join("accel-probe.json"));
    }
    match accel::cached_probe(&cache) {
        Some((boots, detail)) => println!(
            "accelerator: {} (cached probe: {detail})",
            if boots { "kvm" } else { "tcg" }
        ),
        None if !kvm => println!("accelerator: tcg (no /dev/kvm)"),
        None => {
            // Probe now with the requested kernel's image.
            let spec = match image::KernelSpec::parse(kernel, None) {
                Ok(s) => s,
                Err(e) => {
                    println!("accelerator: cannot probe: {e}");
                    return 4;
                }
            };
            let agent = match crate::error::agent_binary() {
                Ok(a) => a,
                Err(e) => {
                    println!("accelerator: cannot probe: {e}");
                    return 4;
                }
            };
            let req = image::ImageRequest {
                kernel: spec,
                agent,
                ext4_module: None,
                cache_dir: cache.clone(),
            };
            let img = tokio::task::spawn_blocking(move || {
                image::build(&req, &|s: &str| eprintln!("{s}"))
            })
            .await;
            match (img, vm::find_qemu()) {
                (Ok(Ok(img)), Ok(q)) => {
                    let scratch = cache.join("probe");
                    let c = accel::choose(
                        None,
                        &q,
                        &img.kernel.image,
                        &img.initramfs,
                        &cache,
                        &scratch,
                    )
                    .await;
                    println!("accelerator: {:?}: {}", c.accel, c.reason);
                }
                (Ok(Err(e)), _) => println!("accelerator: cannot probe: {e}"),
                _ => println!("accelerator: cannot probe"),
            }
        }
    }
    if ok {
        0
    } else {
        4
    }
}

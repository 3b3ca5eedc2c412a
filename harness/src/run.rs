//! One run, start to end: run directory, guest image, accelerator, disk, boot, scenario,
//! host-side oracles, report. Every path ends in a report in the run directory.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use e4race_guest_image::{self as image, ImageRequest, KernelSpec};

use crate::accel::{self, AccelChoice};
use crate::config::{KillAt, RunConfig};
use crate::disk::TestDisk;
use crate::error::{agent_binary, RunError};
use crate::progress::Progress;
use crate::report::{Exercise, Finding, HostCheck, PowerCutExercise, Report, Verdict};
use crate::scenarios::{self, RunContext, ScenarioOutcome, ScenarioPlan};
use crate::vm::{self, SocketDir, Vm, VmConfig, VmError};

/// How many characters of a patch's file stem, a mutant's or a custom kernel's file name a
/// run directory name keeps.
const LABEL_MAX: usize = 24;

/// `s` with every character outside `[A-Za-z0-9._-]` replaced by '_', cut to `max` characters.
fn sanitize_label(s: &str, max: usize) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(max)
        .collect()
}

/// 8 hex digits of FNV-1a (64-bit) over `parts`: stable across builds and Rust releases.
fn short_hash(parts: &[&[u8]]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &b in part.iter().chain([0xffu8].iter()) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    format!("{:08x}", (h >> 32) ^ (h & 0xffff_ffff))
}

/// A name safe as a path component: sanitized and truncated, plus a hash of the original when
/// that changed it, so two different names stay distinct.
fn safe_label(name: &str) -> String {
    let safe = sanitize_label(name, LABEL_MAX);
    if safe == name && !safe.is_empty() {
        safe
    } else {
        format!("{safe}-{}", short_hash(&[name.as_bytes()]))
    }
}

/// `patch-STEM-HASH`: the file stem (sanitized, truncated) and a hash of the whole path and,
/// if readable, the patch's content, so different patches (or versions of one) stay distinct.
fn patch_label(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let stem = path
        .file_stem()
        .map(|s| sanitize_label(&s.to_string_lossy(), LABEL_MAX))
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "patch".into());
    let content = std::fs::read(path).unwrap_or_default();
    format!(
        "patch-{stem}-{}",
        short_hash(&[path.as_os_str().as_bytes(), &content])
    )
}

/// The run directory name's part for the plan's mutant label (`NAME`, or `patch:PATH` for
/// --ext4-patch, see scenarios::mutant_label).
fn mutant_dir_label(mutant: &str) -> String {
    match mutant.strip_prefix("patch:") {
        Some(path) => patch_label(Path::new(path)),
        None => safe_label(mutant),
    }
}

fn kernel_dir_label(kernel: &KernelSpec) -> String {
    match kernel {
        KernelSpec::Debian { series } => safe_label(series),
        KernelSpec::Custom { bzimage, .. } => bzimage
            .file_name()
            .map(|n| safe_label(&n.to_string_lossy()))
            .unwrap_or_else(|| "custom".into()),
    }
}

/// `TIME-SCENARIO-KERNEL[-MUTANT]`, short and free of '/' whatever the patch or kernel path:
/// at most about 110 characters.
fn run_dir_name(plan: &ScenarioPlan, kernel: &KernelSpec) -> String {
    format!(
        "{}-{}-{}{}",
        chrono::Local::now().format("%Y-%m-%dT%H-%M-%S%.3f"),
        safe_label(&plan.name),
        kernel_dir_label(kernel),
        plan.mutant
            .as_ref()
            .map(|m| format!("-{}", mutant_dir_label(m)))
            .unwrap_or_default()
    )
}

/// Creates `parent/name`, or `parent/name-2`, `-3`, … if it exists: two runs started in the
/// same millisecond (`suite --jobs N`) must never share a run directory, or one run's cleanup
/// deletes the other's disk.img. `create_dir` (not `_all`) is the atomic claim.
fn create_unique_dir(parent: &Path, name: &str) -> Result<PathBuf, (PathBuf, std::io::Error)> {
    let first = parent.join(name);
    std::fs::create_dir_all(parent).map_err(|e| (first.clone(), e))?;
    let mut dir = first;
    let mut n = 1u32;
    loop {
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 10_000 => {
                n += 1;
                dir = parent.join(format!("{name}-{n}"));
            }
            Err(e) => return Err((dir, e)),
        }
    }
}

/// Runs a scenario and returns its report (already written to the run directory).
pub async fn execute(config: &RunConfig, plan: ScenarioPlan, progress: Progress) -> Report {
    let started = Instant::now();
    let created = create_unique_dir(&config.runs_dir, &run_dir_name(&plan, &config.kernel));
    let dir = match &created {
        Ok(d) => d.clone(),
        Err((d, _)) => d.clone(),
    };
    let mut report = Report {
        disk_backend: config.disk_backend.as_str().into(),
        mutant: plan.mutant.clone(),
        seed: plan.seed,
        run_id: plan.run_id,
        params: plan.params.clone(),
        started_at: chrono::Local::now().to_rfc3339(),
        ..Report::new(&plan.name, &config.kernel_arg(), &dir, &plan.reproduce)
    };
    if let Err((_, e)) = created {
        report.error = Some(format!(
            "creating the run directory {}: {e}; check that --runs-dir is writable",
            dir.display()
        ));
        report.duration_s = started.elapsed().as_secs_f64();
        return report;
    }
    // Room for the reports, taken now: if the host disk fills during the run (the guest's
    // writes land in disk.img), report.json and the rest must still fit.
    reserve_report_space(&dir);
    let _ = std::fs::write(
        dir.join("plan.json"),
        serde_json::to_string_pretty(&plan).unwrap_or_default(),
    );
    let _ = std::fs::write(
        dir.join("repro.sh"),
        format!("#!/bin/sh\nexec {}\n", plan.reproduce),
    );
    progress.step(&format!("run directory {}", dir.display()));
    let result = execute_inner(config, &plan, &dir, &progress, &mut report);
    // Ctrl-C drops the run future: QEMU and the disk backend are killed by their handles.
    let result = tokio::select! {
        r = result => r,
        _ = tokio::signal::ctrl_c() => Err(RunError::Vm(VmError::Interrupted)),
    };
    match result {
        Ok(mut outcome) => {
            if let Some(c) = config.crash {
                let seed = plan.seed.or(plan.run_id).unwrap_or(0);
                match crate::crash_cmd::after_run(&dir, c.reorder, seed, &progress).await {
                    Ok((summary, findings)) => {
                        outcome.findings.extend(findings);
                        report.crash = Some(summary);
                    }
                    Err(e) => report.error = Some(format!("crash states: {e}")),
                }
            }
            report.set_findings(outcome.findings);
            report.strict = config.strict;
            config.known.apply(&mut report);
            report.exercise = Some(outcome.exercise);
            if report.error.is_some() {
                // The crash states could not be checked: the run is not judged in full.
                report.verdict = Verdict::InfraError;
            }
        }
        Err(e) => {
            report.verdict = e.verdict();
            report.error = Some(e.to_string());
        }
    }
    report.duration_s = started.elapsed().as_secs_f64();
    finish_artifacts(config, &dir, &report);
    report
}

/// Where [`reserve_report_space`] keeps its room.
const REPORT_RESERVE: &str = ".report-space";

/// Allocates (not sparsely) 4 MiB in the run directory, given back just before the reports
/// are written. Best effort: without it a full disk costs the reports, not the run.
fn reserve_report_space(dir: &Path) {
    use nix::fcntl::{fallocate, FallocateFlags};
    use std::os::fd::AsRawFd;
    let path = dir.join(REPORT_RESERVE);
    if let Ok(f) = std::fs::File::create(&path) {
        if fallocate(f.as_raw_fd(), FallocateFlags::empty(), 0, 4 << 20).is_err() {
            let _ = std::fs::remove_file(&path);
        }
    }
}

fn finish_artifacts(config: &RunConfig, dir: &Path, report: &Report) {
    let _ = std::fs::remove_file(dir.join(REPORT_RESERVE));
    if let Err(e) = report.write(&dir.join("report.json")) {
        eprintln!("warning: {e}");
    }
    let _ = std::fs::write(dir.join("summary.txt"), report.summary());
    // report.html, junit.xml, evidence.json: before the image goes; failures are warnings.
    crate::artifacts::write_artifacts(dir);
    // The image is the main evidence of a finding; a passing run's image is only kept on request.
    if !config.image.keeps_image(report.verdict == Verdict::Pass) {
        let _ = std::fs::remove_file(dir.join("disk.img"));
    }
}

async fn execute_inner(
    config: &RunConfig,
    plan: &ScenarioPlan,
    dir: &Path,
    progress: &Progress,
    report: &mut Report,
) -> Result<ScenarioOutcome, RunError> {
    // Unix sockets cannot live in the run directory: its path (--runs-dir and the run name) may
    // be longer than sun_path's 108 bytes. They go in a short private directory, removed when
    // this function returns (declared first, so dropped after the VM and the disk).
    let sockets = SocketDir::create()?;
    let blkrec_socket = sockets.socket("blkrec.sock");
    let control_socket = sockets.socket("control.sock");
    let _ = std::fs::write(
        dir.join("sockets.txt"),
        format!(
            "socket directory: {} (removed when the run ends)\nblkrec (vhost-user): {}\ncontrol channel: {}\nKVM probe (if one runs): {}\n",
            sockets.path().display(),
            blkrec_socket.display(),
            control_socket.display(),
            sockets.socket("probe-ctl.sock").display(),
        ),
    );
    progress.step(&format!(
        "sockets in {} (removed when the run ends)",
        sockets.path().display()
    ));
    let qemu = vm::find_qemu()?;
    let cache = config.cache_dir();
    let ext4_module =
        crate::mutants::ext4_module_for(&config.ext4, &config.kernel, &cache, progress).await?;
    let req = ImageRequest {
        kernel: config.kernel.clone(),
        agent: agent_binary()?,
        ext4_module,
        cache_dir: cache.clone(),
    };
    progress.step("preparing the guest image");
    let p2 = progress.clone();
    let img = tokio::task::spawn_blocking(move || image::build(&req, &move |s: &str| p2.step(s)))
        .await
        .map_err(|e| RunError::Other(format!("image builder crashed: {e}")))??;
    report.kernel.release = img.kernel.release.clone();
    report.kernel.origin = img.kernel.origin.clone();
    progress.step(&format!(
        "kernel {} ({}), initramfs {}{}",
        img.kernel.release,
        img.kernel.origin,
        img.initramfs.display(),
        if img.cached { " (cached)" } else { "" }
    ));
    let AccelChoice { accel, reason } = accel::choose(
        config.accel,
        &qemu,
        &img.kernel.image,
        &img.initramfs,
        &cache,
        // The probe's control socket goes there too; its logs are brought back below.
        sockets.path(),
    )
    .await;
    keep_probe_logs(sockets.path(), dir);
    report.accel = accel.as_str().into();
    report.accel_reason = reason.clone();
    progress.step(&format!("accelerator {}: {reason}", report.accel));

    let mut disk = TestDisk::create(
        dir,
        blkrec_socket,
        plan.disk_mib,
        config.disk_backend,
        plan.log_data || config.log_data || config.crash.is_some(),
        config.max_log_bytes,
        // One queue per vCPU; --cpus is at most 64 (cli.rs).
        u16::try_from(config.cpus).unwrap_or(u16::MAX),
    )?;
    // A boot that oopses before our agent runs is retried once under TCG: multi-threaded
    // TCG occasionally trips the kernel's int3-based text patching during early boot
    // (seen on 6.12: "Oops: int3" in sched_clock_cpu at ~2.6 s, about 1 boot in 20). Nothing
    // of the scenario has run yet; the failed boot's console is kept as console-boot1.log and
    // the report counts the retry.
    let mut attempt = 1;
    let vm = loop {
        let attachment = disk.start(progress).await?;
        let cfg = VmConfig {
            qemu: qemu.clone(),
            accel,
            cpus: config.cpus,
            memory_mib: config.memory_mib,
            kernel: img.kernel.image.clone(),
            initrd: img.initramfs.clone(),
            extra_append: vec![],
            disk: Some(attachment),
            control_socket: control_socket.clone(),
            bios: vm::default_bios(),
        };
        progress.step(&format!(
            "booting {} under {}",
            img.kernel.release, report.accel
        ));
        match Vm::start(&cfg, dir, config.boot_timeout).await {
            Ok(vm) => break vm,
            Err(VmError::KernelError { headline, .. })
                if attempt == 1 && accel == vm::Accel::Tcg =>
            {
                progress.step(&format!(
                    "the kernel oopsed during boot ({headline}); retrying the boot once"
                ));
                // The recorder saw QEMU vanish mid-boot; whatever it says, a fresh one follows.
                let _ = disk.stop().await;
                let _ = std::fs::rename(dir.join("console.log"), dir.join("console-boot1.log"));
                report.boot_retries.push(headline);
                attempt += 1;
            }
            Err(e) => return Err(e.into()),
        }
    };
    report.boot_s = Some(vm.ready.boot_s);
    progress.step(&format!(
        "guest ready after {:.1} s (kernel {}, modules: {})",
        vm.ready.boot_s,
        vm.ready.kernel_release,
        if vm.ready.modules.is_empty() {
            "none".to_string()
        } else {
            vm.ready.modules.join(" ")
        }
    ));
    let mut ctx = RunContext {
        dir: dir.to_path_buf(),
        progress: progress.clone(),
        disk,
        command_timeout: config.command_timeout,
        rounds_done: Vec::new(),
    };
    let qemu_pid = vm.pid();
    let session = scenarios::GuestSession::new(vm, &ctx);
    let driven = match &config.kill_at {
        None => scenarios::drive(plan, session, &mut ctx).await,
        Some(kill_at) => {
            let marks = ctx.disk.subscribe_marks();
            let killed = tokio::select! {
                r = scenarios::drive(plan, session, &mut ctx) => Err(r),
                () = kill_point(kill_at, marks) => {
                    // SIGKILL, not a shutdown: nothing in the guest gets to write back.
                    if let Some(pid) = qemu_pid.and_then(|p| i32::try_from(p).ok()) {
                        let _ = nix::sys::signal::kill(
                            nix::unistd::Pid::from_raw(pid),
                            nix::sys::signal::Signal::SIGKILL,
                        );
                    }
                    Ok(())
                }
            };
            match killed {
                Ok(()) => return power_cut(plan, kill_at, dir, progress, report, &mut ctx).await,
                Err(r) => {
                    progress.step(&format!(
                        "--kill-at {kill_at}: the run ended before the kill point; judged as a normal run"
                    ));
                    r
                }
            }
        }
    };
    let outcome = match driven {
        Ok(o) => o,
        // A guest that failed because the host failed its I/O: say so, not what it tripped on.
        Err(e) => {
            report.request_errors = ctx.disk.request_errors().by_kind;
            return Err(ctx.disk.host_fault().unwrap_or(e));
        }
    };
    let stopped = ctx.disk.stop().await;
    report.request_errors = ctx.disk.request_errors().by_kind;
    stopped?;
    Ok(outcome)
}

/// Waits for `kill_at`'s point: its mark, or its delay after the `mounted` mark.
async fn kill_point(kill_at: &KillAt, mut marks: tokio::sync::broadcast::Receiver<String>) {
    use tokio::sync::broadcast::error::RecvError;
    let want = match kill_at {
        KillAt::Mark(m) => m.as_str(),
        KillAt::AfterMs(_) => "mounted",
    };
    loop {
        match marks.recv().await {
            Ok(m) if m == want => break,
            Ok(_) | Err(RecvError::Lagged(_)) => {}
            Err(RecvError::Closed) => std::future::pending::<()>().await,
        }
    }
    if let KillAt::AfterMs(ms) = kill_at {
        tokio::time::sleep(Duration::from_millis(*ms)).await;
    }
}

/// After `--kill-at` killed QEMU: the recorder is stopped (the log ends where the device
/// did), the finished rounds' records are saved as workload.json, and disk.img is checked
/// as the disk after a power cut (crash::check_power_cut).
async fn power_cut(
    plan: &ScenarioPlan,
    kill_at: &KillAt,
    dir: &Path,
    progress: &Progress,
    report: &mut Report,
    ctx: &mut RunContext,
) -> Result<ScenarioOutcome, RunError> {
    progress.step(&format!(
        "QEMU killed at {kill_at} ({} round(s) done): checking the disk as after a power cut",
        ctx.rounds_done.len()
    ));
    let stopped = ctx.disk.stop().await;
    report.request_errors = ctx.disk.request_errors().by_kind;
    stopped?;
    let record = e4race_protocol::RaceResult {
        rounds: std::mem::take(&mut ctx.rounds_done),
    };
    std::fs::write(
        dir.join("workload.json"),
        serde_json::to_string(&record).unwrap_or_default(),
    )
    .map_err(|e| crate::disk::full_or(e, &dir.join("workload.json")))?;
    let (d, size) = (dir.to_path_buf(), plan.disk_mib << 20);
    let pc = tokio::task::spawn_blocking(move || {
        let work = crate::crash_cmd::work_dir(&d, size);
        let r = crash::check_power_cut(&d, &work);
        if work != d {
            let _ = std::fs::remove_dir_all(&work);
        }
        r
    })
    .await
    .map_err(|e| RunError::Other(format!("power-cut check task: {e}")))?
    .map_err(|e| RunError::Other(format!("checking the disk after the kill: {e}")))?;
    let f = &pc.findings;
    progress.step(&if f.is_clean() {
        format!(
            "after the power cut: journal replayed, e2fsck clean, all {} durable blocks there",
            pc.durable_blocks
        )
    } else {
        format!("after the power cut: {}", f.summary())
    });
    // What the guest itself reported of its finished rounds (postconditions), and the
    // kernel's console up to the kill, are judged as in any run.
    let console = std::fs::read_to_string(dir.join("console.log")).unwrap_or_default();
    let mut findings = crate::oracle_glue::findings(None, None, &record.rounds, &console);
    if !f.is_clean() {
        findings.push(Finding::new(oracles::Finding::CrashState(
            oracles::CrashStateFinding {
                seq: pc.last_seq,
                state: "power-cut".into(),
                dropped_writes: 0,
                mark_before: pc.last_mark.clone(),
                problem: f.problem(),
                detail: f.summary(),
                states: 1,
                replay: format!("e4race replay {} --to end --out crash.img", dir.display()),
            },
        )));
    }
    Ok(ScenarioOutcome {
        findings,
        exercise: Exercise::PowerCut(PowerCutExercise {
            killed_scenario: plan.name.clone(),
            kill_at: kill_at.to_string(),
            last_mark: pc.last_mark.clone(),
            rounds_done: pc.rounds_done,
            host: HostCheck {
                blocks_checked_on_host: pc.durable_blocks as u64,
                lost_blocks: f.lost.len(),
                e2fsck: if f.fsck.is_empty() {
                    "clean".into()
                } else {
                    format!("{} finding(s)", f.fsck.len())
                },
            },
        }),
    })
}

/// Moves the KVM probe's console and QEMU stderr (written next to its socket) into the run
/// directory, where every artifact of a run belongs.
fn keep_probe_logs(scratch: &Path, dir: &Path) {
    for name in ["probe-console.log", "probe-qemu.stderr"] {
        let from = scratch.join(name);
        if from.exists() {
            // Copy, not rename: the socket directory is often on another file system (tmpfs).
            if std::fs::copy(&from, dir.join(name)).is_ok() {
                let _ = std::fs::remove_file(&from);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use std::path::PathBuf;

    /// The plan and kernel `e4race run smoke ARGS...` gives.
    fn plan_for(args: &[&str]) -> (ScenarioPlan, KernelSpec) {
        let argv = ["e4race", "run", "smoke", "--kernel", "6.1"]
            .iter()
            .chain(args)
            .copied();
        let crate::cli::Cmd::Run { scenario, .. } =
            crate::cli::Cli::try_parse_from(argv).unwrap().command
        else {
            panic!("not a run command");
        };
        let (config, plan) = crate::cli::plan(scenario).unwrap();
        (plan, config.kernel)
    }

    /// `base` + enough 40-character folders to make a path of exactly `len` bytes ending in
    /// `file`, created (the config refuses a patch that does not exist).
    fn long_path(base: &Path, len: usize, folder: char, file: &str) -> String {
        let mut p = base.display().to_string();
        while p.len() + 41 + 1 + file.len() <= len {
            p.push('/');
            p.extend(std::iter::repeat_n(folder, 40));
        }
        let pad = len - p.len() - 1 - file.len() - 1;
        p.push('/');
        p.extend(std::iter::repeat_n('x', pad));
        std::fs::create_dir_all(&p).unwrap();
        p.push('/');
        p.push_str(file);
        std::fs::write(&p, "--- a/fs/ext4/inode.c\n").unwrap();
        assert_eq!(p.len(), len);
        p
    }

    #[test]
    fn two_runs_with_the_same_name_get_distinct_directories() {
        let t = tempfile::tempdir().unwrap();
        let parent = t.path().join("runs");
        let a = create_unique_dir(&parent, "x-smoke-6.1").unwrap();
        let b = create_unique_dir(&parent, "x-smoke-6.1").unwrap();
        let c = create_unique_dir(&parent, "x-smoke-6.1").unwrap();
        assert_ne!(a, b);
        assert_ne!(b, c);
        assert!(a.is_dir() && b.is_dir() && c.is_dir());
        assert!(
            b.to_string_lossy().ends_with("x-smoke-6.1-2"),
            "{}",
            b.display()
        );
    }

    #[test]
    fn a_long_patch_path_gives_a_short_distinct_run_dir_name() {
        let base = tempfile::tempdir().unwrap();
        let a = long_path(base.path(), 200, 'a', "fix.patch");
        let b = long_path(base.path(), 200, 'b', "fix.patch");
        let (pa, k) = plan_for(&["--ext4-patch", &a]);
        let (pb, _) = plan_for(&["--ext4-patch", &b]);
        assert_eq!(pa.mutant.as_deref(), Some(format!("patch:{a}").as_str()));
        let (na, nb) = (run_dir_name(&pa, &k), run_dir_name(&pb, &k));
        for n in [&na, &nb] {
            assert!(n.len() <= 80, "{n} ({} bytes)", n.len());
            assert!(!n.contains('/'), "{n}");
            assert!(
                n.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)),
                "{n}"
            );
            assert!(n.contains("-smoke-6.1-patch-fix-"), "{n}");
        }
        // Different paths, same stem: the hash keeps them apart.
        let tail = |n: &str| n.split_once("-smoke-").unwrap().1.to_string();
        assert_ne!(tail(&na), tail(&nb));
        // The same path gives the same label.
        assert_eq!(
            tail(&na),
            tail(&run_dir_name(&plan_for(&["--ext4-patch", &a]).0, &k))
        );
    }

    #[test]
    fn long_or_odd_stems_are_sanitized_and_truncated() {
        let l = patch_label(Path::new(
            "/p/fix ext4: the migrate+mmap race (v2) ünïcode.patch",
        ));
        assert!(l.starts_with("patch-fix_ext4__the_"), "{l}");
        let stem = l
            .strip_prefix("patch-")
            .unwrap()
            .rsplit_once('-')
            .unwrap()
            .0;
        assert!(stem.chars().count() <= LABEL_MAX, "{l}");
        let long_stem = format!("/p/{}.patch", "y".repeat(300));
        let l = patch_label(Path::new(&long_stem));
        assert_eq!(l.len(), "patch-".len() + LABEL_MAX + 1 + 8, "{l}");
        assert_eq!(
            patch_label(Path::new("/")),
            format!("patch-patch-{}", short_hash(&[b"/", b""]))
        );
        // The content counts: the same path with another patch in it is another label.
        let d = std::env::temp_dir().join(format!("e4race-run-unit-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let f = d.join("fix.patch");
        std::fs::write(&f, "one").unwrap();
        let one = patch_label(&f);
        std::fs::write(&f, "two").unwrap();
        assert_ne!(one, patch_label(&f));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn mutant_and_custom_kernel_labels_are_safe() {
        assert_eq!(mutant_dir_label("migrate-flag-clear"), "migrate-flag-clear");
        let m = mutant_dir_label("../../etc/a-very-long-mutant-name-beyond-limits");
        assert!(!m.contains('/') && m.len() <= LABEL_MAX + 9, "{m}");
        let k = KernelSpec::Custom {
            bzimage: PathBuf::from(format!("/k/{}", "vmlinuz ".repeat(30))),
            modules_dir: None,
        };
        let l = kernel_dir_label(&k);
        assert!(!l.contains(' ') && l.len() == LABEL_MAX + 9, "{l}");
        let k = KernelSpec::Custom {
            bzimage: PathBuf::from("/home/u/linux/arch/x86/boot/bzImage"),
            modules_dir: None,
        };
        assert_eq!(kernel_dir_label(&k), "bzImage");
    }
}

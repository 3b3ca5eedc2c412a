//! One run, start to end: run directory, guest image, accelerator, disk, boot, scenario,
//! host-side oracles, report. Every path ends in a report in the run directory.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use e4race_guest_image::{self as image, ImageRequest, KernelSpec};

use crate::accel::{self, AccelChoice};
use crate::cli::CommonArgs;
use crate::disk::TestDisk;
use crate::report::{Finding, KernelInfo, Report, Verdict, SCHEMA};
use crate::scenarios::{self, ScenarioPlan};
use crate::vm::{self, Vm, VmConfig, VmError};

/// Progress lines on stderr, stamped with the time since the run started.
#[derive(Clone)]
pub struct Progress {
    start: Instant,
    quiet: bool,
}

impl Progress {
    pub fn new(quiet: bool) -> Self {
        Progress {
            start: Instant::now(),
            quiet,
        }
    }

    pub fn step(&self, msg: &str) {
        if !self.quiet {
            eprintln!("[{:6.1}s] {msg}", self.start.elapsed().as_secs_f64());
        }
    }
}

/// An error of our own side, or the kernel's, that ends a run early.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Image(#[from] image::Error),
    #[error(transparent)]
    Vm(#[from] VmError),
    #[error("{0}")]
    Other(String),
}

impl RunError {
    pub fn verdict(&self) -> Verdict {
        match self {
            RunError::Vm(VmError::KernelError { .. }) => Verdict::KernelError,
            _ => Verdict::InfraError,
        }
    }
}

/// What a scenario hands to the report.
pub struct ScenarioOutcome {
    pub findings: Vec<Finding>,
    pub evidence: serde_json::Value,
}

/// Everything a scenario needs while the guest runs.
pub struct RunContext {
    pub dir: PathBuf,
    pub progress: Progress,
    pub disk: TestDisk,
    pub command_timeout: Duration,
}

pub fn agent_binary() -> Result<PathBuf, RunError> {
    if let Some(p) = std::env::var_os("E4RACE_AGENT") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe()
        .map_err(|e| RunError::Other(format!("locating our own binary: {e}")))?;
    let dir = exe.parent().unwrap_or(Path::new("."));
    for cand in [dir.join("e4race-agent"), dir.join("../e4race-agent")] {
        if cand.is_file() {
            return Ok(cand);
        }
    }
    Err(RunError::Other(format!(
        "the guest agent e4race-agent is not next to {}; build it with `cargo build --release -p e4race` \
         or point E4RACE_AGENT at it",
        exe.display()
    )))
}

fn run_dir_name(plan: &ScenarioPlan, kernel: &KernelSpec) -> String {
    let label: String = match kernel {
        KernelSpec::Debian { series } => series.clone(),
        KernelSpec::Custom { bzimage, .. } => bzimage
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "custom".into()),
    };
    format!(
        "{}-{}-{}{}",
        chrono::Local::now().format("%Y-%m-%dT%H-%M-%S%.3f"),
        plan.name,
        label,
        plan.mutant
            .as_ref()
            .map(|m| format!("-{m}"))
            .unwrap_or_default()
    )
}

/// Runs a scenario and returns its report (already written to the run directory).
pub async fn execute(common: &CommonArgs, plan: ScenarioPlan, progress: Progress) -> Report {
    let started = Instant::now();
    let kernel_spec = common.kernel_spec();
    let dir_name = kernel_spec
        .as_ref()
        .map(|k| run_dir_name(&plan, k))
        .unwrap_or_else(|_| {
            format!(
                "{}-{}",
                chrono::Local::now().format("%Y-%m-%dT%H-%M-%S%.3f"),
                plan.name
            )
        });
    let dir = common.runs_dir.join(dir_name);
    let mut report = Report {
        schema: SCHEMA,
        scenario: plan.name.clone(),
        verdict: Verdict::InfraError,
        kernel: KernelInfo {
            requested: common.kernel.clone(),
            ..Default::default()
        },
        accel: String::new(),
        accel_reason: String::new(),
        disk_backend: common.disk_backend.as_str().into(),
        mutant: plan.mutant.clone(),
        seed: plan.seed,
        run_id: plan.run_id,
        params: plan.params.clone(),
        started_at: chrono::Local::now().to_rfc3339(),
        duration_s: 0.0,
        boot_s: None,
        boot_retries: vec![],
        error: None,
        findings: vec![],
        evidence: serde_json::json!({}),
        run_dir: dir.display().to_string(),
        reproduce: plan.reproduce.clone(),
    };
    if let Err(e) = std::fs::create_dir_all(&dir) {
        report.error = Some(format!("creating the run directory {}: {e}", dir.display()));
        report.duration_s = started.elapsed().as_secs_f64();
        return report;
    }
    let _ = std::fs::write(
        dir.join("plan.json"),
        serde_json::to_string_pretty(&plan).unwrap_or_default(),
    );
    let _ = std::fs::write(
        dir.join("repro.sh"),
        format!("#!/bin/sh\nexec {}\n", plan.reproduce),
    );
    progress.step(&format!("run directory {}", dir.display()));
    let result = async {
        let kernel_spec = kernel_spec?;
        execute_inner(common, &plan, kernel_spec, &dir, &progress, &mut report).await
    };
    // Ctrl-C drops the run future: QEMU and the disk backend are killed by their handles.
    let result = tokio::select! {
        r = result => r,
        _ = tokio::signal::ctrl_c() => Err(RunError::Vm(VmError::Interrupted)),
    };
    match result {
        Ok(outcome) => {
            report.verdict = if outcome.findings.is_empty() {
                Verdict::Pass
            } else {
                Verdict::BugFound
            };
            report.findings = outcome.findings;
            report.evidence = outcome.evidence;
        }
        Err(e) => {
            report.verdict = e.verdict();
            report.error = Some(e.to_string());
        }
    }
    report.duration_s = started.elapsed().as_secs_f64();
    finish_artifacts(common, &dir, &report);
    report
}

fn finish_artifacts(common: &CommonArgs, dir: &Path, report: &Report) {
    let _ = std::fs::write(
        dir.join("report.json"),
        serde_json::to_string_pretty(report).unwrap_or_default(),
    );
    let _ = std::fs::write(dir.join("summary.txt"), report.summary());
    // report.html, junit.xml, evidence.json: before the image goes; failures are warnings.
    crate::evidence::write_artifacts(dir);
    // The image is the main evidence of a finding; a passing run's image is only kept on request.
    if common.discard_image || (report.verdict == Verdict::Pass && !common.keep_image) {
        let _ = std::fs::remove_file(dir.join("disk.img"));
    }
}

async fn execute_inner(
    common: &CommonArgs,
    plan: &ScenarioPlan,
    kernel_spec: KernelSpec,
    dir: &Path,
    progress: &Progress,
    report: &mut Report,
) -> Result<ScenarioOutcome, RunError> {
    let qemu = vm::find_qemu()?;
    let cache = common.cache_dir();
    let ext4_module =
        crate::mutants::ext4_module_for(common, &kernel_spec, &cache, progress).await?;
    let req = ImageRequest {
        kernel: kernel_spec,
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
        common.accel,
        &qemu,
        &img.kernel.image,
        &img.initramfs,
        &cache,
        dir,
    )
    .await;
    report.accel = format!("{accel:?}").to_lowercase();
    report.accel_reason = reason.clone();
    progress.step(&format!("accelerator {}: {reason}", report.accel));

    let mut disk = TestDisk::create(
        dir,
        plan.disk_mib,
        common.disk_backend,
        plan.log_data || common.log_data,
        common.cpus as u16,
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
            cpus: common.cpus,
            memory_mib: common.memory_mib,
            kernel: img.kernel.image.clone(),
            initrd: img.initramfs.clone(),
            extra_append: vec![],
            disk: Some(attachment),
            control_socket: dir.join("control.sock"),
            bios: vm::default_bios(),
        };
        progress.step(&format!(
            "booting {} under {}",
            img.kernel.release, report.accel
        ));
        match Vm::start(&cfg, dir, Duration::from_secs(common.boot_timeout)).await {
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
        command_timeout: Duration::from_secs(common.timeout),
    };
    let ctx_ref = &mut ctx;
    let outcome = scenarios::drive(plan, vm, ctx_ref).await?;
    ctx.disk.stop().await?;
    Ok(outcome)
}

//! Running the host tools (apt-get, dpkg-deb, tar, patch, make, strip, modinfo).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

use crate::error::BuildError;

/// The host tools a build needs, with the Debian package that ships each.
pub(crate) const TOOLS: &[(&str, &str)] = &[
    ("apt-get", "apt"),
    ("apt-cache", "apt"),
    ("dpkg-deb", "dpkg"),
    ("tar", "tar"),
    ("xz", "xz-utils"),
    ("patch", "patch"),
    ("make", "make"),
    // The Debian headers' .kernelvariables set CC = gcc-12 (bookworm's compiler).
    ("gcc-12", "gcc-12"),
    ("strip", "binutils"),
    ("modinfo", "kmod"),
    // 6.12 generates BTF for modules; linux-kbuild-6.12.* depends on pahole.
    ("pahole", "pahole"),
];

/// Fails with the list of missing tools and the apt-get line that installs them.
pub(crate) fn preflight() -> Result<(), BuildError> {
    let missing: Vec<_> = TOOLS
        .iter()
        .filter(|(t, _)| host_tools::find_host_tool(t).is_none())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let mut packages: Vec<&str> = missing.iter().map(|(_, p)| *p).collect();
    packages.dedup();
    Err(BuildError::MissingTools {
        tools: missing
            .iter()
            .map(|(t, _)| *t)
            .collect::<Vec<_>>()
            .join(", "),
        packages: packages.join(" "),
    })
}

fn program_name(cmd: &Command) -> String {
    cmd.get_program().to_string_lossy().into_owned()
}

/// A command line as it could be typed, for messages.
pub(crate) fn display(cmd: &Command) -> String {
    let mut s = program_name(cmd);
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

fn spawn_error(cmd: &Command, source: std::io::Error) -> BuildError {
    BuildError::Io {
        context: format!("cannot run `{}`", program_name(cmd)),
        source,
    }
}

/// Runs `cmd` and returns its exit status and its stdout and stderr, merged into one text.
pub(crate) fn capture(cmd: &mut Command) -> Result<(ExitStatus, String), BuildError> {
    cmd.env("LC_ALL", "C").stdin(Stdio::null());
    let out = cmd.output().map_err(|e| spawn_error(cmd, e))?;
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    Ok((out.status, text))
}

/// Runs `cmd` with stdout and stderr appended to `log`.
pub(crate) fn run_logged(cmd: &mut Command, log: &Path) -> Result<ExitStatus, BuildError> {
    let file = open_log(log)?;
    let err = file.try_clone().map_err(|e| io_err("opening", log, e))?;
    cmd.env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(err);
    cmd.status().map_err(|e| spawn_error(cmd, e))
}

/// Runs `first | second`, both with stderr appended to `log`. Succeeds only if both do.
pub(crate) fn pipe(
    first: &mut Command,
    second: &mut Command,
    log: &Path,
) -> Result<bool, BuildError> {
    let e1 = open_log(log)?;
    let e2 = e1.try_clone().map_err(|e| io_err("opening", log, e))?;
    let mut a = first
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(e1)
        .spawn()
        .map_err(|e| spawn_error(first, e))?;
    let Some(out) = a.stdout.take() else {
        let _ = a.kill();
        let _ = a.wait();
        return Err(BuildError::Io {
            context: format!("no pipe from `{}`", program_name(first)),
            source: std::io::Error::other("stdout not captured"),
        });
    };
    let b = second
        .env("LC_ALL", "C")
        .stdin(out)
        .stdout(Stdio::null())
        .stderr(e2)
        .status();
    let sa = a.wait().map_err(|e| spawn_error(first, e))?;
    let sb = b.map_err(|e| spawn_error(second, e))?;
    Ok(sa.success() && sb.success())
}

fn open_log(log: &Path) -> Result<File, BuildError> {
    File::options()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| io_err("opening", log, e))
}

/// The last `lines` lines of a log file (at most 64 KiB are read).
pub(crate) fn tail(log: &Path, lines: usize) -> String {
    let Ok(mut f) = File::open(log) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

pub(crate) fn io_err(what: &str, path: &Path, source: std::io::Error) -> BuildError {
    BuildError::Io {
        context: format!("{what} {}", path.display()),
        source,
    }
}

/// `std::fs::create_dir_all` with the path in the error.
pub(crate) fn mkdir(path: &Path) -> Result<(), BuildError> {
    std::fs::create_dir_all(path).map_err(|e| io_err("creating", path, e))
}

/// Removes a folder tree if it exists.
pub(crate) fn rmtree(path: &Path) -> Result<(), BuildError> {
    match std::fs::remove_dir_all(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_err("removing", path, e)),
        _ => Ok(()),
    }
}

/// Copies a tree of regular files and folders (kernel sources have no symlinks in fs/ext4).
pub(crate) fn copy_tree(from: &Path, to: &Path) -> Result<(), BuildError> {
    mkdir(to)?;
    let rd = std::fs::read_dir(from).map_err(|e| io_err("reading", from, e))?;
    for entry in rd {
        let entry = entry.map_err(|e| io_err("reading", from, e))?;
        let src: PathBuf = entry.path();
        let dst = to.join(entry.file_name());
        let ty = entry.file_type().map_err(|e| io_err("reading", &src, e))?;
        if ty.is_dir() {
            copy_tree(&src, &dst)?;
        } else if ty.is_symlink() {
            let target = std::fs::read_link(&src).map_err(|e| io_err("reading", &src, e))?;
            std::os::unix::fs::symlink(&target, &dst).map_err(|e| io_err("creating", &dst, e))?;
        } else {
            std::fs::copy(&src, &dst).map_err(|e| io_err("copying to", &dst, e))?;
        }
    }
    Ok(())
}

//! Finds host programs the way a root shell would: in `PATH`, then in `/usr/sbin` and
//! `/sbin`, which a normal user's `PATH` often lacks (e2fsck, depmod, mkfs.ext4 live there).

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Searched after `PATH`.
pub const SBIN_DIRS: [&str; 2] = ["/usr/sbin", "/sbin"];

/// The executable `name` in `PATH`, `/usr/sbin` or `/sbin` (first match), or None.
pub fn find_host_tool(name: &str) -> Option<PathBuf> {
    find_host_tool_in(name, std::env::var_os("PATH").as_deref())
}

/// [`find_host_tool`] with `search_path` (`PATH` syntax) in place of the process's `PATH`.
pub fn find_host_tool_in(name: &str, search_path: Option<&OsStr>) -> Option<PathBuf> {
    let dirs = search_path.map(std::env::split_paths).into_iter().flatten();
    dirs.chain(SBIN_DIRS.map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

/// A regular file (or a link to one) with an execute bit set.
fn is_executable(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;

    fn write_file(dir: &Path, name: &str, mode: u32) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    const TOOL: &str = "e4race-test-tool";

    #[test]
    fn finds_the_first_executable_along_the_path() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let path = std::env::join_paths([a.path(), b.path()]).unwrap();
        let in_b = write_file(b.path(), TOOL, 0o755);
        assert_eq!(find_host_tool_in(TOOL, Some(&path)), Some(in_b));
        let in_a = write_file(a.path(), TOOL, 0o755);
        assert_eq!(find_host_tool_in(TOOL, Some(&path)), Some(in_a));
    }

    #[test]
    fn skips_files_that_are_not_executable_and_directories() {
        let a = tempfile::tempdir().unwrap();
        write_file(a.path(), TOOL, 0o644);
        std::fs::create_dir(a.path().join("e4race-test-dir")).unwrap();
        let path = OsString::from(a.path());
        assert_eq!(find_host_tool_in(TOOL, Some(&path)), None);
        assert_eq!(find_host_tool_in("e4race-test-dir", Some(&path)), None);
    }

    #[test]
    fn missing_everywhere_is_none() {
        let a = tempfile::tempdir().unwrap();
        let path = OsString::from(a.path());
        assert_eq!(
            find_host_tool_in("e4race-no-such-tool-anywhere", Some(&path)),
            None
        );
        assert_eq!(
            find_host_tool_in("e4race-no-such-tool-anywhere", None),
            None
        );
    }

    #[test]
    fn falls_back_to_the_sbin_directories() {
        // Any program /usr/sbin or /sbin holds must be found with an empty PATH.
        let Some(name) = SBIN_DIRS.iter().find_map(|d| {
            std::fs::read_dir(d).ok()?.flatten().find_map(|e| {
                is_executable(&e.path())
                    .then(|| e.file_name().into_string().ok())
                    .flatten()
            })
        }) else {
            eprintln!("skipped: no executable in /usr/sbin or /sbin");
            return;
        };
        let empty = tempfile::tempdir().unwrap();
        let found = find_host_tool_in(&name, Some(empty.path().as_os_str()));
        let dir = found.as_deref().and_then(Path::parent);
        assert!(
            dir.is_some_and(|d| SBIN_DIRS.iter().any(|s| d == Path::new(s))),
            "{name}: {found:?}"
        );
    }
}

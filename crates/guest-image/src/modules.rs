//! Resolving the guest's kernel modules from `modules.dep`, the way modprobe would, so the
//! same code serves any kernel: what is built in is skipped, dependencies load first.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// The drivers the guest needs and the kernel config option that provides each one.
pub const REQUIRED: &[(&str, &str)] = &[
    ("virtio_pci", "CONFIG_VIRTIO_PCI"),
    ("virtio_blk", "CONFIG_VIRTIO_BLK"),
    ("virtio_console", "CONFIG_VIRTIO_CONSOLE"),
    ("ext4", "CONFIG_EXT4_FS"),
];

/// One module to load, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleFile {
    /// Canonical name (`-` → `_`), e.g. `virtio_blk`.
    pub name: String,
    /// The `.ko`, `.ko.xz` or `.ko.zst` on the host.
    pub path: PathBuf,
    /// True for soft dependencies (`softdep ext4 pre: crc32c`): a failure to load is not fatal.
    pub optional: bool,
}

/// The parsed `modules.*` index files of one kernel.
#[derive(Debug, Default)]
pub struct ModuleIndex {
    root: PathBuf,
    /// name → (relative path, deps as relative paths, in modules.dep order)
    dep: HashMap<String, (String, Vec<String>)>,
    builtin: HashSet<String>,
    softdep_pre: HashMap<String, Vec<String>>,
    alias: HashMap<String, Vec<String>>,
}

/// `kernel/fs/ext4/ext4.ko.xz` → `ext4`.
pub fn module_name(rel: &str) -> String {
    let file = rel.rsplit('/').next().unwrap_or(rel);
    let stem = file.split(".ko").next().unwrap_or(file);
    stem.replace('-', "_")
}

impl ModuleIndex {
    /// Reads `modules.dep` (required), `modules.builtin`, `modules.softdep`, `modules.alias`.
    pub fn load(root: &Path) -> Result<Self> {
        let read = |name: &str| std::fs::read_to_string(root.join(name)).unwrap_or_default();
        let depf = root.join("modules.dep");
        let dep_text =
            std::fs::read_to_string(&depf).map_err(|e| Error::io("reading", &depf, e))?;
        let mut idx = ModuleIndex {
            root: root.to_path_buf(),
            ..Default::default()
        };
        for line in dep_text.lines() {
            let Some((m, deps)) = line.split_once(':') else {
                continue;
            };
            let deps = deps.split_whitespace().map(str::to_string).collect();
            idx.dep.insert(module_name(m), (m.to_string(), deps));
        }
        for line in read("modules.builtin").lines() {
            idx.builtin.insert(module_name(line.trim()));
        }
        // "softdep ext4 pre: crc32c post: ..." (modprobe.d(5))
        for line in read("modules.softdep").lines() {
            let mut it = line.split_whitespace();
            if it.next() != Some("softdep") {
                continue;
            }
            let Some(m) = it.next() else { continue };
            let mut pre = Vec::new();
            let mut in_pre = false;
            for w in it {
                match w {
                    "pre:" => in_pre = true,
                    "post:" => in_pre = false,
                    w if in_pre => pre.push(w.replace('-', "_")),
                    _ => {}
                }
            }
            idx.softdep_pre.insert(m.replace('-', "_"), pre);
        }
        for line in read("modules.alias").lines() {
            let mut it = line.split_whitespace();
            if it.next() != Some("alias") {
                continue;
            }
            if let (Some(a), Some(m)) = (it.next(), it.next()) {
                idx.alias
                    .entry(a.replace('-', "_"))
                    .or_default()
                    .push(m.replace('-', "_"));
            }
        }
        Ok(idx)
    }

    pub fn is_builtin(&self, name: &str) -> bool {
        self.builtin.contains(&name.replace('-', "_"))
    }

    pub fn has_module(&self, name: &str) -> bool {
        self.dep.contains_key(&name.replace('-', "_"))
    }

    /// The load order for `wanted`: dependencies before dependents, built-ins skipped, soft
    /// "pre" dependencies (resolved through aliases) included as optional. A wanted module
    /// that is neither built in nor present is an error naming its config option.
    pub fn resolve(&self, wanted: &[(&str, &str)]) -> Result<Vec<ModuleFile>> {
        let missing: Vec<String> = wanted
            .iter()
            .filter(|(m, _)| !self.is_builtin(m) && !self.has_module(m))
            .map(|(m, cfg)| format!("{cfg} (module {m})"))
            .collect();
        if !missing.is_empty() {
            return Err(Error::MissingConfig {
                options: missing,
                where_: self.root.display().to_string(),
            });
        }
        let mut order = Vec::new();
        let mut seen = HashSet::new();
        for (m, _) in wanted {
            self.visit(m, false, &mut seen, &mut order);
        }
        Ok(order)
    }

    fn visit(
        &self,
        name: &str,
        optional: bool,
        seen: &mut HashSet<String>,
        out: &mut Vec<ModuleFile>,
    ) {
        let name = name.replace('-', "_");
        if self.is_builtin(&name) || !seen.insert(name.clone()) {
            return;
        }
        // Soft pre-dependencies name a module or an alias (`crc32c` → crc32c_generic, ...).
        if let Some(pre) = self.softdep_pre.get(&name) {
            for p in pre {
                let targets: Vec<String> = if self.dep.contains_key(p) || self.is_builtin(p) {
                    vec![p.clone()]
                } else {
                    self.alias.get(p).cloned().unwrap_or_default()
                };
                for t in targets {
                    self.visit(&t, true, seen, out);
                }
            }
        }
        let Some((rel, deps)) = self.dep.get(&name) else {
            return;
        };
        // modules.dep lists dependencies so that loading them back to front works
        // (modprobe's order); each dependency's own list is already closed over.
        for d in deps.iter().rev() {
            let dn = module_name(d);
            if seen.insert(dn.clone()) {
                out.push(ModuleFile {
                    name: dn,
                    path: self.root.join(d),
                    optional,
                });
            }
        }
        out.push(ModuleFile {
            name,
            path: self.root.join(rel),
            optional,
        });
    }
}

/// For reports: which wanted drivers are built in and which are modules.
pub fn describe(idx: &ModuleIndex) -> BTreeMap<String, &'static str> {
    REQUIRED
        .iter()
        .map(|(m, _)| {
            let how = if idx.is_builtin(m) {
                "built-in"
            } else if idx.has_module(m) {
                "module"
            } else {
                "missing"
            };
            (m.to_string(), how)
        })
        .collect()
}

/// Checks a kernel config text for the required options (`=y`, or `=m` when modules come
/// along). Returns the missing ones.
pub fn missing_in_config(config: &str, have_modules: bool) -> Vec<String> {
    REQUIRED
        .iter()
        .filter(|(_, opt)| {
            let y = format!("{opt}=y");
            let m = format!("{opt}=m");
            !config
                .lines()
                .any(|l| l.trim() == y || (have_modules && l.trim() == m))
        })
        .map(|(_, opt)| opt.to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_tree() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        let w = |n: &str, s: &str| std::fs::write(t.path().join(n), s).unwrap();
        w(
            "modules.dep",
            "kernel/fs/ext4/ext4.ko.xz: kernel/fs/jbd2/jbd2.ko.xz kernel/fs/mbcache.ko.xz kernel/lib/crc16.ko.xz\n\
             kernel/fs/jbd2/jbd2.ko.xz:\n\
             kernel/fs/mbcache.ko.xz:\n\
             kernel/lib/crc16.ko.xz:\n\
             kernel/crypto/crc32c_generic.ko.xz:\n\
             kernel/drivers/block/virtio_blk.ko.xz:\n\
             kernel/drivers/char/virtio_console.ko.xz:\n",
        );
        w(
            "modules.builtin",
            "kernel/drivers/virtio/virtio.ko\nkernel/drivers/virtio/virtio_pci.ko\n",
        );
        w("modules.softdep", "softdep ext4 pre: crc32c\n");
        w(
            "modules.alias",
            "alias crypto-crc32c crc32c_generic\nalias crc32c crc32c_generic\n",
        );
        t
    }

    #[test]
    fn resolves_like_modprobe() {
        let t = fake_tree();
        let idx = ModuleIndex::load(t.path()).unwrap();
        let order: Vec<(String, bool)> = idx
            .resolve(REQUIRED)
            .unwrap()
            .into_iter()
            .map(|m| (m.name, m.optional))
            .collect();
        let names: Vec<&str> = order.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "virtio_blk",
                "virtio_console",
                "crc32c_generic",
                "crc16",
                "mbcache",
                "jbd2",
                "ext4"
            ]
        );
        assert!(order[2].1, "softdep is optional");
        assert!(!order[6].1, "ext4 is required");
    }

    #[test]
    fn missing_driver_names_its_config_option() {
        let t = fake_tree();
        std::fs::write(t.path().join("modules.builtin"), "").unwrap();
        let idx = ModuleIndex::load(t.path()).unwrap();
        let e = idx.resolve(REQUIRED).unwrap_err().to_string();
        assert!(e.contains("CONFIG_VIRTIO_PCI"), "{e}");
        assert!(!e.contains("CONFIG_EXT4_FS"), "{e}");
    }

    #[test]
    fn config_check() {
        let cfg = "CONFIG_VIRTIO_PCI=y\nCONFIG_VIRTIO_BLK=m\nCONFIG_EXT4_FS=y\n";
        assert_eq!(
            missing_in_config(cfg, false),
            vec!["CONFIG_VIRTIO_BLK", "CONFIG_VIRTIO_CONSOLE"]
        );
        assert_eq!(missing_in_config(cfg, true), vec!["CONFIG_VIRTIO_CONSOLE"]);
    }
}

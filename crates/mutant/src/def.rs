//! `mutant.toml`: what a mutant is and which patch serves which kernel series.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The metadata file every mutant folder holds.
pub const MUTANT_FILE: &str = "mutant.toml";

/// A mutant as described by its `mutant.toml`, with patch paths resolved against its folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mutant {
    /// Short identifier, equal to the folder name (`--mutant NAME`).
    pub name: String,
    /// What the mutation does and how the bug shows.
    pub description: String,
    /// Subject of the upstream commit whose effect the patches revert.
    pub reverts: String,
    /// Kernel series the mutant exists for ("6.1", "6.12"), in file order.
    pub kernels: Vec<String>,
    /// The scenario that is expected to detect it (e.g. "migrate-mmap").
    pub scenario: String,
    /// Options of `e4race run SCENARIO` the mutant needs to show (e.g. `--crash-states`);
    /// `validate` gives the same options to the stock control.
    pub args: Vec<String>,
    /// Patch per kernel series (absolute or relative to the working directory, already joined
    /// with the mutant's folder).
    pub patches: BTreeMap<String, PathBuf>,
    /// The folder the mutant was loaded from.
    pub dir: PathBuf,
}

/// The file as written; see vm-images/mutants/README.md.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMutant {
    name: String,
    description: String,
    reverts: String,
    kernels: Vec<String>,
    scenario: String,
    #[serde(default)]
    args: Vec<String>,
    patches: BTreeMap<String, PathBuf>,
}

/// Why a mutant could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not a valid mutant.toml: {message} (format: vm-images/mutants/README.md)", path.display())]
    Parse { path: PathBuf, message: String },
    #[error("{}: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },
    #[error(
        "mutant {mutant:?} has no patch for kernel series {series:?}; it exists for {available}. \
         Pick one of those kernels or add a patch for {series} to its mutant.toml"
    )]
    NoPatchForSeries {
        mutant: String,
        series: String,
        available: String,
    },
    #[error("no mutant named {name:?} in {}; available: {available}", root.display())]
    NotFound {
        name: String,
        root: PathBuf,
        available: String,
    },
}

impl Mutant {
    /// Reads `dir/mutant.toml` and checks that every listed kernel has an existing patch.
    pub fn load(dir: &Path) -> Result<Mutant, LoadError> {
        let path = dir.join(MUTANT_FILE);
        let text = std::fs::read_to_string(&path).map_err(|source| LoadError::Read {
            path: path.clone(),
            source,
        })?;
        let mutant = Mutant::parse(&text, dir)?;
        for patch in mutant.patches.values() {
            if !patch.is_file() {
                return Err(LoadError::Invalid {
                    path,
                    reason: format!("patch {} does not exist", patch.display()),
                });
            }
        }
        Ok(mutant)
    }

    /// Parses the text of a `mutant.toml` that lives in `dir`. Checks the contents but not
    /// whether the patch files exist (that is [`Mutant::load`]'s job).
    pub fn parse(text: &str, dir: &Path) -> Result<Mutant, LoadError> {
        let path = dir.join(MUTANT_FILE);
        let raw: RawMutant = toml::from_str(text).map_err(|e| LoadError::Parse {
            path: path.clone(),
            message: e.to_string(),
        })?;
        let invalid = |reason: String| LoadError::Invalid {
            path: path.clone(),
            reason,
        };
        if raw.name.is_empty()
            || !raw
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(invalid(format!(
                "name {:?} must be non-empty and use only letters, digits, '-' and '_'",
                raw.name
            )));
        }
        if raw.kernels.is_empty() {
            return Err(invalid("`kernels` lists no kernel series".into()));
        }
        for series in &raw.kernels {
            if !is_series(series) {
                return Err(invalid(format!(
                    "kernel series {series:?} is not of the form MAJOR.MINOR (e.g. \"6.1\")"
                )));
            }
            if !raw.patches.contains_key(series) {
                return Err(invalid(format!(
                    "kernel series {series} is listed in `kernels` but has no entry in [patches]"
                )));
            }
        }
        if let Some(extra) = raw.patches.keys().find(|k| !raw.kernels.contains(k)) {
            return Err(invalid(format!(
                "[patches] has an entry for {extra:?}, which `kernels` does not list"
            )));
        }
        if raw.scenario.is_empty() {
            return Err(invalid("`scenario` is empty".into()));
        }
        let patches = raw
            .patches
            .into_iter()
            .map(|(series, p)| (series, dir.join(p)))
            .collect();
        Ok(Mutant {
            name: raw.name,
            description: raw.description.trim().to_string(),
            reverts: raw.reverts,
            kernels: raw.kernels,
            scenario: raw.scenario,
            args: raw.args,
            patches,
            dir: dir.to_path_buf(),
        })
    }

    /// The patch for a kernel series ("6.1", "6.12").
    pub fn patch_for(&self, series: &str) -> Result<&Path, LoadError> {
        self.patches
            .get(series)
            .map(PathBuf::as_path)
            .ok_or_else(|| LoadError::NoPatchForSeries {
                mutant: self.name.clone(),
                series: series.to_string(),
                available: self.kernels.join(", "),
            })
    }

    /// Finds the mutant called `name` under `mutants_root`.
    pub fn find(mutants_root: &Path, name: &str) -> Result<Mutant, LoadError> {
        let dir = mutants_root.join(name);
        if name.contains('/') || !dir.join(MUTANT_FILE).is_file() {
            let available = list(mutants_root)
                .map(|ms| {
                    ms.iter()
                        .map(|m| m.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default();
            return Err(LoadError::NotFound {
                name: name.to_string(),
                root: mutants_root.to_path_buf(),
                available: if available.is_empty() {
                    "none".into()
                } else {
                    available
                },
            });
        }
        Mutant::load(&dir)
    }
}

/// Every mutant under `mutants_root` (each subfolder holding a `mutant.toml`), sorted by name.
/// One broken mutant fails the whole listing, so mistakes surface early.
pub fn list(mutants_root: &Path) -> Result<Vec<Mutant>, LoadError> {
    let rd = std::fs::read_dir(mutants_root).map_err(|source| LoadError::Read {
        path: mutants_root.to_path_buf(),
        source,
    })?;
    let mut out = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|source| LoadError::Read {
            path: mutants_root.to_path_buf(),
            source,
        })?;
        let dir = entry.path();
        if dir.join(MUTANT_FILE).is_file() {
            out.push(Mutant::load(&dir)?);
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// "6.1", "6.12": two dot-separated decimal numbers.
pub(crate) fn is_series(s: &str) -> bool {
    let mut parts = s.split('.');
    let ok =
        |p: Option<&str>| p.is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    ok(parts.next()) && ok(parts.next()) && parts.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "migrate-flag-clear"
description = """
Two \
lines."""
reverts = "ext4: Fix race between migration and mmap write"
kernels = ["6.1", "6.12"]
scenario = "migrate-mmap"

[patches]
"6.1" = "6.1.patch"
"6.12" = "6.12.patch"
"#;

    #[test]
    fn parses_a_good_file() {
        let m = Mutant::parse(GOOD, Path::new("/m/migrate-flag-clear")).unwrap();
        assert_eq!(m.name, "migrate-flag-clear");
        assert_eq!(m.description, "Two lines.");
        assert_eq!(m.reverts, "ext4: Fix race between migration and mmap write");
        assert_eq!(m.kernels, ["6.1", "6.12"]);
        assert_eq!(m.scenario, "migrate-mmap");
        assert_eq!(
            m.patch_for("6.12").unwrap(),
            Path::new("/m/migrate-flag-clear/6.12.patch")
        );
        assert!(matches!(
            m.patch_for("5.10"),
            Err(LoadError::NoPatchForSeries { .. })
        ));
    }

    #[test]
    fn rejects_unknown_fields_and_syntax_errors() {
        let text = GOOD.replace("scenario =", "scenrio =");
        let e = Mutant::parse(&text, Path::new("/m/x")).unwrap_err();
        assert!(matches!(e, LoadError::Parse { .. }), "{e}");
        assert!(e.to_string().contains("/m/x/mutant.toml"), "{e}");
        let e = Mutant::parse("name = ", Path::new("/m/x")).unwrap_err();
        assert!(matches!(e, LoadError::Parse { .. }), "{e}");
    }

    #[test]
    fn rejects_inconsistent_kernels_and_patches() {
        let text = GOOD.replace(r#""6.12" = "6.12.patch""#, "");
        let e = Mutant::parse(&text, Path::new("/m/x")).unwrap_err();
        assert!(e.to_string().contains("6.12"), "{e}");
        let text = GOOD.replace(r#"["6.1", "6.12"]"#, r#"["6.1"]"#);
        assert!(Mutant::parse(&text, Path::new("/m/x")).is_err());
        let text = GOOD.replace(r#"["6.1", "6.12"]"#, "[]");
        assert!(Mutant::parse(&text, Path::new("/m/x")).is_err());
        let text = GOOD.replace(r#"name = "migrate-flag-clear""#, r#"name = "a b""#);
        assert!(Mutant::parse(&text, Path::new("/m/x")).is_err());
    }

    #[test]
    fn series_syntax() {
        assert!(is_series("6.1"));
        assert!(is_series("6.12"));
        assert!(!is_series("6"));
        assert!(!is_series("6.1.0"));
        assert!(!is_series("6.x"));
        assert!(!is_series(".1"));
    }

    #[test]
    fn load_checks_patch_files_and_list_sorts() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("migrate-flag-clear");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join(MUTANT_FILE), GOOD).unwrap();
        std::fs::write(dir.join("6.1.patch"), "").unwrap();
        let e = Mutant::load(&dir).unwrap_err();
        assert!(e.to_string().contains("6.12.patch"), "{e}");
        std::fs::write(dir.join("6.12.patch"), "").unwrap();
        let other = root.path().join("another");
        std::fs::create_dir(&other).unwrap();
        std::fs::write(
            other.join(MUTANT_FILE),
            GOOD.replace("migrate-flag-clear", "another"),
        )
        .unwrap();
        std::fs::write(other.join("6.1.patch"), "").unwrap();
        std::fs::write(other.join("6.12.patch"), "").unwrap();
        std::fs::create_dir(root.path().join("not-a-mutant")).unwrap();
        let names: Vec<_> = list(root.path())
            .unwrap()
            .into_iter()
            .map(|m| m.name)
            .collect();
        assert_eq!(names, ["another", "migrate-flag-clear"]);
        assert!(Mutant::find(root.path(), "another").is_ok());
        let e = Mutant::find(root.path(), "nope").unwrap_err();
        assert!(e.to_string().contains("another, migrate-flag-clear"), "{e}");
    }
}

//! A newc cpio archive written in Rust: the format the kernel unpacks into its rootfs
//! (Documentation/driver-api/early-userspace/buffer-format.rst). It stays uncompressed: under
//! TCG, decompressing it would cost more boot time than reading it.

use std::collections::BTreeMap;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{Error, Result};

#[derive(Debug, Clone)]
enum Node {
    Dir,
    File { data: FileData, mode: u32 },
    Symlink(String),
    CharDev { major: u32, minor: u32, mode: u32 },
}

#[derive(Debug, Clone)]
enum FileData {
    Host(PathBuf),
    Bytes(Vec<u8>),
}

/// The archive's contents, keyed by path inside the guest (no leading `/`).
#[derive(Debug, Default, Clone)]
pub struct Initramfs {
    nodes: BTreeMap<String, Node>,
}

fn norm(p: &str) -> String {
    p.trim_start_matches('/').trim_end_matches('/').to_string()
}

impl Initramfs {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a folder and its parents.
    pub fn dir(&mut self, path: &str) {
        let p = norm(path);
        let mut acc = String::new();
        for part in p.split('/').filter(|s| !s.is_empty()) {
            if !acc.is_empty() {
                acc.push('/');
            }
            acc.push_str(part);
            self.nodes.entry(acc.clone()).or_insert(Node::Dir);
        }
    }

    fn parent(&mut self, p: &str) {
        if let Some((d, _)) = p.rsplit_once('/') {
            self.dir(d);
        }
    }

    /// Copies a host file into the archive (read when the archive is written).
    pub fn file_from_host(&mut self, path: &str, host: &Path, mode: u32) {
        let p = norm(path);
        self.parent(&p);
        self.nodes.insert(
            p,
            Node::File {
                data: FileData::Host(host.to_path_buf()),
                mode,
            },
        );
    }

    pub fn file_bytes(&mut self, path: &str, data: Vec<u8>, mode: u32) {
        let p = norm(path);
        self.parent(&p);
        self.nodes.insert(
            p,
            Node::File {
                data: FileData::Bytes(data),
                mode,
            },
        );
    }

    pub fn symlink(&mut self, path: &str, target: &str) {
        let p = norm(path);
        self.parent(&p);
        self.nodes.insert(p, Node::Symlink(target.to_string()));
    }

    /// A character device node, e.g. `/dev/console` (5, 1): the kernel opens it as init's
    /// stdin/stdout/stderr before it runs `/init` (init/main.c, console_on_rootfs()).
    pub fn chardev(&mut self, path: &str, major: u32, minor: u32, mode: u32) {
        let p = norm(path);
        self.parent(&p);
        self.nodes.insert(p, Node::CharDev { major, minor, mode });
    }

    pub fn contains(&self, path: &str) -> bool {
        self.nodes.contains_key(&norm(path))
    }

    /// Adds a dynamically linked host program and every shared library `ldd` lists, at the
    /// same paths as on the host (so the dynamic loader finds them without a cache).
    pub fn program_with_libs(&mut self, guest_path: &str, host: &Path) -> Result<()> {
        self.file_from_host(guest_path, host, 0o755);
        let out = Command::new("ldd")
            .arg(host)
            .output()
            .map_err(|e| Error::ToolMissing {
                tool: "ldd".into(),
                package: "libc-bin".into(),
                detail: e.to_string(),
            })?;
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            // "libext2fs.so.2 => /lib/x86_64-linux-gnu/libext2fs.so.2 (0x...)" or
            // "/lib64/ld-linux-x86-64.so.2 (0x...)"
            let path = match line.split_once("=>") {
                Some((_, rhs)) => rhs.split_whitespace().next(),
                None => line.split_whitespace().next(),
            };
            let Some(path) = path.filter(|p| p.starts_with('/')) else {
                continue;
            };
            let host_lib = Path::new(path);
            let real =
                std::fs::canonicalize(host_lib).map_err(|e| Error::io("resolving", host_lib, e))?;
            self.file_from_host(path, &real, 0o755);
        }
        Ok(())
    }

    /// Writes the archive.
    pub fn write_to(&self, out: &Path) -> Result<u64> {
        let f = std::fs::File::create(out).map_err(|e| Error::io("creating", out, e))?;
        let mut w = BufWriter::new(f);
        let werr = |e: std::io::Error| Error::io("writing", out, e);
        for (ino, (path, node)) in self.nodes.iter().enumerate() {
            let ino = ino as u32 + 1;
            let b = cpio::newc::Builder::new(path).ino(ino).uid(0).gid(0);
            match node {
                Node::Dir => {
                    let fw = b.mode(0o040_755).nlink(2).write(&mut w, 0);
                    fw.finish().map_err(werr)?;
                }
                Node::CharDev { major, minor, mode } => {
                    let fw = b
                        .mode(0o020_000 | (mode & 0o7777))
                        .nlink(1)
                        .rdev_major(*major)
                        .rdev_minor(*minor)
                        .write(&mut w, 0);
                    fw.finish().map_err(werr)?;
                }
                Node::Symlink(target) => {
                    let mut fw = b
                        .mode(0o120_777)
                        .nlink(1)
                        .write(&mut w, target.len() as u32);
                    fw.write_all(target.as_bytes()).map_err(werr)?;
                    fw.finish().map_err(werr)?;
                }
                Node::File { data, mode } => {
                    let bytes = match data {
                        FileData::Bytes(b) => std::borrow::Cow::Borrowed(b),
                        FileData::Host(p) => std::borrow::Cow::Owned(
                            std::fs::read(p).map_err(|e| Error::io("reading", p, e))?,
                        ),
                    };
                    let size = u32::try_from(bytes.len()).map_err(|_| Error::BadKernel {
                        kernel: path.clone(),
                        detail: "a file over 4 GiB cannot go into a newc cpio".into(),
                    })?;
                    let mut fw = b
                        .mode(0o100_000 | (mode & 0o7777))
                        .nlink(1)
                        .write(&mut w, size);
                    fw.write_all(&bytes).map_err(werr)?;
                    fw.finish().map_err(werr)?;
                }
            }
        }
        let mut w = cpio::newc::trailer(w).map_err(werr)?;
        w.flush().map_err(werr)?;
        let len = w.get_ref().metadata().map(|m| m.len()).unwrap_or(0);
        Ok(len)
    }

    /// A stable description of the inputs (paths, modes, host file identities) for caching.
    pub fn fingerprint(&self) -> Result<u64> {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        for (path, node) in &self.nodes {
            h.update(path.as_bytes());
            match node {
                Node::Dir => h.update(b"d"),
                Node::CharDev { major, minor, mode } => {
                    h.update(b"c");
                    h.update(&[*major, *minor, *mode].map(u32::to_le_bytes).concat());
                }
                Node::Symlink(t) => {
                    h.update(b"l");
                    h.update(t.as_bytes());
                }
                Node::File { data, mode } => {
                    h.update(&mode.to_le_bytes());
                    match data {
                        FileData::Bytes(b) => h.update(b),
                        FileData::Host(p) => h.update(&crate::hash_file(p)?.to_le_bytes()),
                    }
                }
            }
        }
        Ok(h.digest())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_reads_back_with_cpio() {
        let t = tempfile::tempdir().unwrap();
        let mut ir = Initramfs::new();
        ir.file_bytes("/etc/e4race/hello", b"hi".to_vec(), 0o644);
        ir.symlink("/bin/sh", "busybox");
        let out = t.path().join("x.cpio");
        ir.write_to(&out).unwrap();
        // Read it back with the crate's reader: entries and their contents.
        let mut r = std::fs::File::open(&out).unwrap();
        let mut names = Vec::new();
        loop {
            let e = cpio::newc::Reader::new(r).unwrap();
            if e.entry().is_trailer() {
                break;
            }
            names.push((e.entry().name().to_string(), e.entry().mode()));
            r = e.finish().unwrap();
        }
        assert!(
            names.contains(&("etc/e4race/hello".into(), 0o100_644)),
            "{names:?}"
        );
        assert!(names.contains(&("etc".into(), 0o040_755)));
        assert!(names.contains(&("bin/sh".into(), 0o120_777)));
    }

    #[test]
    fn fingerprint_follows_content() {
        let mut a = Initramfs::new();
        a.file_bytes("x", b"1".to_vec(), 0o644);
        let mut b = Initramfs::new();
        b.file_bytes("x", b"2".to_vec(), 0o644);
        assert_ne!(a.fingerprint().unwrap(), b.fingerprint().unwrap());
        assert_eq!(a.fingerprint().unwrap(), a.clone().fingerprint().unwrap());
    }
}

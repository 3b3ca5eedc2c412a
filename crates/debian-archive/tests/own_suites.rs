//! Against Debian's real archive (network): the own apt state lists the present-day kernels,
//! and their 7.x package split is visible in the image's dependencies.

use debian_archive::{Archive, Source};

#[test]
fn the_own_suites_serve_7x_kernels_without_touching_the_hosts_apt() {
    let cache = tempfile::tempdir().unwrap();
    let host_lists_before = std::fs::read_dir("/var/lib/apt/lists")
        .map(|rd| rd.count())
        .unwrap_or(0);
    let a = Archive::new(cache.path());
    let said = std::cell::RefCell::new(Vec::new());
    let log = |s: &str| eprintln!("{s}");
    a.refresh_own(&log).unwrap();
    assert!(a.own_lists_present());
    let k = a.resolve_kernel("7.3", &log).unwrap();
    assert_eq!(k.series, "7.3");
    assert!(k.release.starts_with("7.3"), "{}", k.release);
    assert_eq!(k.package.source, Source::Own);
    // 7.x: linux-image-RELEASE is a meta-package over linux-binary/-modules/-base.
    for part in ["linux-binary-", "linux-modules-", "linux-base-"] {
        let want = format!("{part}{}", k.release);
        assert!(k.package.depends.contains(&want), "{:?}", k.package.depends);
    }
    // The host's bookworm has 6.1; `latest` is newer than it.
    let six = a.resolve_kernel("6.1", &log).unwrap();
    assert_eq!(six.package.source, Source::Host);
    let latest = a.resolve_kernel("latest", &log).unwrap();
    assert!(
        latest.sort_key() >= k.sort_key(),
        "{} < {}",
        latest.release,
        k.release
    );
    let series: Vec<String> = a
        .newest_per_series(&log)
        .unwrap()
        .into_iter()
        .map(|k| k.series)
        .collect();
    for s in ["6.1", "6.12", "7.2", "7.3"] {
        assert!(series.iter().any(|x| x == s), "{series:?}");
    }
    let err = a.resolve_kernel("9.9", &log).unwrap_err().to_string();
    assert!(err.contains("7.3") && err.contains("6.1"), "{err}");
    // A second refresh within the day does not fetch again.
    a.refresh_own(&|s: &str| said.borrow_mut().push(s.to_string()))
        .unwrap();
    assert!(said.borrow().is_empty(), "{said:?}");
    let host_lists_after = std::fs::read_dir("/var/lib/apt/lists")
        .map(|rd| rd.count())
        .unwrap_or(0);
    assert_eq!(
        host_lists_before, host_lists_after,
        "the host's apt lists changed"
    );
}

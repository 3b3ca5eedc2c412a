//! Percentiles and ratios (pure functions, unit tested).

/// Nearest-rank percentile of an ascending-sorted slice: the smallest value such that at least
/// `p` percent of the samples are <= it. `None` for an empty slice.
pub fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() || !(0.0..=100.0).contains(&p) {
        return None;
    }
    let n = sorted.len();
    let rank = ((p / 100.0) * n as f64).ceil() as usize;
    let idx = rank.clamp(1, n) - 1;
    sorted.get(idx).copied()
}

/// Median of the present values (mean of the middle two for an even count); `None` if none.
pub fn median(values: impl IntoIterator<Item = Option<f64>>) -> Option<f64> {
    let mut v: Vec<f64> = values
        .into_iter()
        .flatten()
        .filter(|x| x.is_finite())
        .collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// `value / base`, or `None` when either side is missing, not finite, or the base is zero.
pub fn ratio(value: Option<f64>, base: Option<f64>) -> Option<f64> {
    let (v, b) = (value?, base?);
    if !v.is_finite() || !b.is_finite() || b == 0.0 {
        return None;
    }
    Some(v / b)
}

/// Latency summary in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Latency {
    /// Median.
    pub p50_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// Mean.
    pub mean_us: f64,
    /// Maximum.
    pub max_us: f64,
}

impl Latency {
    /// Sorts `ns` in place and summarizes it; `None` when there are no samples.
    pub fn from_ns(ns: &mut [u64]) -> Option<Latency> {
        ns.sort_unstable();
        let us = |v: u64| v as f64 / 1000.0;
        let sum: u128 = ns.iter().map(|&v| u128::from(v)).sum();
        Some(Latency {
            p50_us: us(percentile(ns, 50.0)?),
            p99_us: us(percentile(ns, 99.0)?),
            mean_us: sum as f64 / ns.len() as f64 / 1000.0,
            max_us: us(*ns.last()?),
        })
    }
}

/// Seconds of backend CPU per GiB moved; `None` when nothing was moved.
pub fn cpu_per_gib(cpu_s: f64, bytes: u64) -> Option<f64> {
    (bytes > 0).then(|| cpu_s / (bytes as f64 / f64::from(1u32 << 30)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), Some(50));
        assert_eq!(percentile(&v, 99.0), Some(99));
        assert_eq!(percentile(&v, 100.0), Some(100));
        assert_eq!(percentile(&v, 0.0), Some(1));
        assert_eq!(percentile(&[7], 99.0), Some(7));
        assert_eq!(percentile(&[1, 2, 3, 4], 50.0), Some(2));
        assert_eq!(percentile(&[1, 2, 3, 4], 51.0), Some(3));
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile(&v, 101.0), None);
    }

    #[test]
    fn latency_summary() {
        let mut ns = vec![3000, 1000, 2000, 4000];
        let l = Latency::from_ns(&mut ns).expect("samples");
        assert_eq!(l.p50_us, 2.0);
        assert_eq!(l.p99_us, 4.0);
        assert_eq!(l.mean_us, 2.5);
        assert_eq!(l.max_us, 4.0);
        assert!(Latency::from_ns(&mut []).is_none());
    }

    #[test]
    fn ratios() {
        assert_eq!(ratio(Some(50.0), Some(100.0)), Some(0.5));
        assert_eq!(ratio(Some(50.0), Some(0.0)), None);
        assert_eq!(ratio(None, Some(1.0)), None);
        assert_eq!(ratio(Some(1.0), None), None);
        assert_eq!(ratio(Some(f64::NAN), Some(1.0)), None);
        assert_eq!(cpu_per_gib(2.0, 1 << 30), Some(2.0));
        assert_eq!(cpu_per_gib(1.0, 1 << 29), Some(2.0));
        assert_eq!(cpu_per_gib(1.0, 0), None);
    }
}

//! A set of physical block numbers as a bitmap over the file system.

/// Bitmap of blocks `0..len`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockSet {
    words: Vec<u64>,
    len: u64,
}

impl BlockSet {
    pub fn new(len: u64) -> Self {
        BlockSet {
            words: vec![0; len.div_ceil(64) as usize],
            len,
        }
    }

    /// Size of the universe (the file system's block count).
    pub fn universe(&self) -> u64 {
        self.len
    }

    /// Adds `b`; returns whether it was newly added. Blocks outside the universe are ignored
    /// (and reported as not new).
    pub fn insert(&mut self, b: u64) -> bool {
        if b >= self.len {
            return false;
        }
        let (w, bit) = ((b / 64) as usize, b % 64);
        let was = self.words[w] & (1 << bit) != 0;
        self.words[w] |= 1 << bit;
        !was
    }

    pub fn contains(&self, b: u64) -> bool {
        b < self.len && self.words[(b / 64) as usize] & (1 << (b % 64)) != 0
    }

    pub fn count(&self) -> u64 {
        self.words.iter().map(|w| u64::from(w.count_ones())).sum()
    }

    pub fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        self.words.iter().enumerate().flat_map(|(i, &w)| {
            (0..64u64)
                .filter(move |bit| w & (1 << bit) != 0)
                .map(move |bit| i as u64 * 64 + bit)
        })
    }

    /// Blocks in `self` but not in `other`.
    pub fn difference<'a>(&'a self, other: &'a BlockSet) -> impl Iterator<Item = u64> + 'a {
        self.iter().filter(move |&b| !other.contains(b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_ops() {
        let mut a = BlockSet::new(130);
        assert!(a.insert(0));
        assert!(a.insert(129));
        assert!(!a.insert(129));
        assert!(!a.insert(130));
        assert_eq!(a.count(), 2);
        assert_eq!(a.iter().collect::<Vec<_>>(), vec![0, 129]);
        let mut b = BlockSet::new(130);
        b.insert(0);
        assert_eq!(a.difference(&b).collect::<Vec<_>>(), vec![129]);
        assert!(!a.contains(1000));
    }
}

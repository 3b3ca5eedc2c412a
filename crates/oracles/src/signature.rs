//! Signature text: finding descriptions with the numbers that differ between runs masked.

/// `text` with every run of digits (with hex after `0x`), and every bare hex word of 8 or
/// more digits (a kernel address), replaced by `N`: block, inode and PID numbers must not
/// split one kind of finding into many.
pub(crate) fn without_numbers(text: &str) -> String {
    let word = |w: &str| -> String {
        if w.len() >= 8 && w.chars().all(|c| c.is_ascii_hexdigit()) {
            return "N".into();
        }
        let mut out = String::with_capacity(w.len());
        let mut chars = w.chars().peekable();
        let mut prev = ' ';
        while let Some(c) = chars.next() {
            // A number starts after a non-identifier character: `ext4_foo` and `e4race` keep
            // their digits.
            let starts_number = !(prev.is_ascii_alphanumeric() || prev == '_');
            prev = c;
            if c.is_ascii_digit() && starts_number {
                if c == '0' && chars.peek() == Some(&'x') {
                    chars.next();
                    while chars.peek().is_some_and(|c| c.is_ascii_hexdigit()) {
                        chars.next();
                    }
                }
                while chars.peek().is_some_and(|c| c.is_ascii_digit()) {
                    chars.next();
                }
                out.push('N');
            } else {
                out.push(c);
            }
        }
        out
    };
    text.split_whitespace()
        .map(word)
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_masked() {
        assert_eq!(
            without_numbers("Inode 12 has 0x1f blocks "),
            "Inode N has N blocks"
        );
        assert_eq!(without_numbers("no digits"), "no digits");
        assert_eq!(
            without_numbers("ext4_mb e4race-agent:412"),
            "ext4_mb e4race-agent:N"
        );
    }
}

//! Shell-style wildcard matching, for module path globs in profiles and for modalias patterns.

/// Matches `text` against `pattern` with `*` (any run), `?` (one byte) and `[...]` classes
/// (ranges, `!` or `^` to negate). With `path_mode`, `*` and `?` stop at `/` and `**` crosses it.
pub(crate) fn matches(pattern: &str, text: &str, path_mode: bool) -> bool {
    match_from(pattern.as_bytes(), text.as_bytes(), path_mode)
}

fn match_from(p: &[u8], t: &[u8], path_mode: bool) -> bool {
    match p.first() {
        None => t.is_empty(),
        Some(b'*') => {
            let double = path_mode && p.get(1) == Some(&b'*');
            let rest = if double { &p[2..] } else { &p[1..] };
            // `**/` also matches no directory at all: `kernel/**/x.ko` matches `kernel/x.ko`.
            if double && rest.first() == Some(&b'/') && match_from(&rest[1..], t, path_mode) {
                return true;
            }
            for i in 0..=t.len() {
                if match_from(rest, &t[i..], path_mode) {
                    return true;
                }
                if i < t.len() && path_mode && !double && t[i] == b'/' {
                    return false;
                }
            }
            false
        }
        Some(b'?') => match t.first() {
            Some(&c) if !(path_mode && c == b'/') => match_from(&p[1..], &t[1..], path_mode),
            _ => false,
        },
        Some(b'[') => {
            let Some(&c) = t.first() else { return false };
            match class(&p[1..], c) {
                Some((true, rest)) => match_from(rest, &t[1..], path_mode),
                Some((false, _)) => false,
                // An unterminated `[` is a literal.
                None => c == b'[' && match_from(&p[1..], &t[1..], path_mode),
            }
        }
        Some(&lit) => t.first() == Some(&lit) && match_from(&p[1..], &t[1..], path_mode),
    }
}

/// Matches `c` against the class starting after `[`; returns (matched, pattern after `]`).
fn class(p: &[u8], c: u8) -> Option<(bool, &[u8])> {
    let (negate, mut i) = match p.first() {
        Some(b'!' | b'^') => (true, 1),
        _ => (false, 0),
    };
    let mut matched = false;
    let mut first = true;
    while i < p.len() {
        let lo = p[i];
        if lo == b']' && !first {
            return Some((matched != negate, &p[i + 1..]));
        }
        first = false;
        if p.get(i + 1) == Some(&b'-') && p.get(i + 2).is_some_and(|&hi| hi != b']') {
            let hi = p[i + 2];
            matched |= lo <= c && c <= hi;
            i += 3;
        } else {
            matched |= lo == c;
            i += 1;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn modalias_patterns() {
        let pattern = "pci:v00001AF4d00001001sv*sd*bc*sc*i*";
        assert!(matches(
            pattern,
            "pci:v00001AF4d00001001sv00001AF4sd00000002bc01sc00i00",
            false
        ));
        assert!(!matches(
            pattern,
            "pci:v00001AF4d00001000sv00001AF4sd00000002bc01sc00i00",
            false
        ));
        assert!(matches("crypto-crc32c", "crypto-crc32c", false));
        assert!(matches(
            "usb:v*p*d*dc*dsc*dp*ic08isc06ip50in*",
            "usb:v1234p5678d0100dc00dsc00dp00ic08isc06ip50in00",
            false
        ));
        assert!(matches("a?c", "abc", false));
        assert!(matches("[a-c]x", "bx", false));
        assert!(!matches("[!a-c]x", "bx", false));
        assert!(matches("[!a-c]x", "dx", false));
        assert!(matches("[]]", "]", false));
        assert!(matches("a[", "a[", false));
        assert!(matches("**", "", false));
    }

    #[test]
    fn path_globs() {
        assert!(matches("kernel/fs/*.ko", "kernel/fs/mbcache.ko", true));
        assert!(!matches("kernel/fs/*.ko", "kernel/fs/ext4/ext4.ko", true));
        assert!(matches("kernel/fs/**", "kernel/fs/ext4/ext4.ko", true));
        assert!(matches(
            "kernel/drivers/net/**/*.ko",
            "kernel/drivers/net/ethernet/intel/e1000e/e1000e.ko",
            true
        ));
        assert!(matches(
            "kernel/drivers/net/**/*.ko",
            "kernel/drivers/net/tun.ko",
            true
        ));
        assert!(!matches(
            "kernel/drivers/net/*",
            "kernel/drivers/net/ethernet/x.ko",
            true
        ));
        assert!(!matches("kernel/fs/?", "kernel/fs/a/b", true));
    }
}

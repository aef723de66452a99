//! IAB US Privacy strings (CCPA): `1` + notice + opt-out-of-sale + LSPA, each `Y`, `N` or `-`.

/// A parsed US Privacy string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsPrivacy {
    pub notice: Option<bool>,
    pub opt_out_sale: Option<bool>,
    pub lspa_covered: Option<bool>,
}

fn flag(c: u8) -> Result<Option<bool>, ()> {
    match c {
        b'Y' | b'y' => Ok(Some(true)),
        b'N' | b'n' => Ok(Some(false)),
        b'-' => Ok(None),
        _ => Err(()),
    }
}

/// Parse a version-1 US Privacy string; `None` if malformed.
pub fn parse(s: &str) -> Option<UsPrivacy> {
    let b = s.trim().as_bytes();
    if b.len() != 4 || b[0] != b'1' {
        return None;
    }
    Some(UsPrivacy {
        notice: flag(b[1]).ok()?,
        opt_out_sale: flag(b[2]).ok()?,
        lspa_covered: flag(b[3]).ok()?,
    })
}

/// Did the user opt out of the sale of their data? `false` for malformed strings and for `-`
/// (not applicable); callers that must fail closed treat "not parseable" separately.
pub fn opted_out(s: &str) -> bool {
    parse(s).is_some_and(|u| u.opt_out_sale == Some(true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_examples() {
        assert!(opted_out("1YYN"));
        assert!(opted_out("1NYY"));
        assert!(!opted_out("1YNN"));
        assert!(!opted_out("1---"));
        assert!(!opted_out("1-N-"));
        assert!(opted_out("1-Y-"));
        for bad in ["", "2YYN", "1YY", "1YYNN", "1XYN", "YYYY"] {
            assert!(parse(bad).is_none(), "{bad}");
            assert!(!opted_out(bad));
        }
    }
}

//! IAB Global Privacy Platform strings: the header (type 3, version 1, Fibonacci-coded section ids)
//! and the US sections' sale opt-out (usnat, the state sections, and the embedded US Privacy
//! string). Sections are separated by `~`, each in the order of the header's ids.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

struct Bits {
    bits: Vec<bool>,
    pos: usize,
}

impl Bits {
    fn of(s: &str) -> Option<Bits> {
        let s = s.trim_end_matches('=');
        let bytes = URL_SAFE_NO_PAD.decode(s).ok().or_else(|| {
            // Sections may be cut at a 6-bit boundary that is not a whole byte: pad with 'A's.
            let mut padded = s.to_string();
            while padded.len() % 4 != 0 {
                padded.push('A');
            }
            URL_SAFE_NO_PAD.decode(padded).ok()
        })?;
        Some(Bits {
            bits: bytes
                .iter()
                .flat_map(|b| (0..8).rev().map(move |i| (b >> i) & 1 == 1))
                .collect(),
            pos: 0,
        })
    }
    fn read(&mut self, n: usize) -> Option<u64> {
        if self.pos + n > self.bits.len() {
            return None;
        }
        let v = self.bits[self.pos..self.pos + n]
            .iter()
            .fold(0u64, |a, &b| a * 2 + b as u64);
        self.pos += n;
        Some(v)
    }
    /// A Fibonacci-coded integer (terminated by two consecutive 1 bits).
    fn fibonacci(&mut self) -> Option<u64> {
        let (mut a, mut b) = (1u64, 2u64);
        let mut value = 0u64;
        let mut prev = false;
        loop {
            let bit = self.read(1)? == 1;
            if bit && prev {
                return Some(value);
            }
            if bit {
                value += a;
            }
            prev = bit;
            let next = a.checked_add(b)?;
            a = b;
            b = next;
        }
    }
}

/// Largest section id accepted (the IAB registry uses ids below 30).
const MAX_SECTION_ID: u64 = 1000;

/// The section ids listed in a GPP string's header, or `None` if the header is malformed.
pub fn section_ids(gpp: &str) -> Option<Vec<u16>> {
    let header = gpp.trim().split('~').next()?;
    let mut b = Bits::of(header)?;
    if b.read(6)? != 3 || b.read(6)? != 1 {
        return None;
    }
    let n = b.read(12)?;
    let mut ids = Vec::new();
    let mut last = 0u64;
    for _ in 0..n {
        // Ids are small; a range reaching past MAX_SECTION_ID is malformed (checked before
        // expanding it: a crafted range once asked for 55 TB — found by the fuzz target).
        if b.read(1)? == 1 {
            let start = last.checked_add(b.fibonacci()?)?;
            let end = start.checked_add(b.fibonacci()?)?;
            if end > MAX_SECTION_ID {
                return None;
            }
            ids.extend((start..=end).map(|i| i as u16));
            last = end;
        } else {
            last = last.checked_add(b.fibonacci()?)?;
            if last > MAX_SECTION_ID {
                return None;
            }
            ids.push(last as u16);
        }
    }
    Some(ids)
}

/// Bit offset of the 2-bit SaleOptOut field in the US sections that carry one
/// (0 = not applicable, 1 = opted out, 2 = did not opt out).
fn sale_opt_out_offset(section: u16) -> Option<usize> {
    match section {
        7 => Some(18),               // usnat: version, six notices
        8 | 9 | 10 | 12 => Some(12), // usca, usva, usco, usct: version, three notices
        11 => Some(14),              // usut: version, four notices
        _ => None,
    }
}

/// Does any US section of the string record a sale opt-out? `false` when the string is malformed.
pub fn sale_opted_out(gpp: &str) -> bool {
    let Some(ids) = section_ids(gpp) else {
        return false;
    };
    let sections: Vec<&str> = gpp.trim().split('~').skip(1).collect();
    if sections.len() != ids.len() {
        return false;
    }
    ids.iter().zip(sections).any(|(&id, body)| {
        if id == 6 {
            return super::usp::opted_out(body);
        }
        let Some(offset) = sale_opt_out_offset(id) else {
            return false;
        };
        let core = body.split('.').next().unwrap_or("");
        Bits::of(core).is_some_and(|mut b| b.read(offset).is_some() && b.read(2) == Some(1))
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn huge_ranges_are_malformed_not_allocated() {
        // Found by fuzz/run.sh: the header's range asked for ~5.5e13 ids.
        let crafted = "DBENAXCMAGOAAB1AgAAAAAAABiJgAgBMgFfKQQAQA5AF";
        assert_eq!(super::section_ids(crafted), None);
        assert!(!super::sale_opted_out(crafted));
    }

    use super::*;

    #[test]
    fn header_examples() {
        // The IAB GPP spec's example: TCF EU v2 (2) and US Privacy (6).
        assert_eq!(
            section_ids("DBACNY~CPXxRfAPXxRfAAfKABENB-CgAAAAAAAAAAYgAAAAAAAA~1YNN"),
            Some(vec![2, 6])
        );
        assert_eq!(
            section_ids("DBABMA~CPXxRfAPXxRfAAfKABENB-CgAAAAAAAAAAYgAAAAAAAA"),
            Some(vec![2])
        );
        assert_eq!(section_ids("DBABLA~BVVqAAEABgA.QA"), Some(vec![7]));
        assert_eq!(section_ids("not gpp"), None);
        assert_eq!(section_ids(""), None);
    }

    #[test]
    fn sale_opt_outs() {
        assert!(!sale_opted_out(
            "DBACNY~CPXxRfAPXxRfAAfKABENB-CgAAAAAAAAAAYgAAAAAAAA~1YNN"
        ));
        assert!(sale_opted_out(
            "DBACNY~CPXxRfAPXxRfAAfKABENB-CgAAAAAAAAAAYgAAAAAAAA~1YYN"
        ));
        // usnat with SaleOptOut = 1 (opted out) after six notices of 01.
        assert!(sale_opted_out("DBABLA~BVVVVAAAAAA.QA"));
        // usnat with SaleOptOut = 2 (did not opt out), as in the IAB spec's usnat example.
        assert!(!sale_opted_out("DBABLA~BVVqAAAAAAA.QA"));
        assert!(!sale_opted_out("DBABLA~BVVqAAEABgA.QA"));
        // usco (10) encoded with every notice and the sale opt-out set to 1.
        assert!(sale_opted_out("DBABJg~BVWSSVg.YA"));
        assert_eq!(section_ids("DBABJg~BVWSSVg.YA"), Some(vec![10]));
        assert!(!sale_opted_out("DBABLA~"));
        assert!(!sale_opted_out("garbage"));
    }
}

//! Strict TC string decoder (TCF v2.x): the core segment, vendor consent and legitimate-interest
//! sections (bit field or range encoding), publisher restrictions, and the optional disclosed
//! vendors, allowed vendors and publisher TC segments. Reading past the end of a segment is an
//! error, as are ranges that run backwards or past the declared maximum vendor id. Errors never
//! quote the input.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::{CoreSegment, PubRestriction};

/// Why a TC string is invalid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TcfError {
    Empty,
    NotBase64 { segment: usize },
    Truncated { field: &'static str },
    UnsupportedVersion(u8),
    BadRange { field: &'static str },
    UnknownSegment(u8),
    DuplicateSegment(u8),
    BadLetters { field: &'static str },
}

impl std::fmt::Display for TcfError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TcfError::Empty => write!(f, "empty TC string"),
            TcfError::NotBase64 { segment } => write!(f, "segment {segment} is not base64url"),
            TcfError::Truncated { field } => write!(f, "truncated: the string ends inside {field}"),
            TcfError::UnsupportedVersion(v) => {
                write!(f, "unsupported TC string version {v} (expected 2)")
            }
            TcfError::BadRange { field } => write!(f, "invalid vendor range in {field}"),
            TcfError::UnknownSegment(t) => write!(f, "unknown segment type {t}"),
            TcfError::DuplicateSegment(t) => write!(f, "segment type {t} appears twice"),
            TcfError::BadLetters { field } => write!(f, "{field} is not two letters A–Z"),
        }
    }
}

impl std::error::Error for TcfError {}

/// The publisher TC segment.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PublisherTc {
    pub pub_purposes_consent: Vec<u8>,
    pub pub_purposes_li: Vec<u8>,
    pub custom_consent: Vec<u8>,
    pub custom_li: Vec<u8>,
}

/// A decoded TC string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcString {
    pub core: CoreSegment,
    pub disclosed_vendors: Vec<u16>,
    pub allowed_vendors: Vec<u16>,
    pub publisher_tc: Option<PublisherTc>,
}

impl TcString {
    /// Does the string grant consent for TCF purpose `n` (1-based)?
    pub fn purpose_consent(&self, n: u32) -> bool {
        u8::try_from(n).is_ok_and(|n| self.core.purposes_consent.contains(&n))
    }
}

struct Bits<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Bits<'a> {
    fn read(&mut self, width: usize, field: &'static str) -> Result<u64, TcfError> {
        if self.pos + width > self.bytes.len() * 8 {
            return Err(TcfError::Truncated { field });
        }
        let mut v = 0u64;
        for _ in 0..width {
            let bit = (self.bytes[self.pos / 8] >> (7 - self.pos % 8)) & 1;
            v = (v << 1) | u64::from(bit);
            self.pos += 1;
        }
        Ok(v)
    }
    fn bool(&mut self, field: &'static str) -> Result<bool, TcfError> {
        Ok(self.read(1, field)? == 1)
    }
    fn letters(&mut self, field: &'static str) -> Result<[u8; 2], TcfError> {
        let a = self.read(6, field)? as u8;
        let b = self.read(6, field)? as u8;
        if a > 25 || b > 25 {
            return Err(TcfError::BadLetters { field });
        }
        Ok([b'A' + a, b'A' + b])
    }
    /// A fixed-width bit field of ids 1..=width.
    fn id_bits(&mut self, width: usize, field: &'static str) -> Result<Vec<u8>, TcfError> {
        let mut out = Vec::new();
        for i in 1..=width {
            if self.bool(field)? {
                out.push(i as u8);
            }
        }
        Ok(out)
    }
    fn ranges(&mut self, field: &'static str, max: Option<u16>) -> Result<Vec<u16>, TcfError> {
        let n = self.read(12, field)?;
        let mut out = Vec::new();
        for _ in 0..n {
            let is_range = self.bool(field)?;
            let start = self.read(16, field)? as u16;
            let end = if is_range {
                self.read(16, field)? as u16
            } else {
                start
            };
            if start == 0 || end < start || max.is_some_and(|m| end > m) {
                return Err(TcfError::BadRange { field });
            }
            out.extend(start..=end);
        }
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }
    /// MaxVendorId, then a bit field or ranges.
    fn vendor_section(&mut self, field: &'static str) -> Result<Vec<u16>, TcfError> {
        let max = self.read(16, field)? as u16;
        if self.bool(field)? {
            self.ranges(field, Some(max))
        } else {
            let mut out = Vec::new();
            for v in 1..=max {
                if self.bool(field)? {
                    out.push(v);
                }
            }
            Ok(out)
        }
    }
}

fn segment_bytes(s: &str, index: usize) -> Result<Vec<u8>, TcfError> {
    let s = s.trim_end_matches('=');
    if s.is_empty() {
        return Err(TcfError::Truncated {
            field: "an empty segment",
        });
    }
    URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| TcfError::NotBase64 { segment: index + 1 })
}

/// Decode a TC string strictly.
pub fn decode(tc: &str) -> Result<TcString, TcfError> {
    let tc = tc.trim();
    if tc.is_empty() {
        return Err(TcfError::Empty);
    }
    let mut parts = tc.split('.');
    let core_bytes = segment_bytes(parts.next().expect("split yields one part"), 0)?;
    let mut b = Bits {
        bytes: &core_bytes,
        pos: 0,
    };
    let version = b.read(6, "Version")? as u8;
    if version != 2 {
        return Err(TcfError::UnsupportedVersion(version));
    }
    let created = b.read(36, "Created")?;
    let last_updated = b.read(36, "LastUpdated")?;
    let cmp_id = b.read(12, "CmpId")? as u16;
    let cmp_version = b.read(12, "CmpVersion")? as u16;
    let consent_screen = b.read(6, "ConsentScreen")? as u8;
    let consent_language = b.letters("ConsentLanguage")?;
    let vendor_list_version = b.read(12, "VendorListVersion")? as u16;
    let tcf_policy_version = b.read(6, "TcfPolicyVersion")? as u8;
    let is_service_specific = b.bool("IsServiceSpecific")?;
    let use_non_standard_texts = b.bool("UseNonStandardTexts")?;
    let special_feature_optins = b.id_bits(12, "SpecialFeatureOptIns")?;
    let purposes_consent = b.id_bits(24, "PurposesConsent")?;
    let purposes_li = b.id_bits(24, "PurposesLITransparency")?;
    let purpose_one_treatment = b.bool("PurposeOneTreatment")?;
    let publisher_cc = b.letters("PublisherCC")?;
    let vendor_consent = b.vendor_section("the vendor consent section")?;
    let vendor_li = b.vendor_section("the vendor legitimate interest section")?;
    let n = b.read(12, "NumPubRestrictions")?;
    let mut pub_restrictions = Vec::new();
    for _ in 0..n {
        let purpose = b.read(6, "a publisher restriction")? as u8;
        let restriction_type = b.read(2, "a publisher restriction")? as u8;
        let vendors = b.ranges("a publisher restriction", None)?;
        pub_restrictions.push(PubRestriction {
            purpose,
            restriction_type,
            vendors,
        });
    }
    let core = CoreSegment {
        version,
        created,
        last_updated,
        cmp_id,
        cmp_version,
        consent_screen,
        consent_language,
        vendor_list_version,
        tcf_policy_version,
        is_service_specific,
        use_non_standard_texts,
        special_feature_optins,
        purposes_consent,
        purposes_li,
        purpose_one_treatment,
        publisher_cc,
        vendor_consent,
        vendor_li,
        pub_restrictions,
    };
    let mut out = TcString {
        core,
        disclosed_vendors: Vec::new(),
        allowed_vendors: Vec::new(),
        publisher_tc: None,
    };
    let mut seen = [false; 8];
    for (i, part) in parts.enumerate() {
        let bytes = segment_bytes(part, i + 1)?;
        let mut b = Bits {
            bytes: &bytes,
            pos: 0,
        };
        let kind = b.read(3, "SegmentType")? as u8;
        if std::mem::replace(&mut seen[kind as usize], true) {
            return Err(TcfError::DuplicateSegment(kind));
        }
        match kind {
            1 => out.disclosed_vendors = b.vendor_section("the disclosed vendors segment")?,
            2 => out.allowed_vendors = b.vendor_section("the allowed vendors segment")?,
            3 => {
                let pub_purposes_consent = b.id_bits(24, "PubPurposesConsent")?;
                let pub_purposes_li = b.id_bits(24, "PubPurposesLITransparency")?;
                let n = b.read(6, "NumCustomPurposes")? as usize;
                let custom_consent = b.id_bits(n, "CustomPurposesConsent")?;
                let custom_li = b.id_bits(n, "CustomPurposesLITransparency")?;
                out.publisher_tc = Some(PublisherTc {
                    pub_purposes_consent,
                    pub_purposes_li,
                    custom_consent,
                    custom_li,
                });
            }
            other => return Err(TcfError::UnknownSegment(other)),
        }
    }
    Ok(out)
}

//! The behavioural model: who the users are, how often they come back, what a session does.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanBuilder, Date32Builder, Float64Builder, RecordBatch, StringBuilder,
    TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use chrono::NaiveDate;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::sink::Sink;
use super::{GenConfig, GenStats};
use crate::error::Result;
use crate::privacy::tcf::{CoreSegment, encode_core};

const FIRST: &[&str] = &[
    "anna", "ben", "clara", "david", "emma", "felix", "greta", "hugo", "ines", "jonas", "karla",
    "leon", "mia", "noah", "olivia", "paul", "quinn", "rosa", "sam", "tara", "uwe", "vera", "will",
    "xenia", "yusuf", "zoe", "lucas", "sofia", "mateo", "amelie",
];
const LAST: &[&str] = &[
    "schmidt", "mueller", "smith", "jones", "garcia", "martin", "rossi", "dubois", "novak",
    "kowalski", "jansen", "silva", "tanaka", "nguyen", "brown", "weber", "moreau", "lopez",
    "fischer", "wagner",
];
const DOMAINS: &[&str] = &[
    "example.com",
    "example.org",
    "example.net",
    "mail.example",
    "inbox.example",
];

/// (country, weight, consent regime): T = TCF, U = US Privacy, P = explicit purpose rows.
const COUNTRIES: &[(&str, f64, char)] = &[
    ("US", 0.27, 'U'),
    ("DE", 0.15, 'T'),
    ("GB", 0.11, 'T'),
    ("FR", 0.09, 'T'),
    ("ES", 0.06, 'T'),
    ("IT", 0.06, 'T'),
    ("NL", 0.05, 'T'),
    ("PL", 0.04, 'T'),
    ("SE", 0.03, 'T'),
    ("BR", 0.05, 'P'),
    ("CA", 0.04, 'P'),
    ("AU", 0.03, 'P'),
    ("JP", 0.02, 'P'),
];
const DEVICES: &[(&str, f64)] = &[("mobile", 0.58), ("desktop", 0.34), ("tablet", 0.08)];
const AGE_BANDS: &[(&str, f64)] = &[
    ("18-24", 0.16),
    ("25-34", 0.30),
    ("35-44", 0.24),
    ("45-54", 0.16),
    ("55-64", 0.09),
    ("65+", 0.05),
];
const PLANS: &[(&str, f64)] = &[("free", 0.72), ("plus", 0.20), ("premium", 0.08)];
const CATEGORIES: &[&str] = &[
    "shoes",
    "apparel",
    "electronics",
    "home",
    "beauty",
    "sports",
    "books",
    "toys",
];
const PRODUCTS: u32 = 5000;
/// Mean events per session of the funnel below (measured; used to turn events/user into sessions).
const EVENTS_PER_SESSION: f64 = 4.48;
const ROWS: usize = 65_536;

fn pick<'a, T>(rng: &mut ChaCha8Rng, items: &'a [(T, f64)]) -> &'a T {
    let mut x: f64 = rng.random::<f64>() * items.iter().map(|(_, w)| w).sum::<f64>();
    for (item, w) in items {
        if x < *w {
            return item;
        }
        x -= w;
    }
    &items[items.len() - 1].0
}

fn geometric(rng: &mut ChaCha8Rng, p_continue: f64) -> u32 {
    let mut n = 0;
    while n < 20 && rng.random::<f64>() < p_continue {
        n += 1;
    }
    n
}

fn poisson(rng: &mut ChaCha8Rng, mean: f64) -> u32 {
    if mean < 30.0 {
        let l = (-mean).exp();
        let (mut k, mut p) = (0u32, 1.0);
        loop {
            p *= rng.random::<f64>();
            if p <= l {
                return k;
            }
            k += 1;
        }
    }
    // Normal approximation for large means (Box-Muller).
    let (u1, u2): (f64, f64) = (rng.random::<f64>().max(1e-12), rng.random());
    let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
    (mean + z * mean.sqrt()).round().max(0.0) as u32
}

/// Long-tailed activity weight (Pareto, alpha 1.3, capped), normalised to mean 1 by the caller.
fn activity(rng: &mut ChaCha8Rng) -> f64 {
    let u: f64 = rng.random();
    (1.0 - u).powf(-1.0 / 1.3).min(150.0)
}

fn product_price(p: u32) -> f64 {
    // Deterministic per product: a log-normal-ish spread from 4.99 to ~400.
    let h = (u64::from(p).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) as f64 / (1u64 << 24) as f64;
    let base = (1.6 + 4.4 * h * h).exp();
    // Whole cents, ending in 9 like a shop's prices; cents / 100 is the double nearest x.yz.
    let cents = (base * 10.0).round() as i64 * 10 + 9;
    cents as f64 / 100.0
}

/// The three schemas; with `contacts` the profiles also carry `email` and `phone` (personal
/// columns a load must declare).
pub(super) fn schemas(contacts: bool, latent: bool) -> (SchemaRef, SchemaRef, SchemaRef) {
    let ts = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    let mut profile_fields = vec![
        Field::new("user_id", DataType::Utf8, false),
        Field::new("country", DataType::Utf8, true),
        Field::new("device", DataType::Utf8, true),
        Field::new("signup_date", DataType::Date32, true),
        Field::new("age_band", DataType::Utf8, true),
        Field::new("plan", DataType::Utf8, true),
    ];
    if contacts {
        profile_fields.push(Field::new("email", DataType::Utf8, true));
        profile_fields.push(Field::new("phone", DataType::Utf8, true));
    }
    if latent {
        profile_fields.push(Field::new("crm_list", DataType::Utf8, true));
    }
    let profiles = Schema::new(profile_fields);
    let events = Schema::new(vec![
        Field::new("user_id", DataType::Utf8, false),
        Field::new("event", DataType::Utf8, false),
        Field::new("ts", ts.clone(), false),
        Field::new("session_id", DataType::Utf8, true),
        Field::new("product_id", DataType::Utf8, true),
        Field::new("category", DataType::Utf8, true),
        Field::new("price", DataType::Float64, true),
    ]);
    let consent = Schema::new(vec![
        Field::new("user_id", DataType::Utf8, false),
        Field::new("tc_string", DataType::Utf8, true),
        Field::new("us_privacy", DataType::Utf8, true),
        Field::new("purpose", DataType::Utf8, true),
        Field::new("granted", DataType::Boolean, true),
        Field::new("ts", ts, true),
    ]);
    (Arc::new(profiles), Arc::new(events), Arc::new(consent))
}

struct EventRows {
    user: StringBuilder,
    event: StringBuilder,
    ts: TimestampMicrosecondBuilder,
    session: StringBuilder,
    product: StringBuilder,
    category: StringBuilder,
    price: Float64Builder,
    n: usize,
}

impl EventRows {
    fn new() -> Self {
        EventRows {
            user: StringBuilder::with_capacity(ROWS, ROWS * 32),
            event: StringBuilder::with_capacity(ROWS, ROWS * 10),
            ts: TimestampMicrosecondBuilder::with_capacity(ROWS),
            session: StringBuilder::with_capacity(ROWS, ROWS * 12),
            product: StringBuilder::with_capacity(ROWS, ROWS * 6),
            category: StringBuilder::with_capacity(ROWS, ROWS * 8),
            price: Float64Builder::with_capacity(ROWS),
            n: 0,
        }
    }
    fn push(
        &mut self,
        user: &str,
        event: &str,
        ts: i64,
        session: &str,
        product: Option<u32>,
        with_price: bool,
    ) {
        self.user.append_value(user);
        self.event.append_value(event);
        self.ts.append_value(ts);
        self.session.append_value(session);
        match product {
            Some(p) => {
                self.product.append_value(format!("P{p:05}"));
                self.category
                    .append_value(CATEGORIES[(p as usize * 7 + 3) % CATEGORIES.len()]);
                if with_price {
                    self.price.append_value(product_price(p));
                } else {
                    self.price.append_null();
                }
            }
            None => {
                self.product.append_null();
                self.category.append_null();
                self.price.append_null();
            }
        }
        self.n += 1;
    }
    fn flush(&mut self, schema: &SchemaRef) -> Result<RecordBatch> {
        let cols: Vec<ArrayRef> = vec![
            Arc::new(self.user.finish()),
            Arc::new(self.event.finish()),
            Arc::new(self.ts.finish().with_timezone("UTC")),
            Arc::new(self.session.finish()),
            Arc::new(self.product.finish()),
            Arc::new(self.category.finish()),
            Arc::new(self.price.finish()),
        ];
        self.n = 0;
        Ok(RecordBatch::try_new(schema.clone(), cols)?)
    }
}

const DAY_US: i64 = 86_400_000_000;

/// Hour-of-day weights: quiet nights, a lunch bump, busy evenings.
const HOURS: [f64; 24] = [
    0.6, 0.4, 0.3, 0.2, 0.2, 0.3, 0.6, 1.0, 1.4, 1.6, 1.7, 1.8, 2.0, 1.9, 1.7, 1.7, 1.8, 2.0, 2.4,
    2.8, 3.0, 2.7, 2.0, 1.2,
];

fn tc_string(rng: &mut ChaCha8Rng, country: &str, when_us: i64) -> String {
    let day_decis = (when_us / DAY_US) as u64 * 864_000;
    let choice: f64 = rng.random();
    let (consent, li): (Vec<u8>, Vec<u8>) = if choice < 0.68 {
        ((1..=11).collect(), vec![2, 7, 8, 9, 10, 11])
    } else if choice < 0.86 {
        (Vec::new(), Vec::new())
    } else {
        let mut c = vec![1];
        c.extend((2..=11).filter(|_| rng.random::<f64>() < 0.5));
        (
            c,
            vec![2, 7, 8]
                .into_iter()
                .filter(|_| rng.random::<f64>() < 0.6)
                .collect(),
        )
    };
    let vendors: Vec<u16> = if consent.is_empty() {
        Vec::new()
    } else {
        let mut v: Vec<u16> = (1..=60).filter(|_| rng.random::<f64>() < 0.7).collect();
        v.extend([755, 793]);
        v
    };
    let lang = match country {
        "DE" => *b"DE",
        "FR" => *b"FR",
        "ES" => *b"ES",
        "IT" => *b"IT",
        "NL" => *b"NL",
        "PL" => *b"PL",
        "SE" => *b"SV",
        _ => *b"EN",
    };
    let cc = country.as_bytes();
    let core = CoreSegment {
        version: 2,
        created: day_decis,
        last_updated: day_decis,
        cmp_id: 300,
        cmp_version: 2,
        consent_screen: 1,
        consent_language: lang,
        vendor_list_version: 120,
        tcf_policy_version: 4,
        is_service_specific: true,
        use_non_standard_texts: false,
        special_feature_optins: if consent.len() == 11 {
            vec![1]
        } else {
            Vec::new()
        },
        purposes_consent: consent,
        purposes_li: li,
        purpose_one_treatment: false,
        publisher_cc: [cc[0], cc[1]],
        vendor_li: if vendors.is_empty() {
            Vec::new()
        } else {
            vec![755]
        },
        vendor_consent: vendors,
        pub_restrictions: Vec::new(),
    };
    encode_core(&core)
}

pub(super) fn run(cfg: &GenConfig) -> Result<GenStats> {
    let latent = cfg.latent_group > 0.0;
    let (p_schema, e_schema, c_schema) = schemas(cfg.contacts, latent);
    // The latent group is drawn from a stream of its own, so the other users' data is the same
    // with or without it; members' behaviour draws from the main stream only for members.
    let mut latent_rng = ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x001a_7e47_9b0c);
    let mut latent_members: Vec<String> = Vec::new();
    let mut crm = StringBuilder::new();
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let end_us = cfg
        .end
        .and_hms_opt(0, 0, 0)
        .expect("midnight")
        .and_utc()
        .timestamp_micros();
    let start_us = end_us - i64::from(cfg.days) * DAY_US;
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch");
    let end_day = (cfg.end - epoch).num_days() as i32;

    // Normalise the activity weight to mean 1 with a fixed side stream (same for every seed).
    let mut cal = ChaCha8Rng::seed_from_u64(0x5e6d_b);
    let mean_w: f64 = (0..200_000).map(|_| activity(&mut cal)).sum::<f64>() / 200_000.0;
    let sessions_per_user = cfg.events_per_user / EVENTS_PER_SESSION;

    let mut profiles = Sink::new(&cfg.out, "profiles", cfg.format, p_schema.clone(), None);
    let mut events = Sink::new(
        &cfg.out,
        "events",
        cfg.format,
        e_schema.clone(),
        Some(2_000_000),
    );
    let mut consent = Sink::new(&cfg.out, "consent", cfg.format, c_schema.clone(), None);
    let mut stats = GenStats::default();

    let mut pb = (
        StringBuilder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
        Date32Builder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
    );
    let mut cb = (
        StringBuilder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
        BooleanBuilder::new(),
        TimestampMicrosecondBuilder::new(),
    );
    let mut c_rows = 0usize;
    let mut p_rows = 0usize;
    let mut ev = EventRows::new();
    let mut session_buf = String::new();
    let hours_total: f64 = HOURS.iter().sum();

    for u in 0..cfg.users {
        let first = FIRST[rng.random_range(0..FIRST.len())];
        let last = LAST[rng.random_range(0..LAST.len())];
        let domain = DOMAINS[rng.random_range(0..DOMAINS.len())];
        let raw = format!("{first}.{last}.{u}@{domain}");
        let member = latent && latent_rng.random::<f64>() * 100.0 < cfg.latent_group;
        if latent {
            if member {
                latent_members.push(raw.clone());
            }
            if member && latent_rng.random::<f64>() < 0.1 {
                crm.append_value("vip");
            } else {
                crm.append_null();
            }
        }
        let ci = {
            let mut x = rng.random::<f64>();
            let mut idx = COUNTRIES.len() - 1;
            for (i, c) in COUNTRIES.iter().enumerate() {
                if x < c.1 {
                    idx = i;
                    break;
                }
                x -= c.1;
            }
            idx
        };
        let (country, _, regime) = COUNTRIES[ci];
        let mut device = *pick(&mut rng, DEVICES);
        if member && device != "tablet" && rng.random::<f64>() < 0.35 {
            device = "tablet";
        }
        // Signups over the last three years, more of them recent.
        let age_days = (rng.random::<f64>().powf(1.6) * 1095.0) as i32;
        let signup = end_day - 1 - age_days;
        let mut age_band = *pick(&mut rng, AGE_BANDS);
        if member && rng.random::<f64>() < 0.4 {
            age_band = "25-34";
        }
        let mut plan = *pick(&mut rng, PLANS);
        if member && plan == "free" && rng.random::<f64>() < 0.3 {
            plan = "premium";
        }
        let plan_boost = match plan {
            "premium" => 1.8,
            "plus" => 1.3,
            _ => 1.0,
        };

        pb.0.append_value(&raw);
        pb.1.append_value(country);
        pb.2.append_value(device);
        pb.3.append_value(signup);
        pb.4.append_value(age_band);
        pb.5.append_value(plan);
        if cfg.contacts {
            // The raw id is an address already; the phone is a German mobile number made from
            // the user's number, so no draw of the random stream changes (the other columns are
            // the same with or without contacts).
            pb.6.append_value(&raw);
            pb.7.append_value(format!("0151 {:08}", u % 100_000_000));
        }
        p_rows += 1;

        // Sessions: only on or after the signup day.
        let w = activity(&mut rng) / mean_w * plan_boost / 1.1;
        let n_sessions = poisson(&mut rng, sessions_per_user * w);
        let first_day_us = (i64::from(signup) * DAY_US).max(start_us);
        let span_days = ((end_us - first_day_us) / DAY_US).max(0);
        let mut consent_at = first_day_us + rng.random_range(0..DAY_US);
        if span_days > 0 {
            let mut starts: Vec<i64> = (0..n_sessions)
                .map(|_| {
                    let day = rng.random_range(0..span_days);
                    let mut x = rng.random::<f64>() * hours_total;
                    let mut hour = 23;
                    for (h, hw) in HOURS.iter().enumerate() {
                        if x < *hw {
                            hour = h as i64;
                            break;
                        }
                        x -= hw;
                    }
                    first_day_us
                        + day * DAY_US
                        + hour * 3_600_000_000
                        + rng.random_range(0..3_600_000_000)
                })
                .collect();
            starts.sort_unstable();
            if let Some(&s) = starts.first() {
                consent_at = s - 1_000_000;
            }
            for (k, start) in starts.into_iter().enumerate() {
                session_buf.clear();
                use std::fmt::Write;
                let _ = write!(session_buf, "s{u}-{k}");
                if device == "mobile" && rng.random::<f64>() < 0.7 {
                    ev.push(
                        &raw,
                        "app_open",
                        start.min(end_us - 1),
                        &session_buf,
                        None,
                        false,
                    );
                }
                let mut t = start;
                let mut step = |rng: &mut ChaCha8Rng| {
                    t += rng.random_range(4_000_000..150_000_000);
                    t.min(end_us - 1)
                };
                for _ in 0..=geometric(&mut rng, 0.5) {
                    let ts = step(&mut rng);
                    ev.push(&raw, "page_view", ts, &session_buf, None, false);
                }
                if rng.random::<f64>() < if member { 0.6 } else { 0.3 } {
                    let ts = step(&mut rng);
                    ev.push(&raw, "search", ts, &session_buf, None, false);
                }
                if rng.random::<f64>() < 0.65 {
                    // Zipf-like product popularity.
                    let mut viewed = Vec::new();
                    for _ in 0..=geometric(&mut rng, 0.5) {
                        let mut p =
                            ((rng.random::<f64>().powf(2.5)) * f64::from(PRODUCTS)) as u32 + 1;
                        if member && rng.random::<f64>() < 0.75 {
                            // Members lean toward electronics (2) and sports (5).
                            let want = if rng.random::<f64>() < 0.5 { 2 } else { 5 };
                            while (p as usize * 7 + 3) % CATEGORIES.len() != want {
                                p = p % PRODUCTS + 1;
                            }
                        }
                        let ts = step(&mut rng);
                        ev.push(&raw, "view_item", ts, &session_buf, Some(p), true);
                        viewed.push(p);
                    }
                    if rng.random::<f64>() < 0.28 {
                        let p = viewed[rng.random_range(0..viewed.len())];
                        let ts = step(&mut rng);
                        ev.push(&raw, "add_to_cart", ts, &session_buf, Some(p), true);
                        if rng.random::<f64>() < 0.55 {
                            let ts = step(&mut rng);
                            ev.push(&raw, "begin_checkout", ts, &session_buf, Some(p), false);
                            if rng.random::<f64>() < 0.65 {
                                let ts = step(&mut rng);
                                ev.push(&raw, "purchase", ts, &session_buf, Some(p), true);
                            }
                        }
                    }
                }
                if rng.random::<f64>() < if member { 0.15 } else { 0.015 } {
                    let ts = step(&mut rng);
                    ev.push(&raw, "newsletter_signup", ts, &session_buf, None, false);
                }
                if ev.n >= ROWS {
                    stats.events += ev.n as u64;
                    events.write(&ev.flush(&e_schema)?)?;
                }
            }
        }

        // Consent: one record per user (a sixth of them changed their mind later: two records).
        let records = if rng.random::<f64>() < 0.17 { 2 } else { 1 };
        for r in 0..records {
            let at = if r == 0 {
                consent_at.max(start_us - 30 * DAY_US)
            } else {
                consent_at + rng.random_range(DAY_US..10 * DAY_US)
            };
            cb.0.append_value(&raw);
            match regime {
                'T' => {
                    cb.1.append_value(tc_string(&mut rng, country, at));
                    cb.2.append_null();
                    cb.3.append_null();
                    cb.4.append_null();
                }
                'U' => {
                    cb.1.append_null();
                    cb.2.append_value(if rng.random::<f64>() < 0.12 {
                        "1YYN"
                    } else {
                        "1YNN"
                    });
                    cb.3.append_null();
                    cb.4.append_null();
                }
                _ => {
                    cb.1.append_null();
                    cb.2.append_null();
                    cb.3.append_value(if rng.random::<f64>() < 0.5 {
                        "marketing"
                    } else {
                        "analytics"
                    });
                    cb.4.append_value(rng.random::<f64>() < 0.74);
                }
            }
            cb.5.append_value(at);
            c_rows += 1;
        }

        if p_rows >= ROWS {
            stats.users += p_rows as u64;
            profiles.write(&flush_profiles(&mut pb, &mut crm, &p_schema)?)?;
            p_rows = 0;
        }
        if c_rows >= ROWS {
            stats.consent += c_rows as u64;
            consent.write(&flush_consent(&mut cb, &c_schema)?)?;
            c_rows = 0;
        }
    }
    stats.users += p_rows as u64;
    profiles.write(&flush_profiles(&mut pb, &mut crm, &p_schema)?)?;
    if latent {
        let path = cfg.out.join("latent_group.csv");
        let mut text = String::from("user_id\n");
        for m in &latent_members {
            text.push_str(m);
            text.push('\n');
        }
        std::fs::write(&path, text)?;
        stats.latent_file = Some(path);
        stats.latent_members = latent_members.len() as u64;
    }
    stats.consent += c_rows as u64;
    consent.write(&flush_consent(&mut cb, &c_schema)?)?;
    stats.events += ev.n as u64;
    events.write(&ev.flush(&e_schema)?)?;

    stats.profile_files = profiles.finish()?;
    stats.event_files = events.finish()?;
    stats.consent_files = consent.finish()?;
    stats.bytes = stats
        .profile_files
        .iter()
        .chain(&stats.event_files)
        .chain(&stats.consent_files)
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum();
    Ok(stats)
}

type ProfileBuilders = (
    StringBuilder,
    StringBuilder,
    StringBuilder,
    Date32Builder,
    StringBuilder,
    StringBuilder,
    StringBuilder,
    StringBuilder,
);
type ConsentBuilders = (
    StringBuilder,
    StringBuilder,
    StringBuilder,
    StringBuilder,
    BooleanBuilder,
    TimestampMicrosecondBuilder,
);

fn flush_profiles(
    b: &mut ProfileBuilders,
    crm: &mut StringBuilder,
    schema: &SchemaRef,
) -> Result<RecordBatch> {
    let cols: Vec<ArrayRef> = vec![
        Arc::new(b.0.finish()),
        Arc::new(b.1.finish()),
        Arc::new(b.2.finish()),
        Arc::new(b.3.finish()),
        Arc::new(b.4.finish()),
        Arc::new(b.5.finish()),
    ];
    let mut cols = cols;
    if schema.field_with_name("email").is_ok() {
        cols.push(Arc::new(b.6.finish()));
        cols.push(Arc::new(b.7.finish()));
    }
    if schema.field_with_name("crm_list").is_ok() {
        cols.push(Arc::new(crm.finish()));
    }
    Ok(RecordBatch::try_new(schema.clone(), cols)?)
}

fn flush_consent(b: &mut ConsentBuilders, schema: &SchemaRef) -> Result<RecordBatch> {
    let cols: Vec<ArrayRef> = vec![
        Arc::new(b.0.finish()),
        Arc::new(b.1.finish()),
        Arc::new(b.2.finish()),
        Arc::new(b.3.finish()),
        Arc::new(b.4.finish()),
        Arc::new(b.5.finish().with_timezone("UTC")),
    ];
    Ok(RecordBatch::try_new(schema.clone(), cols)?)
}

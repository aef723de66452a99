//! Benches for the bitmap machinery: the portable codec, fused vs materialised set cardinalities
//! (what `rb_and_cardinality` saves over `rb_cardinality(rb_and(…))`), summing bit-sliced day
//! counts over a window (the index path of `DID … AT LEAST n TIMES`), and building the index counts
//! of a load. Run: `cargo bench --bench bitmaps` (prints the median of 10 runs per case).
//!
//! A small harness of its own rather than criterion: adding criterion to the dev-dependencies
//! changes the feature set of shared dependencies and forces a full rebuild of DataFusion on this
//! 2-core machine (see the notes in the README).

use std::hint::black_box;
use std::time::Instant;

/// Minimal criterion-like runner: median of `samples` timed runs after one warm-up.
struct Criterion {
    samples: usize,
}

impl Criterion {
    fn bench_function<T>(&mut self, name: &str, mut f: impl FnMut(&mut Bencher) -> T) {
        let mut b = Bencher { times: Vec::new() };
        for _ in 0..=self.samples {
            f(&mut b);
        }
        b.times.remove(0);
        b.times.sort_by(|x, y| x.partial_cmp(y).expect("finite"));
        let median = b.times[b.times.len() / 2];
        println!("{name:<45} {:>12.3} ms", median * 1000.0);
    }
}

struct Bencher {
    times: Vec<f64>,
}

impl Bencher {
    fn iter<T>(&mut self, mut f: impl FnMut() -> T) {
        let t = Instant::now();
        black_box(f());
        self.times.push(t.elapsed().as_secs_f64());
    }
}
use roaring::RoaringBitmap;
use segdb::bitmap::bsi::Bsi;
use segdb::bitmap::codec::{from_bytes, to_bytes};

fn lcg(x: &mut u64) -> u64 {
    *x = x
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    *x >> 33
}

fn random_bitmap(n: u32, every: u64, seed: u64) -> RoaringBitmap {
    let mut x = seed;
    (0..n).filter(|_| lcg(&mut x) % every == 0).collect()
}

fn codec(c: &mut Criterion) {
    let bm = random_bitmap(10_000_000, 2, 1);
    let bytes = to_bytes(&bm);
    c.bench_function("codec/serialise 5M of 10M", |b| {
        b.iter(|| to_bytes(black_box(&bm)))
    });
    c.bench_function("codec/deserialise 5M of 10M", |b| {
        b.iter(|| from_bytes(black_box(&bytes)))
    });
}

fn set_ops(c: &mut Criterion) {
    let a = random_bitmap(1_000_000, 3, 2);
    let b = random_bitmap(1_000_000, 5, 3);
    c.bench_function("setop/and then count (materialised)", |bn| {
        bn.iter(|| (black_box(&a) & black_box(&b)).len())
    });
    c.bench_function("setop/and_cardinality (fused)", |bn| {
        bn.iter(|| black_box(&a).intersection_len(black_box(&b)))
    });
    c.bench_function("setop/or_cardinality (fused)", |bn| {
        bn.iter(|| black_box(&a).union_len(black_box(&b)))
    });
}

fn bsi(c: &mut Criterion) {
    // 30 days of per-user purchase counts over 1M users (most users 0, a long tail).
    let mut x = 7;
    let days: Vec<Bsi> = (0..30)
        .map(|_| {
            Bsi::from_counts((0..1_000_000u32).filter_map(|u| {
                if lcg(&mut x) % 40 == 0 {
                    Some((u, 1 + lcg(&mut x) % 3))
                } else {
                    None
                }
            }))
        })
        .collect();
    c.bench_function("bsi/sum 30 days, 1M users", |b| {
        b.iter(|| {
            let mut acc = Bsi::default();
            for d in &days {
                acc.add(d);
            }
            acc
        })
    });
    let mut total = Bsi::default();
    for d in &days {
        total.add(d);
    }
    c.bench_function("bsi/at_least 3", |b| {
        b.iter(|| black_box(&total).at_least(3))
    });
}

fn partial_day(c: &mut Criterion) {
    use segdb::index::timeline::{Timeline, counts_in};
    // A day's timeline of a frequent event, cut at 17:00 (the today piece of a window at as_of
    // now): few repeats (300k occurrences over 1M users) and many (over 100k users).
    for (users, label) in [(1_000_000u64, "few repeats"), (100_000, "many repeats")] {
        let mut x = 5;
        let pairs: Vec<(i64, u32)> = (0..300_000)
            .map(|_| {
                (
                    (lcg(&mut x) % 86_400) as i64 * 1_000_000,
                    (lcg(&mut x) % users) as u32,
                )
            })
            .collect();
        let t = Timeline::from_pairs(pairs);
        let hi = 17 * 3_600 * 1_000_000;
        c.bench_function(&format!("timeline/radix sort, count: {label}"), |b| {
            b.iter(|| counts_in(&[&t], 0, hi))
        });
        // The same with a comparison sort (what it replaced).
        c.bench_function(&format!("timeline/sort_unstable, count: {label}"), |b| {
            b.iter(|| {
                let r = t.range(0, hi);
                let mut u = t.uid[r].to_vec();
                u.sort_unstable();
                let mut out: Vec<(u32, u64)> = Vec::new();
                for v in u {
                    match out.last_mut() {
                        Some((x, c)) if *x == v => *c += 1,
                        _ => out.push((v, 1)),
                    }
                }
                Bsi::from_counts(out)
            })
        });
    }
}

fn index_build(c: &mut Criterion) {
    use arrow::array::{Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
    use std::sync::Arc;
    // One load's worth of events: 1M rows over 8 event names and 30 days.
    let n = 1_000_000usize;
    let mut x = 11;
    let names = [
        "page_view",
        "view_item",
        "add_to_cart",
        "begin_checkout",
        "purchase",
        "search",
        "app_open",
        "newsletter_signup",
    ];
    let uid: Vec<i64> = (0..n).map(|_| (lcg(&mut x) % 200_000) as i64).collect();
    let ev: Vec<&str> = (0..n).map(|_| names[(lcg(&mut x) % 8) as usize]).collect();
    let ts: Vec<i64> = (0..n)
        .map(|_| 1_767_225_600_000_000 + (lcg(&mut x) % (30 * 86_400)) as i64 * 1_000_000)
        .collect();
    let batch = RecordBatch::try_from_iter(vec![
        ("uid", Arc::new(Int64Array::from(uid)) as _),
        ("event", Arc::new(StringArray::from(ev)) as _),
        (
            "ts",
            Arc::new(TimestampMicrosecondArray::from(ts).with_timezone("UTC")) as _,
        ),
    ])
    .unwrap();
    c.bench_function("index/collect + build counts, 1M events", |b| {
        b.iter(|| {
            let mut col = segdb::index::Collector::default();
            col.add_batch(black_box(&batch)).unwrap();
            col.finish()
        })
    });
}

fn main() {
    // `cargo test --all-targets` runs this binary too: only measure under `cargo bench`.
    if !std::env::args().any(|a| a == "--bench") {
        println!("bitmaps bench: run with `cargo bench --bench bitmaps`");
        return;
    }
    let mut c = Criterion { samples: 10 };
    println!("{:<45} {:>15}", "case", "median");
    codec(&mut c);
    set_ops(&mut c);
    bsi(&mut c);
    partial_day(&mut c);
    index_build(&mut c);
}

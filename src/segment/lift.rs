//! Measurement: the lift of a materialised segment with `HOLDOUT n PERCENT` (DESIGN.md §11).
//!
//! The groups are those of one snapshot version (the latest by default): its target and holdout
//! members, read as every snapshot is read — current erasure and consent of the segment's
//! purposes, through the current identity links. A member converted when it did `event` in
//! `[as_of, as_of + days_after days)` of that snapshot. Then, with `t` the target and `h` the
//! holdout group, `n` users, `c` converters and `r = c / n`:
//!
//! - `lift = (r_t − r_h) / r_h` (NULL when `r_h = 0`);
//! - `ci_low`, `ci_high` = `(r_t − r_h) ∓ z·√(r_t(1−r_t)/n_t + r_h(1−r_h)/n_h)`, `z = 1.959963984540054`;
//! - `p_value`: two-sided pooled z-test, `p = (c_t + c_h)/(n_t + n_h)`,
//!   `z = (r_t − r_h) / √(p(1−p)(1/n_t + 1/n_h))`, `p_value = erfc(|z|/√2)` (NULL when the pooled
//!   standard error is 0);
//! - `srm_p`: chi-square test (1 df) that the users split as n % / (100 − n) %,
//!   `χ² = Σ (observed − expected)² / expected`, `srm_p = erfc(√(χ²/2))`.
//!
//! What it does not measure: exposure (whether a target member saw the campaign), and it assumes
//! the holdout was not activated elsewhere.

use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, RecordBatch, StringArray, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::plan_err;
use roaring::RoaringBitmap;

use super::Segments;
use super::context::EvalCtx;
use super::functions::lazy::LazyTable;
use super::functions::{int_arg, string_arg};
use super::sqlgen::ts_text;
use crate::error::{Error, Result};
use crate::index::DAY_US;

/// The z of a two-sided 95 % interval.
pub const Z95: f64 = 1.959963984540054;

/// Days after the snapshot's `as_of` in which a conversion counts, unless given.
pub const DEFAULT_DAYS_AFTER: i64 = 14;

/// The complementary error function, to about 1e-15 absolute: the Maclaurin series of erf below
/// 2, a continued fraction (modified Lentz) from 2 on.
pub fn erfc(x: f64) -> f64 {
    if x.is_nan() {
        return f64::NAN;
    }
    if x < 0.0 {
        return 2.0 - erfc(-x);
    }
    if x < 2.0 {
        // erf(x) = 2/√π Σ (−1)^k x^(2k+1) / (k! (2k+1))
        let mut sum = 0.0;
        let mut term = x; // (−1)^k x^(2k+1) / k!
        let x2 = x * x;
        for k in 0..200 {
            let add = term / (2 * k + 1) as f64;
            sum += add;
            if add.abs() < 1e-17 * sum.abs() {
                break;
            }
            term *= -x2 / (k + 1) as f64;
        }
        return 1.0 - sum * 2.0 / std::f64::consts::PI.sqrt();
    }
    if x > 27.0 {
        return 0.0;
    }
    // erfc(x) = e^(−x²)/√π · 1/(x + (1/2)/(x + 1/(x + (3/2)/(x + 2/(x + …)))))
    let tiny = 1e-300;
    let mut f = x;
    let mut c = x;
    let mut d = 0.0;
    for k in 1..500 {
        let a = k as f64 / 2.0;
        d = x + a * d;
        d = if d.abs() < tiny { tiny } else { d };
        c = x + a / c;
        c = if c.abs() < tiny { tiny } else { c };
        d = 1.0 / d;
        let delta = c * d;
        f *= delta;
        if (delta - 1.0).abs() < 1e-16 {
            break;
        }
    }
    (-x * x).exp() / std::f64::consts::PI.sqrt() / f
}

/// One group's counts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Group {
    pub users: u64,
    pub converters: u64,
}

impl Group {
    pub fn rate(&self) -> Option<f64> {
        (self.users > 0).then(|| self.converters as f64 / self.users as f64)
    }
}

/// The statistics of a target/holdout comparison.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stats {
    pub lift: Option<f64>,
    pub ci_low: Option<f64>,
    pub ci_high: Option<f64>,
    pub p_value: Option<f64>,
    pub srm_p: Option<f64>,
}

/// DESIGN.md §11's formulas.
pub fn stats(t: Group, h: Group, holdout_percent: u8) -> Stats {
    let (rt, rh) = (t.rate(), h.rate());
    let lift = match (rt, rh) {
        (Some(a), Some(b)) if b != 0.0 => Some((a - b) / b),
        _ => None,
    };
    let (ci_low, ci_high) = match (rt, rh) {
        (Some(a), Some(b)) => {
            let se = (a * (1.0 - a) / t.users as f64 + b * (1.0 - b) / h.users as f64).sqrt();
            (Some(a - b - Z95 * se), Some(a - b + Z95 * se))
        }
        _ => (None, None),
    };
    let p_value = match (rt, rh) {
        (Some(a), Some(b)) => {
            let p = (t.converters + h.converters) as f64 / (t.users + h.users) as f64;
            let se = (p * (1.0 - p) * (1.0 / t.users as f64 + 1.0 / h.users as f64)).sqrt();
            (se > 0.0).then(|| erfc(((a - b) / se).abs() / std::f64::consts::SQRT_2))
        }
        _ => None,
    };
    let n = (t.users + h.users) as f64;
    let srm_p = (n > 0.0).then(|| {
        let eh = n * f64::from(holdout_percent) / 100.0;
        let et = n - eh;
        let chi2 = (h.users as f64 - eh).powi(2) / eh + (t.users as f64 - et).powi(2) / et;
        erfc((chi2 / 2.0).sqrt())
    });
    Stats {
        lift,
        ci_low,
        ci_high,
        p_value,
        srm_p,
    }
}

/// Why the interval may not mean much (the normal approximation needs a few converters and
/// non-converters in each group).
pub fn small_sample_note(t: Group, h: Group) -> Option<String> {
    let ok = |g: Group| g.converters >= 5 && g.users - g.converters >= 5;
    (!(ok(t) && ok(h))).then(|| {
        "groups too small for the normal approximation (each needs at least 5 converters and 5 non-converters): the interval and p-value do not mean much".to_string()
    })
}

/// A lift measurement.
#[derive(Debug, Clone)]
pub struct Lift {
    pub segment: String,
    pub event: String,
    pub version: u64,
    pub as_of: i64,
    pub days_after: i64,
    pub holdout_percent: u8,
    pub target: Group,
    pub holdout: Group,
    pub stats: Stats,
    /// The two groups' members (for the report's curves).
    pub target_members: RoaringBitmap,
    pub holdout_members: RoaringBitmap,
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

impl Segments {
    /// The profiles that did `event` in `[from, to)`.
    pub async fn did_between(
        &self,
        ctx: &EvalCtx,
        event: &str,
        from: i64,
        to: i64,
    ) -> Result<RoaringBitmap> {
        let text = format!(
            "DID {} BETWEEN '{}' AND '{}'",
            quote(event),
            ts_text(from),
            ts_text(to)
        );
        let expr = super::parser::parse_expr(&text).map_err(|e| Error::invalid(e.to_string()))?;
        let catalog = self.catalog(ctx).await?;
        let universe = self.universe(ctx).await?;
        let index = self.index_if_used(ctx).await?;
        let canon = self.canonical(ctx).await?;
        let mut ev = super::eval::Evaluator::new(
            ctx.clone(),
            self,
            &catalog,
            &universe,
            index.as_deref(),
            canon,
        );
        ev.eval(&expr, false).await
    }

    /// `segment_lift('s', 'event' [, days_after [, version]])`.
    pub async fn lift(
        &self,
        ctx: &EvalCtx,
        name: &str,
        event: &str,
        days_after: Option<i64>,
        version: Option<u64>,
    ) -> Result<Lift> {
        let days_after = days_after.unwrap_or(DEFAULT_DAYS_AFTER);
        if days_after < 1 {
            return Err(Error::invalid(
                "segment_lift: days_after must be at least 1",
            ));
        }
        let catalog = self.catalog(ctx).await?;
        let def = catalog.require(name)?.clone();
        let Some(pct) = def.holdout_percent.filter(|_| def.materialized) else {
            return Err(Error::invalid(format!(
                "segment '{name}' has no holdout group; lift needs CREATE OR REPLACE MATERIALIZED SEGMENT {name} … HOLDOUT n PERCENT AS …"
            )));
        };
        let known = self.index(ctx).await?.event_names();
        if !known.is_empty() && !known.iter().any(|k| k == event) {
            return Err(Error::invalid(format!(
                "segment_lift: no event named '{event}' has been ingested{}",
                super::eval::suggest(event, known.iter())
            )));
        }
        let h = self.history(ctx).await?;
        let stored = match version {
            Some(v) => h.version(&def.name, &def.generation, v)?.ok_or_else(|| {
                Error::invalid(format!(
                    "segment '{name}' has no version {v} (versions kept: up to {})",
                    h.max_version(&def.name, &def.generation)
                ))
            })?,
            None => self.read_snapshot(ctx, &def).await?.ok_or_else(|| {
                Error::invalid(format!(
                    "segment '{name}' has no snapshot yet (REFRESH SEGMENT {name} first)"
                ))
            })?,
        };
        let stored = self.through_canon(ctx, stored).await?;
        let universe = self.universe(ctx).await?;
        let mut post = &stored.members & &*universe;
        for p in def.purposes()? {
            post &= &*self.consent_holders(ctx, p, ctx.now()).await?;
        }
        let holdout_members = &stored.holdout & &post;
        let target_members = &post - &holdout_members;
        let end = stored
            .as_of
            .saturating_add(days_after.saturating_mul(DAY_US));
        let did = self.did_between(ctx, event, stored.as_of, end).await?;
        let target = Group {
            users: target_members.len(),
            converters: target_members.intersection_len(&did),
        };
        let holdout = Group {
            users: holdout_members.len(),
            converters: holdout_members.intersection_len(&did),
        };
        Ok(Lift {
            segment: def.name.clone(),
            event: event.to_string(),
            version: stored.version,
            as_of: stored.as_of,
            days_after,
            holdout_percent: pct,
            stats: stats(target, holdout, pct),
            target,
            holdout,
            target_members,
            holdout_members,
        })
    }
}

/// The schema of `segment_lift`.
pub fn lift_schema() -> SchemaRef {
    let f = |n: &str| Field::new(n, DataType::Float64, true);
    Arc::new(Schema::new(vec![
        Field::new("grp", DataType::Utf8, false),
        Field::new("users", DataType::UInt64, false),
        Field::new("converters", DataType::UInt64, false),
        f("rate"),
        f("lift"),
        f("ci_low"),
        f("ci_high"),
        f("p_value"),
        f("srm_p"),
        Field::new("note", DataType::Utf8, true),
    ]))
}

/// The two rows of `segment_lift`: target first, then holdout.
pub fn lift_batch(l: &Lift) -> Result<RecordBatch> {
    let s = &l.stats;
    let note = small_sample_note(l.target, l.holdout);
    let two = |a: Option<f64>| Arc::new(Float64Array::from(vec![a, None])) as ArrayRef;
    Ok(RecordBatch::try_new(
        lift_schema(),
        vec![
            Arc::new(StringArray::from(vec!["target", "holdout"])),
            Arc::new(UInt64Array::from(vec![l.target.users, l.holdout.users])),
            Arc::new(UInt64Array::from(vec![
                l.target.converters,
                l.holdout.converters,
            ])),
            Arc::new(Float64Array::from(vec![l.target.rate(), l.holdout.rate()])),
            two(s.lift),
            two(s.ci_low),
            two(s.ci_high),
            two(s.p_value),
            two(s.srm_p),
            Arc::new(StringArray::from(vec![note.clone(), note])),
        ],
    )?)
}

#[derive(Debug)]
pub struct SegmentLift {
    segments: Arc<Segments>,
}

pub fn udtf(segments: &Arc<Segments>) -> Arc<dyn TableFunctionImpl> {
    Arc::new(SegmentLift {
        segments: segments.clone(),
    })
}

impl TableFunctionImpl for SegmentLift {
    fn call_with_args(
        &self,
        args: TableFunctionArgs,
    ) -> datafusion::common::Result<Arc<dyn TableProvider>> {
        let f = "segment_lift";
        let exprs = args.exprs();
        if exprs.len() < 2 || exprs.len() > 4 {
            return plan_err!(
                "{f}('segment', 'event' [, days_after [, version]]) takes two to four arguments"
            );
        }
        let name = string_arg(f, "segment name", &exprs[0])?;
        let event = string_arg(f, "event name", &exprs[1])?;
        let days = exprs
            .get(2)
            .map(|e| int_arg(f, "days_after", e))
            .transpose()?;
        let version = exprs.get(3).map(|e| int_arg(f, "version", e)).transpose()?;
        if let Some(v) = version
            && v < 1
        {
            return plan_err!("{f}: version must be 1 or more");
        }
        Ok(Arc::new(LazyTable {
            schema: lift_schema(),
            segments: self.segments.clone(),
            produce: Arc::new(move |segments, ctx| {
                let (name, event) = (name.clone(), event.clone());
                Box::pin(async move {
                    let l = segments
                        .lift(&ctx, &name, &event, days, version.map(|v| v as u64))
                        .await?;
                    Ok(vec![lift_batch(&l)?])
                })
            }),
        }))
    }
}

/// The two groups' cumulative conversion rate after each day 1..=days_after, for the report.
pub async fn daily_curves(
    segments: &Segments,
    ctx: &EvalCtx,
    l: &Lift,
) -> Result<Vec<(i64, Option<f64>, Option<f64>)>> {
    let mut out = Vec::new();
    for d in 1..=l.days_after {
        let did = segments
            .did_between(ctx, &l.event, l.as_of, l.as_of + d * DAY_US)
            .await?;
        let rate = |m: &RoaringBitmap| {
            (!m.is_empty()).then(|| m.intersection_len(&did) as f64 / m.len() as f64)
        };
        out.push((d, rate(&l.target_members), rate(&l.holdout_members)));
    }
    Ok(out)
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// An SVG chart of the two groups' cumulative conversion over the days after the snapshot.
pub fn svg(l: &Lift, curves: &[(i64, Option<f64>, Option<f64>)]) -> String {
    let (w, h) = (720.0, 480.0);
    // Room above the plot for the title and three lines of figures, and on the right for the
    // interval bar.
    let (left, right, top, bottom) = (70.0, 150.0, 118.0, 60.0);
    let pw = w - left - right;
    let ph = h - top - bottom;
    let max_rate = curves
        .iter()
        .flat_map(|(_, a, b)| [a.unwrap_or(0.0), b.unwrap_or(0.0)])
        .fold(0.0f64, f64::max)
        // The interval bar fits too.
        .max(match (l.holdout.rate(), l.stats.ci_high) {
            (Some(rh), Some(hi)) => (rh + hi).min(1.0),
            _ => 0.0,
        });
    // A round upper bound for the y axis.
    let ymax = if max_rate <= 0.0 {
        0.01
    } else {
        let step = 10f64.powf((max_rate * 1.1).log10().floor());
        ((max_rate * 1.1) / step).ceil() * step
    };
    let days = l.days_after.max(1) as f64;
    let x = |d: f64| left + pw * d / days;
    let y = |r: f64| top + ph * (1.0 - r / ymax);
    let mut s = String::new();
    s.push_str(&format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" font-family=\"sans-serif\" font-size=\"12\">\n"
    ));
    s.push_str("<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n");
    let pct = |v: Option<f64>| v.map_or("n/a".to_string(), |v| format!("{:.2}%", v * 100.0));
    let num = |v: Option<f64>| v.map_or("n/a".to_string(), |v| format!("{v:.4}"));
    // Every line is kept short enough for the width (long names are cut with an ellipsis), and
    // each figure says which test it comes from (DESIGN §11): the interval is of the difference
    // in rates with an unpooled standard error, the p-value is a pooled two-sided z-test, so
    // the two can disagree near the edge.
    let lines = [
        (
            22.0,
            "15\" font-weight=\"bold",
            fit(
                &format!("{}: cumulative '{}' conversion", l.segment, l.event),
                70,
            ),
        ),
        (
            40.0,
            "12",
            fit(
                &format!(
                    "after version {} (as of {}), over {} days",
                    l.version,
                    ts_text(l.as_of),
                    l.days_after
                ),
                100,
            ),
        ),
        (
            58.0,
            "12",
            format!(
                "target {} of {} ({}), holdout {} of {} ({}); lift {}",
                l.target.converters,
                l.target.users,
                pct(l.target.rate()),
                l.holdout.converters,
                l.holdout.users,
                pct(l.holdout.rate()),
                l.stats
                    .lift
                    .map_or("n/a".to_string(), |v| format!("{:+.1}%", v * 100.0)),
            ),
        ),
        (
            76.0,
            "12",
            format!(
                "95% CI of target − holdout rate (unpooled SE): [{}, {}]",
                pct(l.stats.ci_low),
                pct(l.stats.ci_high)
            ),
        ),
        (
            94.0,
            "12",
            format!(
                "p = {} (two-sided pooled z-test); SRM p = {} (chi-square, 1 df)",
                num(l.stats.p_value),
                num(l.stats.srm_p)
            ),
        ),
    ];
    for (yy, size, text) in &lines {
        s.push_str(&format!(
            "<text x=\"12\" y=\"{yy}\" font-size=\"{size}\">{}</text>\n",
            esc(text)
        ));
    }
    if let Some(n) = small_sample_note(l.target, l.holdout) {
        s.push_str(&format!(
            "<text x=\"12\" y=\"110\" fill=\"#b00\">{}</text>\n",
            esc(&fit(&n, 100))
        ));
    }
    // Axes and grid.
    for i in 0..=5 {
        let r = ymax * i as f64 / 5.0;
        let yy = y(r);
        s.push_str(&format!(
            "<line x1=\"{left}\" y1=\"{yy:.1}\" x2=\"{:.1}\" y2=\"{yy:.1}\" stroke=\"#ddd\"/>\n<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{:.2}%</text>\n",
            left + pw,
            left - 6.0,
            yy + 4.0,
            r * 100.0
        ));
    }
    let step = (l.days_after as f64 / 10.0).ceil().max(1.0) as i64;
    let mut d = 0;
    while d <= l.days_after {
        let xx = x(d as f64);
        s.push_str(&format!(
            "<line x1=\"{xx:.1}\" y1=\"{:.1}\" x2=\"{xx:.1}\" y2=\"{:.1}\" stroke=\"#999\"/>\n<text x=\"{xx:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{d}</text>\n",
            top + ph,
            top + ph + 5.0,
            top + ph + 18.0
        ));
        d += step;
    }
    s.push_str(&format!(
        "<line x1=\"{left}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"black\"/>\n<line x1=\"{left}\" y1=\"{top}\" x2=\"{left}\" y2=\"{:.1}\" stroke=\"black\"/>\n",
        top + ph,
        left + pw,
        top + ph,
        top + ph
    ));
    s.push_str(&format!(
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">days after the snapshot</text>\n",
        left + pw / 2.0,
        h - 15.0
    ));
    // The curves, starting at 0 on day 0.
    for (name, colour, pick) in [
        ("target", "#1f77b4", 0usize),
        ("holdout", "#ff7f0e", 1usize),
    ] {
        let mut pts = vec![format!("{:.1},{:.1}", x(0.0), y(0.0))];
        for (d, a, b) in curves {
            let r = if pick == 0 { a } else { b };
            if let Some(r) = r {
                pts.push(format!("{:.1},{:.1}", x(*d as f64), y(*r)));
            }
        }
        s.push_str(&format!(
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2.5\" points=\"{}\"><title>{name}</title></polyline>\n",
            pts.join(" ")
        ));
        let ly = top + 14.0 + 18.0 * pick as f64;
        s.push_str(&format!(
            "<line x1=\"{:.1}\" y1=\"{ly:.1}\" x2=\"{:.1}\" y2=\"{ly:.1}\" stroke=\"{colour}\" stroke-width=\"2.5\"/><text x=\"{:.1}\" y=\"{:.1}\">{name}</text>\n",
            left + 12.0,
            left + 36.0,
            left + 42.0,
            ly + 4.0
        ));
    }
    // The interval, drawn where it applies: the target rates consistent with the 95% interval
    // of the difference, around the holdout's final rate, at the last day.
    if let (Some(rh), Some(lo), Some(hi)) = (l.holdout.rate(), l.stats.ci_low, l.stats.ci_high) {
        let (a, b) = ((rh + lo).clamp(0.0, ymax), (rh + hi).clamp(0.0, ymax));
        let xx = left + pw + 24.0;
        s.push_str(&format!(
            "<g id=\"interval\"><rect x=\"{:.1}\" y=\"{:.1}\" width=\"10\" height=\"{:.1}\" fill=\"#1f77b4\" fill-opacity=\"0.25\" stroke=\"#1f77b4\"/><line x1=\"{:.1}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"#ff7f0e\" stroke-width=\"2\"/><text x=\"{:.1}\" y=\"{:.1}\">95% CI</text><text x=\"{:.1}\" y=\"{:.1}\">(target)</text></g>\n",
            xx - 5.0,
            y(b),
            (y(a) - y(b)).max(1.0),
            xx - 9.0,
            y(rh),
            xx + 9.0,
            y(rh),
            xx + 12.0,
            y((a + b) / 2.0),
            xx + 12.0,
            y((a + b) / 2.0) + 14.0
        ));
    }
    s.push_str("</svg>\n");
    s
}

/// `text` cut to at most `max` characters, with an ellipsis when it was longer.
fn fit(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut t: String = text.chars().take(max.saturating_sub(1)).collect();
    t.push('…');
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every text of the chart fits its width (about 0.6 em a character), each figure names
    /// its test, and the interval is drawn.
    #[test]
    fn the_chart_keeps_its_text_inside_and_draws_the_interval() {
        let target = Group {
            users: 123_456,
            converters: 12_345,
        };
        let holdout = Group {
            users: 13_717,
            converters: 1_234,
        };
        let l = Lift {
            segment: "a_segment_with_a_really_quite_long_name_for_a_campaign_audience".into(),
            event: "purchase_completed_with_a_long_event_name".into(),
            version: 12,
            as_of: 1_767_225_600_000_000,
            days_after: 14,
            holdout_percent: 10,
            target,
            holdout,
            stats: stats(target, holdout, 10),
            target_members: RoaringBitmap::new(),
            holdout_members: RoaringBitmap::new(),
        };
        let curves: Vec<(i64, Option<f64>, Option<f64>)> = (1..=14)
            .map(|d| (d, Some(0.007 * d as f64), Some(0.006 * d as f64)))
            .collect();
        let svg = svg(&l, &curves);
        let width = 720.0;
        for piece in svg.split("<text ").skip(1) {
            let x: f64 = piece
                .split("x=\"")
                .nth(1)
                .and_then(|r| r.split('"').next())
                .and_then(|v| v.parse().ok())
                .unwrap();
            let size = if piece.contains("font-size=\"15\"") {
                15.0
            } else {
                12.0
            };
            let anchor_end = piece.contains("text-anchor=\"end\"");
            let text = piece.split('>').nth(1).unwrap().split('<').next().unwrap();
            let chars = text.chars().count() as f64;
            let right = if anchor_end {
                x
            } else {
                x + chars * size * 0.6
            };
            assert!(right <= width, "clipped at {right:.0} px: {text}");
        }
        for label in [
            "unpooled SE",
            "pooled z-test",
            "chi-square",
            "id=\"interval\"",
            "…",
        ] {
            assert!(svg.contains(label), "{label}");
        }
    }

    #[test]
    fn erfc_matches_known_values() {
        // Values of erfc from its definition (computed to 20 digits elsewhere).
        for (x, want) in [
            (0.0, 1.0),
            (0.5, 0.479_500_122_186_953_5),
            (1.0, 0.157_299_207_050_285_13),
            (1.959963984540054 / std::f64::consts::SQRT_2, 0.05),
            (2.0, 0.004_677_734_981_047_266),
            (3.0, 2.209_049_699_858_544e-5),
            (5.0, 1.537_459_794_428_035e-12),
            (-1.0, 1.842_700_792_949_715),
        ] {
            let got = erfc(x);
            assert!(
                (got - want).abs() <= 1e-14_f64.max(want.abs() * 1e-12),
                "erfc({x}) = {got}, want {want}"
            );
        }
    }

    #[test]
    fn formulas_follow_the_design() {
        let t = Group {
            users: 9000,
            converters: 900,
        };
        let h = Group {
            users: 1000,
            converters: 80,
        };
        let s = stats(t, h, 10);
        assert!((s.lift.unwrap() - 0.25).abs() < 1e-12);
        let se = (0.1 * 0.9 / 9000.0 + 0.08 * 0.92 / 1000.0f64).sqrt();
        assert!((s.ci_low.unwrap() - (0.02 - Z95 * se)).abs() < 1e-12);
        assert!((s.ci_high.unwrap() - (0.02 + Z95 * se)).abs() < 1e-12);
        // An exact 90/10 split has no sample-ratio mismatch.
        assert!((s.srm_p.unwrap() - 1.0).abs() < 1e-12);
        // No holdout conversions: no lift, but an interval and a p-value.
        let s = stats(
            t,
            Group {
                users: 1000,
                converters: 0,
            },
            10,
        );
        assert_eq!(s.lift, None);
        assert!(s.p_value.unwrap() < 1e-6);
        // Nobody converted anywhere: no p-value (the pooled standard error is 0).
        let s = stats(
            Group {
                users: 10,
                converters: 0,
            },
            Group {
                users: 10,
                converters: 0,
            },
            50,
        );
        assert_eq!(s.p_value, None);
        assert!(
            small_sample_note(
                Group {
                    users: 10,
                    converters: 0
                },
                h
            )
            .is_some()
        );
        assert!(small_sample_note(t, h).is_none());
    }
}

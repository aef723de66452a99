//! Exports of materialised segments to files that ad platforms and CDPs pick up.
//!
//! `EXPORT SEGMENT name TO 'url' …` writes one folder `<url>/<segment>-v<version>[-changes-<a>-<b>]/`
//! with `part-00000.<ext>`, … and `_manifest.json` written last, so a reader that sees the
//! manifest sees every file whole; a folder that already holds a manifest is refused. Members are
//! the target group of the version, read now: forgotten users never leave, and the consent of the
//! segment's purposes and the export's own purposes applies (an export without any purpose is
//! refused). A changes export sends who entered and who left since an older version; the older
//! side is what was sent then (its consent as of its refresh), so a consent withdrawal goes out
//! as `exited`. `CREATE EXPORT … ON REFRESH` writes the current version in full when created and
//! then, after each refresh, the changes since its last successful run. Every run is recorded in
//! `_segdb/export_runs` (`export_history('name')`).

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Int64Array, RecordBatch, StringArray, StringBuilder,
    TimestampMicrosecondArray, UInt64Array,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::logical_expr::{JoinType, col, lit};
use object_store::ObjectStoreExt;
use roaring::RoaringBitmap;

use crate::error::{Error, Result};
use crate::result::QueryResult;
use crate::segment::ast::{ExportFormat, ExportSpec, Preset, Statement};
use crate::segment::catalog::SegmentDef;
use crate::segment::{EvalCtx, Segments};
use crate::storage::commit::{self, Committed};
use crate::storage::settings::{PiiRule, Settings};
use crate::storage::{Table, Target, base_schema};

/// Rows per file unless `MAX ROWS PER FILE` says otherwise.
const DEFAULT_ROWS_PER_FILE: u64 = 1_000_000;

/// Who may write where: `None` lets the caller write anywhere (admins, the CLI); otherwise the
/// URL must lie under one of the prefixes (`[export] allowed_urls`).
pub type Allowed<'a> = Option<&'a [String]>;

/// What one run wrote.
#[derive(Debug, Clone, Default)]
pub struct Written {
    pub path: String,
    pub files: u64,
    pub rows: u64,
    pub bytes: u64,
    pub version: u64,
    pub from_version: Option<u64>,
    pub skipped: u64,
    pub warning: Option<String>,
    /// A standing run with no changes: nothing was written (recorded as `skipped`).
    pub unchanged: bool,
}

fn minimum(p: Preset) -> u64 {
    match p {
        Preset::Google | Preset::Meta => 100,
        Preset::Tiktok => 1000,
    }
}

/// Check an export before anything is written: the segment is materialised, a purpose applies,
/// the target is allowed and reachable, a preset has its match keys. Returns the definition and
/// every purpose.
async fn check(
    segments: &Segments,
    ctx: &EvalCtx,
    spec: &ExportSpec,
    allowed: Allowed<'_>,
) -> Result<(SegmentDef, Vec<String>, Target)> {
    if spec.format.is_some_and(ExportFormat::is_http) {
        return Err(Error::invalid(
            "webhook and segment exports are standing: CREATE EXPORT name FOR SEGMENT … FORMAT webhook … ON REFRESH",
        ));
    }
    let (def, purposes) = check_common(segments, ctx, spec).await?;
    let target = Target::open(&spec.url, allowed, segments.db().location().options())?;
    // Reachable? Listing the target answers it before anything is written.
    {
        use futures::StreamExt;
        let mut l = target.store.list(Some(&target.prefix));
        if let Some(Err(e)) = l.next().await {
            return Err(Error::invalid(format!(
                "cannot reach {}: {}",
                target.url,
                e.to_string().lines().next().unwrap_or("")
            )));
        }
    }
    if let Some(p) = spec.preset {
        keys(segments, ctx, p).await?;
    }
    Ok((def, purposes, target))
}

/// Every purpose an export applies: the segment's and those it names.
pub(super) fn purposes_of(def: &SegmentDef, spec: &ExportSpec) -> Result<Vec<String>> {
    let mut purposes: Vec<String> = def.purposes()?.to_vec();
    for p in &spec.purposes {
        if !purposes.contains(p) {
            purposes.push(p.clone());
        }
    }
    Ok(purposes)
}

/// The checks every export passes: a materialised segment, a purpose, columns that name no one.
async fn check_common(
    segments: &Segments,
    ctx: &EvalCtx,
    spec: &ExportSpec,
) -> Result<(SegmentDef, Vec<String>)> {
    let catalog = segments.catalog(ctx).await?;
    let def = catalog
        .get(&spec.segment)
        .ok_or_else(|| {
            Error::NotFound(format!(
                "segment '{}' does not exist{}",
                spec.segment,
                crate::segment::eval::suggest(&spec.segment, catalog.segments.keys())
            ))
        })?
        .clone();
    if !def.materialized {
        return Err(Error::invalid(format!(
            "only materialised segments are exported (an export names a version); CREATE MATERIALIZED SEGMENT {} … first",
            def.name
        )));
    }
    let mut purposes: Vec<String> = def.purposes()?.to_vec();
    for p in &spec.purposes {
        crate::segment::consent::purpose_query(p, ctx.as_of).map_err(Error::invalid)?;
        if !purposes.contains(p) {
            purposes.push(p.clone());
        }
    }
    if purposes.is_empty() {
        return Err(Error::invalid(format!(
            "an export needs a purpose its members consented to: segment '{}' has none, so name one (EXPORT SEGMENT … FOR PURPOSE 'ads')",
            def.name
        )));
    }
    if spec.preset.is_some() && !spec.columns.is_empty() {
        return Err(Error::invalid(
            "a PRESET writes the platform's own columns; leave out COLUMNS (…)",
        ));
    }
    for (e, _) in &spec.columns {
        if let Some(what) = crate::segment::ddl::individual_id(&e.text) {
            return Err(Error::invalid(format!(
                "export columns may not name an individual user ({what})"
            )));
        }
    }
    Ok((def, purposes))
}

/// The stored match-key columns a preset writes: (output name, stored column).
async fn keys(
    segments: &Segments,
    ctx: &EvalCtx,
    p: Preset,
) -> Result<Vec<(&'static str, String)>> {
    let rules = Settings::read(segments.db()).await?.pii_of("profiles");
    let email = rules
        .iter()
        .find(|(_, r)| **r == PiiRule::Email)
        .map(|(c, _)| format!("{c}_sha256"));
    let phone = rules
        .iter()
        .find(|(_, r)| matches!(r, PiiRule::Phone(_)))
        .map(|(c, _)| {
            if p == Preset::Google {
                format!("{c}_e164_sha256")
            } else {
                format!("{c}_sha256")
            }
        });
    if email.is_none() && phone.is_none() {
        return Err(Error::invalid(format!(
            "PRESET {} needs a declared match key: ALTER TABLE profiles SET PII (email AS EMAIL, phone AS PHONE 'DE') and load profiles with them",
            p.name()
        )));
    }
    let schema = ctx.snap.schema(Table::Profiles)?;
    let (e_name, p_name) = match p {
        Preset::Google => ("Email", "Phone"),
        Preset::Meta => ("email", "phone"),
        Preset::Tiktok => ("Email_SHA256", "Phone_SHA256"),
    };
    // Google matches e-mails by its own rule (Gmail dots removed): the `_google_sha256` key,
    // where profiles were loaded with it.
    let email = email.map(|c| {
        let g = c.replace("_sha256", "_google_sha256");
        if p == Preset::Google && schema.field_with_name(&g).is_ok() {
            g
        } else {
            c
        }
    });
    let mut out = Vec::new();
    for (name, c) in [(e_name, email), (p_name, phone)] {
        if let Some(c) = c {
            if schema.field_with_name(&c).is_err() {
                return Err(Error::invalid(format!(
                    "PRESET {}: no profile has been loaded with the match key column {c} yet",
                    p.name()
                )));
            }
            out.push((name, c));
        }
    }
    // The further keys a platform takes, where declared and loaded (the first column of each).
    let extra: &[(&'static str, fn(&PiiRule) -> bool)] = match p {
        Preset::Google => &[
            ("First Name", |r| *r == PiiRule::FirstName),
            ("Last Name", |r| *r == PiiRule::LastName),
            ("Zip", |r| matches!(r, PiiRule::Zip(_))),
        ],
        Preset::Meta => &[
            ("fn", |r| *r == PiiRule::FirstName),
            ("ln", |r| *r == PiiRule::LastName),
            ("zip", |r| matches!(r, PiiRule::Zip(_))),
            ("madid", |r| *r == PiiRule::Maid),
        ],
        Preset::Tiktok => &[],
    };
    for (name, is) in extra {
        if let Some((c, _)) = rules.iter().find(|(_, r)| is(*r)) {
            let c = format!("{c}_sha256");
            if schema.field_with_name(&c).is_ok() {
                out.push((name, c));
            }
        }
    }
    Ok(out)
}

/// A version's target members as sent: pre-purpose members now in the universe, holding every
/// purpose at `consent_at`, outside the holdout. Version 0 is empty.
pub(super) async fn sent(
    segments: &Segments,
    ctx: &EvalCtx,
    def: &SegmentDef,
    purposes: &[String],
    version: u64,
    consent_at: Option<i64>,
) -> Result<(RoaringBitmap, i64)> {
    if version == 0 {
        return Ok((RoaringBitmap::new(), 0));
    }
    let h = segments.history(ctx).await?;
    let s = h
        .version(&def.name, &def.generation, version)?
        .ok_or_else(|| {
            Error::invalid(format!(
                "segment '{}' has no version {version} in its history (kept: the last {} versions; VACUUM removes older ones)",
                def.name, def.keep_versions
            ))
        })?;
    let s = segments.through_canon(ctx, s).await?;
    let universe = segments.universe(ctx).await?;
    let mut m = match consent_at {
        // Now: the version's members with current consent.
        Some(at) => {
            let mut m = &(&s.members & &*universe) - &s.holdout;
            for p in purposes {
                m &= &*segments.consent_holders(ctx, p, at).await?;
            }
            m
        }
        // As sent then: the target group stored at the refresh (consent as it was then).
        None => &s.target & &*universe,
    };
    if consent_at.is_none() {
        let own: Vec<&String> = purposes
            .iter()
            .filter(|p| def.purposes().is_ok_and(|d| !d.contains(p)))
            .collect();
        for p in own {
            m &= &*segments.consent_holders(ctx, p, s.as_of).await?;
        }
    }
    Ok((m, s.as_of))
}

/// The rows of a run: uid, user_id, and (for changes) change.
pub(super) async fn member_rows(
    segments: &Segments,
    ctx: &EvalCtx,
    sets: &[(&RoaringBitmap, Option<&str>)],
) -> Result<RecordBatch> {
    let ids = segments.identity(ctx).await?;
    let changes = sets.iter().any(|(_, c)| c.is_some());
    let (mut uid, mut user, mut change) = (Vec::new(), StringBuilder::new(), StringBuilder::new());
    for (set, c) in sets {
        for u in set.iter() {
            let Some(p) = ids.pseudonym(u) else { continue };
            uid.push(i64::from(u));
            user.append_value(p);
            change.append_option(*c);
        }
    }
    let mut fields = vec![
        Field::new("uid", DataType::Int64, false),
        Field::new("user_id", DataType::Utf8, false),
    ];
    let mut cols: Vec<ArrayRef> = vec![Arc::new(Int64Array::from(uid)), Arc::new(user.finish())];
    if changes {
        fields.push(Field::new("change", DataType::Utf8, false));
        cols.push(Arc::new(change.finish()));
    }
    Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), cols)?)
}

/// The output columns for `members`: user_id, COLUMNS over profile columns, or a preset's keys.
/// Returns the batches and how many members were left out for lack of a match key.
async fn shape(
    segments: &Segments,
    ctx: &EvalCtx,
    spec: &ExportSpec,
    members: RecordBatch,
) -> Result<(Vec<RecordBatch>, u64)> {
    shape_with(segments, ctx, spec, members, false).await
}

async fn shape_with(
    segments: &Segments,
    ctx: &EvalCtx,
    spec: &ExportSpec,
    members: RecordBatch,
    with_user_id: bool,
) -> Result<(Vec<RecordBatch>, u64)> {
    let changes = members.schema().field_with_name("change").is_ok();
    if spec.columns.is_empty() && spec.preset.is_none() {
        let mut cols = vec!["user_id"];
        if changes {
            cols.push("change");
        }
        let idx: Vec<usize> = cols
            .iter()
            .map(|c| members.schema().index_of(c))
            .collect::<std::result::Result<_, _>>()?;
        return Ok((vec![members.project(&idx)?], 0));
    }
    let df = &ctx.df;
    let m = df.read_batch(members.clone())?.alias("m")?;
    let profiles = df.table("profiles").await?.alias("p")?;
    let pschema = profiles.schema().clone();
    let joined = m.join(profiles, JoinType::Left, &["uid"], &["uid"], None)?;
    let mut base = vec![col("m.uid").alias("uid"), col("m.user_id").alias("user_id")];
    if changes {
        base.push(col("m.change").alias("change"));
    }
    for f in pschema.fields() {
        if !matches!(f.name().as_str(), "uid" | "user_id") {
            base.push(
                datafusion::logical_expr::Expr::Column(datafusion::common::Column::new(
                    Some("p"),
                    f.name(),
                ))
                .alias(f.name()),
            );
        }
    }
    let wide = joined.select(base)?;
    let mut out = Vec::new();
    let mut skipped = 0;
    let shaped = if let Some(p) = spec.preset {
        let keys = keys(segments, ctx, p).await?;
        let mut sel = Vec::new();
        let mut any = lit(false);
        for (name, c) in &keys {
            sel.push(col(c.as_str()).alias(*name));
            any = any.or(col(c.as_str()).is_not_null());
        }
        if changes {
            sel.push(col("change"));
        }
        let total = members.num_rows() as u64;
        let kept = wide.filter(any)?.select(sel)?;
        let schema: SchemaRef = Arc::new(kept.schema().as_arrow().clone());
        let mut batches = kept.collect().await?;
        if batches.is_empty() {
            // An empty run still has the platform's header.
            batches.push(RecordBatch::new_empty(schema));
        }
        let n: u64 = batches.iter().map(|b| b.num_rows() as u64).sum();
        skipped = total - n;
        out.extend(batches);
        return Ok((out, skipped));
    } else {
        let schema = wide.schema().clone();
        let mut sel = Vec::new();
        if with_user_id {
            sel.push(col("user_id"));
        }
        for (e, alias) in &spec.columns {
            crate::limits::check_sql_text(&e.text)?;
            let x = df.parse_sql_expr(&e.text, &schema).map_err(|err| {
                Error::invalid(format!(
                    "export column {alias} at {}: {}",
                    e.pos,
                    err.to_string().lines().next().unwrap_or("")
                ))
            })?;
            sel.push(x.alias(alias.as_str()));
        }
        if changes {
            sel.push(col("change"));
        }
        wide.select(sel)?
    };
    let schema: SchemaRef = Arc::new(shaped.schema().as_arrow().clone());
    out.extend(shaped.collect().await?);
    if out.is_empty() {
        out.push(RecordBatch::new_empty(schema));
    }
    Ok((out, skipped))
}

/// The rows of a webhook or segment delivery: `user_id`, the `COLUMNS`, then `change` (a
/// user's row carries its own id and change, whatever order the join returns).
pub(super) async fn shape_for_delivery(
    segments: &Segments,
    ctx: &EvalCtx,
    spec: &ExportSpec,
    members: RecordBatch,
) -> Result<(Vec<RecordBatch>, u64)> {
    shape_with(segments, ctx, spec, members, true).await
}

fn encode(batches: &[RecordBatch], schema: &SchemaRef, format: ExportFormat) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    match format {
        ExportFormat::Parquet => {
            let props = parquet::file::properties::WriterProperties::builder()
                .set_compression(parquet::basic::Compression::SNAPPY)
                .build();
            let mut w =
                parquet::arrow::ArrowWriter::try_new(&mut buf, schema.clone(), Some(props))?;
            for b in batches {
                w.write(b)?;
            }
            w.close()?;
        }
        ExportFormat::Csv => {
            let mut w = arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(&mut buf);
            for b in batches {
                w.write(b)?;
            }
            if batches.is_empty() {
                w.write(&RecordBatch::new_empty(schema.clone()))?;
            }
        }
        ExportFormat::Webhook | ExportFormat::Segment => {
            return Err(Error::invalid(
                "webhook and segment exports are delivered over HTTP, not written as files",
            ));
        }
    }
    Ok(buf)
}

/// Write one run; `label` is the folder name.
#[allow(clippy::too_many_arguments)]
async fn write(
    target: &Target,
    folder: &str,
    spec: &ExportSpec,
    def: &SegmentDef,
    purposes: &[String],
    batches: Vec<RecordBatch>,
    version: u64,
    from: Option<u64>,
) -> Result<Written> {
    let dir = target.child(folder);
    let manifest = object_store::path::Path::from(format!("{dir}/_manifest.json"));
    match target.store.head(&manifest).await {
        Ok(_) => {
            return Err(Error::invalid(format!(
                "{}/{folder} already holds an export (its _manifest.json); export to another URL or remove that folder",
                target.url
            )));
        }
        Err(object_store::Error::NotFound { .. }) => {}
        Err(e) => {
            return Err(Error::invalid(format!(
                "cannot reach {}: {}",
                target.url,
                e.to_string().lines().next().unwrap_or("")
            )));
        }
    }
    let format = spec.format.unwrap_or(ExportFormat::Parquet);
    let per_file = spec.max_rows_per_file.unwrap_or(DEFAULT_ROWS_PER_FILE) as usize;
    let schema = match batches.first() {
        Some(b) => b.schema(),
        None => Arc::new(Schema::new(vec![Field::new(
            "user_id",
            DataType::Utf8,
            false,
        )])),
    };
    // Cut the rows into files of at most `per_file` rows.
    let mut files: Vec<Vec<RecordBatch>> = vec![Vec::new()];
    let mut in_file = 0usize;
    for b in batches {
        let mut off = 0;
        while off < b.num_rows() {
            if in_file == per_file {
                files.push(Vec::new());
                in_file = 0;
            }
            let n = (per_file - in_file).min(b.num_rows() - off);
            files.last_mut().expect("one file").push(b.slice(off, n));
            in_file += n;
            off += n;
        }
    }
    let mut written = Written {
        path: format!("{}/{folder}", target.url),
        version,
        from_version: from,
        ..Default::default()
    };
    let mut listing = Vec::new();
    for (i, f) in files.iter().enumerate() {
        let name = format!("part-{i:05}.{}", format.ext());
        let bytes = encode(f, &schema, format)?;
        let rows: usize = f.iter().map(|b| b.num_rows()).sum();
        written.rows += rows as u64;
        written.bytes += bytes.len() as u64;
        written.files += 1;
        listing.push(serde_json::json!({"name": name, "rows": rows, "bytes": bytes.len()}));
        target
            .store
            .put(
                &object_store::path::Path::from(format!("{dir}/{name}")),
                object_store::PutPayload::from(bytes),
            )
            .await
            .map_err(|e| {
                Error::storage(format!("cannot write {}/{folder}/{name}: {e}", target.url))
            })?;
    }
    let body = serde_json::json!({
        "segment": def.name,
        "version": version,
        "from_version": from,
        "purposes": purposes,
        "format": format.ext(),
        "preset": spec.preset.map(|p| p.name()),
        "columns": schema.fields().iter().map(|f| f.name().clone()).collect::<Vec<_>>(),
        "rows_per_file": per_file,
        "files": listing,
        "rows": written.rows,
        "created_at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    });
    target
        .store
        .put(
            &manifest,
            object_store::PutPayload::from(serde_json::to_vec_pretty(&body).expect("json")),
        )
        .await
        .map_err(|e| {
            Error::storage(format!(
                "cannot write the manifest under {}: {e}",
                target.url
            ))
        })?;
    Ok(written)
}

/// One run of an export spec: the full latest (or `at`-bounded) version, or the changes between
/// two versions.
async fn run(
    segments: &Segments,
    ctx: &EvalCtx,
    spec: &ExportSpec,
    allowed: Allowed<'_>,
    skip_unchanged: bool,
) -> Result<Written> {
    let (def, purposes, target) = check(segments, ctx, spec, allowed).await?;
    let h = segments.history(ctx).await?;
    let latest = h
        .latest(
            &def.name,
            &def.generation,
            ctx.as_of_explicit.then_some(ctx.as_of),
        )
        .await?
        .map(|s| s.version)
        .ok_or_else(|| {
            Error::invalid(format!(
                "segment '{}' has no snapshot to export yet (REFRESH SEGMENT {} first)",
                def.name, def.name
            ))
        })?;
    // Two platforms' exports of one version go to two folders.
    let suffix = spec
        .preset
        .map(|p| format!("-{}", p.name()))
        .unwrap_or_default();
    let (members, version, from, folder) = match spec.changes {
        None => {
            let (t, _) = sent(segments, ctx, &def, &purposes, latest, Some(ctx.now())).await?;
            let rows = member_rows(segments, ctx, &[(&t, None)]).await?;
            (
                rows,
                latest,
                None,
                format!("{}-v{latest}{suffix}", def.name),
            )
        }
        Some((a, b)) => {
            let b = b.unwrap_or(latest);
            // A version against itself has no changes (as `segment_changes(s, v, v)`).
            let (entered, exited) = if a == b {
                (RoaringBitmap::new(), RoaringBitmap::new())
            } else {
                let (old, _) = sent(segments, ctx, &def, &purposes, a, None).await?;
                let (new, _) = sent(segments, ctx, &def, &purposes, b, Some(ctx.now())).await?;
                (&new - &old, &old - &new)
            };
            if skip_unchanged && entered.is_empty() && exited.is_empty() {
                return Ok(Written {
                    version: b,
                    from_version: Some(a),
                    unchanged: true,
                    ..Written::default()
                });
            }
            let rows = member_rows(
                segments,
                ctx,
                &[(&entered, Some("entered")), (&exited, Some("exited"))],
            )
            .await?;
            (
                rows,
                b,
                Some(a),
                format!("{}-v{b}-changes-{a}-{b}{suffix}", def.name),
            )
        }
    };
    let (batches, skipped) = shape(segments, ctx, spec, members).await?;
    let mut w = write(
        &target, &folder, spec, &def, &purposes, batches, version, from,
    )
    .await?;
    w.skipped = skipped;
    if w.rows == 0 {
        w.warning = Some(
            "0 rows: no member is in this export (check the segment's size and the purposes its members must consent to)"
                .to_string(),
        );
    } else if let Some(p) = spec.preset
        && w.rows < minimum(p)
    {
        w.warning = Some(format!(
            "{} rows: below {}'s minimum audience size of {} (the platform may not serve it)",
            w.rows,
            p.name(),
            minimum(p)
        ));
    }
    Ok(w)
}

fn written_result(w: &Written) -> Result<QueryResult> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("path", DataType::Utf8, false),
        Field::new("files", DataType::UInt64, false),
        Field::new("rows", DataType::UInt64, false),
        Field::new("bytes", DataType::UInt64, false),
        Field::new("version", DataType::Int64, false),
        Field::new("from_version", DataType::Int64, true),
        Field::new("skipped", DataType::UInt64, false),
        Field::new("warning", DataType::Utf8, true),
    ]));
    crate::segment::ddl::result(
        schema,
        vec![
            Arc::new(StringArray::from(vec![w.path.clone()])),
            Arc::new(UInt64Array::from(vec![w.files])),
            Arc::new(UInt64Array::from(vec![w.rows])),
            Arc::new(UInt64Array::from(vec![w.bytes])),
            Arc::new(Int64Array::from(vec![w.version as i64])),
            Arc::new(Int64Array::from(vec![w.from_version.map(|v| v as i64)])),
            Arc::new(UInt64Array::from(vec![w.skipped])),
            Arc::new(StringArray::from(vec![w.warning.clone()])),
        ],
    )
}

/// Record a run in `_segdb/export_runs`.
async fn record(
    segments: &Segments,
    export: Option<&str>,
    segment: &str,
    started: (i64, std::time::Instant),
    r: &Result<Written>,
) -> Result<()> {
    let (w, status, error) = match r {
        Ok(w) if w.unchanged => (w.clone(), "skipped", None),
        Ok(w) => (w.clone(), "ok", None),
        Err(e) => (
            Written::default(),
            "failed",
            Some(e.to_string().lines().next().unwrap_or("").to_string()),
        ),
    };
    let n = |v: Option<u64>| Arc::new(Int64Array::from(vec![v.map(|x| x as i64)])) as ArrayRef;
    let ok = status != "failed";
    let batch = RecordBatch::try_new(
        base_schema(Table::ExportRuns),
        vec![
            Arc::new(StringArray::from(vec![export.map(str::to_string)])),
            Arc::new(StringArray::from(vec![segment.to_string()])),
            Arc::new(StringArray::from(vec![
                (ok && !w.unchanged).then(|| w.path.clone()),
            ])),
            Arc::new(TimestampMicrosecondArray::from(vec![started.0]).with_timezone("UTC")),
            Arc::new(StringArray::from(vec![status])),
            n(ok.then_some(w.files)),
            n(ok.then_some(w.rows)),
            n(ok.then_some(w.bytes)),
            n(ok.then_some(w.version)),
            n(w.from_version),
            n(ok.then_some(w.skipped)),
            Arc::new(StringArray::from(vec![w.warning.clone()])),
            Arc::new(StringArray::from(vec![error])),
            n(Some(started.1.elapsed().as_millis() as u64)),
        ],
    )?;
    commit::append(
        segments.db(),
        Table::ExportRuns,
        vec![batch],
        commit::op("export"),
    )
    .await?;
    Ok(())
}

/// `EXPORT SEGMENT …`.
pub async fn run_statement(
    segments: &Arc<Segments>,
    ctx: &EvalCtx,
    spec: &ExportSpec,
    allowed: Allowed<'_>,
) -> Result<QueryResult> {
    let started = (
        chrono::Utc::now().timestamp_micros(),
        std::time::Instant::now(),
    );
    let r = run(segments, ctx, spec, allowed, false).await;
    if !matches!(&r, Err(Error::Invalid(_) | Error::Denied(_))) {
        record(segments, None, &spec.segment, started, &r).await?;
    }
    let w = r?;
    tracing::info!(segment = %spec.segment, rows = w.rows, files = w.files, bytes = w.bytes, version = w.version, "export");
    written_result(&w)
}

/// A standing export.
#[derive(Debug, Clone)]
pub struct StandingExport {
    pub name: String,
    pub segment: String,
    pub spec: ExportSpec,
    pub created_at: i64,
    pub created_by: String,
    /// The webhook secret or write key, sealed (`deliver::seal`).
    pub secret: Option<String>,
}

/// The sealed secret of a webhook or segment export.
pub(super) fn sealed_secret(e: &StandingExport) -> Option<&str> {
    e.secret.as_deref()
}

fn parse_spec(text: &str) -> Option<ExportSpec> {
    let stmt = format!("CREATE EXPORT stored FOR SEGMENT {text}");
    match crate::segment::parser::parse_statement(&stmt).ok()? {
        Statement::CreateExport { spec, .. } => Some(spec),
        _ => None,
    }
}

/// The standing exports of a snapshot.
pub async fn standing(ctx: &EvalCtx) -> Result<BTreeMap<String, StandingExport>> {
    from_batches(&ctx.snap.read(Table::Exports).await?)
}

fn from_batches(batches: &[RecordBatch]) -> Result<BTreeMap<String, StandingExport>> {
    let mut out = BTreeMap::new();
    for b in batches {
        let t = |n: &str| crate::storage::snapshot_column(b, n, &DataType::Utf8);
        let (name, seg, stmt, by) = (t("name")?, t("segment")?, t("statement")?, t("created_by")?);
        let secret = t("secret")?;
        let secret = secret.as_string::<i32>();
        let at = crate::storage::snapshot_column(b, "created_at", &DataType::Int64)?;
        let at = at.as_primitive::<arrow::datatypes::Int64Type>();
        for i in 0..b.num_rows() {
            let (name, seg, stmt, by) = (
                name.as_string::<i32>(),
                seg.as_string::<i32>(),
                stmt.as_string::<i32>(),
                by.as_string::<i32>(),
            );
            if name.is_null(i) {
                continue;
            }
            let Some(spec) = parse_spec(stmt.value(i)) else {
                continue;
            };
            out.insert(
                name.value(i).to_string(),
                StandingExport {
                    name: name.value(i).to_string(),
                    segment: seg.value(i).to_string(),
                    spec,
                    created_at: if at.is_valid(i) { at.value(i) } else { 0 },
                    created_by: if by.is_valid(i) {
                        by.value(i).to_string()
                    } else {
                        String::new()
                    },
                    secret: secret.is_valid(i).then(|| secret.value(i).to_string()),
                },
            );
        }
    }
    Ok(out)
}

fn to_batch(all: &BTreeMap<String, StandingExport>) -> Result<RecordBatch> {
    let v: Vec<&StandingExport> = all.values().collect();
    Ok(RecordBatch::try_new(
        base_schema(Table::Exports),
        vec![
            Arc::new(StringArray::from_iter_values(
                v.iter().map(|e| e.name.as_str()),
            )),
            Arc::new(StringArray::from_iter_values(
                v.iter().map(|e| e.segment.as_str()),
            )),
            Arc::new(StringArray::from_iter_values(
                v.iter().map(|e| e.spec.text.as_str()),
            )),
            Arc::new(
                TimestampMicrosecondArray::from(v.iter().map(|e| e.created_at).collect::<Vec<_>>())
                    .with_timezone("UTC"),
            ),
            Arc::new(StringArray::from_iter_values(
                v.iter().map(|e| e.created_by.as_str()),
            )),
            Arc::new(StringArray::from(
                v.iter().map(|e| e.secret.clone()).collect::<Vec<_>>(),
            )),
        ],
    )?)
}

/// Change the standing exports at exactly the next version (re-read and re-apply on conflict).
async fn update<T>(
    segments: &Segments,
    mut change: impl FnMut(&mut BTreeMap<String, StandingExport>) -> Result<T>,
) -> Result<T> {
    let db = segments.db();
    for _ in 0..50 {
        let table = db.load(Table::Exports).await?;
        let mut all =
            from_batches(&crate::storage::read_pinned(db, Table::Exports, &table).await?)?;
        let out = change(&mut all)?;
        if let Committed::Version(_) =
            commit::overwrite_exact(&table, vec![to_batch(&all)?], commit::op("exports")).await?
        {
            return Ok(out);
        }
    }
    Err(Error::storage(
        "the exports catalog kept changing; try again",
    ))
}

/// `CREATE EXPORT name FOR SEGMENT … ON REFRESH`: stored, then the current version written in
/// full (when the segment has one).
pub async fn create(
    segments: &Arc<Segments>,
    ctx: &EvalCtx,
    name: &str,
    if_not_exists: bool,
    spec: &ExportSpec,
    who: &str,
    allowed: Allowed<'_>,
    configured: &[String],
) -> Result<QueryResult> {
    let http = spec.format.is_some_and(ExportFormat::is_http);
    let secret = if http {
        check_common(segments, ctx, spec).await?;
        Some(super::deliver::prepare(segments, name, spec, allowed, configured).await?)
    } else {
        check(segments, ctx, spec, allowed).await?;
        None
    };
    let e = StandingExport {
        name: name.to_string(),
        segment: spec.segment.clone(),
        spec: spec.clone(),
        created_at: ctx.now(),
        created_by: who.to_string(),
        secret: secret.as_ref().map(|(_, sealed)| sealed.clone()),
    };
    let created = update(segments, |all| {
        if all.contains_key(&e.name) {
            if if_not_exists {
                return Ok(false);
            }
            return Err(Error::invalid(format!(
                "export '{}' already exists; DROP EXPORT {} first",
                e.name, e.name
            )));
        }
        all.insert(e.name.clone(), e.clone());
        Ok(true)
    })
    .await?;
    if let Some((secret, _)) = secret {
        // Delivered by `segdb serve`; the secret is shown only here.
        let schema = Arc::new(Schema::new(vec![
            Field::new("name", DataType::Utf8, false),
            Field::new("secret", DataType::Utf8, true),
        ]));
        let shown = (created && spec.format == Some(ExportFormat::Webhook)).then_some(secret);
        return crate::segment::ddl::result(
            schema,
            vec![
                Arc::new(StringArray::from(vec![name.to_string()])),
                Arc::new(StringArray::from(vec![shown])),
            ],
        );
    }
    if created {
        let ctx = ctx.repin().await?;
        run_standing(segments, &ctx, &e).await;
    }
    show(segments, &ctx.repin().await?).await
}

/// Record one delivered (or disabled, failed, skipped) version of a webhook or segment export
/// in `export_history`.
#[allow(clippy::too_many_arguments)]
pub(super) async fn record_delivery(
    segments: &Segments,
    e: &StandingExport,
    version: u64,
    from: u64,
    batches: u64,
    rows: u64,
    status: &str,
    error: Option<&str>,
) -> Result<()> {
    let n = |v: Option<u64>| Arc::new(Int64Array::from(vec![v.map(|x| x as i64)])) as ArrayRef;
    let ok = status == "ok" || status == "skipped";
    let now = chrono::Utc::now().timestamp_micros();
    let batch = RecordBatch::try_new(
        base_schema(Table::ExportRuns),
        vec![
            Arc::new(StringArray::from(vec![e.name.clone()])),
            Arc::new(StringArray::from(vec![e.segment.clone()])),
            Arc::new(StringArray::from(vec![ok.then(|| e.spec.url.clone())])),
            Arc::new(TimestampMicrosecondArray::from(vec![now]).with_timezone("UTC")),
            Arc::new(StringArray::from(vec![status.to_string()])),
            n(ok.then_some(batches)),
            n(ok.then_some(rows)),
            n(None),
            n(Some(version)),
            n(Some(from)),
            n(ok.then_some(0)),
            Arc::new(StringArray::from(vec![None::<String>])),
            Arc::new(StringArray::from(vec![error.map(str::to_string)])),
            n(Some(0)),
        ],
    )?;
    commit::append(
        segments.db(),
        Table::ExportRuns,
        vec![batch],
        commit::op("export"),
    )
    .await?;
    Ok(())
}

/// `DROP EXPORT [IF EXISTS] name`.
pub async fn drop(segments: &Arc<Segments>, name: &str, if_exists: bool) -> Result<QueryResult> {
    update(segments, |all| {
        if all.remove(name).is_none() && !if_exists {
            return Err(Error::NotFound(format!("export '{name}' does not exist")));
        }
        Ok(())
    })
    .await?;
    Ok(crate::segment::ddl::empty())
}

/// The runs of the export table (all exports).
pub async fn runs(ctx: &EvalCtx) -> Result<Vec<RecordBatch>> {
    ctx.snap.read(Table::ExportRuns).await
}

/// One recorded run of a standing export (the columns `last_sent` and SHOW EXPORTS read).
struct RunRow {
    export: String,
    status: String,
    version: Option<i64>,
    started_at: i64,
}

/// The runs of every standing export, in storage order (rows without an export name skipped).
fn run_rows(runs: &[RecordBatch]) -> Result<Vec<RunRow>> {
    let mut out = Vec::new();
    for b in runs {
        let t = |n: &str| crate::storage::snapshot_column(b, n, &DataType::Utf8);
        let i64c = |n: &str| crate::storage::snapshot_column(b, n, &DataType::Int64);
        let (e, s, v, at) = (
            t("export")?,
            t("status")?,
            i64c("version")?,
            i64c("started_at")?,
        );
        let (e, s) = (e.as_string::<i32>(), s.as_string::<i32>());
        let (v, at) = (
            v.as_primitive::<arrow::datatypes::Int64Type>(),
            at.as_primitive::<arrow::datatypes::Int64Type>(),
        );
        for i in 0..b.num_rows() {
            if e.is_null(i) {
                continue;
            }
            out.push(RunRow {
                export: e.value(i).to_string(),
                status: s.value(i).to_string(),
                version: v.is_valid(i).then(|| v.value(i)),
                started_at: at.value(i),
            });
        }
    }
    Ok(out)
}

/// The version a standing export last sent successfully.
fn last_sent(runs: &[RecordBatch], export: &str) -> Result<Option<(u64, i64, String)>> {
    let mut best: Option<(u64, i64, String)> = None;
    for r in run_rows(runs)? {
        let delivered = r.status == "ok" || r.status == "skipped";
        if let (true, true, Some(v)) = (r.export == export, delivered, r.version) {
            let cand = (v as u64, r.started_at, r.status);
            if best.as_ref().is_none_or(|b| cand.0 >= b.0) {
                best = Some(cand);
            }
        }
    }
    Ok(best)
}

/// Run one standing export: the changes since its last successful run, or the current
/// version in full the first time, or nothing when nothing changed. Failures are recorded and
/// returned (the refresh that ran it reports them).
async fn run_standing(segments: &Segments, ctx: &EvalCtx, e: &StandingExport) -> Option<String> {
    let started = (
        chrono::Utc::now().timestamp_micros(),
        std::time::Instant::now(),
    );
    let r = async {
        let runs = runs(ctx).await?;
        let mut spec = e.spec.clone();
        let catalog = segments.catalog(ctx).await?;
        let def = catalog
            .get(&e.segment)
            .ok_or_else(|| Error::NotFound(format!("segment '{}' does not exist", e.segment)))?;
        let h = segments.history(ctx).await?;
        let latest = h.max_version(&def.name, &def.generation);
        if latest == 0 {
            return Ok(None);
        }
        match last_sent(&runs, &e.name)? {
            Some((v, _, _)) if v >= latest => return Ok(None),
            Some((v, _, _)) => spec.changes = Some((v, Some(latest))),
            None => {}
        }
        run(segments, ctx, &spec, None, true).await.map(Some)
    }
    .await;
    match r {
        Ok(None) => None,
        Ok(Some(w)) => {
            tracing::info!(export = %e.name, segment = %e.segment, rows = w.rows, version = w.version, "standing export");
            if let Err(err) = record(segments, Some(&e.name), &e.segment, started, &Ok(w)).await {
                tracing::warn!(export = %e.name, error = %err, "could not record an export run");
                return Some(format!("could not record the run: {err}"));
            }
            None
        }
        Err(err) => {
            tracing::warn!(export = %e.name, segment = %e.segment, error = %err, "standing export failed");
            let why = err.to_string().lines().next().unwrap_or("").to_string();
            let _ = record(segments, Some(&e.name), &e.segment, started, &Err(err)).await;
            Some(why)
        }
    }
}

/// After a refresh of `segment` committed: run its standing exports. Returns those that
/// failed, with their reasons.
pub async fn after_refresh(
    segments: &Arc<Segments>,
    ctx: &EvalCtx,
    segment: &str,
) -> Vec<(String, String)> {
    let ctx = match ctx.repin().await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "standing exports not run");
            return vec![("*".into(), format!("standing exports not run: {e}"))];
        }
    };
    let all = match standing(&ctx).await {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(error = %e, "standing exports not read");
            return vec![("*".into(), format!("standing exports not read: {e}"))];
        }
    };
    let mut failed = Vec::new();
    // Webhook and segment exports are delivered by the server's delivery loop.
    for e in all
        .values()
        .filter(|e| e.segment == segment && !e.spec.format.is_some_and(ExportFormat::is_http))
    {
        if let Some(why) = run_standing(segments, &ctx, e).await {
            failed.push((e.name.clone(), why));
        }
    }
    failed
}

/// `SHOW EXPORTS`: name, segment, url, format, preset, purposes, last_version, last_run_at,
/// last_status, created_by.
pub async fn show(_segments: &Arc<Segments>, ctx: &EvalCtx) -> Result<QueryResult> {
    let all = standing(ctx).await?;
    let runs = runs(ctx).await?;
    let mut last: BTreeMap<String, (i64, String, Option<i64>)> = BTreeMap::new();
    for r in run_rows(&runs)? {
        let entry = (r.started_at, r.status, r.version);
        match last.get(&r.export) {
            Some(prev) if prev.0 > entry.0 => {}
            _ => {
                last.insert(r.export, entry);
            }
        }
    }
    let v: Vec<&StandingExport> = all.values().collect();
    let text = |f: &dyn Fn(&StandingExport) -> Option<String>| -> ArrayRef {
        Arc::new(v.iter().map(|e| f(e)).collect::<StringArray>())
    };
    let schema = Arc::new(Schema::new(vec![
        Field::new("name", DataType::Utf8, false),
        Field::new("segment", DataType::Utf8, false),
        Field::new("url", DataType::Utf8, false),
        Field::new("format", DataType::Utf8, false),
        Field::new("preset", DataType::Utf8, true),
        Field::new("purposes", DataType::Utf8, true),
        Field::new("last_version", DataType::Int64, true),
        Field::new(
            "last_run_at",
            DataType::Timestamp(arrow::datatypes::TimeUnit::Microsecond, Some("UTC".into())),
            true,
        ),
        Field::new("last_status", DataType::Utf8, true),
        Field::new("created_by", DataType::Utf8, false),
    ]));
    crate::segment::ddl::result(
        schema,
        vec![
            text(&|e| Some(e.name.clone())),
            text(&|e| Some(e.segment.clone())),
            text(&|e| Some(e.spec.url.clone())),
            text(&|e| {
                Some(
                    e.spec
                        .format
                        .unwrap_or(ExportFormat::Parquet)
                        .ext()
                        .to_string(),
                )
            }),
            text(&|e| e.spec.preset.map(|p| p.name().to_string())),
            text(&|e| {
                (!e.spec.purposes.is_empty()).then(|| {
                    e.spec
                        .purposes
                        .iter()
                        .map(|p| format!("'{p}'"))
                        .collect::<Vec<_>>()
                        .join(", ")
                })
            }),
            Arc::new(Int64Array::from(
                v.iter()
                    .map(|e| last.get(&e.name).and_then(|l| l.2))
                    .collect::<Vec<_>>(),
            )),
            Arc::new(
                TimestampMicrosecondArray::from(
                    v.iter()
                        .map(|e| last.get(&e.name).map(|l| l.0))
                        .collect::<Vec<_>>(),
                )
                .with_timezone("UTC"),
            ),
            text(&|e| last.get(&e.name).map(|l| l.1.clone())),
            text(&|e| Some(e.created_by.clone())),
        ],
    )
}

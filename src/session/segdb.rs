//! Running segdb's own statements (the ones `segment::parser` reads): each gets the statement's
//! evaluation context — its snapshot and settings — and returns a small result.

use std::sync::Arc;

use arrow::array::UInt64Array;
use arrow::datatypes::{DataType, Field, Schema};
use datafusion::prelude::SessionContext;

use super::Session;
use crate::error::{Error, Result};
use crate::result::QueryResult;
use crate::segment::EvalCtx;
use crate::segment::ast::{ForgetTarget, Statement};
use crate::segment::ddl::{empty, result};
use crate::statement::Role;

fn counts(names: &[&str], values: &[u64]) -> Result<QueryResult> {
    let schema = Arc::new(Schema::new(
        names
            .iter()
            .map(|n| Field::new(*n, DataType::UInt64, false))
            .collect::<Vec<_>>(),
    ));
    result(
        schema,
        values
            .iter()
            .map(|v| Arc::new(UInt64Array::from(vec![*v])) as _)
            .collect(),
    )
}

fn key_result(k: &crate::collector::sources::NewKey) -> Result<QueryResult> {
    let b = crate::collector::sources::key_batch(k)?;
    Ok(QueryResult {
        schema: b.schema(),
        batches: vec![b],
    })
}

/// One row per table: `table, files_removed, files_added, version`.
fn optimize_result(done: &[crate::storage::optimize::Compacted]) -> Result<QueryResult> {
    use arrow::array::StringArray;
    let schema = Arc::new(Schema::new(vec![
        Field::new("table", DataType::Utf8, false),
        Field::new("files_removed", DataType::UInt64, false),
        Field::new("files_added", DataType::UInt64, false),
        Field::new("version", DataType::UInt64, false),
    ]));
    result(
        schema,
        vec![
            Arc::new(StringArray::from_iter_values(
                done.iter().map(|c| c.table.path().to_string()),
            )) as _,
            Arc::new(UInt64Array::from_iter_values(
                done.iter().map(|c| c.files_removed),
            )),
            Arc::new(UInt64Array::from_iter_values(
                done.iter().map(|c| c.files_added),
            )),
            Arc::new(UInt64Array::from_iter_values(
                done.iter().map(|c| c.version),
            )),
        ],
    )
}

fn altered_result(a: &crate::session::alter::Altered) -> Result<QueryResult> {
    use arrow::array::StringArray;
    let schema = Arc::new(Schema::new(vec![
        Field::new("table", DataType::Utf8, false),
        Field::new("column", DataType::Utf8, false),
        Field::new("from_type", DataType::Utf8, false),
        Field::new("to_type", DataType::Utf8, false),
        Field::new("rows", DataType::UInt64, false),
        Field::new("version", DataType::UInt64, false),
    ]));
    result(
        schema,
        vec![
            Arc::new(StringArray::from(vec![a.table.name()])) as _,
            Arc::new(StringArray::from(vec![a.column.as_str()])),
            Arc::new(StringArray::from(vec![a.from.to_string()])),
            Arc::new(StringArray::from(vec![a.to.to_string()])),
            Arc::new(UInt64Array::from(vec![a.rows])),
            Arc::new(UInt64Array::from(vec![a.version])),
        ],
    )
}

/// Run one segdb statement in the statement context `stmt_ctx`.
pub(super) async fn execute(
    session: &Session,
    stmt_ctx: &SessionContext,
    s: &Statement,
    role: Role,
) -> Result<QueryResult> {
    let shared = session.shared();
    let segments = &shared.segments;
    let ctx = EvalCtx::from_state(&stmt_ctx.state(), &shared.db).await?;
    let allowed_guard = shared.export_allowed.read().expect("not poisoned").clone();
    let allowed: Option<&[String]> = match role {
        Role::Admin => None,
        _ => Some(allowed_guard.as_deref().unwrap_or(&[])),
    };
    match s {
        Statement::CreateSegment(c) => {
            let (def, size) = segments.create(&ctx, c).await?;
            // A new materialised segment computes its version 1 now.
            if def.materialized && size.is_some() {
                let ctx = ctx.repin().await?;
                let o = crate::materialize::refresh(
                    segments,
                    &ctx,
                    &def.name,
                    None,
                    crate::materialize::Trigger::Create,
                )
                .await?;
                if let crate::materialize::Status::Failed(why) = &o.status {
                    return Err(Error::invalid(format!(
                        "segment '{}' was stored, but its first refresh failed: {why}",
                        def.name
                    )));
                }
                return segments.created_result(&def.name, o.size);
            }
            let size = match size {
                Some(s) => s,
                None => segments.members(&ctx, &def.name).await?.len(),
            };
            segments.created_result(&def.name, size)
        }
        Statement::DropSegment { name, if_exists } => {
            let standing = crate::materialize::export::standing(&ctx).await?;
            if let Some(e) = standing.values().find(|e| &e.segment == name) {
                return Err(Error::invalid(format!(
                    "segment '{name}' has the standing export '{}'; DROP EXPORT {} first",
                    e.name, e.name
                )));
            }
            segments.drop_segment(name, *if_exists).await?;
            Ok(empty())
        }
        Statement::ShowSegments => segments.show(&ctx).await,
        Statement::DescribeSegment(name) => segments.describe(&ctx, name).await,
        Statement::ExplainSegment(name) => segments.explain(&ctx, name).await,
        Statement::ExplainForUser { name, id } => segments.explain_for_user(&ctx, name, id).await,
        Statement::AlterSegment { name, change } => segments.alter(name, change).await,
        Statement::Forget(target) => {
            let target = match target {
                ForgetTarget::User(id) => crate::erasure::Target::One(id.clone()),
                ForgetTarget::Users(q) => {
                    let df = ctx.plan(&q.text).await?;
                    if !df.schema().has_column_with_unqualified_name("user_id") {
                        return Err(Error::invalid(
                            "FORGET USERS IN (…): the query must return a user_id column",
                        ));
                    }
                    let batches = df.select_columns(&["user_id"])?.collect().await?;
                    let mut v = Vec::new();
                    for b in batches {
                        use arrow::array::{Array, AsArray};
                        let s = arrow::compute::cast(b.column(0), &DataType::Utf8)?;
                        let s = s.as_string::<i32>();
                        v.extend(
                            (0..s.len())
                                .filter(|&i| s.is_valid(i))
                                .map(|i| s.value(i).to_string()),
                        );
                    }
                    crate::erasure::Target::Pseudonyms(v)
                }
            };
            let expand = segments.component_expander(&ctx).await?;
            let n =
                crate::erasure::forget(&ctx.snap, &shared.keyring, target, session.who(), &*expand)
                    .await?;
            counts(&["forgotten"], &[n])
        }
        Statement::Vacuum => {
            let pruned = crate::materialize::prune(segments, &ctx).await?;
            if pruned > 0 {
                tracing::info!(rows = pruned, "vacuum: refresh history beyond KEEP removed");
            }
            let (files, logs) = crate::erasure::vacuum(&shared.db, session.who()).await?;
            counts(
                &["files_removed", "log_entries_removed"],
                &[files as u64, logs as u64],
            )
        }
        Statement::SetRetention { table, days } => {
            if table != "events" {
                return Err(Error::invalid(
                    "retention applies to the events table: ALTER TABLE events SET RETENTION n DAYS",
                ));
            }
            crate::erasure::set_retention_days(&shared.db, *days).await?;
            Ok(empty())
        }
        Statement::SetPii { table, rules } => {
            crate::ingest::pii::declare(&shared.db, table, rules, session.who()).await?;
            Ok(empty())
        }
        Statement::AlterColumnType { table, column, to } => {
            let a = crate::session::alter::alter_column_type(
                &shared.db,
                table,
                column,
                *to,
                session.who(),
            )
            .await?;
            shared.db.forget_handles().await;
            altered_result(&a)
        }
        Statement::RefreshSegment { name, as_of } => {
            crate::materialize::refresh_statement(segments, &ctx, name, *as_of).await
        }
        Statement::Export(spec) => {
            crate::materialize::export::run_statement(segments, &ctx, spec, allowed).await
        }
        Statement::CreateExport {
            name,
            if_not_exists,
            spec,
        } => {
            crate::materialize::export::create(
                segments,
                &ctx,
                name,
                *if_not_exists,
                spec,
                session.who(),
                allowed,
                allowed_guard.as_deref().unwrap_or(&[]),
            )
            .await
        }
        Statement::ResumeExport(name) => {
            crate::materialize::deliver::resume(segments, &ctx, name).await?;
            Ok(crate::segment::ddl::empty())
        }
        Statement::DropExport { name, if_exists } => {
            crate::materialize::export::drop(segments, name, *if_exists).await
        }
        Statement::ShowExports => crate::materialize::export::show(segments, &ctx).await,
        Statement::CreateTrait(t) => crate::segment::traits::create(segments, &ctx, t).await,
        Statement::DropTrait { name, if_exists } => {
            crate::segment::traits::drop(segments, &ctx, name, *if_exists).await
        }
        Statement::ShowTraits => crate::segment::traits::show(segments, &ctx).await,
        Statement::CreateSource {
            name,
            if_not_exists,
            comment,
        } => {
            use crate::collector::sources;
            match sources::create(
                &shared.db,
                &shared.keyring,
                name,
                comment.as_deref(),
                *if_not_exists,
            )
            .await?
            {
                Some(k) => key_result(&k),
                None => Ok(empty()),
            }
        }
        Statement::RotateSourceKey(name) => {
            use crate::collector::sources;
            let grace = shared
                .collector_settings
                .read()
                .expect("not poisoned")
                .key_grace_micros;
            let k = sources::rotate(&shared.db, &shared.keyring, name, grace).await?;
            key_result(&k)
        }
        Statement::DropSource { name, if_exists } => {
            crate::collector::sources::drop(&shared.db, name, *if_exists).await?;
            Ok(empty())
        }
        Statement::ShowSources => {
            crate::collector::sources::show(&shared.db, &shared.collector).await
        }
        Statement::CreateCategoryMap {
            name,
            property,
            if_not_exists,
        } => {
            crate::interests::maps::create(&shared.db, name, property, *if_not_exists).await?;
            Ok(empty())
        }
        Statement::DropCategoryMap { name, if_exists } => {
            crate::interests::maps::drop(&shared.db, name, *if_exists).await?;
            Ok(empty())
        }
        Statement::ShowCategoryMaps => {
            crate::interests::maps::show(&*segments.category_maps(&ctx).await?)
        }
        Statement::SetHalfLife(text) => {
            let mut s = crate::storage::settings::Settings::read(&shared.db).await?;
            s.interests_half_life = text.clone();
            s.write(&shared.db).await?;
            Ok(empty())
        }
        Statement::Optimize(name) => {
            use crate::storage::optimize;
            let mb = shared
                .target_file_mb
                .load(std::sync::atomic::Ordering::Relaxed);
            let mut done = Vec::new();
            for t in optimize::tables_named(name.as_deref())? {
                done.push(optimize::optimize(&shared.db, t, mb).await?);
            }
            shared.db.forget_handles().await;
            optimize_result(&done)
        }
    }
}

//! Segment definitions, persisted in the Delta table `_segdb/segments`. The table is small: every
//! change rewrites it whole in one commit, so a definition change is atomic and survives restarts.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanBuilder, RecordBatch, StringBuilder,
    TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, Int64Type};
use deltalake::protocol::SaveMode;

use crate::error::Result;
use crate::storage::{Database, Table, base_schema};

/// One stored segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentDef {
    pub name: String,
    /// The segment expression as written after AS.
    pub definition: String,
    pub purposes: Vec<String>,
    pub comment: Option<String>,
    pub materialized: bool,
    pub refresh: Option<String>,
    pub created_at: i64,
}

impl SegmentDef {
    /// The purposes as SHOW/DESCRIBE print them (`'a', 'b'`), `None` without any.
    pub fn purposes_text(&self) -> Option<String> {
        (!self.purposes.is_empty()).then(|| {
            self.purposes
                .iter()
                .map(|p| format!("'{p}'"))
                .collect::<Vec<_>>()
                .join(", ")
        })
    }
}

/// Read every definition.
pub async fn load(db: &Database) -> Result<Vec<SegmentDef>> {
    let (_, batches) = db.scan(Table::Segments).await?;
    let mut out = Vec::new();
    for b in batches {
        let text = |i: usize| arrow::compute::cast(b.column(i), &DataType::Utf8);
        let (name, def, purposes, comment, refresh) =
            (text(0)?, text(1)?, text(2)?, text(3)?, text(5)?);
        let (name, def, purposes, comment, refresh) = (
            name.as_string::<i32>(),
            def.as_string::<i32>(),
            purposes.as_string::<i32>(),
            comment.as_string::<i32>(),
            refresh.as_string::<i32>(),
        );
        let mat = b.column(4).as_boolean();
        let created = arrow::compute::cast(b.column(6), &DataType::Int64)?;
        let created = created.as_primitive::<Int64Type>();
        for i in 0..b.num_rows() {
            out.push(SegmentDef {
                name: name.value(i).to_string(),
                definition: def.value(i).to_string(),
                purposes: serde_json::from_str(purposes.value(i)).unwrap_or_default(),
                comment: comment.is_valid(i).then(|| comment.value(i).to_string()),
                materialized: mat.is_valid(i) && mat.value(i),
                refresh: refresh.is_valid(i).then(|| refresh.value(i).to_string()),
                created_at: if created.is_valid(i) {
                    created.value(i)
                } else {
                    0
                },
            });
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Replace the stored definitions with `defs` (one commit).
pub async fn save(db: &Database, defs: &[SegmentDef]) -> Result<()> {
    let (mut n, mut d, mut p, mut c, mut m, mut r, mut t) = (
        StringBuilder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
        BooleanBuilder::new(),
        StringBuilder::new(),
        TimestampMicrosecondBuilder::new(),
    );
    for s in defs {
        n.append_value(&s.name);
        d.append_value(&s.definition);
        p.append_value(serde_json::to_string(&s.purposes).expect("strings serialise"));
        c.append_option(s.comment.as_deref());
        m.append_value(s.materialized);
        r.append_option(s.refresh.as_deref());
        t.append_value(s.created_at);
    }
    let cols: Vec<ArrayRef> = vec![
        Arc::new(n.finish()),
        Arc::new(d.finish()),
        Arc::new(p.finish()),
        Arc::new(c.finish()),
        Arc::new(m.finish()),
        Arc::new(r.finish()),
        Arc::new(t.finish().with_timezone("UTC")),
    ];
    let batch = RecordBatch::try_new(base_schema(Table::Segments), cols)?;
    let table = db.load(Table::Segments).await?;
    table
        .write(vec![batch])
        .with_save_mode(SaveMode::Overwrite)
        .await?;
    Ok(())
}

//! Static metadata the Flight SQL server reports: GetSqlInfo facts and GetXdbcTypeInfo types,
//! plus the canonical (empty) key-listing schemas.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow_flight::sql::metadata::{
    SqlInfoData, SqlInfoDataBuilder, XdbcTypeInfo, XdbcTypeInfoData, XdbcTypeInfoDataBuilder,
};
use arrow_flight::sql::{
    Nullable, Searchable, SqlInfo, SqlNullOrdering, SqlSupportedCaseSensitivity,
    SqlSupportedTransaction, XdbcDataType, XdbcDatetimeSubcode,
};

/// GetSqlInfo answers; `read_only` is the caller's role's view of the server.
pub fn sql_info(read_only: bool) -> SqlInfoData {
    let mut b = SqlInfoDataBuilder::new();
    b.append(SqlInfo::FlightSqlServerName, "segdb");
    b.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
    // Arrow IPC format version (Schema.fbs MetadataVersion V5 = "1.5").
    b.append(SqlInfo::FlightSqlServerArrowVersion, "1.5");
    b.append(SqlInfo::FlightSqlServerReadOnly, read_only);
    b.append(SqlInfo::FlightSqlServerSql, true);
    b.append(SqlInfo::FlightSqlServerSubstrait, false);
    b.append(
        SqlInfo::FlightSqlServerTransaction,
        SqlSupportedTransaction::None as i32,
    );
    b.append(SqlInfo::FlightSqlServerCancel, true);
    b.append(SqlInfo::FlightSqlServerBulkIngestion, !read_only);
    b.append(SqlInfo::FlightSqlServerIngestTransactionsSupported, false);
    b.append(SqlInfo::FlightSqlServerStatementTimeout, 0i32);
    b.append(SqlInfo::FlightSqlServerTransactionTimeout, 0i32);
    b.append(SqlInfo::SqlDdlCatalog, false);
    b.append(SqlInfo::SqlDdlSchema, false);
    b.append(SqlInfo::SqlDdlTable, !read_only);
    b.append(
        SqlInfo::SqlIdentifierCase,
        SqlSupportedCaseSensitivity::SqlCaseSensitivityLowercase as i32,
    );
    b.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
    b.append(
        SqlInfo::SqlQuotedIdentifierCase,
        SqlSupportedCaseSensitivity::SqlCaseSensitivityCaseInsensitive as i32,
    );
    b.append(SqlInfo::SqlAllTablesAreSelectable, true);
    b.append(
        SqlInfo::SqlNullOrdering,
        SqlNullOrdering::SqlNullsSortedHigh as i32,
    );
    b.append(
        SqlInfo::SqlKeywords,
        &[
            "SEGMENT",
            "SEGMENTS",
            "FORGET",
            "VACUUM",
            "RETENTION",
            "PURPOSE",
            "DID",
            "THEN",
            "WITHIN",
            "PROFILE",
            "CONSENT",
        ][..],
    );
    b.append(
        SqlInfo::SqlNumericFunctions,
        &[
            "abs", "ceil", "floor", "round", "power", "sqrt", "ln", "log", "exp", "random",
        ][..],
    );
    b.append(
        SqlInfo::SqlStringFunctions,
        &[
            "lower",
            "upper",
            "length",
            "substr",
            "concat",
            "trim",
            "replace",
            "split_part",
            "starts_with",
            "regexp_like",
        ][..],
    );
    b.append(
        SqlInfo::SqlSystemFunctions,
        &[
            "pseudonymize",
            "hash_email",
            "hash_phone",
            "has_consent",
            "segment_size",
            "segment_size_of",
            "segment_members",
            "segment_overlap",
            "segment_recommendations",
            "in_segment",
            "segment_bitmap",
            "interests",
            "lookalike_score",
            "lookalike_report",
            "lookalike_features",
        ][..],
    );
    b.append(
        SqlInfo::SqlDatetimeFunctions,
        &[
            "now",
            "date_trunc",
            "date_part",
            "to_timestamp",
            "current_date",
        ][..],
    );
    b.append(SqlInfo::SqlSearchStringEscape, "\\");
    b.append(SqlInfo::SqlExtraNameCharacters, "");
    b.append(SqlInfo::SqlSupportsColumnAliasing, true);
    b.append(SqlInfo::SqlNullPlusNullIsNull, true);
    b.append(SqlInfo::SqlSupportsTableCorrelationNames, true);
    b.append(SqlInfo::SqlSupportsDifferentTableCorrelationNames, false);
    b.append(SqlInfo::SqlSupportsExpressionsInOrderBy, true);
    b.append(SqlInfo::SqlSupportsOrderByUnrelated, true);
    b.append(SqlInfo::SqlSupportsLikeEscapeClause, true);
    b.append(SqlInfo::SqlSupportsNonNullableColumns, true);
    b.append(SqlInfo::SqlSchemaTerm, "schema");
    b.append(SqlInfo::SqlCatalogTerm, "catalog");
    b.append(SqlInfo::SqlProcedureTerm, "procedure");
    b.append(SqlInfo::SqlCatalogAtStart, true);
    b.append(SqlInfo::SqlSelectForUpdateSupported, false);
    b.append(SqlInfo::SqlStoredProceduresSupported, false);
    b.append(SqlInfo::SqlCorrelatedSubqueriesSupported, true);
    b.append(SqlInfo::SqlTransactionsSupported, false);
    b.append(SqlInfo::SqlBatchUpdatesSupported, false);
    b.append(SqlInfo::SqlSavepointsSupported, false);
    b.append(SqlInfo::SqlNamedParametersSupported, false);
    b.append(SqlInfo::SqlMaxConnections, 0i64);
    b.build().expect("static SqlInfo data is well-formed")
}

fn xdbc(
    name: &str,
    data_type: XdbcDataType,
    column_size: Option<i32>,
    quoted: bool,
) -> XdbcTypeInfo {
    let numeric = matches!(
        data_type,
        XdbcDataType::XdbcTinyint
            | XdbcDataType::XdbcSmallint
            | XdbcDataType::XdbcInteger
            | XdbcDataType::XdbcBigint
            | XdbcDataType::XdbcFloat
            | XdbcDataType::XdbcReal
            | XdbcDataType::XdbcDouble
            | XdbcDataType::XdbcDecimal
    );
    let (sql_data_type, datetime_subcode) = match data_type {
        XdbcDataType::XdbcDate => (
            XdbcDataType::XdbcDatetime,
            // XDBC_SUBCODE_DATE is an alias of YEAR (1) in the proto.
            Some(XdbcDatetimeSubcode::XdbcSubcodeYear),
        ),
        XdbcDataType::XdbcTimestamp => (
            XdbcDataType::XdbcDatetime,
            Some(XdbcDatetimeSubcode::XdbcSubcodeTimestamp),
        ),
        other => (other, None),
    };
    XdbcTypeInfo {
        type_name: name.into(),
        data_type,
        column_size,
        literal_prefix: quoted.then(|| "'".into()),
        literal_suffix: quoted.then(|| "'".into()),
        create_params: None,
        nullable: Nullable::NullabilityNullable,
        case_sensitive: matches!(data_type, XdbcDataType::XdbcVarchar),
        searchable: Searchable::Full,
        unsigned_attribute: numeric.then_some(false),
        fixed_prec_scale: matches!(data_type, XdbcDataType::XdbcDecimal),
        auto_increment: numeric.then_some(false),
        local_type_name: Some(name.into()),
        minimum_scale: None,
        maximum_scale: None,
        sql_data_type,
        datetime_subcode,
        num_prec_radix: numeric.then_some(10),
        interval_precision: None,
    }
}

/// The SQL types segdb's tables and functions use.
pub fn xdbc_types() -> XdbcTypeInfoData {
    let mut b = XdbcTypeInfoDataBuilder::new();
    for info in [
        xdbc("BOOLEAN", XdbcDataType::XdbcBit, Some(1), false),
        xdbc("TINYINT", XdbcDataType::XdbcTinyint, Some(3), false),
        xdbc("SMALLINT", XdbcDataType::XdbcSmallint, Some(5), false),
        xdbc("INTEGER", XdbcDataType::XdbcInteger, Some(10), false),
        xdbc("BIGINT", XdbcDataType::XdbcBigint, Some(19), false),
        xdbc("REAL", XdbcDataType::XdbcFloat, Some(7), false),
        xdbc("DOUBLE", XdbcDataType::XdbcDouble, Some(15), false),
        xdbc("DECIMAL", XdbcDataType::XdbcDecimal, Some(38), false),
        xdbc("VARCHAR", XdbcDataType::XdbcVarchar, None, true),
        xdbc("DATE", XdbcDataType::XdbcDate, Some(10), true),
        xdbc("TIMESTAMP", XdbcDataType::XdbcTimestamp, Some(26), true),
        xdbc("VARBINARY", XdbcDataType::XdbcVarbinary, None, false),
    ] {
        b.append(info);
    }
    b.build().expect("static XDBC data is well-formed")
}

/// Schema of CommandGetPrimaryKeys results (the Flight SQL spec's).
pub fn primary_keys_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("catalog_name", DataType::Utf8, true),
        Field::new("db_schema_name", DataType::Utf8, true),
        Field::new("table_name", DataType::Utf8, false),
        Field::new("column_name", DataType::Utf8, false),
        Field::new("key_name", DataType::Utf8, true),
        Field::new("key_sequence", DataType::Int32, false),
    ]))
}

/// Schema of CommandGetExportedKeys / ImportedKeys / CrossReference results.
pub fn foreign_keys_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("pk_catalog_name", DataType::Utf8, true),
        Field::new("pk_db_schema_name", DataType::Utf8, true),
        Field::new("pk_table_name", DataType::Utf8, false),
        Field::new("pk_column_name", DataType::Utf8, false),
        Field::new("fk_catalog_name", DataType::Utf8, true),
        Field::new("fk_db_schema_name", DataType::Utf8, true),
        Field::new("fk_table_name", DataType::Utf8, false),
        Field::new("fk_column_name", DataType::Utf8, false),
        Field::new("key_sequence", DataType::Int32, false),
        Field::new("fk_key_name", DataType::Utf8, true),
        Field::new("pk_key_name", DataType::Utf8, true),
        Field::new("update_rule", DataType::UInt8, false),
        Field::new("delete_rule", DataType::UInt8, false),
    ]))
}

/// DataFusion's `information_schema` tables (listed with the session's own schemas).
pub const INFORMATION_SCHEMA_TABLES: [&str; 7] = [
    "columns",
    "df_settings",
    "parameters",
    "routines",
    "schemata",
    "tables",
    "views",
];

/// Every table a session can see: (schema, name, table type, Arrow schema).
pub async fn table_rows(
    session: &crate::session::Session,
) -> crate::Result<Vec<(String, String, String, SchemaRef)>> {
    use datafusion::common::TableReference;
    // Segments created by another process since the last statement.
    session.shared().segments.latest_names().await?;
    let ctx = session.context();
    let mut out = Vec::new();
    for catalog_name in ctx.catalog_names() {
        let Some(catalog) = ctx.catalog(&catalog_name) else {
            continue;
        };
        let mut schemas = catalog.schema_names();
        schemas.sort();
        for schema_name in schemas {
            let Some(schema) = catalog.schema(&schema_name) else {
                continue;
            };
            let mut names = schema.table_names();
            names.sort();
            for name in names {
                let Some(t) = schema.table(&name).await? else {
                    continue;
                };
                let ty = match t.table_type() {
                    _ if schema_name == crate::segment::table::SCHEMA => "SEGMENT",
                    datafusion::datasource::TableType::Base => "TABLE",
                    datafusion::datasource::TableType::View => "VIEW",
                    datafusion::datasource::TableType::Temporary => "LOCAL TEMPORARY",
                };
                out.push((schema_name.clone(), name, ty.to_string(), t.schema()));
            }
        }
        for name in INFORMATION_SCHEMA_TABLES {
            let r = TableReference::full(catalog_name.as_str(), "information_schema", name);
            if let Ok(t) = ctx.table_provider(r).await {
                out.push((
                    "information_schema".to_string(),
                    name.to_string(),
                    "VIEW".to_string(),
                    t.schema(),
                ));
            }
        }
    }
    Ok(out)
}

/// The schemas of every catalog a session can see (information_schema included).
pub fn schema_rows(session: &crate::session::Session) -> Vec<(String, String)> {
    let ctx = session.context();
    let mut out = Vec::new();
    for c in ctx.catalog_names() {
        if let Some(catalog) = ctx.catalog(&c) {
            let mut names = catalog.schema_names();
            names.push("information_schema".into());
            names.sort();
            names.dedup();
            for s in names {
                out.push((c.clone(), s));
            }
        }
    }
    out
}

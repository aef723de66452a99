//! `tcf_decode(tc_string)` → Struct of every core field (timestamps as UTC), the vendor lists,
//! publisher restrictions, disclosed vendors and the publisher TC segment. NULL for NULL or
//! malformed input (use `tcf_error` for the reason).

use std::sync::{Arc, LazyLock};

use arrow::array::{ArrayRef, new_null_array};
use arrow::datatypes::{DataType, Field, Fields, Schema, TimeUnit};
use datafusion::common::Result;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};
use serde_json::{Value, json};

use super::common::{Args, str_at, udf_identity};
use crate::privacy::tcf::{TcString, decode};

fn list(t: DataType) -> DataType {
    DataType::List(Arc::new(Field::new("item", t, true)))
}

static FIELDS: LazyLock<Fields> = LazyLock::new(|| {
    let ids = || list(DataType::Int32);
    let ts = DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()));
    Fields::from(vec![
        Field::new("version", DataType::Int32, true),
        Field::new("created", ts.clone(), true),
        Field::new("last_updated", ts, true),
        Field::new("cmp_id", DataType::Int32, true),
        Field::new("cmp_version", DataType::Int32, true),
        Field::new("consent_screen", DataType::Int32, true),
        Field::new("consent_language", DataType::Utf8, true),
        Field::new("vendor_list_version", DataType::Int32, true),
        Field::new("tcf_policy_version", DataType::Int32, true),
        Field::new("is_service_specific", DataType::Boolean, true),
        Field::new("use_non_standard_texts", DataType::Boolean, true),
        Field::new("special_feature_optins", ids(), true),
        Field::new("purposes_consent", ids(), true),
        Field::new("purposes_li", ids(), true),
        Field::new("purpose_one_treatment", DataType::Boolean, true),
        Field::new("publisher_cc", DataType::Utf8, true),
        Field::new("vendor_consent", ids(), true),
        Field::new("vendor_li", ids(), true),
        Field::new(
            "pub_restrictions",
            list(DataType::Struct(Fields::from(vec![
                Field::new("purpose", DataType::Int32, true),
                Field::new("restriction_type", DataType::Int32, true),
                Field::new("vendors", ids(), true),
            ]))),
            true,
        ),
        Field::new("disclosed_vendors", ids(), true),
        Field::new("allowed_vendors", ids(), true),
        Field::new(
            "publisher_tc",
            DataType::Struct(Fields::from(vec![
                Field::new("pub_purposes_consent", ids(), true),
                Field::new("pub_purposes_li", ids(), true),
                Field::new("custom_consent", ids(), true),
                Field::new("custom_li", ids(), true),
            ])),
            true,
        ),
    ])
});

fn to_json(tc: &TcString) -> Value {
    let c = &tc.core;
    let letters = |l: [u8; 2]| String::from_utf8_lossy(&l).into_owned();
    json!({ "tc": {
        "version": c.version,
        "created": c.created * 100,
        "last_updated": c.last_updated * 100,
        "cmp_id": c.cmp_id,
        "cmp_version": c.cmp_version,
        "consent_screen": c.consent_screen,
        "consent_language": letters(c.consent_language),
        "vendor_list_version": c.vendor_list_version,
        "tcf_policy_version": c.tcf_policy_version,
        "is_service_specific": c.is_service_specific,
        "use_non_standard_texts": c.use_non_standard_texts,
        "special_feature_optins": c.special_feature_optins,
        "purposes_consent": c.purposes_consent,
        "purposes_li": c.purposes_li,
        "purpose_one_treatment": c.purpose_one_treatment,
        "publisher_cc": letters(c.publisher_cc),
        "vendor_consent": c.vendor_consent,
        "vendor_li": c.vendor_li,
        "pub_restrictions": c.pub_restrictions.iter().map(|r| json!({
            "purpose": r.purpose, "restriction_type": r.restriction_type, "vendors": r.vendors
        })).collect::<Vec<_>>(),
        "disclosed_vendors": tc.disclosed_vendors,
        "allowed_vendors": tc.allowed_vendors,
        "publisher_tc": tc.publisher_tc.as_ref().map(|p| json!({
            "pub_purposes_consent": p.pub_purposes_consent,
            "pub_purposes_li": p.pub_purposes_li,
            "custom_consent": p.custom_consent,
            "custom_li": p.custom_li,
        })),
    }})
}

#[derive(Debug)]
pub struct TcfDecode {
    signature: Signature,
}

impl TcfDecode {
    pub fn new() -> Self {
        TcfDecode {
            signature: Signature::any(1, Volatility::Immutable),
        }
    }
}

impl Default for TcfDecode {
    fn default() -> Self {
        Self::new()
    }
}

udf_identity!(TcfDecode);

impl ScalarUDFImpl for TcfDecode {
    fn name(&self) -> &str {
        "tcf_decode"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Struct(FIELDS.clone()))
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let a = Args::new(&args)?;
        let tc = a.text(0)?;
        let schema = Arc::new(Schema::new(vec![Field::new(
            "tc",
            DataType::Struct(FIELDS.clone()),
            true,
        )]));
        let values: Vec<Value> = (0..a.rows)
            .map(|i| {
                str_at(&tc, i)
                    .and_then(|s| decode(s).ok())
                    .map(|d| to_json(&d))
                    .unwrap_or_else(|| json!({"tc": null}))
            })
            .collect();
        let mut decoder = arrow::json::ReaderBuilder::new(schema).build_decoder()?;
        decoder.serialize(&values)?;
        let arr: ArrayRef = match decoder.flush()? {
            Some(b) => b.column(0).clone(),
            None => new_null_array(&DataType::Struct(FIELDS.clone()), a.rows),
        };
        a.finish(arr)
    }
}

//! Who holds consent for a purpose at a point in time, from the `consent` table: the latest record
//! per user (and purpose) at or before `as_of` decides. `'tcf:N'` reads TCF purpose consent bit N
//! of the latest TC string; `'sale'` is withheld by a US Privacy or GPP sale opt-out (a malformed
//! string withholds it too: fail closed); any other name reads explicit `purpose` rows (`granted`,
//! not expired at `as_of`). No record means no consent.

use super::sqlgen::ts_lit;

/// The query returning the `uid`s that hold consent for `purpose` at `as_of`, or an error text.
pub(crate) fn purpose_query(purpose: &str, as_of: i64) -> Result<String, String> {
    purpose_query_over(purpose, as_of, "consent")
}

/// [`purpose_query`] over another relation (the stitched `consent`, whose `uid` is canonical).
pub(crate) fn purpose_query_over(
    purpose: &str,
    as_of: i64,
    consent: &str,
) -> Result<String, String> {
    let at = ts_lit(as_of);
    if let Some(n) = purpose.strip_prefix("tcf:") {
        let n: u32 = n
            .trim()
            .parse()
            .map_err(|_| format!("purpose '{purpose}': TCF purposes are 'tcf:1' … 'tcf:24'"))?;
        if !(1..=24).contains(&n) {
            return Err(format!(
                "purpose '{purpose}': TCF purposes are 'tcf:1' … 'tcf:24'"
            ));
        }
        return Ok(format!(
            "SELECT uid FROM (SELECT uid, tc_string, row_number() OVER (PARTITION BY uid ORDER BY recorded_at DESC, ingested_at DESC NULLS LAST, row_seq DESC NULLS LAST) AS rn \
             FROM {consent} WHERE tc_string IS NOT NULL AND recorded_at <= {at}) l WHERE rn = 1 AND tcf_purpose_consent(tc_string, {n})"
        ));
    }
    if purpose == "sale" {
        return Ok(format!(
            "SELECT uid FROM (SELECT uid, us_privacy, gpp, row_number() OVER (PARTITION BY uid ORDER BY recorded_at DESC, ingested_at DESC NULLS LAST, row_seq DESC NULLS LAST) AS rn \
             FROM {consent} WHERE (us_privacy IS NOT NULL OR gpp IS NOT NULL) AND recorded_at <= {at}) l WHERE rn = 1 AND \
             CASE WHEN us_privacy IS NOT NULL THEN regexp_like(us_privacy, '^1[YNyn-]{{3}}$') AND NOT usp_opted_out(us_privacy) \
                  ELSE gpp_section_ids(gpp) IS NOT NULL AND NOT gpp_sale_opted_out(gpp) END"
        ));
    }
    if purpose.trim().is_empty() {
        return Err("a purpose must not be empty".into());
    }
    let p = purpose.replace('\'', "''");
    Ok(format!(
        "SELECT uid FROM (SELECT uid, granted, expires_at, row_number() OVER (PARTITION BY uid ORDER BY recorded_at DESC, ingested_at DESC NULLS LAST, row_seq DESC NULLS LAST) AS rn \
         FROM {consent} WHERE purpose = '{p}' AND granted IS NOT NULL AND recorded_at <= {at}) l \
         WHERE rn = 1 AND granted AND (expires_at IS NULL OR expires_at > {at})"
    ))
}

/// The times around `at` between which no consent record starts or expires: the holder set of
/// every purpose is the same for every time in `[from, until)`. Conservative: it looks at all
/// records, not only the purpose's.
pub(crate) async fn stable_window(
    ctx: &super::EvalCtx,
    at: i64,
) -> crate::error::Result<(i64, i64)> {
    use arrow::array::{Array, AsArray};
    let t = ts_lit(at);
    let q = format!(
        "SELECT \
           CAST(greatest(max(CASE WHEN recorded_at <= {t} THEN recorded_at END), \
                         max(CASE WHEN expires_at <= {t} THEN expires_at END)) AS BIGINT), \
           CAST(least(min(CASE WHEN recorded_at > {t} THEN recorded_at END), \
                      min(CASE WHEN expires_at > {t} THEN expires_at END)) AS BIGINT) \
         FROM consent"
    );
    let batches = ctx.query(&q).await?;
    let value = |i: usize| {
        batches
            .first()
            .map(|b| b.column(i).as_primitive::<arrow::datatypes::Int64Type>())
            .filter(|a| !a.is_empty() && !a.is_null(0))
            .map(|a| a.value(0))
    };
    Ok((value(0).unwrap_or(i64::MIN), value(1).unwrap_or(i64::MAX)))
}

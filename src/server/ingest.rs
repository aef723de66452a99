//! Flight SQL bulk ingest (`CommandStatementIngest`, ADBC `adbc_ingest`): batches go through the
//! same validation, match-key hashing and pseudonymisation as `segdb ingest`, all or nothing — a
//! rejected row fails the call with its row number and commits nothing. Admin only.

use arrow_flight::error::FlightError;
use arrow_flight::sql::CommandStatementIngest;
use arrow_flight::sql::server::PeekableFlightDataStream;
use futures::TryStreamExt;
use tonic::{Request, Status};

use super::auth::Caller;
use super::wire::to_status;
use crate::ingest::{IngestOptions, Kind};
use crate::session::Session;
use crate::statement::Role;

/// Run one bulk ingest; returns the rows loaded.
pub async fn run(
    session: &Session,
    caller: &Caller,
    cmd: CommandStatementIngest,
    request: Request<PeekableFlightDataStream>,
) -> Result<i64, Status> {
    use arrow_flight::sql::TableExistsOption;
    if caller.role != Role::Admin {
        return Err(Status::permission_denied(format!(
            "role {} may not ingest",
            caller.role.name()
        )));
    }
    let kind = match cmd.table.to_ascii_lowercase().as_str() {
        "events" => Kind::Events,
        "profiles" => Kind::Profiles,
        "consent" => Kind::Consent,
        "links" => Kind::Links,
        other => {
            return Err(Status::invalid_argument(format!(
                "bulk ingest loads events, profiles, consent or links, not {other:?}"
            )));
        }
    };
    if cmd.temporary {
        return Err(Status::invalid_argument(
            "segdb has no temporary tables; ingest into events, profiles, consent or links",
        ));
    }
    if cmd
        .schema
        .as_deref()
        .is_some_and(|s| !s.is_empty() && s != crate::engine::SCHEMA)
        || cmd
            .catalog
            .as_deref()
            .is_some_and(|c| !c.is_empty() && c != crate::engine::CATALOG)
    {
        return Err(Status::invalid_argument(format!(
            "segdb's tables live in {}.{}",
            crate::engine::CATALOG,
            crate::engine::SCHEMA
        )));
    }
    if cmd
        .table_definition_options
        .as_ref()
        .is_some_and(|o| o.if_exists == TableExistsOption::Replace as i32)
    {
        return Err(Status::invalid_argument(
            "bulk ingest appends (profiles are upserted); replacing a table is not supported",
        ));
    }
    let batches = arrow_flight::decode::FlightRecordBatchStream::new_from_flight_data(
        request.into_inner().map_err(FlightError::from),
    )
    .map_err(|e| crate::Error::ingest(format!("cannot read the batches: {e}")));
    let shared = session.shared();
    let opts = IngestOptions {
        strict: true,
        max_ids_per_profile: Some(
            shared
                .max_ids_per_profile
                .load(std::sync::atomic::Ordering::Relaxed),
        ),
        ..Default::default()
    };
    let report = crate::ingest::ingest_batches(
        &shared.db,
        &shared.keyring,
        kind,
        "the ingested batches",
        batches,
        &opts,
    )
    .await
    .map_err(to_status)?;
    Ok(report.rows_loaded as i64)
}

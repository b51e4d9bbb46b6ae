//! The URL agent's rows: `url_checks`, one row per check (phases, status,
//! failure, certificate), and `url_targets`, one row per (project, agent,
//! target) that each newer check upserts: the URL and method as configured,
//! the state, since when the target is in it, and the newest check's id.
//!
//! Why a row per check and not a compressed block like logs: a check is
//! about 20 numbers and a few short texts, 170 of them a second for 10,000
//! targets at 60 s; two statements per check in the group's transaction
//! keep up (timed in ARCHITECTURE.md), and a row can be read back by
//! (target, agent, time) with one index range.
//!
//! Never lets an older check (a resent or late batch) replace a newer one
//! as the target's current state: the upsert only moves forward in time.

use sqlx::sqlite::SqliteRow;
use sqlx::{Row, Sqlite, Transaction};

use super::{SqliteStore, to_i64, to_u64};
use crate::model::{
    UrlCertificateRow, UrlCheckRow, UrlPhases, UrlState, UrlTargetFilter, UrlTargetRow,
};
use crate::store::{StoreError, UrlPurged, UrlReads};

/// Checks one retention statement removes.
const PURGE_STEP: i64 = 5_000;
/// Bytes counted per check besides its texts: its numbers, the row's
/// header and its two index entries.
const ROW_OVERHEAD_BYTES: u64 = 160;

/// The bytes a check is counted as taking (for `url.max_bytes`).
fn stored_bytes(c: &UrlCheckRow) -> u64 {
    let cert = c
        .certificate
        .as_ref()
        .map_or(0, |x| x.subject.len() + x.issuer.len());
    ROW_OVERHEAD_BYTES
        + (2 * c.target.len()
            + c.state.name().len()
            + c.failure.len()
            + c.detail.len()
            + c.http_version.len()
            + c.final_url.len()
            + c.remote_ip.len()
            + cert) as u64
}

/// Writes a payload's checks, and moves each target's current state
/// forward.
pub(super) async fn insert(
    tx: &mut Transaction<'static, Sqlite>,
    project_id: i64,
    oid: i64,
    checks: &[UrlCheckRow],
) -> Result<(), StoreError> {
    if checks.is_empty() {
        return Ok(());
    }
    let mut bytes = 0u64;
    for c in checks {
        bytes += stored_bytes(c);
        let cert = c.certificate.as_ref();
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO url_checks (project_id, oid, target, time_ms, state, ok, failure, detail,
                 dns_us, connect_us, tls_us, first_byte_us, transfer_us, total_us,
                 status_code, http_version, body_bytes, redirects, final_url, remote_ip,
                 cert_subject, cert_issuer, cert_not_after_ms, cert_days_left, cert_chain_days_left,
                 stored_bytes)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
             RETURNING id",
        )
        .bind(project_id)
        .bind(oid)
        .bind(&c.target)
        .bind(c.time_ms)
        .bind(c.state.name())
        .bind(c.ok)
        .bind(&c.failure)
        .bind(&c.detail)
        .bind(to_i64(c.phases.dns_us))
        .bind(to_i64(c.phases.connect_us))
        .bind(to_i64(c.phases.tls_us))
        .bind(to_i64(c.phases.first_byte_us))
        .bind(to_i64(c.phases.transfer_us))
        .bind(to_i64(c.phases.total_us))
        .bind(i64::from(c.status_code))
        .bind(&c.http_version)
        .bind(to_i64(c.body_bytes))
        .bind(i64::from(c.redirects))
        .bind(&c.final_url)
        .bind(&c.remote_ip)
        .bind(cert.map(|x| x.subject.as_str()))
        .bind(cert.map(|x| x.issuer.as_str()))
        .bind(cert.map(|x| x.not_after_ms))
        .bind(cert.map(|x| x.days_left))
        .bind(cert.map(|x| x.chain_days_left))
        .bind(to_i64(stored_bytes(c)))
        .fetch_one(&mut **tx)
        .await?;
        // `since_ms` stays while the state does; an older check changes
        // nothing (the WHERE of the update).
        sqlx::query(
            "INSERT INTO url_targets (project_id, oid, target, url, method, state, since_ms, last_ms, last_check_id)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, ?8)
             ON CONFLICT (project_id, oid, target) DO UPDATE SET
                 url = excluded.url,
                 method = excluded.method,
                 since_ms = CASE WHEN url_targets.state = excluded.state
                                 THEN url_targets.since_ms ELSE excluded.since_ms END,
                 state = excluded.state,
                 last_ms = excluded.last_ms,
                 last_check_id = excluded.last_check_id
             WHERE excluded.last_ms >= url_targets.last_ms",
        )
        .bind(project_id)
        .bind(oid)
        .bind(&c.target)
        .bind(&c.url)
        .bind(&c.method)
        .bind(c.state.name())
        .bind(c.time_ms)
        .bind(id)
        .execute(&mut **tx)
        .await?;
    }
    sqlx::query("UPDATE url_totals SET checks = checks + ?, bytes = bytes + ? WHERE id = 1")
        .bind(to_i64(checks.len() as u64))
        .bind(to_i64(bytes))
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Deletes the checks `statement` names (it binds `first`, then
/// `second`, and returns `stored_bytes`) and takes them off
/// `url_totals` in the same transaction; the bytes removed.
async fn delete_step(
    store: &SqliteStore,
    statement: &'static str,
    first: i64,
    second: i64,
    purged: &mut UrlPurged,
) -> Result<u64, StoreError> {
    let mut tx = store.writer.begin().await?;
    let rows = sqlx::query(statement)
        .bind(first)
        .bind(second)
        .fetch_all(&mut *tx)
        .await?;
    let mut bytes = 0;
    for r in &rows {
        bytes += to_u64(r.try_get("stored_bytes")?);
    }
    if !rows.is_empty() {
        sqlx::query("UPDATE url_totals SET checks = checks - ?, bytes = bytes - ? WHERE id = 1")
            .bind(to_i64(rows.len() as u64))
            .bind(to_i64(bytes))
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    purged.checks += rows.len() as u64;
    purged.bytes += bytes;
    Ok(bytes)
}

/// The columns [`check_from_row`] reads, of `url_checks c` joined with
/// `url_targets t` (a macro, so statements stay `&'static str`).
macro_rules! check_columns {
    () => {
        "t.url, t.method, c.target, c.time_ms, c.state, c.ok, c.failure, c.detail,
    c.dns_us, c.connect_us, c.tls_us, c.first_byte_us, c.transfer_us, c.total_us,
    c.status_code, c.http_version, c.body_bytes, c.redirects, c.final_url, c.remote_ip,
    c.cert_subject, c.cert_issuer, c.cert_not_after_ms, c.cert_days_left, c.cert_chain_days_left"
    };
}

fn check_from_row(row: &SqliteRow) -> Result<UrlCheckRow, StoreError> {
    let state: String = row.try_get("state")?;
    let subject: Option<String> = row.try_get("cert_subject")?;
    let certificate = match subject {
        None => None,
        Some(subject) => Some(UrlCertificateRow {
            subject,
            issuer: row
                .try_get::<Option<String>, _>("cert_issuer")?
                .unwrap_or_default(),
            not_after_ms: row
                .try_get::<Option<i64>, _>("cert_not_after_ms")?
                .unwrap_or(0),
            days_left: row
                .try_get::<Option<i32>, _>("cert_days_left")?
                .unwrap_or(0),
            chain_days_left: row
                .try_get::<Option<i32>, _>("cert_chain_days_left")?
                .unwrap_or(0),
        }),
    };
    let small = |name: &str| -> Result<u32, StoreError> {
        Ok(u32::try_from(row.try_get::<i64, _>(name)?).unwrap_or(0))
    };
    Ok(UrlCheckRow {
        target: row.try_get("target")?,
        url: row.try_get("url")?,
        method: row.try_get("method")?,
        time_ms: row.try_get("time_ms")?,
        state: UrlState::from_name(&state)
            .ok_or_else(|| StoreError::Corrupt(format!("a URL check's state is '{state}'")))?,
        ok: row.try_get("ok")?,
        failure: row.try_get("failure")?,
        detail: row.try_get("detail")?,
        phases: UrlPhases {
            dns_us: to_u64(row.try_get("dns_us")?),
            connect_us: to_u64(row.try_get("connect_us")?),
            tls_us: to_u64(row.try_get("tls_us")?),
            first_byte_us: to_u64(row.try_get("first_byte_us")?),
            transfer_us: to_u64(row.try_get("transfer_us")?),
            total_us: to_u64(row.try_get("total_us")?),
        },
        status_code: small("status_code")?,
        http_version: row.try_get("http_version")?,
        body_bytes: to_u64(row.try_get("body_bytes")?),
        redirects: small("redirects")?,
        final_url: row.try_get("final_url")?,
        remote_ip: row.try_get("remote_ip")?,
        certificate,
    })
}

impl UrlReads for SqliteStore {
    async fn url_targets(
        &self,
        project_id: i64,
        filter: &UrlTargetFilter,
    ) -> Result<Vec<UrlTargetRow>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT t.oid, a.oname, t.since_ms, ",
            check_columns!(),
            " FROM url_targets t
             JOIN agents a ON a.oid = t.oid
             JOIN url_checks c ON c.id = t.last_check_id
             WHERE t.project_id = ?1 AND (?2 IS NULL OR t.state = ?2)
               AND (?3 IS NULL OR t.oid = ?3) AND (?4 IS NULL OR t.target = ?4)
             ORDER BY CASE t.state WHEN 'down' THEN 0 WHEN 'pending' THEN 1
                                   WHEN 'degraded' THEN 2 ELSE 3 END,
                      t.target, a.oname, t.oid"
        ))
        .bind(project_id)
        .bind(filter.state.map(UrlState::name))
        .bind(filter.oid)
        .bind(filter.target.as_deref())
        .fetch_all(&self.reader)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(UrlTargetRow {
                    oid: row.try_get("oid")?,
                    oname: row.try_get("oname")?,
                    since_ms: row.try_get("since_ms")?,
                    latest: check_from_row(row)?,
                })
            })
            .collect()
    }

    async fn url_results(
        &self,
        project_id: i64,
        oid: i64,
        target: &str,
        from_ms: i64,
        to_ms: i64,
        limit: i64,
    ) -> Result<Vec<UrlCheckRow>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            check_columns!(),
            " FROM url_checks c
             JOIN url_targets t ON t.project_id = c.project_id AND t.oid = c.oid AND t.target = c.target
             WHERE c.project_id = ?1 AND c.target = ?2 AND c.oid = ?3
               AND c.time_ms BETWEEN ?4 AND ?5
             ORDER BY c.time_ms DESC, c.id DESC LIMIT ?6"
        ))
        .bind(project_id)
        .bind(target)
        .bind(oid)
        .bind(from_ms)
        .bind(to_ms)
        .bind(limit)
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(check_from_row).collect()
    }
}

/// URL retention, called by [`crate::store::Retention::purge_url`]: by
/// age, then the oldest checks until the total is under the cap, in steps
/// of [`PURGE_STEP`]; then the targets whose newest check is gone.
pub(super) async fn purge(
    store: &SqliteStore,
    cutoff_ms: i64,
    max_bytes: u64,
    stop: &tokio_util::sync::CancellationToken,
) -> Result<UrlPurged, StoreError> {
    let mut purged = UrlPurged::default();
    loop {
        if stop.is_cancelled() {
            return Ok(purged);
        }
        let before = purged.checks;
        delete_step(
            store,
            "DELETE FROM url_checks WHERE id IN
                (SELECT id FROM url_checks WHERE time_ms < ?1 ORDER BY time_ms LIMIT ?2)
             RETURNING stored_bytes",
            cutoff_ms,
            PURGE_STEP,
            &mut purged,
        )
        .await?;
        if purged.checks == before {
            break;
        }
    }
    if max_bytes > 0 {
        let total: i64 = sqlx::query_scalar("SELECT bytes FROM url_totals WHERE id = 1")
            .fetch_one(&store.writer)
            .await?;
        let mut excess = to_u64(total).saturating_sub(max_bytes);
        while excess > 0 && !stop.is_cancelled() {
            // Of the oldest step of checks, those whose bytes, added up,
            // first cover the excess (the window runs over one step only).
            let before = purged.checks;
            let bytes = delete_step(
                store,
                "DELETE FROM url_checks WHERE id IN (
                    SELECT id FROM (
                        SELECT id, stored_bytes,
                               SUM(stored_bytes) OVER (ORDER BY time_ms, id) AS running
                        FROM (SELECT id, time_ms, stored_bytes FROM url_checks
                              ORDER BY time_ms, id LIMIT ?2))
                    WHERE running - stored_bytes < ?1)
                 RETURNING stored_bytes",
                to_i64(excess),
                PURGE_STEP,
                &mut purged,
            )
            .await?;
            if purged.checks == before {
                break;
            }
            excess = excess.saturating_sub(bytes);
        }
    }
    if stop.is_cancelled() {
        return Ok(purged);
    }
    purged.targets = sqlx::query(
        "DELETE FROM url_targets WHERE last_ms < ?
            OR NOT EXISTS (SELECT 1 FROM url_checks WHERE id = url_targets.last_check_id)",
    )
    .bind(cutoff_ms)
    .execute(&store.writer)
    .await?
    .rows_affected();
    Ok(purged)
}

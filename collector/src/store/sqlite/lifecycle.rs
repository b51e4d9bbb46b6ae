//! Terminating an agent: every row of its data deleted in one
//! transaction, and the agent marked so that the sink refuses its batches
//! and `Hello` refuses it, until it is enabled again.
//!
//! Holds the series lock for the whole of it, as the sink does for its
//! transaction: a group either committed before (and its rows are
//! deleted here) or sees the agent terminated (and stores nothing). Never
//! deletes the agent's row: a terminated agent stays listed, to be
//! enabled again.

use sqlx::{Sqlite, Transaction};

use super::SqliteStore;
use crate::store::{Deleted, StoreError};

/// Runs one delete bound to `?1` = the agent and `?2` = its project; the
/// rows it removed.
async fn delete(
    tx: &mut Transaction<'static, Sqlite>,
    sql: &'static str,
    oid: i64,
    project_id: i64,
) -> Result<u64, StoreError> {
    Ok(sqlx::query(sql)
        .bind(oid)
        .bind(project_id)
        .execute(&mut **tx)
        .await?
        .rows_affected())
}

impl SqliteStore {
    pub(super) async fn terminate(
        &self,
        project_id: i64,
        oid: i64,
        now_ms: i64,
    ) -> Result<Option<Deleted>, StoreError> {
        let mut cache = self.series.lock().await;
        let mut tx = self.writer.begin().await?;
        let found: Option<i64> = sqlx::query_scalar(
            "UPDATE agents SET terminated_ms = COALESCE(terminated_ms, ?), quiet = 1
             WHERE project_id = ? AND oid = ? RETURNING oid",
        )
        .bind(now_ms)
        .bind(project_id)
        .bind(oid)
        .fetch_optional(&mut *tx)
        .await?;
        if found.is_none() {
            return Ok(None);
        }
        let t = &mut tx;
        // Each statement reads one agent's rows by an index that starts
        // with the agent (or the project, then the agent).
        let mut gone = Deleted::default();
        delete(
            t,
            "DELETE FROM chunks WHERE series_id IN (SELECT id FROM series WHERE oid = ?1)",
            oid,
            project_id,
        )
        .await?;
        gone.series = delete(t, "DELETE FROM series WHERE oid = ?1", oid, project_id).await?;
        gone.metric_rows =
            delete(t, "DELETE FROM metric_rows WHERE oid = ?1", oid, project_id).await?;
        gone.process_snapshots = delete(
            t,
            "DELETE FROM process_snapshots WHERE oid = ?1",
            oid,
            project_id,
        )
        .await?;
        // By the agent alone (its oid is the project's, checked above), so
        // the `(oid, ts_ms)` index is the one used.
        gone.events = delete(t, "DELETE FROM events WHERE oid = ?1", oid, project_id).await?;
        gone.log_blocks =
            delete(t, "DELETE FROM log_blocks WHERE oid = ?1", oid, project_id).await?;
        delete(
            t,
            "DELETE FROM log_watermarks WHERE oid = ?1",
            oid,
            project_id,
        )
        .await?;
        gone.db_snapshots = delete(
            t,
            "DELETE FROM db_snapshots WHERE project_id = ?2 AND oid = ?1",
            oid,
            project_id,
        )
        .await?;
        delete(
            t,
            "DELETE FROM db_variables WHERE oid = ?1",
            oid,
            project_id,
        )
        .await?;
        // URL checks by (project, target, agent) for each of its targets,
        // and the running totals retention's cap reads moved with them.
        let (checks, bytes): (i64, i64) = sqlx::query_as(
            "SELECT COUNT(*), COALESCE(SUM(stored_bytes), 0) FROM url_checks
             WHERE project_id = ?2 AND oid = ?1
               AND target IN (SELECT target FROM url_targets WHERE project_id = ?2 AND oid = ?1)",
        )
        .bind(oid)
        .bind(project_id)
        .fetch_one(&mut **t)
        .await?;
        gone.url_checks = delete(
            t,
            "DELETE FROM url_checks WHERE project_id = ?2 AND oid = ?1
               AND target IN (SELECT target FROM url_targets WHERE project_id = ?2 AND oid = ?1)",
            oid,
            project_id,
        )
        .await?;
        delete(
            t,
            "DELETE FROM url_targets WHERE project_id = ?2 AND oid = ?1",
            oid,
            project_id,
        )
        .await?;
        sqlx::query(
            "UPDATE url_totals SET checks = MAX(checks - ?, 0), bytes = MAX(bytes - ?, 0) WHERE id = 1",
        )
        .bind(checks)
        .bind(bytes)
        .execute(&mut **t)
        .await?;
        // Its alerts, their history, its queued notifications and its
        // pause: what alerting knew of it.
        delete(
            t,
            "DELETE FROM alerts WHERE project_id = ?2 AND oid = ?1",
            oid,
            project_id,
        )
        .await?;
        delete(
            t,
            "DELETE FROM alert_history WHERE project_id = ?2 AND oid = ?1",
            oid,
            project_id,
        )
        .await?;
        // Its notifications not sent yet: nobody is told of it any more.
        delete(
            t,
            "DELETE FROM alert_notifications WHERE project_id = ?2 AND state = 'queued'
             AND json_extract(payload, '$.agent.oid') = ?1",
            oid,
            project_id,
        )
        .await?;
        delete(
            t,
            "DELETE FROM agent_pauses WHERE oid = ?1",
            oid,
            project_id,
        )
        .await?;
        gone.batches = delete(t, "DELETE FROM batches WHERE oid = ?1", oid, project_id).await?;
        delete(
            t,
            "DELETE FROM dedupe_watermarks WHERE oid = ?1",
            oid,
            project_id,
        )
        .await?;
        tx.commit().await?;
        self.terminated
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(oid);
        cache.forget_agent(oid);
        drop(cache);
        self.series_changed();
        // No subscriber is fine: no stream is open.
        let _ = self.terminations.send(oid);
        Ok(Some(gone))
    }

    pub(super) async fn enable(&self, project_id: i64, oid: i64) -> Result<bool, StoreError> {
        // The sink reads the set under this lock.
        let _cache = self.series.lock().await;
        let found: Option<i64> = sqlx::query_scalar(
            "UPDATE agents SET terminated_ms = NULL WHERE project_id = ? AND oid = ? RETURNING oid",
        )
        .bind(project_id)
        .bind(oid)
        .fetch_optional(&self.writer)
        .await?;
        if found.is_some() {
            self.terminated
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .remove(&oid);
        }
        Ok(found.is_some())
    }
}

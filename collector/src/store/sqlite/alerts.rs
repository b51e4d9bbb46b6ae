//! Alert rules, channels, alerts with their history, the notification
//! queue and its attempts, and agents' pauses, in SQLite. Rules and
//! channels are JSON in one column (their shape is the API's); a change,
//! its history line and its queued notifications commit together.

use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use super::SqliteStore;
use crate::alerts::{
    AlertChange, AlertKey, AlertRow, Attempt, AttemptRow, ChannelConfig, ChannelRow, HistoryRow,
    Notification, Pause, RuleRow, RuleSpec,
};
use crate::store::{AlertStore, StoreError};

fn rule_from_row(row: &SqliteRow) -> Result<RuleRow, StoreError> {
    let spec: String = row.try_get("spec")?;
    Ok(RuleRow {
        id: row.try_get("id")?,
        project_id: row.try_get("project_id")?,
        spec: serde_json::from_str(&spec)?,
        created_ms: row.try_get("created_ms")?,
        updated_ms: row.try_get("updated_ms")?,
    })
}

fn channel_from_row(row: &SqliteRow) -> Result<ChannelRow, StoreError> {
    let config: String = row.try_get("config")?;
    Ok(ChannelRow {
        id: row.try_get("id")?,
        project_id: row.try_get("project_id")?,
        name: row.try_get("name")?,
        config: serde_json::from_str(&config)?,
        created_ms: row.try_get("created_ms")?,
    })
}

fn key_from_row(row: &SqliteRow) -> Result<AlertKey, StoreError> {
    Ok(AlertKey {
        rule_id: row.try_get("rule_id")?,
        oid: row.try_get("oid")?,
        target: row.try_get("target")?,
    })
}

fn notification_from_row(row: &SqliteRow) -> Result<Notification, StoreError> {
    let config: String = row.try_get("config")?;
    let attempts: i64 = row.try_get("attempts")?;
    Ok(Notification {
        id: row.try_get("id")?,
        project_id: row.try_get("project_id")?,
        channel_id: row.try_get("channel_id")?,
        channel_name: row.try_get("name")?,
        config: serde_json::from_str(&config)?,
        payload: row.try_get("payload")?,
        attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
    })
}

fn conflict(e: sqlx::Error, what: &str, name: &str) -> StoreError {
    match e {
        sqlx::Error::Database(d) if d.is_unique_violation() => {
            StoreError::Conflict(format!("a {what} named '{name}' exists already"))
        }
        other => other.into(),
    }
}

/// The select [`notification_from_row`] reads, as a literal for `concat!`.
macro_rules! notification_select {
    () => {
        "SELECT n.id, n.project_id, n.channel_id, c.name, c.config, n.payload, n.attempts
         FROM alert_notifications n JOIN alert_channels c ON c.id = n.channel_id"
    };
}

impl AlertStore for SqliteStore {
    async fn alert_rules(&self, project_id: Option<i64>) -> Result<Vec<RuleRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, project_id, spec, created_ms, updated_ms FROM alert_rules
             WHERE ?1 IS NULL OR project_id = ?1 ORDER BY id",
        )
        .bind(project_id)
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(rule_from_row).collect()
    }

    async fn create_alert_rule(
        &self,
        project_id: i64,
        spec: &RuleSpec,
        now_ms: i64,
    ) -> Result<RuleRow, StoreError> {
        let row = sqlx::query(
            "INSERT INTO alert_rules (project_id, name, spec, created_ms, updated_ms) VALUES (?, ?, ?, ?, ?)
             RETURNING id, project_id, spec, created_ms, updated_ms",
        )
        .bind(project_id)
        .bind(&spec.name)
        .bind(serde_json::to_string(spec)?)
        .bind(now_ms)
        .bind(now_ms)
        .fetch_one(&self.writer)
        .await
        .map_err(|e| conflict(e, "rule", &spec.name))?;
        rule_from_row(&row)
    }

    async fn update_alert_rule(
        &self,
        project_id: i64,
        id: i64,
        spec: &RuleSpec,
        now_ms: i64,
    ) -> Result<Option<RuleRow>, StoreError> {
        let mut tx = self.writer.begin().await?;
        let old: Option<String> =
            sqlx::query_scalar("SELECT spec FROM alert_rules WHERE id = ? AND project_id = ?")
                .bind(id)
                .bind(project_id)
                .fetch_optional(&mut *tx)
                .await?;
        let row = sqlx::query(
            "UPDATE alert_rules SET name = ?, spec = ?, updated_ms = ? WHERE id = ? AND project_id = ?
             RETURNING id, project_id, spec, created_ms, updated_ms",
        )
        .bind(&spec.name)
        .bind(serde_json::to_string(spec)?)
        .bind(now_ms)
        .bind(id)
        .bind(project_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(|e| conflict(e, "rule", &spec.name))?;
        // A changed condition (expr, agent, product) starts from nothing;
        // the evaluator records and tells the resolve of what it told.
        // Any other change keeps the alerts as they are.
        let old: Option<RuleSpec> = old.map(|o| serde_json::from_str(&o)).transpose()?;
        if row.is_some() && old.is_none_or(|o| !o.same_condition(spec)) {
            sqlx::query("DELETE FROM alerts WHERE rule_id = ?")
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        row.as_ref().map(rule_from_row).transpose()
    }

    async fn delete_alert_rule(&self, project_id: i64, id: i64) -> Result<bool, StoreError> {
        let mut tx = self.writer.begin().await?;
        let gone = sqlx::query("DELETE FROM alert_rules WHERE id = ? AND project_id = ?")
            .bind(id)
            .bind(project_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if gone > 0 {
            sqlx::query("DELETE FROM alerts WHERE rule_id = ?")
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(gone > 0)
    }

    async fn alert_channels(&self, project_id: i64) -> Result<Vec<ChannelRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, project_id, name, config, created_ms FROM alert_channels
             WHERE project_id = ? ORDER BY id",
        )
        .bind(project_id)
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(channel_from_row).collect()
    }

    async fn create_alert_channel(
        &self,
        project_id: i64,
        name: &str,
        config: &ChannelConfig,
        now_ms: i64,
    ) -> Result<ChannelRow, StoreError> {
        let row = sqlx::query(
            "INSERT INTO alert_channels (project_id, name, config, created_ms) VALUES (?, ?, ?, ?)
             RETURNING id, project_id, name, config, created_ms",
        )
        .bind(project_id)
        .bind(name)
        .bind(serde_json::to_string(config)?)
        .bind(now_ms)
        .fetch_one(&self.writer)
        .await
        .map_err(|e| conflict(e, "channel", name))?;
        channel_from_row(&row)
    }

    async fn update_alert_channel(
        &self,
        project_id: i64,
        id: i64,
        name: &str,
        config: &ChannelConfig,
    ) -> Result<Option<ChannelRow>, StoreError> {
        let row = sqlx::query(
            "UPDATE alert_channels SET name = ?, config = ? WHERE id = ? AND project_id = ?
             RETURNING id, project_id, name, config, created_ms",
        )
        .bind(name)
        .bind(serde_json::to_string(config)?)
        .bind(id)
        .bind(project_id)
        .fetch_optional(&self.writer)
        .await
        .map_err(|e| conflict(e, "channel", name))?;
        row.as_ref().map(channel_from_row).transpose()
    }

    async fn delete_alert_channel(&self, project_id: i64, id: i64) -> Result<bool, StoreError> {
        let mut tx = self.writer.begin().await?;
        let gone = sqlx::query("DELETE FROM alert_channels WHERE id = ? AND project_id = ?")
            .bind(id)
            .bind(project_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        sqlx::query("UPDATE alert_notifications SET state = 'failed' WHERE channel_id = ? AND project_id = ? AND state = 'queued'")
            .bind(id)
            .bind(project_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(gone > 0)
    }

    async fn alerts(
        &self,
        project_id: Option<i64>,
        firing_only: bool,
    ) -> Result<Vec<AlertRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT al.id, al.project_id, al.rule_id, al.oid, al.target, al.rule_name, al.state,
                    al.since_ms, al.last_notified_ms, al.value, al.message, COALESCE(a.oname, '') AS oname
             FROM alerts al LEFT JOIN agents a ON a.oid = al.oid
             WHERE (?1 IS NULL OR al.project_id = ?1) AND (?2 = 0 OR al.state = 'firing')
             ORDER BY al.since_ms DESC, al.id DESC",
        )
        .bind(project_id)
        .bind(i64::from(firing_only))
        .fetch_all(&self.reader)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(AlertRow {
                    id: row.try_get("id")?,
                    project_id: row.try_get("project_id")?,
                    key: key_from_row(row)?,
                    rule: row.try_get("rule_name")?,
                    oname: row.try_get("oname")?,
                    state: row.try_get("state")?,
                    since_ms: row.try_get("since_ms")?,
                    last_notified_ms: row.try_get("last_notified_ms")?,
                    value: row.try_get("value")?,
                    message: row.try_get("message")?,
                })
            })
            .collect()
    }

    async fn record_alert_changes(&self, changes: &[AlertChange]) -> Result<(), StoreError> {
        if changes.is_empty() {
            return Ok(());
        }
        let mut tx = self.writer.begin().await?;
        for change in changes {
            sqlx::query(
                "INSERT INTO alerts (project_id, rule_id, oid, target, rule_name, state, since_ms, last_notified_ms, value, message)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                 ON CONFLICT (rule_id, oid, target) DO UPDATE SET
                     rule_name = excluded.rule_name, state = excluded.state, since_ms = excluded.since_ms,
                     last_notified_ms = excluded.last_notified_ms, value = excluded.value, message = excluded.message",
            )
            .bind(change.project_id)
            .bind(change.key.rule_id)
            .bind(change.key.oid)
            .bind(&change.key.target)
            .bind(&change.rule)
            .bind(change.state)
            .bind(change.since_ms)
            .bind(change.last_notified_ms)
            .bind(change.value)
            .bind(&change.message)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO alert_history (project_id, rule_id, oid, target, rule_name, state, time_ms, value, message, notified)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(change.project_id)
            .bind(change.key.rule_id)
            .bind(change.key.oid)
            .bind(&change.key.target)
            .bind(&change.rule)
            .bind(change.state)
            .bind(change.time_ms)
            .bind(change.value)
            .bind(&change.message)
            .bind(!change.notifications.is_empty())
            .execute(&mut *tx)
            .await?;
            for (channel_id, payload) in &change.notifications {
                // Only a channel of the alert's project is told.
                sqlx::query(
                    "INSERT INTO alert_notifications (project_id, channel_id, kind, payload, state, attempts, next_ms, created_ms)
                     SELECT ?1, id, ?3, ?4, 'queued', 0, ?5, ?5 FROM alert_channels WHERE id = ?2 AND project_id = ?1",
                )
                .bind(change.project_id)
                .bind(channel_id)
                .bind(change.state)
                .bind(payload)
                .bind(change.time_ms)
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    async fn alert_history(
        &self,
        project_id: i64,
        from_ms: i64,
        to_ms: i64,
        limit: i64,
    ) -> Result<Vec<HistoryRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT h.id, h.rule_id, h.oid, h.target, h.rule_name, h.state, h.time_ms, h.value, h.message,
                    h.notified, COALESCE(a.oname, '') AS oname
             FROM alert_history h LEFT JOIN agents a ON a.oid = h.oid
             WHERE h.project_id = ? AND h.time_ms BETWEEN ? AND ?
             ORDER BY h.time_ms DESC, h.id DESC LIMIT ?",
        )
        .bind(project_id)
        .bind(from_ms)
        .bind(to_ms)
        .bind(limit)
        .fetch_all(&self.reader)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(HistoryRow {
                    id: row.try_get("id")?,
                    key: key_from_row(row)?,
                    rule: row.try_get("rule_name")?,
                    oname: row.try_get("oname")?,
                    state: row.try_get("state")?,
                    time_ms: row.try_get("time_ms")?,
                    value: row.try_get("value")?,
                    message: row.try_get("message")?,
                    notified: row.try_get("notified")?,
                })
            })
            .collect()
    }

    async fn queue_notification(
        &self,
        project_id: i64,
        channel_id: i64,
        payload: &str,
        now_ms: i64,
    ) -> Result<Option<i64>, StoreError> {
        // A test is sent by the caller at once: it is stored as `testing`,
        // a state the queue's loop never picks, so a crash before its one
        // attempt leaves it unsent rather than a real send later.
        let id: Option<i64> = sqlx::query_scalar(
            "INSERT INTO alert_notifications (project_id, channel_id, kind, payload, state, attempts, next_ms, created_ms)
             SELECT ?1, id, 'test', ?3, 'testing', 0, ?4, ?4 FROM alert_channels WHERE id = ?2 AND project_id = ?1
             RETURNING id",
        )
        .bind(project_id)
        .bind(channel_id)
        .bind(payload)
        .bind(now_ms)
        .fetch_optional(&self.writer)
        .await?;
        Ok(id)
    }

    async fn notification(&self, id: i64) -> Result<Option<Notification>, StoreError> {
        let row = sqlx::query(concat!(
            notification_select!(),
            " WHERE n.id = ? AND n.state IN ('queued', 'testing')"
        ))
        .bind(id)
        .fetch_optional(&self.writer)
        .await?;
        row.as_ref().map(notification_from_row).transpose()
    }

    async fn due_notifications(
        &self,
        now_ms: i64,
        limit: i64,
    ) -> Result<Vec<Notification>, StoreError> {
        // From the writer: a row just retried must not come back stale.
        let rows = sqlx::query(concat!(
            notification_select!(),
            " WHERE n.state = 'queued' AND n.next_ms <= ? ORDER BY n.next_ms, n.id LIMIT ?"
        ))
        .bind(now_ms)
        .bind(limit)
        .fetch_all(&self.writer)
        .await?;
        rows.iter().map(notification_from_row).collect()
    }

    async fn record_attempt(&self, attempt: &Attempt) -> Result<(), StoreError> {
        let mut tx = self.writer.begin().await?;
        let row = sqlx::query(
            "UPDATE alert_notifications SET attempts = attempts + 1,
                 state = CASE WHEN ?2 THEN 'sent' WHEN ?3 IS NULL THEN 'failed' ELSE 'queued' END,
                 next_ms = COALESCE(?3, next_ms)
             WHERE id = ?1 RETURNING project_id, channel_id, attempts",
        )
        .bind(attempt.notification_id)
        .bind(attempt.ok)
        .bind(attempt.retry_at_ms)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(());
        };
        let project_id: i64 = row.try_get("project_id")?;
        let channel_id: i64 = row.try_get("channel_id")?;
        let number: i64 = row.try_get("attempts")?;
        sqlx::query(
            "INSERT INTO alert_attempts (project_id, notification_id, channel_id, attempt, time_ms, elapsed_ms, ok, status, error)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(project_id)
        .bind(attempt.notification_id)
        .bind(channel_id)
        .bind(number)
        .bind(attempt.time_ms)
        .bind(attempt.elapsed_ms)
        .bind(attempt.ok)
        .bind(attempt.status.map(i64::from))
        .bind(&attempt.error)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn delivery_attempts(
        &self,
        project_id: i64,
        limit: i64,
    ) -> Result<Vec<AttemptRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT t.id, t.notification_id, t.channel_id, COALESCE(c.name, '') AS name, t.attempt, t.time_ms,
                    t.elapsed_ms, t.ok, t.status, t.error, n.state, n.kind
             FROM alert_attempts t JOIN alert_notifications n ON n.id = t.notification_id
             LEFT JOIN alert_channels c ON c.id = t.channel_id
             WHERE t.project_id = ? ORDER BY t.id DESC LIMIT ?",
        )
        .bind(project_id)
        .bind(limit)
        .fetch_all(&self.reader)
        .await?;
        rows.iter()
            .map(|row| {
                let attempt: i64 = row.try_get("attempt")?;
                let status: Option<i64> = row.try_get("status")?;
                Ok(AttemptRow {
                    id: row.try_get("id")?,
                    notification_id: row.try_get("notification_id")?,
                    channel_id: row.try_get("channel_id")?,
                    channel: row.try_get("name")?,
                    attempt: u32::try_from(attempt).unwrap_or(u32::MAX),
                    time_ms: row.try_get("time_ms")?,
                    elapsed_ms: row.try_get("elapsed_ms")?,
                    ok: row.try_get("ok")?,
                    status: status.and_then(|s| u16::try_from(s).ok()),
                    error: row.try_get("error")?,
                    state: row.try_get("state")?,
                    kind: row.try_get("kind")?,
                })
            })
            .collect()
    }

    async fn pause_agent(
        &self,
        project_id: i64,
        oid: i64,
        until_ms: Option<i64>,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO agent_pauses (oid, project_id, since_ms, until_ms)
             SELECT oid, project_id, ?3, ?4 FROM agents WHERE oid = ?1 AND project_id = ?2
             ON CONFLICT (oid) DO UPDATE SET until_ms = excluded.until_ms",
        )
        .bind(oid)
        .bind(project_id)
        .bind(now_ms)
        .bind(until_ms)
        .execute(&self.writer)
        .await?
        .rows_affected();
        Ok(done > 0)
    }

    async fn resume_agent(&self, project_id: i64, oid: i64) -> Result<bool, StoreError> {
        let exists: Option<i64> =
            sqlx::query_scalar("SELECT oid FROM agents WHERE oid = ? AND project_id = ?")
                .bind(oid)
                .bind(project_id)
                .fetch_optional(&self.writer)
                .await?;
        if exists.is_none() {
            return Ok(false);
        }
        sqlx::query("DELETE FROM agent_pauses WHERE oid = ? AND project_id = ?")
            .bind(oid)
            .bind(project_id)
            .execute(&self.writer)
            .await?;
        Ok(true)
    }

    async fn pauses(&self, project_id: Option<i64>) -> Result<Vec<Pause>, StoreError> {
        let rows = sqlx::query(
            "SELECT oid, since_ms, until_ms FROM agent_pauses WHERE ?1 IS NULL OR project_id = ?1",
        )
        .bind(project_id)
        .fetch_all(&self.reader)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(Pause {
                    oid: row.try_get("oid")?,
                    since_ms: row.try_get("since_ms")?,
                    until_ms: row.try_get("until_ms")?,
                })
            })
            .collect()
    }

    async fn purge_alerts(&self, cutoff_ms: i64) -> Result<u64, StoreError> {
        let mut tx = self.writer.begin().await?;
        let mut removed = 0;
        for sql in [
            "DELETE FROM alert_history WHERE time_ms < ?",
            "DELETE FROM alerts WHERE state = 'resolved' AND since_ms < ?",
            "DELETE FROM alert_attempts WHERE time_ms < ?",
            "DELETE FROM alert_notifications WHERE state != 'queued' AND created_ms < ?",
            "DELETE FROM agent_pauses WHERE until_ms IS NOT NULL AND until_ms < ?",
        ] {
            removed += sqlx::query(sql)
                .bind(cutoff_ms)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        }
        tx.commit().await?;
        Ok(removed)
    }
}

//! Projects, agents and collector-raised events in SQLite. Never touches
//! batch records except to read the highest number an instance delivered.

use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use super::{SqliteStore, to_u64};
use crate::model::{Agent, AgentHealth, AgentHello, EventRow, Project};
use crate::store::{Deleted, Registered, Registry, StoreError, Touch};

/// The columns [`agent_from_row`] reads, as a literal for `concat!`.
macro_rules! agent_columns {
    () => {
        "oid, project_id, product, oname, hostname, os, version, boot_time_ms, interval_ms, first_seen_ms, last_seen_ms, health, instance, boot_id, terminated_ms"
    };
}

pub(super) fn agent_from_row(row: &SqliteRow) -> Result<Agent, StoreError> {
    let health: Option<String> = row.try_get("health")?;
    Ok(Agent {
        oid: row.try_get("oid")?,
        project_id: row.try_get("project_id")?,
        product: row.try_get("product")?,
        oname: row.try_get("oname")?,
        hostname: row.try_get("hostname")?,
        os: row.try_get("os")?,
        version: row.try_get("version")?,
        boot_time_ms: row.try_get("boot_time_ms")?,
        interval_ms: row.try_get("interval_ms")?,
        first_seen_ms: row.try_get("first_seen_ms")?,
        last_seen_ms: row.try_get("last_seen_ms")?,
        health: health
            .map(|h| serde_json::from_str::<AgentHealth>(&h))
            .transpose()?,
        instance: row.try_get("instance")?,
        boot_id: row.try_get("boot_id")?,
        terminated_ms: row.try_get("terminated_ms")?,
    })
}

fn project_from_row(row: &SqliteRow) -> Result<Project, StoreError> {
    Ok(Project {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
    })
}

impl SqliteStore {
    /// The project a secret's hash belongs to, by `sql` (a static
    /// statement with one bound hash).
    async fn project_by(
        &self,
        sql: &'static str,
        hash: &[u8],
    ) -> Result<Option<Project>, StoreError> {
        let row = sqlx::query(sql)
            .bind(hash)
            .fetch_optional(&self.reader)
            .await?;
        row.as_ref().map(project_from_row).transpose()
    }
}

impl Registry for SqliteStore {
    async fn create_project(
        &self,
        name: &str,
        license_hash: &[u8],
        token_hash: &[u8],
    ) -> Result<Project, StoreError> {
        let now = crate::now_ms();
        let result = sqlx::query(
            "INSERT INTO projects (name, license_hash, token_hash, created_ms) VALUES (?, ?, ?, ?) RETURNING id, name",
        )
        .bind(name)
        .bind(license_hash)
        .bind(token_hash)
        .bind(now)
        .fetch_one(&self.writer)
        .await;
        match result {
            Ok(row) => project_from_row(&row),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Err(StoreError::Conflict(
                format!("a project named '{name}' exists already"),
            )),
            Err(e) => Err(e.into()),
        }
    }

    async fn projects(&self) -> Result<Vec<Project>, StoreError> {
        let rows = sqlx::query("SELECT id, name FROM projects ORDER BY id")
            .fetch_all(&self.reader)
            .await?;
        rows.iter().map(project_from_row).collect()
    }

    async fn project_by_license(&self, license_hash: &[u8]) -> Result<Option<Project>, StoreError> {
        self.project_by(
            "SELECT id, name FROM projects WHERE license_hash = ?",
            license_hash,
        )
        .await
    }

    async fn project_by_token(&self, token_hash: &[u8]) -> Result<Option<Project>, StoreError> {
        self.project_by(
            "SELECT id, name FROM projects WHERE token_hash = ?",
            token_hash,
        )
        .await
    }

    async fn register_agent(
        &self,
        project_id: i64,
        hello: &AgentHello,
        now_ms: i64,
    ) -> Result<Registered, StoreError> {
        let mut tx = self.writer.begin().await?;
        // A terminated agent's row is left as it is (no row returned).
        let oid: Option<i64> = sqlx::query_scalar(
            "INSERT INTO agents (project_id, product, oname, hostname, os, version, boot_time_ms,
                                 created_time, instance, interval_ms, first_seen_ms, last_seen_ms, boot_id)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (project_id, product, oname) DO UPDATE SET
                 hostname = excluded.hostname, os = excluded.os, version = excluded.version,
                 boot_time_ms = excluded.boot_time_ms, created_time = excluded.created_time,
                 instance = excluded.instance, interval_ms = excluded.interval_ms,
                 last_seen_ms = excluded.last_seen_ms, boot_id = excluded.boot_id
             WHERE agents.terminated_ms IS NULL
             RETURNING oid",
        )
        .bind(project_id)
        .bind(&hello.product)
        .bind(&hello.oname)
        .bind(&hello.hostname)
        .bind(&hello.os)
        .bind(&hello.version)
        .bind(hello.boot_time_ms)
        .bind(&hello.created_time)
        .bind(&hello.instance)
        .bind(hello.interval_ms)
        .bind(now_ms)
        .bind(now_ms)
        .bind(&hello.boot_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(oid) = oid else {
            let oid: i64 = sqlx::query_scalar(
                "SELECT oid FROM agents WHERE project_id = ? AND product = ? AND oname = ?",
            )
            .bind(project_id)
            .bind(&hello.product)
            .bind(&hello.oname)
            .fetch_one(&mut *tx)
            .await?;
            tx.commit().await?;
            return Ok(Registered {
                oid,
                last_seq: 0,
                terminated: true,
            });
        };
        // What the agent may drop at once: stored, or retired by retention.
        let last: Option<i64> = sqlx::query_scalar(
            "SELECT MAX(s) FROM (
                 SELECT MAX(seq) AS s FROM batches WHERE oid = ?1 AND instance = ?2
                 UNION ALL
                 SELECT seq AS s FROM dedupe_watermarks WHERE oid = ?1 AND instance = ?2)",
        )
        .bind(oid)
        .bind(&hello.instance)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Registered {
            oid,
            last_seq: last.map_or(0, to_u64),
            terminated: false,
        })
    }

    async fn touch_agents(&self, touches: &[Touch]) -> Result<(), StoreError> {
        if touches.is_empty() {
            return Ok(());
        }
        let mut tx = self.writer.begin().await?;
        for touch in touches {
            let health = touch
                .health
                .as_ref()
                .map(serde_json::to_string)
                .transpose()?;
            sqlx::query(
                "UPDATE agents SET last_seen_ms = MAX(last_seen_ms, ?), health = COALESCE(?, health), quiet = 0
                 WHERE oid = ? AND project_id = ? AND terminated_ms IS NULL",
            )
            .bind(touch.seen_ms)
            .bind(health)
            .bind(touch.oid)
            .bind(touch.project_id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn agent(&self, project_id: i64, oid: i64) -> Result<Option<Agent>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            agent_columns!(),
            " FROM agents WHERE project_id = ? AND oid = ?"
        ))
        .bind(project_id)
        .bind(oid)
        .fetch_optional(&self.reader)
        .await?;
        row.as_ref().map(agent_from_row).transpose()
    }

    async fn agents(&self, project_id: i64) -> Result<Vec<Agent>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            agent_columns!(),
            " FROM agents WHERE project_id = ? ORDER BY oname, product"
        ))
        .bind(project_id)
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(agent_from_row).collect()
    }

    async fn terminate_agent(
        &self,
        project_id: i64,
        oid: i64,
        now_ms: i64,
    ) -> Result<Option<Deleted>, StoreError> {
        self.terminate(project_id, oid, now_ms).await
    }

    fn subscribe_terminations(&self) -> tokio::sync::broadcast::Receiver<i64> {
        self.terminations.subscribe()
    }

    async fn enable_agent(&self, project_id: i64, oid: i64) -> Result<bool, StoreError> {
        self.enable(project_id, oid).await
    }

    async fn newly_quiet_agents(&self, now_ms: i64) -> Result<Vec<Agent>, StoreError> {
        let rows = sqlx::query(concat!(
            "UPDATE agents SET quiet = 1
             WHERE quiet = 0 AND terminated_ms IS NULL AND ? - last_seen_ms > 3 * MAX(interval_ms, 1000)
             RETURNING ",
            agent_columns!()
        ))
        .bind(now_ms)
        .fetch_all(&self.writer)
        .await?;
        rows.iter().map(agent_from_row).collect()
    }

    async fn insert_event(
        &self,
        project_id: i64,
        oid: Option<i64>,
        event: &EventRow,
    ) -> Result<(), StoreError> {
        let mut tx = self.writer.begin().await?;
        super::events::insert(&mut tx, project_id, oid, event).await?;
        tx.commit().await?;
        Ok(())
    }
}

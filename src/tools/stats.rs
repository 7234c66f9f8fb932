//! `memory_stats`: counts and time ranges for the companion or one user.

use rmcp::handler::server::tool::schema_for_output;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::Extensions;
use rmcp::{tool, tool_router};
use schemars::JsonSchema;
use serde::Deserialize;

use super::output::{Args, Out, Render, ToolResult};
use super::{MnemoServer, validate};
use crate::store::memories::Stats;

#[derive(Debug, Deserialize, JsonSchema)]
pub struct StatsArgs {
    /// Only this user's memories. Default: every user of this companion.
    pub user_id: Option<String>,
}

impl Render for Stats {
    fn render(&self) -> String {
        let kinds: Vec<String> = self
            .by_kind
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        format!(
            "{} memories ({}), {} archived, {} expired awaiting purge, {} awaiting embedding, {} relations, {} users.",
            self.total,
            kinds.join(", "),
            self.archived,
            self.expired,
            self.unembedded,
            self.relations,
            self.users
        )
    }
}

#[tool_router(router = stats_router, vis = "pub(crate)")]
impl MnemoServer {
    /// Counts of memories by kind, archived, expired and awaiting embedding, relations, users,
    /// and the oldest and newest times.
    #[tool(
        output_schema = schema_for_output::<Stats>(),
        annotations(title = "Memory statistics", read_only_hint = true, open_world_hint = false)
    )]
    pub async fn memory_stats(
        &self,
        Parameters(args): Parameters<Args<StatsArgs>>,
        ext: Extensions,
    ) -> ToolResult<Stats> {
        let a = args.get("memory_stats")?;
        let user = match a.user_id {
            Some(u) => Some(validate::user(Some(u), "")?),
            None => None,
        };
        let app = self.app();
        let scope = self.scope(&ext);
        Ok(Out(app
            .read(&scope, |s| s.stats(&scope, user.as_deref()))
            .await?))
    }
}

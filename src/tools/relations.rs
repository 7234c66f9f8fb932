//! `relate_memories` and `related_memories`: typed links and traversal.

use rmcp::handler::server::tool::schema_for_output;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::Extensions;
use rmcp::{tool, tool_router};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::output::{Args, Out, Render, ToolError, ToolResult};
use super::{MnemoServer, validate};
use crate::store::relations::Step;
use crate::store::{Memory, Relation};

#[derive(Debug, Deserialize, JsonSchema)]
pub struct RelateArgs {
    /// The memory the relation starts from.
    pub from_id: String,
    /// The memory the relation points to.
    pub to_id: String,
    /// follows, contradicts, elaborates, corrects, references or causes (read as "from <relation> to").
    pub relation: Relation,
    /// How strong the link is, 0 to 1. Default: 1.
    #[schemars(range(min = 0.0, max = 1.0))]
    pub strength: Option<f64>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct RelateResult {
    /// The relation's id.
    pub id: Uuid,
    /// False when the same relation already linked these memories (its strength was updated).
    pub created: bool,
}

impl Render for RelateResult {
    fn render(&self) -> String {
        if self.created {
            format!("Linked (relation {}).", self.id)
        } else {
            format!("Already linked; strength updated (relation {}).", self.id)
        }
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct RelatedArgs {
    /// The memory to start from.
    pub id: String,
    /// How many links to follow, 1 to 3. Default: 1.
    #[schemars(range(min = 1, max = 3))]
    pub depth: Option<i64>,
    /// Follow only these relation types. Default: all.
    pub relations: Option<Vec<Relation>>,
    /// At most this many memories, 1 to 100. Default: 50.
    #[schemars(range(min = 1, max = 100))]
    pub limit: Option<i64>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct RelatedMemory {
    pub memory: Memory,
    /// Links followed from the start memory.
    pub depth: i32,
    /// The links from the start memory to this one, in order; each shows the relation as
    /// stored (from_id, relation, to_id), whichever way it was followed.
    pub path: Vec<Step>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct RelatedResult {
    /// Nearest first.
    pub results: Vec<RelatedMemory>,
}

impl Render for RelatedResult {
    fn render(&self) -> String {
        if self.results.is_empty() {
            return "No related memories.".into();
        }
        let mut out = String::new();
        for r in &self.results {
            let path: Vec<String> = r
                .path
                .iter()
                .map(|s| format!("{} -{}-> {}", s.from_id, s.relation.as_str(), s.to_id))
                .collect();
            out.push_str(&format!(
                "- [{}] (depth {}) {}  via {}\n",
                r.memory.id,
                r.depth,
                r.memory.content,
                path.join(", ")
            ));
        }
        out
    }
}

#[tool_router(router = relations_router, vis = "pub(crate)")]
impl MnemoServer {
    /// Link two memories with a typed relation, e.g. a newer memory "corrects" an older one.
    /// Linking the same pair with the same relation again updates its strength.
    #[tool(
        output_schema = schema_for_output::<RelateResult>(),
        annotations(title = "Relate memories", read_only_hint = false, destructive_hint = false, idempotent_hint = true, open_world_hint = false)
    )]
    pub async fn relate_memories(
        &self,
        Parameters(args): Parameters<Args<RelateArgs>>,
        ext: Extensions,
    ) -> ToolResult<RelateResult> {
        let a = args.get("relate_memories")?;
        let from = validate::id("from_id", &a.from_id)?;
        let to = validate::id("to_id", &a.to_id)?;
        if from == to {
            return Err(ToolError::invalid(
                "from_id and to_id are the same memory: a memory cannot be related to itself",
            ));
        }
        let strength = validate::unit("strength", a.strength, 1.0)?;
        let app = self.app();
        let related = app
            .store
            .relate(&self.scope(&ext), from, to, a.relation, strength)
            .await?;
        Ok(Out(RelateResult {
            id: related.id,
            created: related.created,
        }))
    }

    /// Follow relations from a memory (both directions) up to 3 links deep. Each result says
    /// how it was reached.
    #[tool(
        output_schema = schema_for_output::<RelatedResult>(),
        annotations(title = "Related memories", read_only_hint = true, open_world_hint = false)
    )]
    pub async fn related_memories(
        &self,
        Parameters(args): Parameters<Args<RelatedArgs>>,
        ext: Extensions,
    ) -> ToolResult<RelatedResult> {
        let a = args.get("related_memories")?;
        let id = validate::id("id", &a.id)?;
        let depth = match a.depth {
            None => 1,
            Some(d @ 1..=3) => d as i32,
            Some(d) => {
                return Err(ToolError::invalid(format!(
                    "depth is {d}: follow 1 to 3 links"
                )));
            }
        };
        let limit = validate::limit(a.limit, 50)?;
        let app = self.app();
        let scope = self.scope(&ext);
        let relations = a.relations.filter(|r| !r.is_empty());
        let reached = app
            .read(&scope, |s| {
                s.related(&scope, id, depth, relations.clone(), limit)
            })
            .await?;
        Ok(Out(RelatedResult {
            results: reached
                .into_iter()
                .map(|r| RelatedMemory {
                    memory: r.memory,
                    depth: r.depth,
                    path: r.path,
                })
                .collect(),
        }))
    }
}

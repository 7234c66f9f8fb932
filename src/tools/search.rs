//! `search_memories` (hybrid, semantic or keyword ranking) and
//! `list_memories` (filters plus cursor pagination, newest first).

use chrono::{DateTime, Utc};
use rmcp::handler::server::tool::schema_for_output;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::Extensions;
use rmcp::{tool, tool_router};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::output::{Args, Out, Render, ToolError, ToolResult};
use super::{MnemoServer, validate};
use crate::store::search::{Query, SearchMode};
use crate::store::{Kind, ListFilter, Memory};
use crate::timeframe::TimeWindow;

/// How `tags` must match.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum TagsMatch {
    /// A memory with at least one of the tags matches (default).
    #[default]
    Any,
    /// Only memories carrying every tag match.
    All,
}

/// Filters shared by search and list.
#[derive(Debug, Default, Deserialize, JsonSchema)]
pub struct FilterArgs {
    /// The external id of the user whose memories to look at. Default: the server's default user.
    pub user_id: Option<String>,
    /// Only these kinds of memory.
    pub kinds: Option<Vec<Kind>>,
    /// Only memories with these tags (see tags_match).
    pub tags: Option<Vec<String>>,
    /// "any" (default): at least one of the tags; "all": every tag.
    pub tags_match: Option<TagsMatch>,
    /// Only memories at least this important (0 to 10).
    #[schemars(range(min = 0, max = 10))]
    pub min_importance: Option<i64>,
    /// Only memories that happened at or after this time (RFC 3339 or a date).
    pub since: Option<String>,
    /// Only memories that happened before this time (RFC 3339 or a date).
    pub until: Option<String>,
    /// Also return archived memories. Default: false.
    pub include_archived: Option<bool>,
}

impl MnemoServer {
    fn filter(&self, a: FilterArgs) -> Result<ListFilter, ToolError> {
        let tags = match a.tags {
            Some(t) if !t.is_empty() => Some(validate::tags("tags", Some(t))?),
            _ => None,
        };
        let (tags_any, tags_all) = match a.tags_match.unwrap_or_default() {
            TagsMatch::Any => (tags, None),
            TagsMatch::All => (None, tags),
        };
        let since = validate::time("since", a.since.as_deref())?;
        let until = validate::time("until", a.until.as_deref())?;
        if let (Some(s), Some(u)) = (since, until)
            && s >= u
        {
            return Err(ToolError::invalid(format!(
                "since ({s}) must be before until ({u})"
            )));
        }
        Ok(ListFilter {
            user: validate::user(a.user_id, &self.app().default_user)?,
            kinds: a.kinds.filter(|k| !k.is_empty()),
            tags_any,
            tags_all,
            min_importance: match a.min_importance {
                Some(v) => Some(validate::importance("min_importance", Some(v), 0)?),
                None => None,
            },
            since,
            until,
            include_archived: a.include_archived.unwrap_or(false),
        })
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct SearchArgs {
    /// What to look for, in natural language, e.g. "what pets does Ana have?" (1 to 2048 characters).
    pub query: String,
    /// How many results to return, 1 to 100. Default: 10.
    #[schemars(range(min = 1, max = 100))]
    pub limit: Option<i64>,
    /// "hybrid" (default: meaning and keywords), "semantic" (meaning only) or "keyword" (words only).
    pub mode: Option<SearchMode>,
    #[serde(flatten)]
    pub filter: FilterArgs,
}

/// A search result.
#[derive(Debug, Serialize, JsonSchema)]
pub struct SearchHit {
    pub id: Uuid,
    pub content: String,
    pub kind: Kind,
    pub importance: i16,
    pub confidence: f32,
    pub tags: Vec<String>,
    // Always a JSON object (a CHECK in the table): say so in the schema.
    #[schemars(with = "serde_json::Map<String, serde_json::Value>")]
    pub metadata: serde_json::Value,
    pub user_id: String,
    pub occurred_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub archived: bool,
    /// Relevance: higher is better. Comparable within one result list only.
    pub score: f64,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct SearchResult {
    /// Best first.
    pub results: Vec<SearchHit>,
    /// The times the query was read as talking about ("in May 2023", "two
    /// weeks ago"); memories that happened then rank higher. Empty if none.
    pub time_windows: Vec<TimeWindow>,
}

impl Render for SearchResult {
    fn render(&self) -> String {
        if self.results.is_empty() {
            return "No matching memories.".into();
        }
        let mut out = format!("{} memories, best first:\n", self.results.len());
        for (i, h) in self.results.iter().enumerate() {
            out.push_str(&format!(
                "{}. [{}] ({}, importance {}, {}) {}\n",
                i + 1,
                h.id,
                h.kind.as_str(),
                h.importance,
                h.occurred_at.format("%Y-%m-%d"),
                h.content
            ));
        }
        out
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ListArgs {
    /// Page size, 1 to 100. Default: 20.
    #[schemars(range(min = 1, max = 100))]
    pub limit: Option<i64>,
    /// The next_cursor of the previous page; leave out for the first page.
    pub cursor: Option<String>,
    #[serde(flatten)]
    pub filter: FilterArgs,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ListResult {
    /// Newest first.
    pub memories: Vec<Memory>,
    /// Pass this as cursor to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

impl Render for ListResult {
    fn render(&self) -> String {
        let mut out = format!("{} memories, newest first:\n", self.memories.len());
        for m in &self.memories {
            out.push_str(&format!(
                "- [{}] ({}, {}) {}\n",
                m.id,
                m.kind.as_str(),
                m.created_at.format("%Y-%m-%d %H:%M"),
                m.content
            ));
        }
        if let Some(c) = &self.next_cursor {
            out.push_str(&format!("More: pass cursor {c:?}.\n"));
        }
        out
    }
}

#[tool_router(router = search_router, vis = "pub(crate)")]
impl MnemoServer {
    /// Find a user's memories relevant to a question or topic, best first. Combines meaning
    /// (embeddings) and keywords by default; filter by kind, tags, importance and time.
    /// Expired memories never appear; archived ones only with include_archived.
    #[tool(
        output_schema = schema_for_output::<SearchResult>(),
        annotations(title = "Search memories", read_only_hint = true, open_world_hint = false)
    )]
    pub async fn search_memories(
        &self,
        Parameters(args): Parameters<Args<SearchArgs>>,
        ext: Extensions,
    ) -> ToolResult<SearchResult> {
        let args = args.get("search_memories")?;
        let query = validate::query(&args.query)?;
        let limit = validate::limit(args.limit, 10)?;
        let mode = args.mode.unwrap_or_default();
        let filter = self.filter(args.filter)?;
        let app = self.app();
        let query = Query::new(query, mode, limit);
        let hits = app
            .search(&self.scope(&ext), &filter, &query, false)
            .await?;
        Ok(Out(SearchResult {
            time_windows: query.windows,
            results: hits
                .into_iter()
                .map(|h| SearchHit {
                    id: h.memory.id,
                    archived: h.memory.archived_at.is_some(),
                    content: h.memory.content,
                    kind: h.memory.kind,
                    importance: h.memory.importance,
                    confidence: h.memory.confidence,
                    tags: h.memory.tags,
                    metadata: h.memory.metadata,
                    user_id: h.memory.user_id,
                    occurred_at: h.memory.occurred_at,
                    created_at: h.memory.created_at,
                    updated_at: h.memory.updated_at,
                    score: h.score,
                })
                .collect(),
        }))
    }

    /// List a user's memories newest first, with the same filters as search, one page at a
    /// time: pass next_cursor back as cursor for the next page.
    #[tool(
        output_schema = schema_for_output::<ListResult>(),
        annotations(title = "List memories", read_only_hint = true, open_world_hint = false)
    )]
    pub async fn list_memories(
        &self,
        Parameters(args): Parameters<Args<ListArgs>>,
        ext: Extensions,
    ) -> ToolResult<ListResult> {
        let args = args.get("list_memories")?;
        let limit = validate::limit(args.limit, 20)?;
        let cursor = args
            .cursor
            .as_deref()
            .map(super::cursor::decode)
            .transpose()?;
        let filter = self.filter(args.filter)?;
        let app = self.app();
        let scope = self.scope(&ext);
        let mut memories = app
            .read(&scope, |s| s.list(&scope, &filter, cursor, limit + 1))
            .await?;
        let more = memories.len() as i64 > limit;
        memories.truncate(limit as usize);
        let next_cursor = if more {
            memories
                .last()
                .map(|m| super::cursor::encode(m.created_at, m.id))
        } else {
            None
        };
        Ok(Out(ListResult {
            memories,
            next_cursor,
        }))
    }
}

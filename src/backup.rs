//! `mnemo export` and `mnemo import`: the JSONL backup format, progress on
//! stderr, and the import of the reference MCP memory server's knowledge
//! graph (`@modelcontextprotocol/server-memory`).
//!
//! # The mnemo format (version 1)
//!
//! One JSON object per line, each with a `type`, in this order: a `header`
//! (`{"type":"header","format":"mnemo-export","version":1,...}`), then every
//! `companion`, `user`, `memory` and `relation` (the fields of
//! [`crate::store::export`]'s rows). Ids are kept, so an import recreates
//! relations exactly and importing a file twice changes nothing. Embeddings
//! are optional: memories without one (or with one of another dimension)
//! are stored without a vector and embedded by a running server's backfill
//! job, as after an embedder outage.
//!
//! # The server-memory format
//!
//! Lines `{"type":"entity","name":..,"entityType":..,"observations":[..]}` and
//! `{"type":"relation","from":..,"to":..,"relationType":..}` become, for one
//! user of the configured companion:
//! - per entity, an anchor memory "`name` is a(n) `entityType`." (an entity
//!   that only a relation names gets "`name` is an entity.");
//! - per observation, a memory "`name` (`entityType`): `observation`" that
//!   `elaborates` the anchor;
//! - per relation, a memory "`from` `relationType` `to`" that `elaborates`
//!   the `from` anchor, and a `references` relation from the `from` anchor to
//!   the `to` anchor.
//!
//! All carry the tags `[entityType, name]` (relations: `[relationType, from,
//! to]`) and `{"source": "server-memory", ...}` metadata. Identical content
//! is stored once, so importing the file again changes nothing.
//!
//! Invariant: the data goes to the file (or stdout, for `mnemo export`
//! without `--output`); progress and summaries go to stderr.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::config::{Config, ExportArgs, ImportArgs, ImportFormat};
use crate::db::{self, DbError};
use crate::embed::{EmbedError, Embedder, LazyEmbedder};
use crate::store::export::{CompanionRow, Counts, Importer, MemoryRow, RelationRow, Row, UserRow};
use crate::store::{Kind, NewMemory, Relation, Scope, Store, StoreError};
use crate::tools::validate;

/// The format name in the header line.
pub const FORMAT: &str = "mnemo-export";
/// The newest format version this mnemo reads and the one it writes.
pub const VERSION: u32 = 1;
/// Rows per import transaction.
const BATCH: usize = 500;
/// A progress line on stderr every this many records.
const PROGRESS_EVERY: u64 = 1000;

/// Why an export or import failed.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}, line {line}: {message}")]
    Line {
        path: PathBuf,
        line: u64,
        message: String,
    },
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Embed(#[from] EmbedError),
}

/// The first line of an export.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Header {
    pub format: String,
    pub version: u32,
    pub exported_at: chrono::DateTime<chrono::Utc>,
    pub mnemo_version: String,
    /// The dimension of the embeddings in the file (those of another
    /// dimension are dropped on import and re-embedded).
    pub embedding_dim: usize,
    /// Set when the export was limited to one user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// One line of a mnemo export.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Record {
    Header(Header),
    Companion(CompanionRow),
    User(UserRow),
    Memory(MemoryRow),
    Relation(RelationRow),
}

impl From<Row> for Record {
    fn from(row: Row) -> Self {
        match row {
            Row::Companion(c) => Record::Companion(c),
            Row::User(u) => Record::User(u),
            Row::Memory(m) => Record::Memory(m),
            Row::Relation(r) => Record::Relation(r),
        }
    }
}

/// Opens the configured database (migrating it) for a backup command.
async fn open_store(config: &Config) -> Result<Store, BackupError> {
    let embedder = LazyEmbedder::from_config(&config.embedder)?;
    let db = db::connect(config, embedder.dim()).await?;
    Ok(Store::new(db, embedder.dim()))
}

/// `mnemo export`.
pub async fn export_command(config: &Config, args: &ExportArgs) -> Result<Counts, BackupError> {
    let store = open_store(config).await?;
    let user = args
        .user
        .as_deref()
        .map(|u| validate::user(Some(u.to_string()), ""))
        .transpose()
        .map_err(|e| BackupError::Usage(format!("--user: {e}")))?;
    match &args.output {
        Some(path) => {
            let file = File::create(path).map_err(|source| BackupError::Io {
                action: "create",
                path: path.clone(),
                source,
            })?;
            let mut out = BufWriter::new(file);
            let counts = export(&store, user.as_deref(), !args.no_embeddings, &mut out).await?;
            out.flush()
                .and_then(|()| out.get_ref().sync_all())
                .map_err(|source| BackupError::Io {
                    action: "write",
                    path: path.clone(),
                    source,
                })?;
            Ok(counts)
        }
        None => {
            let mut out = BufWriter::new(std::io::stdout().lock());
            let counts = export(&store, user.as_deref(), !args.no_embeddings, &mut out).await?;
            out.flush()
                .map_err(|e| BackupError::Store(StoreError::Write(e)))?;
            Ok(counts)
        }
    }
}

/// Writes the header and every row as JSON lines to `out`.
pub async fn export(
    store: &Store,
    user: Option<&str>,
    with_embeddings: bool,
    out: &mut impl Write,
) -> Result<Counts, BackupError> {
    let header = Record::Header(Header {
        format: FORMAT.into(),
        version: VERSION,
        exported_at: chrono::Utc::now(),
        mnemo_version: env!("CARGO_PKG_VERSION").into(),
        embedding_dim: store.embedding_dim(),
        user: user.map(str::to_string),
    });
    write_line(out, &header).map_err(StoreError::Write)?;
    let started = Instant::now();
    let mut written: u64 = 0;
    let counts = store
        .export(user, with_embeddings, |row| {
            write_line(out, &Record::from(row))?;
            written += 1;
            if written.is_multiple_of(PROGRESS_EVERY) {
                eprintln!("mnemo: export: {written} records written");
            }
            Ok(())
        })
        .await?;
    eprintln!(
        "mnemo: exported {} companions, {} users, {} memories ({} without embeddings), {} relations in {:.1} s",
        counts.companions,
        counts.users,
        counts.memories,
        counts.unembedded,
        counts.relations,
        started.elapsed().as_secs_f64()
    );
    Ok(counts)
}

fn write_line(out: &mut impl Write, record: &Record) -> std::io::Result<()> {
    serde_json::to_writer(&mut *out, record)?;
    out.write_all(b"\n")
}

/// `mnemo import`.
pub async fn import_command(config: &Config, args: &ImportArgs) -> Result<Counts, BackupError> {
    if args.format == ImportFormat::Mnemo && args.user.is_some() {
        return Err(BackupError::Usage(
            "--user applies to --format server-memory only: a mnemo export names the user of every memory".into(),
        ));
    }
    let reader = open_input(&args.file)?;
    let store = open_store(config).await?;
    let counts = match args.format {
        ImportFormat::Mnemo => import(&store, &args.file, reader).await?,
        ImportFormat::ServerMemory => {
            let user = validate::user(args.user.clone(), &config.default_user)
                .map_err(|e| BackupError::Usage(format!("--user: {e}")))?;
            let scope = store.companion(&config.companion).await?;
            import_server_memory(&store, &scope, &user, &args.file, reader).await?
        }
    };
    if counts.unembedded > 0 {
        eprintln!(
            "mnemo: {} memories have no embedding yet: the next `mnemo serve` embeds them in the background \
             (keyword search finds them at once)",
            counts.unembedded
        );
    }
    Ok(counts)
}

fn open_input(path: &Path) -> Result<Box<dyn BufRead>, BackupError> {
    if path.as_os_str() == "-" {
        return Ok(Box::new(BufReader::new(std::io::stdin())));
    }
    let file = File::open(path).map_err(|source| BackupError::Io {
        action: "open",
        path: path.to_path_buf(),
        source,
    })?;
    Ok(Box::new(BufReader::new(file)))
}

/// Numbered non-empty lines of `reader`; a read error (such as invalid
/// UTF-8) names the line.
fn lines(
    path: &Path,
    reader: Box<dyn BufRead>,
) -> impl Iterator<Item = Result<(u64, String), BackupError>> {
    let path = path.to_path_buf();
    reader
        .lines()
        .enumerate()
        .map(move |(i, line)| {
            let n = i as u64 + 1;
            line.map(|l| (n, l)).map_err(|e| BackupError::Line {
                path: path.clone(),
                line: n,
                message: format!("cannot read: {e}"),
            })
        })
        .filter(|l| !matches!(l, Ok((_, text)) if text.trim().is_empty()))
}

/// Reads a mnemo export and applies it in batches of [`BATCH`] rows.
pub async fn import(
    store: &Store,
    path: &Path,
    reader: Box<dyn BufRead>,
) -> Result<Counts, BackupError> {
    let started = Instant::now();
    let mut importer = Importer::new(store.embedding_dim());
    let mut total = Counts::default();
    let mut batch: Vec<Row> = Vec::with_capacity(BATCH);
    let mut seen_header = false;
    let mut read: u64 = 0;
    let bad = |line: u64, message: String| BackupError::Line {
        path: path.to_path_buf(),
        line,
        message,
    };
    for item in lines(path, reader) {
        let (n, text) = item?;
        let record: Record = serde_json::from_str(&text).map_err(|e| {
            if serde_json::from_str::<GraphLine>(&text).is_ok() {
                bad(n, "this is a knowledge graph of the reference memory server: import it with --format server-memory".into())
            } else {
                bad(n, format!("not a mnemo export record: {e}"))
            }
        })?;
        let row = match record {
            Record::Header(h) => {
                if seen_header {
                    return Err(bad(n, "a second header: concatenated exports are not supported; import them one by one".into()));
                }
                if h.format != FORMAT || h.version > VERSION {
                    return Err(bad(
                        n,
                        format!(
                            "format {:?} version {} is not one this mnemo reads ({FORMAT} up to version {VERSION}); \
                             for the reference memory server's file use --format server-memory",
                            h.format, h.version
                        ),
                    ));
                }
                seen_header = true;
                continue;
            }
            _ if !seen_header => {
                return Err(bad(
                    n,
                    "the file does not start with a mnemo-export header: is it a server-memory file? then use --format server-memory".into(),
                ));
            }
            Record::Companion(c) => Row::Companion(c),
            Record::User(u) => Row::User(u),
            Record::Memory(m) => Row::Memory(m),
            Record::Relation(r) => Row::Relation(r),
        };
        batch.push(row);
        read += 1;
        if batch.len() >= BATCH {
            total.add(importer.apply(store, &batch).await?);
            batch.clear();
        }
        if read.is_multiple_of(PROGRESS_EVERY) {
            eprintln!("mnemo: import: {read} records read");
        }
    }
    if !seen_header {
        return Err(BackupError::Usage(format!(
            "{} is empty or has no mnemo-export header",
            path.display()
        )));
    }
    if !batch.is_empty() {
        total.add(importer.apply(store, &batch).await?);
    }
    eprintln!(
        "mnemo: imported {} companions, {} users, {} memories, {} relations ({} already present) in {:.1} s",
        total.companions,
        total.users,
        total.memories,
        total.relations,
        total.skipped,
        started.elapsed().as_secs_f64()
    );
    Ok(total)
}

/// One line of the reference memory server's JSONL knowledge graph.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum GraphLine {
    Entity {
        name: String,
        #[serde(rename = "entityType")]
        entity_type: String,
        #[serde(default)]
        observations: Vec<String>,
    },
    Relation {
        from: String,
        to: String,
        #[serde(rename = "relationType")]
        relation_type: String,
    },
}

/// A memory to make, and how it links to its entity's anchor.
struct Pending {
    memory: NewMemory,
    /// The entity whose anchor this memory elaborates (None: it is the anchor).
    elaborates: Option<String>,
    /// For anchors: the entity's name.
    anchor_of: Option<String>,
}

/// Imports a server-memory knowledge graph for `user` in `scope`.
pub async fn import_server_memory(
    store: &Store,
    scope: &Scope,
    user: &str,
    path: &Path,
    reader: Box<dyn BufRead>,
) -> Result<Counts, BackupError> {
    let started = Instant::now();
    let mut anchors: HashMap<String, Uuid> = HashMap::new();
    let mut links: Vec<(Uuid, String)> = Vec::new();
    let mut graph_relations: Vec<(u64, String, String, String)> = Vec::new();
    let mut pending: Vec<Pending> = Vec::new();
    let mut counts = Counts::default();
    let mut read: u64 = 0;
    for item in lines(path, reader) {
        let (n, text) = item?;
        let bad = |message: String| BackupError::Line {
            path: path.to_path_buf(),
            line: n,
            message,
        };
        let line: GraphLine = serde_json::from_str(&text).map_err(|e| {
            bad(format!(
                "not a server-memory entity or relation: {e} (a mnemo export needs --format mnemo)"
            ))
        })?;
        read += 1;
        match line {
            GraphLine::Entity {
                name,
                entity_type,
                observations,
            } => {
                let tags = tags(&[&entity_type, &name]);
                let meta = serde_json::json!({"source": "server-memory", "entity": name, "entity_type": entity_type});
                let article = if entity_type
                    .starts_with(['a', 'e', 'i', 'o', 'u', 'A', 'E', 'I', 'O', 'U'])
                {
                    "an"
                } else {
                    "a"
                };
                let anchor = memory(
                    user,
                    &format!("{name} is {article} {entity_type}."),
                    &tags,
                    &meta,
                )
                .map_err(|e| bad(format!("entity {name:?}: {e}")))?;
                pending.push(Pending {
                    memory: anchor,
                    elaborates: None,
                    anchor_of: Some(name.clone()),
                });
                for observation in observations {
                    let m = memory(
                        user,
                        &format!("{name} ({entity_type}): {observation}"),
                        &tags,
                        &meta,
                    )
                    .map_err(|e| bad(format!("observation of {name:?}: {e}")))?;
                    pending.push(Pending {
                        memory: m,
                        elaborates: Some(name.clone()),
                        anchor_of: None,
                    });
                }
            }
            GraphLine::Relation {
                from,
                to,
                relation_type,
            } => graph_relations.push((n, from, to, relation_type)),
        }
        if pending.len() >= BATCH {
            flush(
                store,
                scope,
                &mut pending,
                &mut anchors,
                &mut links,
                &mut counts,
            )
            .await?;
        }
        if read.is_multiple_of(PROGRESS_EVERY) {
            eprintln!(
                "mnemo: import: {read} lines read, {} memories stored",
                counts.memories + counts.skipped
            );
        }
    }
    // Relations last: by now every entity in the file has its anchor.
    let mut edges: Vec<(String, String)> = Vec::new();
    for (n, from, to, relation_type) in &graph_relations {
        for name in [from, to] {
            if !anchors.contains_key(name)
                && !pending.iter().any(|p| p.anchor_of.as_ref() == Some(name))
            {
                // A relation to an entity the file never describes.
                let meta = serde_json::json!({"source": "server-memory", "entity": name});
                let anchor = memory(
                    user,
                    &format!("{name} is an entity."),
                    &tags(&[name]),
                    &meta,
                )
                .map_err(|e| BackupError::Line {
                    path: path.to_path_buf(),
                    line: *n,
                    message: format!("entity {name:?}: {e}"),
                })?;
                pending.push(Pending {
                    memory: anchor,
                    elaborates: None,
                    anchor_of: Some(name.clone()),
                });
            }
        }
        let meta = serde_json::json!({"source": "server-memory", "from": from, "to": to, "relation_type": relation_type});
        let statement = memory(
            user,
            &format!("{from} {relation_type} {to}"),
            &tags(&[relation_type, from, to]),
            &meta,
        )
        .map_err(|e| BackupError::Line {
            path: path.to_path_buf(),
            line: *n,
            message: format!("relation: {e}"),
        })?;
        pending.push(Pending {
            memory: statement,
            elaborates: Some(from.clone()),
            anchor_of: None,
        });
        edges.push((from.clone(), to.clone()));
        if pending.len() >= BATCH {
            flush(
                store,
                scope,
                &mut pending,
                &mut anchors,
                &mut links,
                &mut counts,
            )
            .await?;
        }
    }
    flush(
        store,
        scope,
        &mut pending,
        &mut anchors,
        &mut links,
        &mut counts,
    )
    .await?;
    for (id, entity) in links {
        if let Some(&anchor) = anchors.get(&entity)
            && anchor != id
        {
            let related = store
                .relate(scope, id, anchor, Relation::Elaborates, 1.0)
                .await?;
            count_relation(&mut counts, related.created);
        }
    }
    for (from, to) in edges {
        if let (Some(&a), Some(&b)) = (anchors.get(&from), anchors.get(&to))
            && a != b
        {
            let related = store.relate(scope, a, b, Relation::References, 1.0).await?;
            count_relation(&mut counts, related.created);
        }
    }
    eprintln!(
        "mnemo: imported {} lines as {} new memories and {} new relations ({} already present) in {:.1} s",
        read,
        counts.memories,
        counts.relations,
        counts.skipped,
        started.elapsed().as_secs_f64()
    );
    Ok(counts)
}

fn count_relation(counts: &mut Counts, created: bool) {
    if created {
        counts.relations += 1;
    } else {
        counts.skipped += 1;
    }
}

/// Stores the pending memories in one transaction (deduplicated), noting
/// anchors and which memories elaborate which entity.
async fn flush(
    store: &Store,
    scope: &Scope,
    pending: &mut Vec<Pending>,
    anchors: &mut HashMap<String, Uuid>,
    links: &mut Vec<(Uuid, String)>,
    counts: &mut Counts,
) -> Result<(), BackupError> {
    if pending.is_empty() {
        return Ok(());
    }
    let memories: Vec<NewMemory> = pending.iter().map(|p| p.memory.clone()).collect();
    let outcomes = store
        .insert_batch(scope, &memories, vec![None; memories.len()], "")
        .await?;
    for (p, outcome) in pending.drain(..).zip(outcomes) {
        if outcome.created {
            counts.memories += 1;
            counts.unembedded += 1;
        } else {
            counts.skipped += 1;
        }
        if let Some(name) = p.anchor_of {
            anchors.insert(name, outcome.id);
        }
        if let Some(entity) = p.elaborates {
            links.push((outcome.id, entity));
        }
    }
    Ok(())
}

/// The valid ones of `candidates` as tags (too long or empty names are left out).
fn tags(candidates: &[&String]) -> Vec<String> {
    let valid: Vec<String> = candidates
        .iter()
        .filter(|t| validate::tags("tags", Some(vec![t.to_string()])).is_ok())
        .map(|t| t.trim().to_string())
        .collect();
    validate::tags("tags", Some(valid)).unwrap_or_default()
}

fn memory(
    user: &str,
    content: &str,
    tags: &[String],
    metadata: &serde_json::Value,
) -> Result<NewMemory, String> {
    let metadata =
        validate::metadata("metadata", Some(metadata.clone())).map_err(|e| e.to_string())?;
    Ok(NewMemory {
        user: user.to_string(),
        content: validate::content("content", content).map_err(|e| e.to_string())?,
        kind: Kind::Fact,
        importance: 5,
        confidence: 1.0,
        tags: tags.to_vec(),
        metadata,
        occurred_at: None,
        expires_at: None,
    })
}

//! `mnemo export` and `mnemo import`: a snapshot's rows written as lines of
//! the mnemo format, and lines read back in batches of rows, with progress
//! on stderr.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use futures::StreamExt;

use super::format::{FORMAT, Header, OLDEST_VERSION, Record, VERSION};
use super::{BATCH, BackupError, Counts, PROGRESS_EVERY, open_store, user_flag};
use crate::config::{Config, ExportArgs, ImportArgs, ImportFormat};
use crate::store::Store;
use crate::store::bulk::{Importer, Row, Selection};

/// `mnemo export`.
pub async fn export_command(config: &Config, args: &ExportArgs) -> Result<Counts, BackupError> {
    let user = args.user.as_deref().map(user_flag).transpose()?;
    let store = open_store(config).await?;
    let (file, path) = match &args.output {
        Some(path) => {
            let file = File::create(path).map_err(|source| BackupError::Io {
                action: "create",
                path: path.clone(),
                source,
            })?;
            (Some(file), path.clone())
        }
        None => (None, PathBuf::from("stdout")),
    };
    let failed = |source| BackupError::Io {
        action: "write",
        path: path.clone(),
        source,
    };
    match file {
        Some(file) => {
            let mut out = BufWriter::new(file);
            let counts = export(&store, user, !args.no_embeddings, &mut out, &path).await?;
            out.flush()
                .and_then(|()| out.get_ref().sync_all())
                .map_err(failed)?;
            Ok(counts)
        }
        None => {
            let mut out = BufWriter::new(std::io::stdout().lock());
            let counts = export(&store, user, !args.no_embeddings, &mut out, &path).await?;
            out.flush().map_err(failed)?;
            Ok(counts)
        }
    }
}

/// Writes the header and every row of one snapshot (or only `user`'s) as
/// JSON lines to `out`, which `path` names in errors.
pub async fn export(
    store: &Store,
    user: Option<String>,
    with_embeddings: bool,
    out: &mut impl Write,
    path: &Path,
) -> Result<Counts, BackupError> {
    let failed = |source| BackupError::Io {
        action: "write",
        path: path.to_path_buf(),
        source,
    };
    let started = Instant::now();
    let mut rows = store.snapshot(Selection {
        user: user.clone(),
        embeddings: with_embeddings,
    });
    // The first row (or the error of a missing --user) before the header:
    // a failed export leaves an empty file, not a header alone.
    let first = rows.next().await.transpose()?;
    let header = Record::Header(Header {
        format: FORMAT.into(),
        version: VERSION,
        exported_at: chrono::Utc::now(),
        mnemo_version: env!("CARGO_PKG_VERSION").into(),
        embedding_dim: store.embedding_dim(),
        user,
    });
    write_line(out, &header).map_err(failed)?;
    let mut counts = Counts::default();
    let mut next = first;
    while let Some(row) = next {
        counts.note(&row);
        write_line(out, &Record::from(row)).map_err(failed)?;
        if counts.total().is_multiple_of(PROGRESS_EVERY) {
            eprintln!("mnemo: export: {} records written", counts.total());
        }
        next = rows.next().await.transpose()?;
    }
    eprintln!(
        "mnemo: exported {} companions, {} users, {} memories, {} relations, {} contexts, {} messages \
         ({} without embeddings) in {:.1} s",
        counts.companions,
        counts.users,
        counts.memories,
        counts.relations,
        counts.contexts,
        counts.messages,
        counts.unembedded,
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
            let user = user_flag(args.user.as_deref().unwrap_or(&config.default_user))?;
            let scope = store.companion(&config.companion).await?;
            super::import_server_memory(&store, &scope, &user, &args.file, reader).await?
        }
    };
    if counts.unembedded > 0 {
        eprintln!(
            "mnemo: {} memories and messages have no embedding yet: the next `mnemo serve` embeds them \
             in the background (keyword search finds them at once)",
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
pub(super) fn lines(
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
            if super::server_memory::is_graph_line(&text) {
                bad(n, "this is a knowledge graph of the reference memory server: import it with --format server-memory".into())
            } else {
                bad(n, format!("not a mnemo export record: {e}"))
            }
        })?;
        if let Record::Header(h) = &record {
            if seen_header {
                return Err(bad(n, "a second header: concatenated exports are not supported; import them one by one".into()));
            }
            check_header(h).map_err(|m| bad(n, m))?;
            seen_header = true;
            continue;
        }
        if !seen_header {
            return Err(bad(
                n,
                "the file does not start with a mnemo-export header: is it a server-memory file? then use --format server-memory".into(),
            ));
        }
        let Some(row) = record.into_row() else {
            continue; // only a header has no row, and headers were handled above
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
        "mnemo: imported {} companions, {} users, {} memories, {} relations, {} contexts, {} messages \
         ({} already present) in {:.1} s",
        total.companions,
        total.users,
        total.memories,
        total.relations,
        total.contexts,
        total.messages,
        total.skipped,
        started.elapsed().as_secs_f64()
    );
    Ok(total)
}

/// A header this mnemo can read, or what is wrong with it.
fn check_header(h: &Header) -> Result<(), String> {
    if h.format == FORMAT && (OLDEST_VERSION..=VERSION).contains(&h.version) {
        return Ok(());
    }
    Err(format!(
        "format {:?} version {} is not one this mnemo reads ({FORMAT} versions {OLDEST_VERSION} to {VERSION}); \
         for the reference memory server's file use --format server-memory",
        h.format, h.version
    ))
}

//! PostgreSQL's slow-statement log (`log_min_duration_statement`) read back
//! for one stretch of a run: mark the log's end, run, then read what was
//! logged since.

use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;

/// One logged statement: its duration and its text on one line.
pub struct Slow {
    pub ms: f64,
    pub statement: String,
}

pub struct PgLog {
    path: PathBuf,
}

impl PgLog {
    pub fn new(path: PathBuf) -> PgLog {
        PgLog { path }
    }

    /// Where the log ends now.
    pub fn mark(&self) -> u64 {
        std::fs::metadata(&self.path).map_or(0, |m| m.len())
    }

    /// The statements logged with a duration since `mark`, slowest first.
    pub fn slow_since(&self, mark: u64) -> anyhow::Result<Vec<Slow>> {
        let mut file = std::fs::File::open(&self.path)?;
        file.seek(SeekFrom::Start(mark))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let mut found: Vec<Slow> = Vec::new();
        let mut current: Option<Slow> = None;
        for line in String::from_utf8_lossy(&bytes).lines() {
            // PostgreSQL indents the continuation lines of a message with a
            // tab: a multi-line statement continues its entry.
            if let Some(rest) = line.strip_prefix('\t') {
                if let Some(slow) = current.as_mut() {
                    slow.statement.push(' ');
                    slow.statement.push_str(rest.trim());
                }
                continue;
            }
            found.extend(current.take());
            // "... LOG:  duration: 25.120 ms  execute s3: SELECT ..."
            let Some((_, after)) = line.split_once("LOG:  duration: ") else {
                continue;
            };
            let Some((ms, statement)) = after.split_once(" ms") else {
                continue;
            };
            if let Ok(ms) = ms.trim().parse::<f64>() {
                current = Some(Slow {
                    ms,
                    statement: statement.trim().to_string(),
                });
            }
        }
        found.extend(current);
        for slow in &mut found {
            slow.statement = slow
                .statement
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ");
        }
        found.sort_by(|a, b| b.ms.total_cmp(&a.ms));
        Ok(found)
    }
}

/// Prints how many statements took longer than the threshold during
/// `stretch` and the slowest `show` of them (duration, first 120 characters).
pub fn print_slow(stretch: &str, slow: &[Slow], show: usize) {
    println!(
        "  PostgreSQL log, {stretch}: {} statements over log_min_duration_statement",
        slow.len()
    );
    for s in slow.iter().take(show) {
        println!(
            "    {:>8.1} ms  {}",
            s.ms,
            s.statement.chars().take(120).collect::<String>()
        );
    }
}

/// mnemo's statements by how their text starts: a search's (the term
/// statistics, the keyword, vector and fusion statements) and the ANALYZE
/// and pending-list merge a batch may run.
pub const KINDS: [(&str, &str); 7] = [
    ("terms", "WITH lex AS"),
    ("term dfs", "SELECT l, (SELECT count(*)"),
    ("keyword", "WITH df AS"),
    ("vector", "SELECT coalesce(array_agg(id ORDER BY dist"),
    ("fusion", "WITH sem AS"),
    ("analyze", "ANALYZE memories"),
    ("gin merge", "SELECT gin_clean_pending_list"),
];

/// The kind (of [`KINDS`]) of a logged statement's execution; `None` for
/// other statements and for the parse and bind steps.
pub fn kind(s: &Slow) -> Option<&'static str> {
    let text = if let Some(rest) = s.statement.strip_prefix("execute ") {
        rest.split_once(": ")?.1
    } else {
        s.statement.strip_prefix("statement: ")?
    };
    KINDS
        .iter()
        .find(|(_, start)| text.starts_with(start))
        .map(|(name, _)| *name)
}

/// Each kind's executions: (kind, count, p50 ms, p95 ms), in [`KINDS`]' order.
pub fn by_kind(logged: &[Slow]) -> Vec<(&'static str, usize, f64, f64)> {
    KINDS
        .iter()
        .filter_map(|(name, _)| {
            let mut times: Vec<f64> = logged
                .iter()
                .filter(|s| kind(s) == Some(name))
                .map(|s| s.ms)
                .collect();
            if times.is_empty() {
                return None;
            }
            times.sort_by(f64::total_cmp);
            let at = |p: f64| times[((times.len() as f64 - 1.0) * p).round() as usize];
            Some((*name, times.len(), at(0.5), at(0.95)))
        })
        .collect()
}

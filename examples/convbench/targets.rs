//! Issue 15's targets, and the table saying for each layout and moment
//! whether the run met them or by how much it missed.

use crate::Timings;
use crate::layout::Layout;

/// When a search phase ran.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Moment {
    /// The first search follows the last write: no ANALYZE, no waiting.
    AfterWrites,
    /// After `VACUUM (ANALYZE)` and a warm-up.
    Settled,
}

impl Moment {
    pub fn label(self) -> &'static str {
        match self {
            Moment::AfterWrites => "right after writes",
            Moment::Settled => "settled",
        }
    }
}

const TRANSPORTS: [&str; 2] = ["HTTP", "stdio"];
// The targets, query embedding included, one client, every layout and moment.
const HYBRID_P50_MS: f64 = 12.0;
const HYBRID_P95_MS: f64 = 25.0;
const SEMANTIC_P50_MS: f64 = 9.0;
/// p50 at the largest one-scope size over p50 at the smallest (100k / 1k).
const GROWTH: f64 = 1.3;
/// `store_memories` on the turns over the bare embedder on the same texts.
const INGEST_RATIO: f64 = 0.75;
/// `store_memory`, one call at a time.
const SINGLE_PER_S: f64 = 60.0;
/// The servers' peak RSS (VmHWM).
const RSS_MB: f64 = 300.0;

/// What a search costs before any SQL, measured in the same run: the bare
/// embedder on one question (p50) and an MCP round trip that touches
/// neither model nor database (`tools/list`, p50, per transport).
pub struct Floor {
    pub embed_ms: f64,
    pub trips: Vec<(&'static str, f64)>,
}

impl Floor {
    /// The floor of a search over `transport`, and how it is made up.
    fn of(&self, transport: &str) -> Option<(f64, String)> {
        let (_, trip) = self.trips.iter().find(|(t, _)| *t == transport)?;
        let total = self.embed_ms + trip;
        Some((
            total,
            format!(
                "floor {total:.1} ms = embed {:.1} + round trip {trip:.1}",
                self.embed_ms
            ),
        ))
    }
}

/// What one layout's run measured.
pub struct Measured {
    short: String,
    /// The size of a one-scope layout (for the growth target).
    one_scope: Option<usize>,
    moments: Vec<(Moment, Timings, usize)>,
    pub ingest_ratio: Option<f64>,
    pub single_rate: Option<f64>,
    /// The server's mean embedding time per `store_memory` call.
    pub single_embed_ms: Option<f64>,
    pub floor: Option<Floor>,
    pub peak_rss_mb: f64,
}

impl Measured {
    pub fn new(layout: &Layout) -> Measured {
        Measured {
            short: layout.short(),
            one_scope: match layout {
                Layout::One(n) => Some(*n),
                _ => None,
            },
            moments: Vec::new(),
            ingest_ratio: None,
            single_rate: None,
            single_embed_ms: None,
            floor: None,
            peak_rss_mb: 0.0,
        }
    }

    /// A moment's searches and how many statements PostgreSQL logged as slow.
    pub fn record(&mut self, moment: Moment, timings: Timings, slow: usize) {
        self.moments.push((moment, timings, slow));
    }

    fn p(&self, moment: Moment, transport: &str, mode: &str) -> Option<(f64, f64)> {
        self.moments
            .iter()
            .find(|(m, _, _)| *m == moment)
            .and_then(|(_, t, _)| t.p(transport, mode))
    }
}

/// Rows of target, scope, moment, client, measured, verdict, and what
/// bounds the value from below when that is known.
struct Table(Vec<[String; 7]>);

impl Table {
    fn at_most(&mut self, key: [&str; 4], value: f64, limit: f64, unit: &str) {
        self.at_most_bounded(key, value, limit, unit, String::new());
    }

    /// A target with the floor under it: when the floor alone passes the
    /// limit, the verdict says so.
    fn at_most_bounded(
        &mut self,
        key: [&str; 4],
        value: f64,
        limit: f64,
        unit: &str,
        bound: String,
    ) {
        let verdict = if value <= limit {
            "met".to_string()
        } else {
            format!("gap {:.2}{unit} over", value - limit)
        };
        self.row(key, format!("{value:.2}{unit}"), verdict, bound);
    }

    fn at_least(&mut self, key: [&str; 4], value: f64, limit: f64, unit: &str, bound: String) {
        let verdict = if value >= limit {
            "met".to_string()
        } else {
            format!("gap {:.2}{unit} short", limit - value)
        };
        self.row(key, format!("{value:.2}{unit}"), verdict, bound);
    }

    fn row(&mut self, key: [&str; 4], measured: String, verdict: String, bound: String) {
        let [a, b, c, d] = key.map(str::to_string);
        self.0.push([a, b, c, d, measured, verdict, bound]);
    }
}

/// The floor under a latency target over `transport`, marked when it alone
/// passes `limit`.
fn floor_note(m: &Measured, transport: &str, limit: f64) -> String {
    match m.floor.as_ref().and_then(|f| f.of(transport)) {
        Some((total, text)) if total > limit => format!("{text}: over the target before any SQL"),
        Some((_, text)) => text,
        None => String::new(),
    }
}

pub fn print_table(all: &[Measured]) {
    let mut t = Table(Vec::new());
    for m in all {
        for (moment, timings, slow) in &m.moments {
            let label = moment.label();
            for transport in TRANSPORTS {
                let key = |target| [target, m.short.as_str(), label, transport];
                let bound = |limit| floor_note(m, transport, limit);
                if let Some((p50, p95)) = timings.p(transport, "hybrid") {
                    let (k50, k95) = (key("hybrid p50 <= 12 ms"), key("hybrid p95 <= 25 ms"));
                    t.at_most_bounded(k50, p50, HYBRID_P50_MS, " ms", bound(HYBRID_P50_MS));
                    t.at_most_bounded(k95, p95, HYBRID_P95_MS, " ms", bound(HYBRID_P95_MS));
                }
                if let Some((p50, _)) = timings.p(transport, "semantic") {
                    let k = key("semantic p50 <= 9 ms");
                    t.at_most_bounded(k, p50, SEMANTIC_P50_MS, " ms", bound(SEMANTIC_P50_MS));
                }
            }
            t.at_most(
                ["no statement > 20 ms logged", &m.short, label, "both"],
                *slow as f64,
                0.0,
                " statements",
            );
        }
    }
    growth(&mut t, all);
    for m in all {
        if let Some(r) = m.ingest_ratio {
            t.at_least(
                [
                    "store_memories >= 0.75 x bare embedder",
                    &m.short,
                    "ingest",
                    "HTTP",
                ],
                r,
                INGEST_RATIO,
                " x",
                String::new(),
            );
        }
        if let Some(r) = m.single_rate {
            t.at_least(
                ["store_memory >= 60/s", &m.short, "ingest", "HTTP"],
                r,
                SINGLE_PER_S,
                "/s",
                m.single_embed_ms.map_or_else(String::new, |e| {
                    format!(
                        "embedding one turn takes {e:.1} ms in the server: at most {:.0}/s",
                        1000.0 / e.max(1e-9)
                    )
                }),
            );
        }
        t.at_most(
            ["server RSS <= 300 MB", &m.short, "whole run", "both"],
            m.peak_rss_mb,
            RSS_MB,
            " MB",
        );
    }
    println!("\n=== targets (issue 15) ===");
    let head = [
        "target", "scope", "moment", "client", "measured", "verdict", "bound",
    ];
    let mut widths = head.map(str::len);
    for row in &t.0 {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let print = |cells: [&str; 7]| {
        let line: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", line.join("  ").trim_end());
    };
    print(head);
    for row in &t.0 {
        print(row.each_ref().map(String::as_str));
    }
    let missed = t.0.iter().filter(|r| r[5] != "met").count();
    println!("{} targets, {missed} missed", t.0.len());
}

/// p50 at the largest one-scope size over p50 at the smallest.
fn growth(t: &mut Table, all: &[Measured]) {
    let ones: Vec<(usize, &Measured)> = all
        .iter()
        .filter_map(|m| m.one_scope.map(|n| (n, m)))
        .collect();
    let (Some(small), Some(large)) = (
        ones.iter().min_by_key(|(n, _)| *n),
        ones.iter().max_by_key(|(n, _)| *n),
    ) else {
        return;
    };
    if small.0 == large.0 {
        return;
    }
    let target = format!("p50 at {} <= 1.3 x p50 at {}", large.0, small.0);
    for moment in [Moment::AfterWrites, Moment::Settled] {
        for transport in TRANSPORTS {
            for mode in ["hybrid", "semantic"] {
                if let (Some((a, _)), Some((b, _))) = (
                    large.1.p(moment, transport, mode),
                    small.1.p(moment, transport, mode),
                ) {
                    let target = format!("{mode} {target}");
                    t.at_most(
                        [&target, "one scope", moment.label(), transport],
                        a / b.max(1e-9),
                        GROWTH,
                        " x",
                    );
                }
            }
        }
    }
}

//! convbench's data: the memories of each layout (one big scope, many small
//! ones, mixed kinds) built from the LoCoMo conversations, and the queries.

use std::collections::HashSet;

use anyhow::bail;
use chrono::{DateTime, Months, Utc};
use serde_json::{Value, json};

use crate::bench_common::locomo::Conversation;

/// Each copy of the conversations happens this much later than the one before.
const SHIFT_MONTHS: u32 = 12 * 12;
/// The single scope's user, and the prefix of the many small scopes' users.
const ONE_USER: &str = "conv-one";
/// The user of the scope a `NewScope` layout adds to a large table.
const NEW_USER: &str = "conv-new";
const MIXED_USER: &str = "conv-mixed";
/// Words that make an observation a preference rather than a fact.
const LIKING: [&str; 10] = [
    "like",
    "likes",
    "love",
    "loves",
    "enjoy",
    "enjoys",
    "favorite",
    "favourite",
    "prefer",
    "prefers",
];
/// Standing instructions an agent might be given about a person (made up:
/// the dataset has none).
const INSTRUCTIONS: [&str; 5] = [
    "When {} asks for advice, offer two or three options rather than one answer.",
    "Keep replies to {} short unless they ask for detail.",
    "Remind {} of plans they mentioned when the date comes near.",
    "Call {} by their first name and keep the tone informal.",
    "Do not bring up {}'s hard times unless they do first.",
];

pub struct Memory {
    pub user: String,
    pub content: String,
    pub kind: &'static str,
    pub at: DateTime<Utc>,
}

impl Memory {
    /// The tool arguments storing this memory for `user`.
    pub fn args(&self, user: &str) -> Value {
        json!({"content": self.content, "user_id": user, "kind": self.kind,
               "occurred_at": self.at.to_rfc3339()})
    }
}

pub enum Layout {
    /// This many turns in one user's scope.
    One(usize),
    /// Users x turns each.
    Users(usize, usize),
    /// Turns, facts, preferences and instructions in one scope (at most this many).
    Mixed(usize),
    /// A large table (this many turns in one user's scope), then a new
    /// scope of that many turns (another user's), which the queries ask
    /// about: the base is stored and settled first, and only the new scope
    /// is written right before the searches.
    NewScope(usize, usize),
}

impl Layout {
    pub fn title(&self) -> String {
        match self {
            Layout::One(n) => format!("{n} turns in one scope"),
            Layout::Users(u, m) => format!("{u} users x {m} turns"),
            Layout::Mixed(_) => "one scope of mixed kinds".into(),
            Layout::NewScope(base, n) => {
                format!("a new scope of {n} turns in a table of {base}")
            }
        }
    }

    /// A short name for the table of targets.
    pub fn short(&self) -> String {
        match self {
            Layout::One(n) => format!("{n}"),
            Layout::Users(u, m) => format!("{u}x{m}"),
            Layout::Mixed(_) => "mixed".into(),
            Layout::NewScope(base, n) => format!("new {n} in {base}"),
        }
    }

    pub fn dbname(&self) -> String {
        match self {
            Layout::One(n) => format!("convbench_{n}"),
            Layout::Users(u, m) => format!("convbench_users_{u}x{m}"),
            Layout::Mixed(_) => "convbench_mixed".into(),
            Layout::NewScope(base, n) => format!("convbench_new_{base}x{n}"),
        }
    }

    /// Who the `i`th query asks about: for many scopes, users spread
    /// reproducibly over all of them.
    pub fn user_for_query(&self, i: usize) -> String {
        match self {
            Layout::One(_) => ONE_USER.into(),
            Layout::Users(u, _) => small_user((i * 7919 + 13) % (*u).max(1)),
            Layout::Mixed(_) => MIXED_USER.into(),
            Layout::NewScope(..) => NEW_USER.into(),
        }
    }

    /// How many of [`Layout::memories`] are stored and settled before the
    /// measured writes, whatever `--reuse` says (`None`: as it says).
    pub fn base(&self) -> Option<usize> {
        match self {
            Layout::NewScope(base, _) => Some(*base),
            _ => None,
        }
    }

    pub fn memories(&self, conversations: &[Conversation]) -> anyhow::Result<Vec<Memory>> {
        Ok(match self {
            Layout::One(n) => turns(conversations, *n)?
                .into_iter()
                .map(|(content, at)| Memory {
                    user: ONE_USER.into(),
                    content,
                    kind: "experience",
                    at,
                })
                .collect(),
            Layout::Users(u, m) => turns(conversations, u * m)?
                .into_iter()
                .enumerate()
                .map(|(i, (content, at))| Memory {
                    user: small_user(i / (*m).max(1)),
                    content,
                    kind: "experience",
                    at,
                })
                .collect(),
            Layout::NewScope(base, n) => {
                let user = |u: &str, (content, at)| Memory {
                    user: u.into(),
                    content,
                    kind: "experience",
                    at,
                };
                let mut all: Vec<Memory> = turns(conversations, *base)?
                    .into_iter()
                    .map(|t| user(ONE_USER, t))
                    .collect();
                all.extend(
                    turns(conversations, *n)?
                        .into_iter()
                        .map(|t| user(NEW_USER, t)),
                );
                all
            }
            Layout::Mixed(limit) => {
                let mut all = mixed(conversations);
                all.truncate(*limit);
                all
            }
        })
    }
}

fn small_user(i: usize) -> String {
    format!("conv-user-{i:04}")
}

/// The first `n` turns of the conversations copied over and over, each copy
/// shifted by [`SHIFT_MONTHS`]: (content, occurred_at).
fn turns(conversations: &[Conversation], n: usize) -> anyhow::Result<Vec<(String, DateTime<Utc>)>> {
    if conversations
        .iter()
        .all(|c| c.sessions.iter().all(|s| s.turns.is_empty()))
    {
        bail!("the dataset has no turns");
    }
    let mut out = Vec::with_capacity(n);
    for copy in 0u32.. {
        for session in conversations.iter().flat_map(|c| &c.sessions) {
            let at = shifted(session.at, copy);
            for turn in &session.turns {
                if out.len() == n {
                    return Ok(out);
                }
                out.push((line(at, &turn.content()), at));
            }
        }
    }
    Ok(out)
}

/// A date `copy` shifts later (a 29 February lands on the 28th when needed).
fn shifted(at: DateTime<Utc>, copy: u32) -> DateTime<Utc> {
    at.checked_add_months(Months::new(SHIFT_MONTHS * copy))
        .unwrap_or(at)
}

/// A transcript line: "[8 May 2023] Caroline: text".
fn line(at: DateTime<Utc>, content: &str) -> String {
    format!("[{}] {content}", at.format("%-d %B %Y"))
}

/// Copy 0 as one scope of every kind: turns (experiences), observations
/// (facts, or preferences when they say what someone likes), and each
/// speaker's standing instructions, in the order a companion would learn them.
fn mixed(conversations: &[Conversation]) -> Vec<Memory> {
    let memory = |content: String, kind, at| Memory {
        user: MIXED_USER.into(),
        content,
        kind,
        at,
    };
    let mut out = Vec::new();
    for conv in conversations {
        let Some(first) = conv.sessions.first() else {
            continue;
        };
        for speaker in &conv.speakers {
            for template in INSTRUCTIONS {
                out.push(memory(
                    template.replace("{}", speaker),
                    "instruction",
                    first.at,
                ));
            }
        }
        for session in &conv.sessions {
            for turn in &session.turns {
                out.push(memory(
                    line(session.at, &turn.content()),
                    "experience",
                    session.at,
                ));
            }
            for (_, sentence) in &session.observations {
                let liking = sentence
                    .split(|c: char| !c.is_alphanumeric())
                    .any(|w| LIKING.contains(&w.to_lowercase().as_str()));
                let kind = if liking { "preference" } else { "fact" };
                out.push(memory(sentence.clone(), kind, session.at));
            }
        }
    }
    out
}

/// How many memories mnemo keeps of these (identical content is stored
/// once per user).
pub fn distinct(memories: &[Memory]) -> usize {
    memories
        .iter()
        .map(|m| (m.user.as_str(), m.content.as_str()))
        .collect::<HashSet<_>>()
        .len()
}

/// The dataset's questions, taken from each conversation in turn, at most
/// `limit` of them.
pub fn questions(conversations: &[Conversation], limit: usize) -> Vec<String> {
    let longest = conversations
        .iter()
        .map(|c| c.questions.len())
        .max()
        .unwrap_or(0);
    (0..longest)
        .flat_map(|i| conversations.iter().filter_map(move |c| c.questions.get(i)))
        .map(|q| q.text.clone())
        .filter(|q| !q.trim().is_empty())
        .take(limit)
        .collect()
}

//! The LoCoMo dataset (`locomo-dev.json`: a list of conversations between two
//! speakers, in dated sessions of turns, with questions and per-session
//! observations), read into plain structs. CC BY-NC: read from where it
//! lies, never copied into the repository.

use anyhow::Context;
use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use serde_json::Value;

/// Where the dataset lies, relative to the repository.
pub const DEFAULT_PATH: &str = "../shared/datasets/locomo/locomo-dev.json";

pub struct Conversation {
    pub sample_id: String,
    pub speakers: [String; 2],
    pub sessions: Vec<Session>,
    pub questions: Vec<Question>,
}

pub struct Session {
    pub at: DateTime<Utc>,
    pub turns: Vec<Turn>,
    /// What the dataset notes each speaker revealed: (speaker, sentence).
    pub observations: Vec<(String, String)>,
}

pub struct Turn {
    pub speaker: String,
    pub text: String,
    /// The image the speaker shared, as the dataset describes it.
    pub caption: Option<String>,
    /// "D<session>:<turn>", what questions' evidence names.
    pub dia_id: String,
}

impl Turn {
    /// "Speaker: text [shares an image: caption]".
    pub fn content(&self) -> String {
        let mut content = format!("{}: {}", self.speaker, self.text);
        if let Some(caption) = &self.caption {
            content.push_str(&format!(" [shares an image: {caption}]"));
        }
        content
    }
}

pub struct Question {
    pub text: String,
    pub category: u64,
    /// Turn ids as the dataset writes them (sometimes malformed or joined by `;`).
    pub evidence: Vec<String>,
}

pub fn load(path: &str) -> anyhow::Result<Vec<Conversation>> {
    let data: Value =
        serde_json::from_slice(&std::fs::read(path).with_context(|| format!("reading {path}"))?)?;
    data.as_array()
        .context("dataset is not a list")?
        .iter()
        .map(conversation)
        .collect()
}

fn conversation(conv: &Value) -> anyhow::Result<Conversation> {
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
    let sample_id = conv["sample_id"].as_str().context("sample_id")?.to_string();
    let c = &conv["conversation"];
    let mut sessions = Vec::new();
    for n in 1.. {
        let Some(turns) = c.get(format!("session_{n}")).and_then(Value::as_array) else {
            // A date without its session: the dataset skips a number.
            if c.get(format!("session_{n}_date_time")).is_some() {
                continue;
            }
            break;
        };
        let at = c[format!("session_{n}_date_time")]
            .as_str()
            .and_then(parse_date)
            .with_context(|| format!("{sample_id} session {n} date"))?;
        let turns = turns
            .iter()
            .map(|t| Turn {
                speaker: text(&t["speaker"]),
                text: text(&t["text"]),
                caption: t
                    .get("blip_caption")
                    .and_then(Value::as_str)
                    .map(str::to_string),
                dia_id: text(&t["dia_id"]),
            })
            .collect();
        let mut observations = Vec::new();
        if let Some(by_speaker) =
            conv["observation"][format!("session_{n}_observation")].as_object()
        {
            for (speaker, notes) in by_speaker {
                for note in notes.as_array().into_iter().flatten() {
                    // Each note is [sentence, evidence turn id].
                    if let Some(sentence) = note[0].as_str() {
                        observations.push((speaker.clone(), sentence.to_string()));
                    }
                }
            }
        }
        sessions.push(Session {
            at,
            turns,
            observations,
        });
    }
    let questions = conv["qa"]
        .as_array()
        .context("qa")?
        .iter()
        .map(|q| Question {
            text: text(&q["question"]),
            category: q["category"].as_u64().unwrap_or(0),
            evidence: q["evidence"]
                .as_array()
                .map(|e| {
                    e.iter()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
        })
        .collect();
    Ok(Conversation {
        sample_id,
        speakers: [text(&c["speaker_a"]), text(&c["speaker_b"])],
        sessions,
        questions,
    })
}

/// "1:56 pm on 8 May, 2023" (read as UTC).
pub fn parse_date(text: &str) -> Option<DateTime<Utc>> {
    let (time, date) = text.split_once(" on ")?;
    let time = NaiveTime::parse_from_str(&time.trim().to_uppercase(), "%I:%M %p").ok()?;
    let date = NaiveDate::parse_from_str(date.trim(), "%d %B, %Y").ok()?;
    Some(date.and_time(time).and_utc())
}

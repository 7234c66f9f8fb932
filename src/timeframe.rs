//! Query-time date understanding: the stretches of time a search query talks
//! about ("in May 2023", "on 3 June", "two weeks ago", "the week before
//! August 11, 2023", "last year"), read as UTC windows that search ranks
//! memories' `occurred_at` against.
//!
//! Hand-written rather than a date-parsing crate: those parse a string that
//! *is* a date, while a query holds a date phrase somewhere inside a question.
//! The reading is deliberately forgiving (a window is a boost, never a
//! filter): windows are padded by half a day for time zones, and a month or
//! day named without a year stands for that month or day in each recent year.

use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Utc};

/// A half-open span of time `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
pub struct TimeWindow {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

/// Padding on each side of a window: the user's day is not the UTC day.
const PAD: Duration = Duration::hours(12);
/// A month or day named without a year stands for it in this many past years
/// (and the current one).
const YEARS_BACK: i32 = 10;
/// Reading more windows than this from one query means it is not about time.
const MAX_WINDOWS: usize = 24;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Tok<'a> {
    Month(u32),
    /// A number, and whether it carried an ordinal suffix ("3rd").
    Num(u32, bool),
    Word(&'a str),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Unit {
    Day,
    Week,
    Month,
    Year,
}

impl Unit {
    fn parse(word: &str) -> Option<Unit> {
        Some(match word.trim_end_matches('s') {
            "day" | "night" => Unit::Day,
            "week" | "weekend" => Unit::Week,
            "month" => Unit::Month,
            "year" => Unit::Year,
            _ => return None,
        })
    }

    fn span(self, n: u32) -> Duration {
        let days = match self {
            Unit::Day => 1,
            Unit::Week => 7,
            Unit::Month => 30,
            Unit::Year => 365,
        };
        Duration::days(days * i64::from(n))
    }
}

fn month(word: &str) -> Option<u32> {
    const NAMES: [&str; 12] = [
        "january",
        "february",
        "march",
        "april",
        "may",
        "june",
        "july",
        "august",
        "september",
        "october",
        "november",
        "december",
    ];
    if word == "sept" {
        return Some(9);
    }
    NAMES
        .iter()
        .position(|name| word == *name || (word.len() == 3 && name.starts_with(word)))
        .map(|i| i as u32 + 1)
}

/// Month words that are also ordinary English words ("may", "march") or
/// names ("jan"): months only next to a number or after a time preposition.
fn ambiguous(word: &str) -> bool {
    word.len() <= 3 || matches!(word, "march" | "may")
}

fn number_word(word: &str) -> Option<u32> {
    Some(match word {
        "a" | "an" | "one" => 1,
        "two" | "couple" => 2,
        "three" | "few" | "several" => 3,
        "four" => 4,
        "five" => 5,
        "six" => 6,
        "seven" => 7,
        "eight" => 8,
        "nine" => 9,
        "ten" => 10,
        "eleven" => 11,
        "twelve" => 12,
        _ => return None,
    })
}

fn tokenize(text: &str) -> Vec<Tok<'_>> {
    text.split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| {
            let digits = w.trim_end_matches(|c: char| c.is_ascii_alphabetic());
            let suffix = &w[digits.len()..];
            if !digits.is_empty() && digits.len() <= 4 && digits.bytes().all(|b| b.is_ascii_digit())
            {
                let ordinal = matches!(suffix, "st" | "nd" | "rd" | "th");
                if (suffix.is_empty() || ordinal)
                    && let Ok(n) = digits.parse()
                {
                    return Tok::Num(n, ordinal);
                }
            }
            month(w).map_or(Tok::Word(w), Tok::Month)
        })
        .collect()
}

fn is_year(n: u32) -> bool {
    (1900..=2100).contains(&n)
}

fn at(date: NaiveDate) -> DateTime<Utc> {
    Utc.from_utc_datetime(&date.and_time(chrono::NaiveTime::MIN))
}

fn day_window(date: NaiveDate) -> TimeWindow {
    let start = at(date);
    TimeWindow {
        start: start - PAD,
        end: start + Duration::days(1) + PAD,
    }
}

fn month_window(year: i32, month: u32) -> Option<TimeWindow> {
    let first = NaiveDate::from_ymd_opt(year, month, 1)?;
    let next = if month == 12 {
        NaiveDate::from_ymd_opt(year + 1, 1, 1)?
    } else {
        NaiveDate::from_ymd_opt(year, month + 1, 1)?
    };
    Some(TimeWindow {
        start: at(first) - PAD,
        end: at(next) + PAD,
    })
}

fn year_window(year: i32) -> Option<TimeWindow> {
    Some(TimeWindow {
        start: at(NaiveDate::from_ymd_opt(year, 1, 1)?) - PAD,
        end: at(NaiveDate::from_ymd_opt(year + 1, 1, 1)?) + PAD,
    })
}

/// What an explicit date phrase names.
enum Named {
    Day(NaiveDate),
    /// A day without a year: that day in each recent year.
    DayAnyYear(u32, u32),
    Month(i32, u32),
    MonthAnyYear(u32),
    Year(i32),
}

/// Reads the date phrase starting at `toks[i]`, if any, and how many tokens
/// it spans.
fn named_at(toks: &[Tok], i: usize) -> Option<(Named, usize)> {
    let after_preposition = after_time_word(toks, i, true);
    let year_at = |j: usize| match toks.get(j) {
        Some(Tok::Num(y, false)) if is_year(*y) => Some(*y as i32),
        _ => None,
    };
    let day_at = |j: usize| match toks.get(j) {
        Some(Tok::Num(d, _)) if (1..=31).contains(d) => Some(*d),
        _ => None,
    };
    let with_year = |m: u32, d: u32, year_pos: usize, used: usize| match year_at(year_pos) {
        Some(y) => NaiveDate::from_ymd_opt(y, m, d).map(|date| (Named::Day(date), used + 1)),
        None => Some((Named::DayAnyYear(m, d), used)),
    };
    match toks[i] {
        // "May 3, 2023", "May 3rd", "May 2023", "in May"
        Tok::Month(m) => {
            if let Some(d) = day_at(i + 1) {
                return with_year(m, d, i + 2, 2);
            }
            if let Some(y) = year_at(i + 1) {
                return Some((Named::Month(y, m), 2));
            }
            Some((Named::MonthAnyYear(m), 1))
        }
        // "3 May 2023", "3rd of May", "2023"
        Tok::Num(d, _) if (1..=31).contains(&d) => {
            let of = usize::from(matches!(toks.get(i + 1), Some(Tok::Word("of"))));
            match toks.get(i + 1 + of) {
                Some(Tok::Month(m)) => with_year(*m, d, i + 2 + of, 2 + of),
                _ => None,
            }
        }
        // "2023-05-08" (ISO), read as three numbers
        Tok::Num(y, false)
            if is_year(y)
                && matches!(toks.get(i + 1), Some(Tok::Num(1..=12, false)))
                && day_at(i + 2).is_some() =>
        {
            let Some(Tok::Num(m, _)) = toks.get(i + 1) else {
                return None;
            };
            let d = day_at(i + 2)?;
            NaiveDate::from_ymd_opt(y as i32, *m, d).map(|date| (Named::Day(date), 3))
        }
        Tok::Num(y, false) if is_year(y) && (after_preposition || i + 1 == toks.len()) => {
            Some((Named::Year(y as i32), 1))
        }
        _ => None,
    }
}

/// Whether `toks[i]` follows a word that introduces a time ("in", "last",
/// "early", ...); `loose` also accepts ones that often precede other things
/// ("from", "by", "before", "after", "around").
fn after_time_word(toks: &[Tok], i: usize, loose: bool) -> bool {
    let Some(Tok::Word(prev)) = i.checked_sub(1).map(|p| toks[p]) else {
        return false;
    };
    let strict = [
        "in", "during", "since", "of", "until", "till", "early", "late", "mid", "last", "this",
        "next", "through",
    ];
    let more = ["from", "by", "before", "after", "around"];
    strict.contains(&prev) || (loose && more.contains(&prev))
}

/// Whether the raw word at `toks[i]` is a month worth believing.
fn plausible_month(raw: &str, toks: &[Tok], i: usize, span: usize) -> bool {
    span > 1 || !ambiguous(raw) || after_time_word(toks, i, false)
}

/// The windows `query` talks about, relative to `now`; empty when it names
/// no time.
pub fn windows(query: &str, now: DateTime<Utc>) -> Vec<TimeWindow> {
    let lower = query.to_ascii_lowercase();
    let raw: Vec<&str> = lower
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect();
    let toks = tokenize(&lower);
    let mut out = Vec::new();
    // The first full date anchors relative phrases ("the week before ...").
    let mut anchor: Option<NaiveDate> = None;
    let today = now.date_naive();
    let recent_years = || (today.year() - YEARS_BACK)..=today.year();

    let mut i = 0;
    while i < toks.len() {
        let Some((named, span)) = named_at(&toks, i) else {
            i += 1;
            continue;
        };
        if matches!(toks[i], Tok::Month(_)) && !plausible_month(raw[i], &toks, i, span) {
            i += 1;
            continue;
        }
        match named {
            Named::Day(date) => {
                anchor.get_or_insert(date);
                out.push(day_window(date));
            }
            Named::DayAnyYear(m, d) => out.extend(
                recent_years()
                    .filter_map(|y| NaiveDate::from_ymd_opt(y, m, d))
                    .map(day_window),
            ),
            Named::Month(y, m) => out.extend(month_window(y, m)),
            Named::MonthAnyYear(m) => out.extend(recent_years().filter_map(|y| month_window(y, m))),
            Named::Year(y) => out.extend(year_window(y)),
        }
        i += span;
    }

    let anchor_date = anchor.unwrap_or(today);
    let base = at(anchor_date);
    let end_of_anchor = base + Duration::days(1) + PAD;
    for (i, tok) in toks.iter().enumerate() {
        let Tok::Word(word) = *tok else { continue };
        let word_at = |j: usize| match toks.get(j) {
            Some(Tok::Word(w)) => Some(*w),
            _ => None,
        };
        let relative = match word {
            "yesterday" => Some(day_window(anchor_date - chrono::Days::new(1))),
            "today" | "tonight" => Some(day_window(anchor_date)),
            "tomorrow" => Some(day_window(anchor_date + chrono::Days::new(1))),
            "recently" | "lately" => Some(TimeWindow {
                start: base - Duration::days(30) - PAD,
                end: end_of_anchor,
            }),
            // "last week", "past month", "previous year", "last night"
            "last" | "past" | "previous" => {
                word_at(i + 1).and_then(Unit::parse).map(|u| TimeWindow {
                    start: base - u.span(2).min(u.span(1) + Duration::days(7)) - PAD,
                    end: end_of_anchor,
                })
            }
            "this" => word_at(i + 1).and_then(Unit::parse).map(|u| TimeWindow {
                start: base - u.span(1) - PAD,
                end: end_of_anchor,
            }),
            "next" | "coming" => word_at(i + 1).and_then(Unit::parse).map(|u| TimeWindow {
                start: base - PAD,
                end: base + u.span(1) + Duration::days(7) + PAD,
            }),
            // "two weeks ago", "a year ago", "the week before", "3 days after"
            "ago" | "before" | "after" | "earlier" | "later" => {
                let unit = i.checked_sub(1).and_then(|p| match toks[p] {
                    Tok::Word(w) => Unit::parse(w),
                    _ => None,
                });
                unit.map(|u| {
                    let n = match i.checked_sub(2).map(|p| toks[p]) {
                        Some(Tok::Num(n, false)) if (1..=100).contains(&n) => n,
                        Some(Tok::Word(w)) => number_word(w).unwrap_or(1),
                        _ => 1,
                    };
                    let reach = u.span(n) + u.span(1) / 2 + Duration::days(1);
                    match word {
                        "after" | "later" => TimeWindow {
                            start: base - PAD,
                            end: base + reach + PAD,
                        },
                        "ago" if anchor.is_none() => TimeWindow {
                            start: base - reach - PAD,
                            end: base - u.span(n) + u.span(1) / 2 + Duration::days(1) + PAD,
                        },
                        _ => TimeWindow {
                            start: base - reach - PAD,
                            end: end_of_anchor,
                        },
                    }
                })
            }
            _ => None,
        };
        out.extend(relative);
    }
    out.sort_by_key(|w| (w.start, w.end));
    out.dedup();
    if out.len() > MAX_WINDOWS {
        out.clear();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 22, 15, 0, 0).unwrap()
    }

    fn day(y: i32, m: u32, d: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, 0, 0, 0).unwrap()
    }

    /// Whether some window holds the instant.
    fn covers(ws: &[TimeWindow], t: DateTime<Utc>) -> bool {
        ws.iter().any(|w| w.start <= t && t < w.end)
    }

    #[test]
    fn full_dates_in_any_order() {
        for q in [
            "What did Gina find on 1 February, 2023?",
            "what happened on February 1st 2023",
            "the 1st of Feb 2023 party",
            "notes from feb 1, 2023",
            "the log of 2023-02-01",
        ] {
            let ws = windows(q, now());
            assert_eq!(ws.len(), 1, "{q}: {ws:?}");
            assert!(covers(&ws, day(2023, 2, 1) + Duration::hours(13)), "{q}");
            assert!(!covers(&ws, day(2023, 2, 3)), "{q}");
        }
    }

    #[test]
    fn months_and_years() {
        let ws = windows("What workout did Maria start in December 2023?", now());
        assert!(covers(&ws, day(2023, 12, 20)));
        assert!(!covers(&ws, day(2023, 11, 20)));

        let ws = windows("How often did she go to the beach in 2023?", now());
        assert!(covers(&ws, day(2023, 7, 1)) && !covers(&ws, day(2024, 2, 1)));

        // A month without a year: that month in recent years.
        let ws = windows("When did Melanie go camping in June?", now());
        assert!(covers(&ws, day(2023, 6, 10)) && covers(&ws, day(2026, 6, 10)));
        assert!(!covers(&ws, day(2023, 7, 10)));
    }

    #[test]
    fn month_words_that_are_ordinary_words() {
        assert!(windows("May I ask what my cat eats?", now()).is_empty());
        assert!(windows("the march for climate", now()).is_empty());
        assert!(windows("Jan's favourite colour", now()).is_empty());
        assert!(covers(
            &windows("what did we do in may", now()),
            day(2025, 5, 5)
        ));
        assert!(covers(
            &windows("the trip on may 5th", now()),
            day(2024, 5, 5)
        ));
    }

    #[test]
    fn numbers_that_are_not_dates() {
        assert!(windows("I have 3 cats and 2 dogs", now()).is_empty());
        assert!(windows("she ran 2000 meters", now()).is_empty());
        assert!(windows("what is my favourite number", now()).is_empty());
    }

    #[test]
    fn relative_to_now() {
        let ws = windows("what did I eat yesterday", now());
        assert!(covers(&ws, day(2026, 11, 21) + Duration::hours(9)));
        assert!(!covers(&ws, day(2026, 11, 19)));

        let ws = windows("the movie I saw two weeks ago", now());
        assert!(covers(&ws, day(2026, 11, 8)));
        assert!(!covers(&ws, day(2026, 11, 20)) && !covers(&ws, day(2026, 10, 1)));

        let ws = windows("where did I travel last year", now());
        assert!(covers(&ws, day(2026, 1, 15)) && covers(&ws, day(2025, 12, 1)));
        assert!(!covers(&ws, day(2024, 6, 1)));

        let ws = windows("anything recently?", now());
        assert!(covers(&ws, day(2026, 11, 1)) && !covers(&ws, day(2026, 9, 1)));
    }

    #[test]
    fn relative_to_a_named_date() {
        let ws = windows(
            "Maria's puppy she got two weeks before August 11, 2023",
            now(),
        );
        assert!(covers(&ws, day(2023, 7, 28)), "{ws:?}");
        assert!(covers(&ws, day(2023, 8, 11)));
        assert!(!covers(&ws, day(2023, 9, 1)));

        let ws = windows("What did she do last weekend before April 10, 2023?", now());
        assert!(covers(&ws, day(2023, 4, 8)) && covers(&ws, day(2023, 4, 10)));
        assert!(!covers(&ws, day(2023, 3, 1)));
    }

    #[test]
    fn nothing_temporal() {
        for q in [
            "what pets does Ana have?",
            "",
            "favourite food",
            "how many kids",
            "a b c",
        ] {
            assert!(windows(q, now()).is_empty(), "{q}");
        }
    }

    /// Windows go to SQL as timestamps, so even the farthest reading stays
    /// in the years every time argument may name (0001 to 9999): named
    /// years are 1900 to 2100 and relative spans at most 100 units.
    #[test]
    fn the_farthest_readings_stay_in_range() {
        let far = [
            "100 years ago",
            "100 years before January 1st, 1900",
            "100 years after December 31, 2100",
            "the next 100 years after 2100",
            "9999 years ago",
            "in 0001 or 9999 or 10000",
            "-1 year",
        ];
        for now in [now(), day(2100, 12, 31), day(1900, 1, 1)] {
            for q in far {
                for w in windows(q, now) {
                    for t in [w.start, w.end] {
                        assert!((1700..=2300).contains(&t.year()), "{q}: {w:?}");
                    }
                }
            }
        }
    }
}

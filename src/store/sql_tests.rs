//! Snapshots of the statements the store generates: the search statements
//! of each mode with and without filters, the message search and the list
//! statement. A change to any of them shows up here as a diff to review
//! (the search was tuned statement by statement: see docs/BENCHMARKS.md).

use chrono::{TimeZone, Utc};

use super::{Kind, ListFilter};

/// The embedding dimension of the default model.
const DIM: usize = 384;

/// One statement per line group, for readable diffs.
fn pretty(sql: &str) -> String {
    sqlformat::format(
        sql,
        &sqlformat::QueryParams::None,
        &sqlformat::FormatOptions::default(),
    )
}

fn no_filter() -> ListFilter {
    ListFilter {
        user: "ana".into(),
        ..ListFilter::default()
    }
}

fn every_filter() -> ListFilter {
    ListFilter {
        user: "ana".into(),
        kinds: Some(vec![Kind::Fact, Kind::Experience]),
        tags_any: Some(vec!["work".into()]),
        tags_all: Some(vec!["vpn".into()]),
        min_importance: Some(3),
        since: Some(Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap()),
        until: Some(Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap()),
        include_archived: true,
    }
}

#[test]
fn keyword_statement() {
    insta::assert_snapshot!("keyword", pretty(&super::search::keyword_sql(&no_filter().sql())));
    insta::assert_snapshot!(
        "keyword_filtered",
        pretty(&super::search::keyword_sql(&every_filter().sql()))
    );
}

#[test]
fn vector_list_statement() {
    insta::assert_snapshot!(
        "semantic",
        pretty(&super::search::semantic_sql(&no_filter().sql(), DIM))
    );
    insta::assert_snapshot!(
        "semantic_filtered",
        pretty(&super::search::semantic_sql(&every_filter().sql(), DIM))
    );
}

/// One fusion statement serves every mode (semantic: no keyword ids;
/// keyword: no vector ids and the vector switched off).
#[test]
fn fusion_statement() {
    insta::assert_snapshot!(
        "fusion",
        pretty(&super::search::search_sql(&no_filter().sql(), DIM))
    );
    insta::assert_snapshot!(
        "fusion_filtered",
        pretty(&super::search::search_sql(&every_filter().sql(), DIM))
    );
}

#[test]
fn message_search_statement() {
    insta::assert_snapshot!("messages", pretty(&super::contexts::search_sql(DIM)));
}

#[test]
fn list_statement() {
    insta::assert_snapshot!("list", pretty(&super::memories::list_sql(&no_filter(), false)));
    insta::assert_snapshot!(
        "list_filtered_after_cursor",
        pretty(&super::memories::list_sql(&every_filter(), true))
    );
}

//! Snapshots of the statements the store generates: the search statements
//! of each mode with and without filters, the message search and the list
//! statement. A change to any of them shows up here as a diff to review
//! (the search was tuned statement by statement: see docs/BENCHMARKS.md).

use chrono::{TimeZone, Utc};

use super::sql::Statement;
use super::{Kind, ListFilter};

/// The embedding dimension of the default model.
const DIM: usize = 384;

/// The statement's parameters, then its text laid out for readable diffs.
fn show(statement: &Statement) -> String {
    let params: Vec<String> = statement
        .slots()
        .iter()
        .enumerate()
        .map(|(i, slot)| format!("${} {slot:?}", i + 1))
        .collect();
    let sql = sqlformat::format(
        &statement.sql,
        &sqlformat::QueryParams::None,
        &sqlformat::FormatOptions::default(),
    );
    format!("-- {}\n{sql}", params.join(", "))
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
    insta::assert_snapshot!(
        "keyword",
        show(&super::search::keyword_sql(no_filter().shape(), false))
    );
    insta::assert_snapshot!(
        "keyword_filtered",
        show(&super::search::keyword_sql(every_filter().shape(), false))
    );
    insta::assert_snapshot!(
        "keyword_small_scope",
        show(&super::search::keyword_sql(every_filter().shape(), true))
    );
}

#[test]
fn vector_list_statement() {
    insta::assert_snapshot!(
        "semantic",
        show(&super::search::semantic_sql(no_filter().shape(), DIM))
    );
    insta::assert_snapshot!(
        "semantic_filtered",
        show(&super::search::semantic_sql(every_filter().shape(), DIM))
    );
}

/// One fusion statement serves every mode (semantic: no keyword ids;
/// keyword: no vector ids and the vector switched off).
#[test]
fn fusion_statement() {
    insta::assert_snapshot!(
        "fusion",
        show(&super::search::search_sql(
            no_filter().shape(),
            DIM,
            &super::tuning::Tuning::DEFAULT,
        ))
    );
    insta::assert_snapshot!(
        "fusion_filtered",
        show(&super::search::search_sql(
            every_filter().shape(),
            DIM,
            &super::tuning::Tuning::DEFAULT,
        ))
    );
}

#[test]
fn message_search_statement() {
    insta::assert_snapshot!("messages", show(&super::contexts::search_sql(DIM)));
}

#[test]
fn list_statement() {
    insta::assert_snapshot!(
        "list",
        show(&super::memories::list_sql(no_filter().shape(), false))
    );
    insta::assert_snapshot!(
        "list_filtered_after_cursor",
        show(&super::memories::list_sql(every_filter().shape(), true))
    );
}

//! The database password never reaches the output: `mnemo doctor`,
//! `mnemo migrate` and the start-up log of `mnemo serve` (text and JSON)
//! show where the database is, from the parsed URL, in each form a URL can
//! carry a password (issue 16 item 2).
//!
//! The test cluster authenticates its socket with `trust`, so the server
//! never asks for the password these URLs carry: the commands connect and
//! work, and only what they print is in question.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{Embed, TestDb};
use tokio::io::{AsyncBufReadExt, BufReader};

const SECRET: &str = "SECRET-pw-4711";

/// The test database's URL in each form that carries a password.
fn urls_with_password(db: &TestDb) -> Vec<(&'static str, String)> {
    let socket = common::cluster().socket_dir().display().to_string();
    let encoded = socket.replace('/', "%2F");
    let name = &db.name;
    vec![
        (
            "key/value password=",
            format!("host={socket} user=postgres password={SECRET} dbname={name}"),
        ),
        (
            "?password= query",
            format!("postgres://postgres@{encoded}/{name}?password={SECRET}"),
        ),
        (
            "user:password@",
            format!("postgres://postgres:{SECRET}@{encoded}/{name}"),
        ),
    ]
}

fn command(db: &TestDb, url: &str) -> tokio::process::Command {
    let mut cmd = common::mnemo(db, "secrets", Embed::Hash);
    cmd.env("DATABASE_URL", url);
    cmd
}

/// Runs `mnemo <args>` to the end: its exit status and stdout + stderr.
async fn run(mut cmd: tokio::process::Command, args: &[&str]) -> (bool, String) {
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("mnemo {args:?} timed out"))
        .expect("running mnemo");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test]
async fn doctor_and_migrate_never_print_the_password() {
    let db = common::fresh_db().await;
    for (form, url) in urls_with_password(&db) {
        for args in [&["doctor"][..], &["migrate"][..]] {
            let (ok, text) = run(command(&db, &url), args).await;
            assert!(ok, "mnemo {args:?} with a {form} URL failed:\n{text}");
            assert!(
                !text.contains(SECRET),
                "mnemo {args:?} printed the password of a {form} URL:\n{text}"
            );
            // It still says where the database is.
            assert!(
                text.contains(&format!("dbname={}", db.name)) && text.contains("user=postgres"),
                "mnemo {args:?} with a {form} URL does not name the database:\n{text}"
            );
        }
    }
}

#[tokio::test]
async fn a_failed_connection_does_not_print_the_password_either() {
    let db = common::fresh_db().await;
    let url = format!("host=/nonexistent-mnemo-dir user=postgres password={SECRET} dbname=x");
    for args in [&["doctor"][..], &["migrate"][..]] {
        let (ok, text) = run(command(&db, &url), args).await;
        assert!(!ok, "mnemo {args:?} against no server succeeded:\n{text}");
        assert!(!text.contains(SECRET), "mnemo {args:?}:\n{text}");
        if args == ["doctor"] {
            assert!(text.contains("host=/nonexistent-mnemo-dir"), "{text}");
        }
    }
    let bad = format!("postgres://postgres:{SECRET}@localhost:notaport/x");
    let (ok, text) = run(command(&db, &bad), &["migrate"]).await;
    assert!(!ok, "an unparseable URL was accepted:\n{text}");
    assert!(!text.contains(SECRET), "{text}");
}

/// The stderr of `mnemo serve --http` up to "listening on" (the start-up
/// log), after which the server is killed.
async fn startup_log(mut cmd: tokio::process::Command, format: &str) -> String {
    cmd.env("MNEMO_LOG", "info")
        .env("MNEMO_LOG_FORMAT", format)
        .args(["serve", "--http", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn mnemo serve");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let mut log = String::new();
    let started = tokio::time::timeout(Duration::from_secs(60), async {
        while let Ok(Some(line)) = lines.next_line().await {
            log.push_str(&line);
            log.push('\n');
            if line.contains("listening on") {
                return true;
            }
        }
        false
    })
    .await;
    let _ = child.kill().await;
    assert!(
        matches!(started, Ok(true)),
        "mnemo serve did not start:\n{log}"
    );
    log
}

#[tokio::test]
async fn serve_logs_where_the_database_is_but_not_its_password() {
    let db = common::fresh_db().await;
    for (form, url) in urls_with_password(&db) {
        for format in ["text", "json"] {
            let log = startup_log(command(&db, &url), format).await;
            assert!(
                !log.contains(SECRET),
                "the {format} log printed the password of a {form} URL:\n{log}"
            );
            let ready = log
                .lines()
                .find(|line| line.contains("database ready"))
                .unwrap_or_else(|| panic!("no 'database ready' line in the {format} log:\n{log}"));
            assert!(
                ready.contains(&format!("dbname={}", db.name)),
                "the {format} log does not say which database ({form} URL):\n{log}"
            );
        }
    }
}

//! The foundation's promises: the binary serves MCP over both transports,
//! shares one embedded cluster between processes, migrates once under
//! concurrency, and `doctor` names what is broken and how to fix it.

mod common;

use std::process::Output;

use common::*;
use serde_json::json;

async fn run_mnemo(mut cmd: tokio::process::Command, args: &[&str]) -> Output {
    cmd.args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .expect("run mnemo")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
async fn server_answers_initialize_and_lists_tools_over_stdio_and_http() {
    let db = fresh_db().await;
    let expected = [
        "store_memory",
        "store_memories",
        "search_memories",
        "get_memory",
        "list_memories",
        "update_memory",
        "archive_memory",
        "restore_memory",
        "delete_memory",
        "relate_memories",
        "related_memories",
        "memory_stats",
        "append_messages",
        "get_context",
        "fork_context",
        "list_contexts",
        "delete_context",
        "search_messages",
    ];

    let stdio = stdio_client(mnemo(&db, "default", Embed::Hash)).await;
    let info = stdio.peer_info().expect("server info after initialize");
    assert_eq!(
        info.server_info.as_ref().map(|s| s.name.as_str()),
        Some("mnemo")
    );
    let tools = stdio.list_all_tools().await.expect("tools/list over stdio");
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    for name in expected {
        assert!(
            names.contains(&name),
            "stdio tools/list lacks {name}: {names:?}"
        );
    }
    stdio.cancel().await.ok();

    let server = http_server(mnemo(&db, "default", Embed::Hash)).await;
    let http = http_client(&server.url).await;
    let tools = http.list_all_tools().await.expect("tools/list over http");
    assert_eq!(
        tools.len(),
        expected.len(),
        "{:?}",
        tools.iter().map(|t| &t.name).collect::<Vec<_>>()
    );
    for tool in &tools {
        assert!(
            tool.output_schema.is_some(),
            "{} has no outputSchema",
            tool.name
        );
        assert!(
            tool.annotations.is_some(),
            "{} has no annotations",
            tool.name
        );
        assert!(
            tool.description.as_deref().is_some_and(|d| d.len() > 40),
            "{} needs a description an LLM can act on",
            tool.name
        );
    }
    http.cancel().await.ok();
}

#[tokio::test]
async fn two_stdio_servers_started_together_share_one_embedded_cluster() {
    let data_dir = temp_data_dir("shared");
    // Both processes race to initialise and start the same cluster.
    let (a, b) = tokio::join!(
        stdio_client(embedded_mnemo(&data_dir, "default")),
        stdio_client(embedded_mnemo(&data_dir, "default"))
    );
    let stored = ok(
        &a,
        "store_memory",
        json!({"content": "Ana's favourite tea is genmaicha", "user_id": "ana"}),
    )
    .await;
    let id = stored["id"].as_str().expect("id").to_string();
    let read = ok(&b, "get_memory", json!({"id": id})).await;
    assert_eq!(
        read["memory"]["content"],
        "Ana's favourite tea is genmaicha"
    );
    a.cancel().await.ok();
    b.cancel().await.ok();

    // The cluster outlives its servers (documented), and `mnemo db` manages it.
    let status = run_mnemo(embedded_mnemo(&data_dir, "default"), &["db", "status"]).await;
    assert!(
        status.status.success(),
        "db status: {}",
        text(&status.stderr)
    );
    assert!(
        text(&status.stdout).contains("Running"),
        "{}",
        text(&status.stdout)
    );
    let stop = run_mnemo(embedded_mnemo(&data_dir, "default"), &["db", "stop"]).await;
    assert!(stop.status.success(), "db stop: {}", text(&stop.stderr));
    let status = run_mnemo(embedded_mnemo(&data_dir, "default"), &["db", "status"]).await;
    assert_eq!(
        status.status.code(),
        Some(3),
        "stopped cluster reports exit 3"
    );
    assert!(
        text(&status.stdout).contains("Stopped"),
        "{}",
        text(&status.stdout)
    );

    // Data survives a stop and a start on demand by the next server.
    let c = stdio_client(embedded_mnemo(&data_dir, "default")).await;
    let again = ok(&c, "get_memory", json!({"id": id})).await;
    assert_eq!(again["memory"]["access_count"], 2);
    c.cancel().await.ok();
    let _ = run_mnemo(embedded_mnemo(&data_dir, "default"), &["db", "stop"]).await;
    let _ = std::fs::remove_dir_all(&data_dir);
}

#[tokio::test]
async fn replicas_starting_together_migrate_once() {
    let db = empty_db().await;
    let runs = (0..4).map(|_| run_mnemo(mnemo(&db, "default", Embed::Hash), &["migrate"]));
    for out in futures::future::join_all(runs).await {
        assert!(
            out.status.success(),
            "migrate failed: {}",
            text(&out.stderr)
        );
    }
    let sql = db.sql().await;
    let applied: i64 = sql
        .query_one("SELECT count(*) FROM mnemo_migrations", &[])
        .await
        .expect("migrations table")
        .get(0);
    assert_eq!(applied as usize, mnemo::db::migrate::MIGRATIONS.len());
    let dim: i32 = sql
        .query_one(
            "SELECT (value #>> '{}')::int FROM mnemo_settings WHERE key = 'embedding_dim'",
            &[],
        )
        .await
        .expect("dimension recorded")
        .get(0);
    assert_eq!(dim, 384);
}

#[tokio::test]
async fn a_model_of_another_dimension_is_refused_with_a_clear_message() {
    let db = fresh_db().await;
    let mut cmd = mnemo(&db, "default", Embed::Hash);
    cmd.env("MNEMO_EMBEDDING_DIM", "16");
    let out = run_mnemo(cmd, &["migrate"]).await;
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("384") && err.contains("16"), "{err}");

    let mut cmd = mnemo(&db, "default", Embed::Hash);
    cmd.env("MNEMO_EMBEDDING_DIM", "16");
    let out = run_mnemo(cmd, &["doctor"]).await;
    assert!(
        !out.status.success(),
        "doctor must fail on a dimension mismatch"
    );
    let report = text(&out.stdout);
    assert!(
        report.contains("FAIL") && report.contains("384-dimensional"),
        "{report}"
    );
}

#[tokio::test]
async fn doctor_names_missing_postgres_binaries_and_the_fix() {
    let data_dir = temp_data_dir("nobin");
    let mut cmd = embedded_mnemo(&data_dir, "default");
    cmd.env("MNEMO_PG_BIN", "/nonexistent/pg/bin");
    let out = run_mnemo(cmd, &["doctor"]).await;
    assert!(!out.status.success());
    let report = text(&out.stdout);
    assert!(
        report.contains("FAIL") && report.contains("postgres binaries"),
        "{report}"
    );
    assert!(
        report.contains("setup.sh") || report.contains("MNEMO_PG_BIN"),
        "{report}"
    );
    let _ = std::fs::remove_dir_all(&data_dir);
}

#[tokio::test]
async fn doctor_passes_on_a_working_setup() {
    let db = fresh_db().await;
    let out = run_mnemo(mnemo(&db, "default", Embed::Hash), &["doctor"]).await;
    let report = text(&out.stdout);
    assert!(out.status.success(), "{report}\n{}", text(&out.stderr));
    assert!(
        report.contains("pgvector") && report.contains("0.8"),
        "{report}"
    );
}

/// A PostgreSQL without pgvector: a copy of the runtime with the extension's
/// files left out, run as its own cluster and reached as an external DB.
#[tokio::test]
async fn doctor_and_migrate_explain_a_database_without_pgvector() {
    let runtime = pg_bin()
        .ancestors()
        .nth(3)
        .expect("runtime pg dir")
        .to_path_buf();
    let copy = temp_data_dir("novector-runtime");
    let status = std::process::Command::new("cp")
        .args([
            "-a",
            &format!("{}/.", runtime.display()),
            &copy.display().to_string(),
        ])
        .status()
        .expect("cp");
    assert!(status.success());
    let ext = copy.join("pgserver/pginstall/share/postgresql/extension");
    for entry in std::fs::read_dir(&ext).expect("extension dir") {
        let path = entry.expect("entry").path();
        if path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("vector"))
        {
            std::fs::remove_file(path).expect("remove vector file");
        }
    }
    let data_dir = temp_data_dir("novector");
    let bin = copy.join("pgserver/pginstall/bin");
    let cluster = mnemo::db::embedded::EmbeddedCluster::new(&data_dir, &bin, None)
        .expect("cluster without pgvector");
    cluster
        .ensure_running("plain")
        .await
        .expect("start cluster");
    let db = TestDb {
        name: "plain".into(),
        url: format!(
            "host={} user=postgres dbname=plain",
            cluster.socket_dir().display()
        ),
    };
    let out = run_mnemo(mnemo(&db, "default", Embed::Hash), &["doctor"]).await;
    let report = text(&out.stdout);
    assert!(!out.status.success());
    assert!(
        report.contains("no pgvector") && report.contains("CREATE EXTENSION vector"),
        "{report}"
    );
    let out = run_mnemo(mnemo(&db, "default", Embed::Hash), &["migrate"]).await;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("no pgvector"),
        "{}",
        text(&out.stderr)
    );
    cluster.stop().await.expect("stop");
    let _ = std::fs::remove_dir_all(&data_dir);
    let _ = std::fs::remove_dir_all(&copy);
}

#[tokio::test]
async fn help_teaches_the_commands() {
    let db = fresh_db().await;
    let out = run_mnemo(mnemo(&db, "default", Embed::Hash), &["--help"]).await;
    let help = text(&out.stdout);
    for word in [
        "serve",
        "migrate",
        "doctor",
        "db",
        "DATABASE_URL",
        "--data-dir",
    ] {
        assert!(help.contains(word), "--help lacks {word}:\n{help}");
    }
    let out = run_mnemo(mnemo(&db, "default", Embed::Hash), &["serve", "--help"]).await;
    assert!(text(&out.stdout).contains("--stdio") && text(&out.stdout).contains("--http"));
}

#[tokio::test]
async fn the_hnsw_index_holds_half_precision_vectors_and_older_ones_are_rebuilt() {
    let db = empty_db().await;
    let (mut client, conn) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    mnemo::db::migrate::run(&mut client, 384).await.unwrap();
    let definition = "SELECT pg_get_indexdef('memories_embedding_hnsw'::regclass)";
    let def: String = client.query_one(definition, &[]).await.unwrap().get(0);
    assert!(def.contains("halfvec(384)"), "{def}");
    // The index an earlier version built: full vectors.
    client
        .batch_execute(
            "DROP INDEX memories_embedding_hnsw; \
             CREATE INDEX memories_embedding_hnsw ON memories USING hnsw (embedding vector_cosine_ops)",
        )
        .await
        .unwrap();
    mnemo::db::migrate::run(&mut client, 384).await.unwrap();
    let def: String = client.query_one(definition, &[]).await.unwrap().get(0);
    assert!(
        def.contains("halfvec_cosine_ops"),
        "rebuilt on start: {def}"
    );
    // Searches order by the expression the index holds, or they scan.
    let distance = mnemo::db::halfvec_distance("m.embedding", "$1", 384);
    client
        .batch_execute("SET enable_seqscan = off")
        .await
        .unwrap();
    let plan: Vec<String> = client
        .query(
            &format!("EXPLAIN SELECT m.id FROM memories m ORDER BY {distance} LIMIT 10"),
            &[&pgvector::Vector::from(vec![0.5f32; 384])],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        plan.iter()
            .any(|l| l.contains("Index Scan using memories_embedding_hnsw")),
        "{plan:#?}"
    );
}

//! The web console in a real browser: headless Chromium driven through
//! chromedriver (WebDriver, the `fantoccini` crate) against a real
//! `mnemo serve --http`, with data stored and read back through MCP. It
//! signs in with a key, searches, edits (and sees the edit through
//! `get_memory`), archives, restores, deletes, forgets a user, never shows
//! another companion's data, keeps an XSS probe as text, refuses a POST
//! without the CSRF token, and saves a screenshot of every page in
//! `target/console-screenshots/`.

#[path = "console/browser.rs"]
mod browser;
mod common;

use std::time::Duration;

use browser::*;
use common::*;
use fantoccini::Locator;
use rmcp::ServiceExt;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use serde_json::{Value, json};

async fn mcp(url: &str, key: &str) -> Client {
    let config =
        StreamableHttpClientTransportConfig::with_uri(url.to_string()).auth_header(key.to_string());
    tokio::time::timeout(
        Duration::from_secs(30),
        ().serve(StreamableHttpClientTransport::from_config(config)),
    )
    .await
    .expect("initialize timed out")
    .expect("initialize failed")
}

async fn store(client: &Client, args: Value) -> String {
    ok(client, "store_memory", args).await["id"]
        .as_str()
        .expect("id")
        .to_string()
}

async fn memory(client: &Client, id: &str) -> Value {
    ok(client, "get_memory", json!({ "id": id })).await["memory"].clone()
}

const XSS: &str =
    "<script>window.__xss = 1</script><img src=x onerror=\"window.__xss = 2\"> is a probe";

#[tokio::test]
async fn a_person_signs_in_finds_corrects_and_forgets_in_a_real_browser() {
    let db = fresh_db().await;
    let key = create_key(&db, "alpha").await;
    let other_key = create_key(&db, "beta").await;
    let server = http_server(mnemo(&db, "alpha", Embed::Hash)).await;
    let base = server.url.trim_end_matches("/mcp").to_string();
    let alpha = mcp(&server.url, &key).await;
    let beta = mcp(&server.url, &other_key).await;

    // Data stored through MCP, for two companions that share a user id.
    let lentils = store(
        &alpha,
        json!({"user_id": "ana", "content": "Ana is vegetarian and loves lentil soup",
        "kind": "preference", "importance": 6, "tags": ["food"]}),
    )
    .await;
    let lisbon = store(
        &alpha,
        json!({"user_id": "ana", "content": "Ana moved to Lisbon",
        "kind": "experience", "occurred_at": "2023-05-10T09:00:00Z"}),
    )
    .await;
    let probe = store(&alpha, json!({"user_id": "ana", "content": XSS})).await;
    ok(
        &alpha,
        "relate_memories",
        json!({"from_id": lisbon, "to_id": lentils, "relation": "references"}),
    )
    .await;
    store(&alpha, json!({"user_id": "ana", "content": "Always answer Ana in Portuguese", "kind": "instruction"})).await;
    let bob = store(
        &alpha,
        json!({"user_id": "bob", "content": "Bob keeps bees on his roof"}),
    )
    .await;
    ok(
        &alpha,
        "append_messages",
        json!({"name": "Honey plans", "user_id": "bob", "messages": [
            {"role": "user", "content": "How much honey do three hives make?"},
            {"role": "assistant", "content": "Roughly 30 kg a year, depending on the season."}
        ]}),
    )
    .await;
    let secret = store(
        &beta,
        json!({"user_id": "ana", "content": "Beta only: the launch code is 0000"}),
    )
    .await;

    let (browser, _driver) = browser().await;

    // Sign-in: the console sends an unsigned visitor to the form; a wrong
    // key gets the message next to the field; Enter submits.
    browser
        .goto(&format!("{base}/console"))
        .await
        .expect("open console");
    assert_eq!(heading(&browser).await, "Sign in");
    shot(&browser, "signin").await;
    enter(&browser, "API key", "mnemo_not_a_key").await;
    assert_eq!(heading(&browser).await, "Sign in");
    let error = browser
        .find(Locator::Css("#api_key-error"))
        .await
        .expect("error next to the field");
    assert_eq!(
        error.text().await.unwrap(),
        "invalid, expired or revoked API key"
    );
    shot(&browser, "signin-error").await;
    enter(&browser, "API key", &key).await;
    assert_eq!(heading(&browser).await, "Overview");
    let session = session_cookie(&browser).await;
    let landed = browser.current_url().await.unwrap().to_string();
    assert!(!landed.contains(&key), "the key went into a URL: {landed}");
    assert!(
        !session.contains(&key) && session.len() >= 43,
        "the cookie holds a random id, not the key"
    );
    let overview = text(&browser).await;
    assert!(
        overview.contains("Memories by user") && overview.contains("ana"),
        "{overview}"
    );
    assert!(
        browser.find(Locator::Css("svg.chart")).await.is_ok(),
        "growth chart"
    );
    shot(&browser, "overview").await;

    // The list shows alpha's memories, never beta's, and the probe as text.
    browser
        .goto(&format!("{base}/console/memories"))
        .await
        .unwrap();
    assert_eq!(heading(&browser).await, "Memories");
    let listed = text(&browser).await;
    assert!(
        listed.contains("Ana is vegetarian and loves lentil soup"),
        "{listed}"
    );
    assert!(listed.contains("Bob keeps bees"));
    assert!(
        !listed.contains("launch code"),
        "another companion's memory listed"
    );
    assert!(
        listed.contains("<script>window.__xss = 1</script><img src=x onerror="),
        "probe shown as text"
    );
    let ran = browser
        .execute("return typeof window.__xss;", vec![])
        .await
        .unwrap();
    assert_eq!(ran, json!("undefined"), "the probe ran");
    assert!(
        browser
            .find_all(Locator::Css("main img"))
            .await
            .unwrap()
            .is_empty(),
        "the probe made an element"
    );
    shot(&browser, "memories").await;

    // Filters: kind and state.
    browser
        .goto(&format!(
            "{base}/console/memories?user=ana&kind=instruction"
        ))
        .await
        .unwrap();
    let filtered = text(&browser).await;
    assert!(
        filtered.contains("Always answer Ana in Portuguese") && !filtered.contains("lentil"),
        "{filtered}"
    );

    // Search with the "Search memories" box: the tool's hybrid search.
    browser
        .goto(&format!("{base}/console/memories"))
        .await
        .unwrap();
    labelled(&browser, "User")
        .await
        .select_by_value("ana")
        .await
        .expect("choose ana");
    enter(&browser, "Search memories", "lentil soup").await;
    assert_eq!(heading(&browser).await, "Search memories");
    let first = browser
        .find(Locator::Css("ul.memories li.memory a.content"))
        .await
        .expect("a result");
    assert_eq!(
        first.text().await.unwrap(),
        "Ana is vegetarian and loves lentil soup"
    );
    assert!(text(&browser).await.contains("no time window was read"));
    shot(&browser, "search").await;
    enter(
        &browser,
        "Search memories",
        "where did Ana move in May 2023",
    )
    .await;
    let windows = browser
        .find(Locator::Css("p.windows"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        windows.contains("Time windows read from the query") && windows.contains("2023-04-30"),
        "{windows}"
    );
    enter(&browser, "Search memories", "launch code").await;
    assert!(
        !text(&browser).await.contains("launch code is 0000"),
        "search crossed companions"
    );

    // Open the memory from the results; its fields and relations show.
    enter(&browser, "Search memories", "lentil soup").await;
    click(&browser, "ul.memories li.memory a.content").await;
    assert_eq!(heading(&browser).await, "Memory");
    let page = text(&browser).await;
    assert!(
        page.contains("references") && page.contains("Ana moved to Lisbon"),
        "relation in: {page}"
    );
    shot(&browser, "memory").await;
    let memory_url = browser.current_url().await.unwrap().to_string();
    assert!(memory_url.ends_with(&lentils), "{memory_url}");

    // A bad value gets the tool's message next to its field; nothing is
    // saved, not even the valid change made in the same form.
    let save = format!("form[action='/console/memories/{lentils}'] button[type='submit']");
    fill(&browser, "Content", "Ana is vegan and loves lentil soup").await;
    fill(&browser, "Importance", "11").await;
    click(&browser, &save).await;
    assert_eq!(heading(&browser).await, "Memory");
    let error = browser
        .find(Locator::Css("#importance-error"))
        .await
        .expect("message next to importance");
    assert_eq!(
        error.text().await.unwrap(),
        "importance is 11: use a whole number from 0 (trivial) to 10 (critical)"
    );
    shot(&browser, "memory-invalid").await;
    let unchanged = memory(&alpha, &lentils).await;
    assert_eq!(
        unchanged["content"], "Ana is vegetarian and loves lentil soup",
        "half-saved"
    );
    assert_eq!(unchanged["importance"], 6);

    // A correct edit, read back through MCP get_memory.
    browser.goto(&memory_url).await.unwrap();
    fill(&browser, "Content", "Ana is vegan and loves lentil soup").await;
    fill(&browser, "Importance", "9").await;
    fill(&browser, "Tags", "food, diet").await;
    click(&browser, &save).await;
    assert_eq!(heading(&browser).await, "Memory");
    assert!(text(&browser).await.contains("Saved."));
    let edited = memory(&alpha, &lentils).await;
    assert_eq!(edited["content"], "Ana is vegan and loves lentil soup");
    assert_eq!(edited["importance"], 9);
    assert_eq!(edited["tags"], json!(["food", "diet"]));

    // Optimistic concurrency, as update_memory's: a change made through MCP
    // after the page was read is not overwritten.
    browser.goto(&memory_url).await.unwrap();
    ok(
        &alpha,
        "update_memory",
        json!({"id": lentils, "importance": 3}),
    )
    .await;
    fill(&browser, "Importance", "4").await;
    click(&browser, &save).await;
    let conflict = text(&browser).await;
    assert!(conflict.contains("since you read it"), "{conflict}");
    assert_eq!(memory(&alpha, &lentils).await["importance"], 3);

    // Archive and restore.
    browser.goto(&memory_url).await.unwrap();
    click(&browser, "form[action$='/archive'] button").await;
    assert!(text(&browser).await.contains("Archived"));
    assert!(memory(&alpha, &lentils).await["archived_at"].is_string());
    shot(&browser, "memory-archived").await;
    click(&browser, "form[action$='/restore'] button").await;
    assert!(text(&browser).await.contains("Restored."));
    assert!(memory(&alpha, &lentils).await["archived_at"].is_null());

    // The neighbourhood as a picture, nodes clickable.
    browser
        .goto(&format!("{base}/console/memories/{lisbon}/graph"))
        .await
        .unwrap();
    assert_eq!(heading(&browser).await, "Relations");
    let nodes = browser
        .find_all(Locator::Css("svg.graph g.node"))
        .await
        .unwrap();
    assert_eq!(nodes.len(), 2, "the memory and its neighbour");
    assert!(text(&browser).await.contains("references"));
    shot(&browser, "relations").await;

    // Another companion's memory: its id in a URL answers 404.
    browser
        .goto(&format!("{base}/console/memories/{secret}"))
        .await
        .unwrap();
    assert_eq!(heading(&browser).await, "Not found");
    assert!(!text(&browser).await.contains("launch code"));
    shot(&browser, "not-found").await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let cookie = format!("mnemo_console={session}");
    let answer = http
        .get(format!("{base}/console/memories/{secret}"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 404);

    // CSRF: a POST without the token, with a wrong one, or from another
    // site is refused, and changes nothing.
    browser.goto(&memory_url).await.unwrap();
    let csrf = browser
        .find(Locator::Css("input[name='csrf']"))
        .await
        .expect("a form with a CSRF token")
        .attr("value")
        .await
        .unwrap()
        .expect("token value");
    for (body, origin) in [
        (String::new(), None),
        ("csrf=wrong".to_string(), None),
        (format!("csrf={csrf}"), Some("http://evil.example")),
    ] {
        let mut request = http
            .post(format!("{base}/console/memories/{lentils}/archive"))
            .header("cookie", &cookie)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body.clone());
        if let Some(o) = origin {
            request = request.header("origin", o);
        }
        let answer = request.send().await.unwrap();
        assert_eq!(answer.status(), 403, "POST {body:?} from {origin:?}");
    }
    assert!(
        memory(&alpha, &lentils).await["archived_at"].is_null(),
        "a refused POST archived"
    );
    let allowed = http
        .post(format!("{base}/console/memories/{lentils}/archive"))
        .header("cookie", &cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("csrf={csrf}"))
        .send()
        .await
        .unwrap();
    assert_eq!(allowed.status(), 303, "the same POST with its token works");
    ok(&alpha, "restore_memory", json!({"id": lentils})).await;

    // Delete, after a confirmation page; the probe stays text on its page.
    browser
        .goto(&format!("{base}/console/memories/{probe}"))
        .await
        .unwrap();
    assert!(
        text(&browser)
            .await
            .contains("<script>window.__xss = 1</script>")
    );
    let ran = browser
        .execute("return typeof window.__xss;", vec![])
        .await
        .unwrap();
    assert_eq!(ran, json!("undefined"), "the probe ran on its own page");
    click(&browser, "a.button.danger").await;
    assert_eq!(heading(&browser).await, "Delete this memory?");
    shot(&browser, "delete-confirm").await;
    click(&browser, "form[action$='/delete'] button.danger").await;
    assert_eq!(heading(&browser).await, "Memories");
    assert!(text(&browser).await.contains("Deleted"));
    let gone = tool_error(&alpha, "get_memory", json!({"id": probe})).await;
    assert!(gone.contains("no memory with id"), "{gone}");

    // Conversations: the list and a transcript.
    browser
        .goto(&format!("{base}/console/conversations?user=bob"))
        .await
        .unwrap();
    assert_eq!(heading(&browser).await, "Conversations");
    shot(&browser, "conversations").await;
    click(&browser, "table a").await;
    assert_eq!(heading(&browser).await, "Honey plans");
    assert!(text(&browser).await.contains("Roughly 30 kg a year"));
    shot(&browser, "transcript").await;

    // Users, a profile.
    browser
        .goto(&format!("{base}/console/users"))
        .await
        .unwrap();
    assert_eq!(heading(&browser).await, "Users");
    shot(&browser, "users").await;
    browser
        .goto(&format!("{base}/console/user?id=ana"))
        .await
        .unwrap();
    assert_eq!(heading(&browser).await, "User ana");
    let profile = text(&browser).await;
    assert!(
        profile.contains("Always answer Ana in Portuguese") && !profile.contains("launch code")
    );
    shot(&browser, "user").await;

    // Forget a user: a wrong confirmation deletes nothing; the right one
    // deletes their memories, conversations and user row.
    browser
        .goto(&format!("{base}/console/user?id=bob"))
        .await
        .unwrap();
    click(&browser, "a.button.danger").await;
    assert_eq!(heading(&browser).await, "Forget bob?");
    fill(&browser, "Type the user id to confirm", "bobby").await;
    click(&browser, "button.danger").await;
    let refused = browser
        .find(Locator::Css("#confirm-error"))
        .await
        .expect("message next to the field");
    assert!(
        refused
            .text()
            .await
            .unwrap()
            .contains("nothing was deleted")
    );
    shot(&browser, "forget-confirm").await;
    assert!(
        memory(&alpha, &bob).await["content"].is_string(),
        "deleted without confirmation"
    );
    fill(&browser, "Type the user id to confirm", "bob").await;
    click(&browser, "button.danger").await;
    assert_eq!(heading(&browser).await, "Users");
    assert!(text(&browser).await.contains("Forgotten"));
    let listed = ok(&alpha, "list_memories", json!({"user_id": "bob"})).await;
    assert_eq!(listed["memories"], json!([]));
    let contexts = ok(&alpha, "list_contexts", json!({"user_id": "bob"})).await;
    assert_eq!(contexts["contexts"], json!([]));
    let sql = db.sql().await;
    let bob_rows: i64 = sql
        .query_one("SELECT count(*) FROM users WHERE external_id = 'bob'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(bob_rows, 0, "the user row stays after forgetting");
    assert!(
        memory(&beta, &secret).await["content"].is_string(),
        "beta's data went too"
    );

    // Phone width: readable, no sideways scrolling.
    browser.set_window_size(390, 844).await.unwrap();
    for (url, name) in [
        (format!("{base}/console/memories"), "memories-phone"),
        (memory_url.clone(), "memory-phone"),
        (format!("{base}/console"), "overview-phone"),
    ] {
        browser.goto(&url).await.unwrap();
        heading(&browser).await;
        let width = browser
            .execute("return document.documentElement.scrollWidth;", vec![])
            .await
            .unwrap();
        assert!(
            width.as_f64().unwrap() <= 390.0,
            "{name} scrolls sideways: {width}"
        );
        shot(&browser, name).await;
    }
    browser.set_window_size(1280, 800).await.unwrap();

    // Sign-out ends the session: its row goes, the old cookie opens nothing.
    browser.goto(&format!("{base}/console")).await.unwrap();
    click(&browser, "form.signout button").await;
    assert_eq!(heading(&browser).await, "Sign in");
    let sessions: i64 = sql
        .query_one("SELECT count(*) FROM console_sessions", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(sessions, 0);
    let answer = http
        .get(format!("{base}/console/memories"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 303);
    assert_eq!(answer.headers()["location"], "/console/signin");
    browser.close().await.unwrap();
}

#[tokio::test]
async fn a_keyless_loopback_server_opens_for_its_companion_and_checks_the_host() {
    let db = fresh_db().await;
    let server = http_server(mnemo(&db, "solo", Embed::Hash)).await;
    let base = server.url.trim_end_matches("/mcp").to_string();
    let client = http_client(&server.url).await;
    store(
        &client,
        json!({"content": "Solo remembers the keyless way"}),
    )
    .await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();

    // No key exists: signing in needs none, and still yields a session.
    let signin = http
        .get(format!("{base}/console/signin"))
        .send()
        .await
        .unwrap();
    assert_eq!(signin.status(), 303);
    let set = signin.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict") && !set.contains("Secure"),
        "{set}"
    );
    let cookie = set.split(';').next().unwrap().to_string();
    let page = http
        .get(format!("{base}/console/memories"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert!(
        page.text()
            .await
            .unwrap()
            .contains("Solo remembers the keyless way")
    );

    // Behind TLS (a proxy saying so) the cookie is Secure.
    let tls = http
        .get(format!("{base}/console/signin"))
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .unwrap();
    assert!(
        tls.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .contains("; Secure")
    );

    // The same Host check as /mcp: a rebinding host is refused.
    let rebound = http
        .get(format!("{base}/console/memories"))
        .header("host", "evil.example")
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(rebound.status(), 403);
}

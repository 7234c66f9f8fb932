//! The browser side of the console test: chromedriver and a headless
//! Chromium of its own, screenshots, and finding controls by their labels
//! (every control has one).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use fantoccini::{Client as Browser, ClientBuilder, Locator};
use serde_json::json;

use super::common::free_port;

/// chromedriver, stopped (and its browser with it) when dropped.
pub struct Driver {
    child: std::process::Child,
    url: String,
    _profile: tempfile::TempDir,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts chromedriver on a free loopback port and a headless Chromium
/// with a fresh profile; the flags keep Chromium off the network (this
/// machine's is closed) and runnable as root.
pub async fn browser() -> (Browser, Driver) {
    let port = free_port();
    let child = std::process::Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver (scripts/setup-test-packages.sh installs it)");
    let profile = tempfile::tempdir().expect("browser profile dir");
    let driver = Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
        _profile: profile,
    };
    let args = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1280,800",
    ];
    let mut args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    args.push(format!(
        "--user-data-dir={}",
        driver._profile.path().display()
    ));
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({ "binary": "/usr/bin/chromium", "args": args }),
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let attempt = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps.clone())
            .connect(&driver.url)
            .await;
        match attempt {
            Ok(client) => return (client, driver),
            Err(e) if std::time::Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => panic!("cannot start a browser session through chromedriver: {e}"),
        }
    }
}

pub fn screenshot_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/console-screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    dir
}

pub async fn shot(browser: &Browser, name: &str) {
    let png = browser.screenshot().await.expect("screenshot");
    std::fs::write(screenshot_dir().join(format!("{name}.png")), png).expect("write screenshot");
}

/// The visible text of the page.
pub async fn text(browser: &Browser) -> String {
    browser
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css("body"))
        .await
        .expect("body")
        .text()
        .await
        .expect("text")
}

pub async fn heading(browser: &Browser) -> String {
    browser
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css("main h1"))
        .await
        .expect("a page heading")
        .text()
        .await
        .expect("heading text")
}

/// The control a label names (every control is labelled).
pub async fn labelled(browser: &Browser, label: &str) -> fantoccini::elements::Element {
    let label_el = browser
        .find(Locator::XPath(&format!(
            "//label[normalize-space()='{label}']"
        )))
        .await
        .unwrap_or_else(|_| panic!("no label {label:?}"));
    let id = label_el
        .attr("for")
        .await
        .expect("label for")
        .unwrap_or_else(|| panic!("label {label:?} names no control"));
    browser
        .find(Locator::Id(&id))
        .await
        .unwrap_or_else(|_| panic!("label {label:?} names a missing control"))
}

pub async fn fill(browser: &Browser, label: &str, value: &str) {
    let input = labelled(browser, label).await;
    input.clear().await.expect("clear");
    input.send_keys(value).await.expect("type");
}

/// Clicks what `css` matches and returns once the page it leads to has
/// loaded (every control the test clicks navigates).
pub async fn click(browser: &Browser, css: &str) {
    let old = current_page(browser).await;
    browser
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|_| panic!("nothing matches {css}"))
        .click()
        .await
        .expect("click");
    next_page(browser, old, css).await;
}

/// Types `value` into the control `label` names and presses Enter, which
/// submits its form; returns once the answer has loaded.
pub async fn enter(browser: &Browser, label: &str, value: &str) {
    let old = current_page(browser).await;
    fill(browser, label, &format!("{value}\u{E007}")).await;
    next_page(browser, old, label).await;
}

async fn current_page(browser: &Browser) -> fantoccini::elements::Element {
    browser
        .find(Locator::Css("html"))
        .await
        .expect("the current page")
}

/// Waits until `old`'s document is replaced and the new one is complete.
/// Reading the page straight after a click raced on CI (`body` not found
/// mid-navigation, or the old page's text read as the answer).
async fn next_page(browser: &Browser, old: fantoccini::elements::Element, what: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    // Any error reading the old root means its document is gone.
    while old.tag_name().await.is_ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "{what} led to no new page"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    loop {
        let state = browser
            .execute("return document.readyState", vec![])
            .await
            .ok();
        if state.as_ref().and_then(|s| s.as_str()) == Some("complete") {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the page after {what} never finished loading"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The session cookie's value, as the browser holds it.
pub async fn session_cookie(browser: &Browser) -> String {
    let cookie = browser
        .get_named_cookie("mnemo_console")
        .await
        .expect("the session cookie");
    assert_eq!(cookie.http_only(), Some(true), "HttpOnly");
    assert_eq!(
        cookie.same_site().map(|s| s.to_string()).as_deref(),
        Some("Strict"),
        "SameSite=Strict"
    );
    cookie.value().to_string()
}

//! A headless Chromium for the dashboard tests, driven over WebDriver with `fantoccini`.
//!
//! Each [`Browser`] starts its own `chromedriver` on a free loopback port, in a process group
//! of its own, and a Chromium with a fresh profile in a temp directory (`--user-data-dir`).
//! [`Browser::close`] ends the session (Chromium quits) and stops the driver; when a test
//! fails first, dropping the `Browser` kills the driver's process group and every process
//! whose command line names the profile directory, so nothing is left running.
//! Chromium and the driver are Debian's (`scripts/ensure-chromium`; `WARREN_CHROMIUM` and
//! `WARREN_CHROMEDRIVER` name others); a missing one fails the test, saying how to install it.

#![allow(dead_code)]

use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

/// The Chromium flags of every test browser (DESIGN §10: no network of its own).
const FLAGS: [&str; 9] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--disable-dev-shm-usage",
];

/// How long a wait for something on a page may take.
pub const PAGE_WAIT: Duration = Duration::from_secs(20);

fn program(var: &str, default: &str) -> String {
    let path = std::env::var(var)
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| default.to_owned());
    assert!(
        Path::new(&path).exists(),
        "{path} is missing: the dashboard tests need Debian's chromium and chromium-driver \
         (run scripts/ensure-chromium, or apt-get install chromium chromium-driver)"
    );
    path
}

/// A Chromium and its driver, both stopped at the end of the test.
pub struct Browser {
    /// The WebDriver session.
    pub client: Client,
    /// Stops the driver and the browser when dropped (before `profile` is removed).
    _cleanup: Cleanup,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts a browser whose window is `width`×`height` CSS pixels.
    pub async fn start_sized(width: u32, height: u32) -> Self {
        let chromium = program("WARREN_CHROMIUM", "/usr/bin/chromium");
        let chromedriver = program("WARREN_CHROMEDRIVER", "/usr/bin/chromedriver");
        let profile = tempfile::tempdir().expect("profile dir");
        let port = crate::common::process::free_port();
        let driver = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {chromedriver}: {e}"));
        // From here on, a panic drops this guard, which stops the driver and the browser.
        let guard = Cleanup {
            driver,
            profile: profile.path().to_owned(),
        };
        let url = format!("http://127.0.0.1:{port}");
        let mut args: Vec<String> = FLAGS.iter().map(|s| (*s).to_owned()).collect();
        args.push(format!("--user-data-dir={}", profile.path().display()));
        args.push(format!("--window-size={width},{height}"));
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({ "binary": chromium, "args": args }),
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector)
                .capabilities(caps.clone())
                .connect(&url)
                .await
            {
                Ok(c) => break c,
                Err(e) => {
                    assert!(
                        Instant::now() < deadline,
                        "no WebDriver session from {chromedriver} within 30 s: {e}"
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        };
        Self {
            client,
            _cleanup: guard,
            _profile: profile,
        }
    }

    /// Starts a browser with a 1280×800 window.
    pub async fn start() -> Self {
        Self::start_sized(1280, 800).await
    }

    /// Opens `url`.
    pub async fn goto(&self, url: &str) {
        self.client
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("cannot open {url}: {e}"));
    }

    /// The first element matching the CSS selector, waiting for it up to [`PAGE_WAIT`].
    pub async fn wait_css(&self, selector: &str) -> fantoccini::elements::Element {
        self.client
            .wait()
            .at_most(PAGE_WAIT)
            .for_element(Locator::Css(selector))
            .await
            .unwrap_or_else(|e| panic!("no `{selector}` within {PAGE_WAIT:?}: {e}"))
    }

    /// The text of the first element matching `selector` (waiting for it).
    pub async fn text(&self, selector: &str) -> String {
        self.wait_css(selector)
            .await
            .text()
            .await
            .unwrap_or_else(|e| panic!("text of `{selector}`: {e}"))
    }

    /// How many elements match `selector` now.
    pub async fn count(&self, selector: &str) -> usize {
        self.client
            .find_all(Locator::Css(selector))
            .await
            .map_or(0, |v| v.len())
    }

    /// Polls the text of `selector` until `pred` holds, up to `within`; returns it.
    pub async fn wait_text(
        &self,
        selector: &str,
        within: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + within;
        loop {
            let text = match self.client.find(Locator::Css(selector)).await {
                Ok(el) => el.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            };
            if pred(&text) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "`{selector}` not as expected within {within:?}; last text: {text:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Clicks the first element matching `selector` (waiting for it).
    pub async fn click(&self, selector: &str) {
        self.wait_css(selector)
            .await
            .click()
            .await
            .unwrap_or_else(|e| panic!("click `{selector}`: {e}"));
    }

    /// Types `text` into the field matching `selector`.
    pub async fn type_into(&self, selector: &str, text: &str) {
        self.wait_css(selector)
            .await
            .send_keys(text)
            .await
            .unwrap_or_else(|e| panic!("type into `{selector}`: {e}"));
    }

    /// Runs `script` in the page and returns its value.
    pub async fn js(&self, script: &str) -> serde_json::Value {
        self.client
            .execute(script, vec![])
            .await
            .unwrap_or_else(|e| panic!("script failed: {e}"))
    }

    /// A PNG of the window.
    pub async fn screenshot(&self) -> Vec<u8> {
        self.client.screenshot().await.expect("screenshot")
    }

    /// Ends the session (Chromium quits) and stops the driver.
    pub async fn close(self) {
        let _ = tokio::time::timeout(Duration::from_secs(10), self.client.clone().close()).await;
        // Dropping `self` stops the driver and whatever of Chromium is left, also when a test
        // panics before calling this.
    }
}

/// Kills the driver's process group and every process whose command line names `profile`
/// (Chromium and its helpers, whichever group they put themselves in), by their ids.
struct Cleanup {
    driver: std::process::Child,
    profile: std::path::PathBuf,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.driver.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.driver.wait();
        let needle = format!("--user-data-dir={}", self.profile.display());
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return;
        };
        for entry in dir.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
                continue;
            };
            if cmdline
                .split(|b| *b == 0)
                .any(|arg| arg == needle.as_bytes())
            {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }
}

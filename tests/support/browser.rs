//! A real headless Chromium driven through chromedriver (WebDriver), both
//! from Debian's packages (`./scripts/test` installs them). Each browser
//! has its own chromedriver on a free loopback port and its own profile
//! directory; both go away with the value.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use tempfile::TempDir;

pub struct Browser {
    pub client: Client,
    driver: Child,
    _profile: TempDir,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Where the tests save their screenshots (not committed).
pub fn screenshot_dir() -> PathBuf {
    let d = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/console-screenshots");
    std::fs::create_dir_all(&d).unwrap();
    d
}

impl Browser {
    /// A new browser window of 1366×900 (a laptop).
    pub async fn start() -> Browser {
        let (chromium, driver) = ("/usr/bin/chromium", "chromedriver");
        if !std::path::Path::new(chromium).exists() {
            panic!("{chromium} not found: run ./scripts/test (it installs Debian's chromium and chromium-driver)");
        }
        let port = free_port();
        let child = Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {driver}: {e}; run ./scripts/test (it installs chromium-driver)"
                )
            });
        let profile = tempfile::tempdir().unwrap();
        // NB: the background-networking flags keep Chromium off the network:
        // the tests only talk to loopback.
        let caps = serde_json::json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-quic", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--disable-extensions",
                    "--window-size=1366,900", "--force-device-scale-factor=1",
                    format!("--user-data-dir={}", profile.path().display()),
                ]
            }
        });
        let caps = match caps {
            serde_json::Value::Object(m) => m,
            _ => unreachable!(),
        };
        let url = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        let client = loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector)
                .capabilities(caps.clone())
                .connect(&url)
                .await
            {
                Ok(c) => break c,
                Err(e) if started.elapsed() < Duration::from_secs(30) => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("chromedriver did not start a session within 30s: {e}"),
            }
        };
        Browser {
            client,
            driver: child,
            _profile: profile,
        }
    }

    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.unwrap();
    }

    /// The element matching `css`, waiting up to 10 s for it.
    pub async fn find(&self, css: &str) -> Element {
        self.client
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no element {css:?} within 10s: {e}"))
    }

    /// Every element matching `css` now.
    pub async fn all(&self, css: &str) -> Vec<Element> {
        self.client.find_all(Locator::Css(css)).await.unwrap()
    }

    /// The visible text of the page's body.
    pub async fn text(&self) -> String {
        // NB: through the page, not an element handle, which goes stale
        // when a screen replaces the body's children.
        let v = self.js("return document.body.innerText").await;
        v.as_str().unwrap_or_default().to_string()
    }

    /// Waits up to `secs` for `check` on the page's text.
    pub async fn until(&self, secs: u64, what: &str, check: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let t = self.text().await;
            if check(&t) {
                return t;
            }
            if Instant::now() > deadline {
                self.screenshot(&format!("failed-{}", what.replace(' ', "-")))
                    .await;
                panic!("{what}: not seen within {secs}s; the page said:\n{t}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Counts elements matching `css` until `check` holds (up to `secs`).
    pub async fn until_count(&self, secs: u64, css: &str, check: impl Fn(usize) -> bool) -> usize {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let n = self.all(css).await.len();
            if check(n) {
                return n;
            }
            if Instant::now() > deadline {
                panic!("{css}: {n} elements, not as expected within {secs}s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Types into the input `css` (after clearing it).
    pub async fn type_into(&self, css: &str, text: &str) {
        let e = self.find(css).await;
        e.clear().await.unwrap();
        e.send_keys(text).await.unwrap();
    }

    pub async fn click(&self, css: &str) {
        self.find(css).await.click().await.unwrap();
    }

    /// Runs `js` in the page and returns what it returns.
    pub async fn js(&self, js: &str) -> serde_json::Value {
        self.client.execute(js, vec![]).await.unwrap()
    }

    /// Saves a PNG of the window as `target/console-screenshots/{name}.png`.
    pub async fn screenshot(&self, name: &str) {
        if let Ok(png) = self.client.screenshot().await {
            let _ = std::fs::write(screenshot_dir().join(format!("{name}.png")), png);
        }
    }

    pub async fn close(mut self) {
        let _ = self.client.clone().close().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

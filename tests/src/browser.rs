//! Drives Debian's `chromium`, headless, over the DevTools protocol: a
//! small blocking client on one loopback websocket, enough for the console
//! tests to navigate, evaluate JavaScript, wait for elements, click, type,
//! take screenshots and collect the page's errors and CSP violations.
//!
//! Each [`Browser`] runs its own chromium with its own profile folder
//! (cookies do not leak between tests) and a debugging port the kernel
//! picks (read from the profile's `DevToolsActivePort`). The process is
//! killed when the handle drops. Every wait has a deadline; nothing here
//! talks to anything but loopback.

use std::cell::{Cell, RefCell};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};
use tungstenite::{Message, WebSocket};

/// How long one DevTools command may take.
const COMMAND_DEADLINE: Duration = Duration::from_secs(30);
/// The most protocol events kept for inspection.
const MAX_EVENTS: usize = 20_000;
/// The desktop viewport the screenshots show.
pub const DESKTOP: (u32, u32) = (1440, 900);
/// A phone's viewport (CSS pixels).
pub const PHONE: (u32, u32) = (390, 844);

/// Where chromium is, or `None` when it is not installed.
pub fn chromium_path() -> Option<PathBuf> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// A running headless chromium and the DevTools connection to it.
pub struct Browser {
    child: RefCell<Child>,
    socket: RefCell<WebSocket<TcpStream>>,
    next_id: Cell<u64>,
    events: RefCell<Vec<Value>>,
    profile: PathBuf,
    log: PathBuf,
}

impl std::fmt::Debug for Browser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Browser")
            .field("pid", &self.child.borrow().id())
            .field("profile", &self.profile)
            .finish()
    }
}

impl Browser {
    /// Starts chromium with its profile under `dir`.
    pub fn launch(dir: &Path) -> Browser {
        let chromium =
            chromium_path().expect("chromium is installed (cargo xtask test installs it)");
        let profile = dir.join("chromium-profile");
        std::fs::create_dir_all(&profile).expect("profile dir");
        let log = std::fs::File::create(dir.join("chromium.log")).expect("chromium log");
        let mut command = Command::new(chromium);
        command
            .arg("--headless=new")
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("--remote-debugging-port=0")
            .arg("--remote-debugging-address=127.0.0.1")
            .args([
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-gpu",
                "--disable-extensions",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-default-apps",
                "--disable-features=Translate,MediaRouter,OptimizationHints",
                "--metrics-recording-only",
                "--password-store=basic",
                "--use-mock-keychain",
                "--hide-scrollbars",
                "--mute-audio",
                "--force-color-profile=srgb",
                // Containers often mount a 64 MB /dev/shm, which chromium
                // outgrows and then crashes: keep shared memory in /tmp.
                "--disable-dev-shm-usage",
            ])
            .arg(format!("--window-size={},{}", DESKTOP.0, DESKTOP.1));
        // Chromium refuses to run as root with its sandbox on (CI containers).
        if rustix::process::geteuid().is_root() {
            command.arg("--no-sandbox");
        }
        let child = command
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starts chromium");
        let mut browser_guard = ChildGuard(Some(child));
        let active = profile.join("DevToolsActivePort");
        let deadline = Instant::now() + Duration::from_secs(30);
        let (port, path) = loop {
            if let Ok(text) = std::fs::read_to_string(&active) {
                let mut lines = text.lines();
                if let (Some(port), Some(path)) = (lines.next(), lines.next())
                    && let Ok(port) = port.trim().parse::<u16>()
                {
                    break (port, path.trim().to_string());
                }
            }
            if let Some(Ok(Some(status))) = browser_guard.0.as_mut().map(Child::try_wait) {
                panic!(
                    "chromium exited at start ({status}): {}",
                    std::fs::read_to_string(dir.join("chromium.log")).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "chromium wrote no DevToolsActivePort within 30 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        let stream =
            TcpStream::connect(("127.0.0.1", port)).expect("connects to chromium's DevTools port");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("read timeout");
        let url = format!("ws://127.0.0.1:{port}{path}");
        let (socket, _) = tungstenite::client::client(url.as_str(), stream)
            .unwrap_or_else(|e| panic!("DevTools websocket handshake with {url}: {e}"));
        socket
            .get_ref()
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("read timeout");
        Browser {
            child: RefCell::new(browser_guard.0.take().expect("child")),
            socket: RefCell::new(socket),
            next_id: Cell::new(1),
            events: RefCell::new(Vec::new()),
            profile,
            log: dir.join("chromium.log"),
        }
    }

    /// What a broken DevTools connection is explained by: chromium's exit
    /// status when it has gone, and the tail of what it printed.
    fn post_mortem(&self) -> String {
        let status = match self.child.borrow_mut().try_wait() {
            Ok(Some(status)) => format!("chromium exited ({status})"),
            Ok(None) => "chromium is still running".to_string(),
            Err(e) => format!("chromium's status unknown: {e}"),
        };
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let tail: String = log
            .lines()
            .rev()
            .take(30)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n");
        format!("{status}; last lines of {}:\n{tail}", self.log.display())
    }

    /// Sends `method` (to the page `session`, or the browser) and waits for
    /// its result. Panics on a protocol error or after the deadline.
    pub fn command(&self, session: Option<&str>, method: &str, params: Value) -> Value {
        self.try_command(session, method, params)
            .unwrap_or_else(|e| panic!("{method}: {e}"))
    }

    /// Like [`Browser::command`], returning the protocol's error text.
    pub fn try_command(
        &self,
        session: Option<&str>,
        method: &str,
        params: Value,
    ) -> Result<Value, String> {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        let mut message = json!({ "id": id, "method": method, "params": params });
        if let Some(s) = session {
            message["sessionId"] = json!(s);
        }
        self.socket
            .borrow_mut()
            .send(Message::Text(message.to_string().into()))
            .map_err(|e| format!("send: {e}; {}", self.post_mortem()))?;
        let deadline = Instant::now() + COMMAND_DEADLINE;
        loop {
            if Instant::now() > deadline {
                return Err(format!("no answer within {COMMAND_DEADLINE:?}"));
            }
            let Some(value) = self.read_one()? else {
                continue;
            };
            if value.get("id").and_then(Value::as_u64) == Some(id) {
                if let Some(error) = value.get("error") {
                    return Err(error.to_string());
                }
                return Ok(value.get("result").cloned().unwrap_or(Value::Null));
            }
        }
    }

    /// Reads one message if one arrives within the socket's short timeout;
    /// events are kept.
    fn read_one(&self) -> Result<Option<Value>, String> {
        let message = match self.socket.borrow_mut().read() {
            Ok(m) => m,
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(None);
            }
            Err(e) => return Err(format!("DevTools connection: {e}; {}", self.post_mortem())),
        };
        let Message::Text(text) = message else {
            return Ok(None);
        };
        let value: Value = serde_json::from_str(text.as_str()).map_err(|e| e.to_string())?;
        if value.get("method").is_some() {
            let mut events = self.events.borrow_mut();
            if events.len() >= MAX_EVENTS {
                events.drain(..MAX_EVENTS / 2);
            }
            events.push(value.clone());
        }
        Ok(Some(value))
    }

    /// Takes in any events that arrived since the last command.
    fn pump(&self) {
        while let Ok(Some(_)) = self.read_one() {}
    }

    /// A new tab at `about:blank`, with its own cookie jar when `isolated`
    /// (a second user in the same browser).
    pub fn page_with(&self, isolated: bool) -> Page<'_> {
        let mut params = json!({ "url": "about:blank" });
        if isolated {
            let context = self.command(None, "Target.createBrowserContext", json!({}));
            params["browserContextId"] = context["browserContextId"].clone();
        }
        let target = self.command(None, "Target.createTarget", params);
        let target_id = target["targetId"].as_str().expect("targetId").to_string();
        let attached = self.command(
            None,
            "Target.attachToTarget",
            json!({ "targetId": target_id, "flatten": true }),
        );
        let session = attached["sessionId"]
            .as_str()
            .expect("sessionId")
            .to_string();
        let page = Page {
            browser: self,
            session,
        };
        for domain in [
            "Page.enable",
            "Runtime.enable",
            "Log.enable",
            "Network.enable",
        ] {
            page.command(domain, json!({}));
        }
        page.set_viewport(DESKTOP, false);
        page
    }

    /// A new tab sharing the browser's cookies.
    pub fn page(&self) -> Page<'_> {
        self.page_with(false)
    }
}

/// Kills a child still held (chromium that failed to start properly).
struct ChildGuard(Option<Child>);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.socket.borrow_mut().close(None);
        let child = self.child.get_mut();
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// One tab of a [`Browser`].
#[derive(Debug)]
pub struct Page<'a> {
    browser: &'a Browser,
    session: String,
}

impl Page<'_> {
    /// Sends a command to this tab.
    pub fn command(&self, method: &str, params: Value) -> Value {
        self.browser.command(Some(&self.session), method, params)
    }

    /// Sets the viewport size (CSS pixels); `mobile` emulates a phone.
    pub fn set_viewport(&self, (width, height): (u32, u32), mobile: bool) {
        self.command(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile }),
        );
    }

    /// Opens `url` and waits until the document has loaded.
    pub fn navigate(&self, url: &str) {
        let answer = self.command("Page.navigate", json!({ "url": url }));
        if let Some(error) = answer.get("errorText").and_then(Value::as_str) {
            panic!("navigating to {url}: {error}");
        }
        self.wait_until(
            &format!("navigation to {url}"),
            Duration::from_secs(20),
            "document.readyState === 'complete'",
        );
    }

    /// Evaluates `expression` (promises awaited) and returns its value as
    /// JSON. Panics when it throws.
    pub fn eval(&self, expression: &str) -> Value {
        self.try_eval(expression)
            .unwrap_or_else(|e| panic!("evaluating {expression}: {e}"))
    }

    /// Like [`Page::eval`], returning what was thrown.
    pub fn try_eval(&self, expression: &str) -> Result<Value, String> {
        let answer = self.browser.try_command(
            Some(&self.session),
            "Runtime.evaluate",
            json!({
                "expression": expression,
                "returnByValue": true,
                "awaitPromise": true,
                "userGesture": true,
            }),
        )?;
        if let Some(exception) = answer.get("exceptionDetails") {
            return Err(exception
                .pointer("/exception/description")
                .and_then(Value::as_str)
                .unwrap_or("exception")
                .to_string());
        }
        Ok(answer
            .pointer("/result/value")
            .cloned()
            .unwrap_or(Value::Null))
    }

    /// Waits until `expression` is truthy; returns its value.
    pub fn wait_until(&self, what: &str, limit: Duration, expression: &str) -> Value {
        match self.poll_until(limit, expression) {
            Ok(v) => v,
            Err(last) => panic!(
                "timed out after {limit:?} waiting for {what} (last: {last}); page errors: {:?}",
                self.errors()
            ),
        }
    }

    /// Like [`Page::wait_until`], returning the last value instead of
    /// panicking when `limit` passes.
    pub fn poll_until(&self, limit: Duration, expression: &str) -> Result<Value, Value> {
        let deadline = Instant::now() + limit;
        loop {
            let last = match self.try_eval(expression) {
                Ok(v) if truthy(&v) => return Ok(v),
                Ok(v) => v,
                // A navigation in progress destroys the context: try again.
                Err(e) => Value::String(e),
            };
            if Instant::now() >= deadline {
                return Err(last);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until an element matches `selector`.
    pub fn wait_for(&self, selector: &str, limit: Duration) {
        let expression = format!("!!document.querySelector({})", js_string(selector));
        self.wait_until(selector, limit, &expression);
    }

    /// The text of the first element matching `selector` (empty if none).
    pub fn text(&self, selector: &str) -> String {
        let expression = format!(
            "(document.querySelector({}) || {{}}).textContent || ''",
            js_string(selector)
        );
        self.eval(&expression)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The centre of the first element matching `selector`, scrolled into
    /// view, in viewport pixels.
    pub fn center_of(&self, selector: &str) -> (f64, f64) {
        let expression = format!(
            "(() => {{ const e = document.querySelector({}); if (!e) return null; \
             e.scrollIntoView({{block: 'center', inline: 'center'}}); \
             const r = e.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; }})()",
            js_string(selector)
        );
        let at = self.eval(&expression);
        let x = at[0].as_f64();
        let y = at[1].as_f64();
        match (x, y) {
            (Some(x), Some(y)) => (x, y),
            _ => panic!("no element {selector} to click"),
        }
    }

    /// Clicks the first element matching `selector` with the mouse.
    pub fn click(&self, selector: &str) {
        let (x, y) = self.center_of(selector);
        self.click_at(x, y);
    }

    /// Moves the mouse to (x, y) and clicks there.
    pub fn click_at(&self, x: f64, y: f64) {
        self.mouse_move(x, y);
        for kind in ["mousePressed", "mouseReleased"] {
            self.command(
                "Input.dispatchMouseEvent",
                json!({ "type": kind, "x": x, "y": y, "button": "left", "clickCount": 1 }),
            );
        }
    }

    /// Moves the mouse to (x, y) (hover).
    pub fn mouse_move(&self, x: f64, y: f64) {
        self.command(
            "Input.dispatchMouseEvent",
            json!({ "type": "mouseMoved", "x": x, "y": y }),
        );
    }

    /// Focuses the element matching `selector` and types `text` into it.
    pub fn type_into(&self, selector: &str, text: &str) {
        self.eval(&format!(
            "(() => {{ const e = document.querySelector({}); if (!e) throw new Error('no element'); e.focus(); return true; }})()",
            js_string(selector)
        ));
        self.command("Input.insertText", json!({ "text": text }));
    }

    /// Presses and releases a key (`Enter`, `Tab`, `Escape`...).
    pub fn press(&self, key: &str) {
        let (code, text) = match key {
            "Enter" => (13, "\r"),
            "Tab" => (9, ""),
            "Escape" => (27, ""),
            _ => (0, ""),
        };
        let mut down =
            json!({ "type": "keyDown", "key": key, "code": key, "windowsVirtualKeyCode": code });
        if !text.is_empty() {
            down["text"] = json!(text);
        }
        self.command("Input.dispatchKeyEvent", down);
        self.command(
            "Input.dispatchKeyEvent",
            json!({ "type": "keyUp", "key": key, "code": key, "windowsVirtualKeyCode": code }),
        );
    }

    /// A PNG of the viewport (the whole page when `full_page`), also
    /// written to `path`.
    pub fn screenshot(&self, path: &Path, full_page: bool) -> Vec<u8> {
        let answer = self.command(
            "Page.captureScreenshot",
            json!({ "format": "png", "captureBeyondViewport": full_page }),
        );
        let data = answer["data"].as_str().expect("screenshot data");
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(data)
            .expect("screenshot is base64");
        std::fs::write(path, &bytes).expect("writes the screenshot");
        bytes
    }

    /// The cookies this tab's browser context holds for the current URL.
    pub fn cookies(&self) -> Vec<Value> {
        self.command("Network.getCookies", json!({}))["cookies"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// What went wrong in this tab so far: console errors, uncaught
    /// exceptions, and log entries of level error (CSP violations and failed
    /// loads among them), as readable lines.
    pub fn errors(&self) -> Vec<String> {
        self.browser.pump();
        let events = self.browser.events.borrow();
        events
            .iter()
            .filter(|e| e.get("sessionId").and_then(Value::as_str) == Some(self.session.as_str()))
            .filter_map(|e| {
                let params = &e["params"];
                match e["method"].as_str()? {
                    "Runtime.consoleAPICalled" if params["type"] == "error" => Some(format!(
                        "console.error: {}",
                        params["args"]
                            .as_array()
                            .map(|a| a
                                .iter()
                                .map(|v| v
                                    .get("value")
                                    .map(Value::to_string)
                                    .or_else(|| v
                                        .get("description")
                                        .and_then(Value::as_str)
                                        .map(str::to_string))
                                    .unwrap_or_default())
                                .collect::<Vec<_>>()
                                .join(" "))
                            .unwrap_or_default()
                    )),
                    "Runtime.exceptionThrown" => Some(format!(
                        "exception: {}",
                        params
                            .pointer("/exceptionDetails/exception/description")
                            .or_else(|| params.pointer("/exceptionDetails/text"))
                            .and_then(Value::as_str)
                            .unwrap_or("?")
                    )),
                    "Log.entryAdded" if params["entry"]["level"] == "error" => Some(format!(
                        "{}: {} {}",
                        params["entry"]["source"].as_str().unwrap_or("log"),
                        params["entry"]["text"].as_str().unwrap_or(""),
                        params["entry"]["url"].as_str().unwrap_or("")
                    )),
                    _ => None,
                }
            })
            .collect()
    }

    /// The CSP violations reported so far (a subset of [`Page::errors`]).
    pub fn csp_violations(&self) -> Vec<String> {
        self.errors()
            .into_iter()
            .filter(|e| e.contains("Content Security Policy"))
            .collect()
    }

    /// Every request this tab made so far, as URLs.
    pub fn requested_urls(&self) -> Vec<String> {
        self.browser.pump();
        let events = self.browser.events.borrow();
        events
            .iter()
            .filter(|e| e.get("sessionId").and_then(Value::as_str) == Some(self.session.as_str()))
            .filter(|e| e["method"] == "Network.requestWillBeSent")
            .filter_map(|e| e["params"]["request"]["url"].as_str().map(str::to_string))
            .collect()
    }
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}

/// Where copies of the console tests' screenshots go, for people to look
/// at: `target/console-screenshots/`.
pub fn screenshot_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    // target/<profile>/deps/<test>
    let target = exe
        .parent()
        .and_then(Path::parent)
        .and_then(Path::parent)
        .expect("target dir");
    let dir = target.join("console-screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    dir
}

/// Takes a screenshot `name.png` into `scratch` and copies it to
/// [`screenshot_dir`], checking it is not blank. A name ending `-phone`
/// captures the whole page (phones scroll).
pub fn screenshot(page: &Page<'_>, scratch: &crate::Scratch, name: &str) {
    // Let transitions and the last paint settle.
    std::thread::sleep(Duration::from_millis(300));
    let path = scratch.join(&format!("{name}.png"));
    let png = page.screenshot(&path, name.ends_with("-phone"));
    let colours = distinct_colours(&png, 1000);
    assert!(
        colours > 16,
        "screenshot {name} looks blank: {colours} distinct colours"
    );
    std::fs::copy(&path, screenshot_dir().join(format!("{name}.png"))).expect("copies screenshot");
}

/// `s` as a JavaScript string literal.
pub fn js_string(s: &str) -> String {
    serde_json::to_string(s).expect("a string serialises")
}

/// How many distinct colours a PNG holds (a blank or failed screenshot
/// holds one or two). Counts up to `cap`.
pub fn distinct_colours(png_bytes: &[u8], cap: usize) -> usize {
    let decoder = png::Decoder::new(std::io::Cursor::new(png_bytes));
    let mut reader = decoder.read_info().expect("a PNG header");
    let mut buffer = vec![0; reader.output_buffer_size().expect("PNG fits in memory")];
    let info = reader.next_frame(&mut buffer).expect("a PNG frame");
    let pixel = info.color_type.samples() * usize::from(info.bit_depth as u8).div_ceil(8);
    let mut seen = std::collections::HashSet::new();
    for chunk in buffer[..info.buffer_size()].chunks_exact(pixel.max(1)) {
        seen.insert(chunk.to_vec());
        if seen.len() >= cap {
            break;
        }
    }
    seen.len()
}

//! EC2-style instance metadata (IMDSv2): the machine configuration as the instance's
//! `user-data`, and `local-hostname` as `node.hostname` unless `user-data` sets one.
//!
//! It is asked only where it can answer: on a platform whose SMBIOS strings name a cloud that
//! serves it (Amazon EC2, OpenStack), or when `shoal.imds=on` says so; `shoal.imds=off` never
//! asks. The flow is IMDSv2's: `PUT /latest/api/token` for a session token, then `GET`s with
//! that token. A server that does not know the token call (404, 405: OpenStack, older
//! emulators) is asked without one, as IMDSv1; one that refuses it (403) is an error, never
//! bypassed.
//!
//! Deciding whether to ask is pure over a sysfs root; [`read`] is the thin adapter over
//! [`crate::http`].

use std::path::Path;
use std::time::Duration;

use shoal_config::sources::{Document, SourceKind};

use crate::http::{Request, Response, Url, fetch};

/// Where the service answers (link-local, reached through the default route).
pub const ENDPOINT: &str = "169.254.169.254:80";
/// How long one request may take: the service answers in milliseconds when it exists.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// The session token's lifetime asked for (a boot needs it for a few requests).
const TOKEN_TTL_SECS: u32 = 300;

/// What `shoal.imds=` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Ask when the platform looks like a cloud with an instance metadata service (default).
    Auto,
    On,
    Off,
}

impl Mode {
    /// From the kernel command line; a bad value is an error naming the key.
    pub fn from_cmdline(cmdline: &str) -> Result<Mode, String> {
        match cmdline
            .split_whitespace()
            .find_map(|w| w.strip_prefix("shoal.imds="))
        {
            None | Some("auto") => Ok(Mode::Auto),
            Some("on") => Ok(Mode::On),
            Some("off") => Ok(Mode::Off),
            Some(other) => Err(format!("shoal.imds={other}: must be auto, on or off")),
        }
    }
}

/// The SMBIOS strings that say which cloud a machine runs in (`/sys/class/dmi/id/*`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dmi {
    pub sys_vendor: String,
    pub product_name: String,
    pub product_version: String,
    pub bios_vendor: String,
    pub bios_version: String,
    pub board_vendor: String,
    pub chassis_asset_tag: String,
}

impl Dmi {
    /// Reads the strings under `sys`; a missing file is an empty string.
    pub fn read(sys: &Path) -> Dmi {
        let read = |name: &str| {
            std::fs::read_to_string(sys.join("class/dmi/id").join(name))
                .map(|s| s.trim().to_string())
                .unwrap_or_default()
        };
        Dmi {
            sys_vendor: read("sys_vendor"),
            product_name: read("product_name"),
            product_version: read("product_version"),
            bios_vendor: read("bios_vendor"),
            bios_version: read("bios_version"),
            board_vendor: read("board_vendor"),
            chassis_asset_tag: read("chassis_asset_tag"),
        }
    }

    /// The cloud these strings name, if it serves EC2-style instance metadata.
    pub fn cloud(&self) -> Option<&'static str> {
        let any_is = |value: &str| {
            [
                &self.sys_vendor,
                &self.bios_vendor,
                &self.board_vendor,
                &self.chassis_asset_tag,
            ]
            .iter()
            .any(|s| s.eq_ignore_ascii_case(value))
        };
        // Nitro instances say "Amazon EC2"; Xen ones carry "amazon" in the BIOS version.
        if any_is("Amazon EC2") || self.bios_version.to_ascii_lowercase().contains("amazon") {
            return Some("Amazon EC2");
        }
        if self.sys_vendor.eq_ignore_ascii_case("OpenStack Foundation")
            || ["OpenStack Nova", "OpenStack Compute"]
                .iter()
                .any(|p| self.product_name.eq_ignore_ascii_case(p))
        {
            return Some("OpenStack");
        }
        None
    }
}

/// Whether to ask, and why: `Some(reason)` to ask.
pub fn should_ask(mode: Mode, dmi: &Dmi) -> Option<String> {
    match mode {
        Mode::Off => None,
        Mode::On => Some("shoal.imds=on".into()),
        Mode::Auto => dmi.cloud().map(|c| format!("SMBIOS says {c}")),
    }
}

/// What one request returned, for the flow below.
pub type Fetch<'a> = dyn FnMut(&Request) -> Result<Response, String> + 'a;

fn request(method: &'static str, endpoint: &str, path: &str) -> Result<Request, String> {
    let url = Url::parse(&format!("http://{endpoint}{path}")).map_err(|e| e.to_string())?;
    Ok(Request {
        method,
        ..Request::get(url)
    })
}

/// The IMDSv2 flow over any transport (`send`): the documents, or `Ok(None)` when the instance
/// has neither user-data nor a hostname.
pub fn documents(endpoint: &str, send: &mut Fetch<'_>) -> Result<Option<Vec<Document>>, String> {
    let origin = format!("http://{endpoint}");
    let token_request = request("PUT", endpoint, "/latest/api/token")?.header(
        "X-aws-ec2-metadata-token-ttl-seconds",
        &TOKEN_TTL_SECS.to_string(),
    );
    let token = match send(&token_request) {
        Ok(r) if r.status == 200 => {
            let token = String::from_utf8(r.body)
                .map_err(|_| format!("{origin}: the session token is not text"))?;
            let token = token.trim().to_string();
            if token.is_empty() || token.contains(['\r', '\n']) {
                return Err(format!("{origin}: the session token is malformed"));
            }
            Some(token)
        }
        // No IMDSv2 here: IMDSv1 (OpenStack, older emulators).
        Ok(r) if matches!(r.status, 404 | 405 | 501) => None,
        Ok(r) => {
            return Err(format!(
                "{origin}/latest/api/token: HTTP {} (the session token was refused)",
                r.status
            ));
        }
        Err(e) => return Err(format!("{origin}: {e}")),
    };
    let mut get = |path: &str| -> Result<Option<String>, String> {
        let mut r = request("GET", endpoint, path)?;
        if let Some(token) = &token {
            r = r.header("X-aws-ec2-metadata-token", token);
        }
        let response = send(&r).map_err(|e| format!("{origin}{path}: {e}"))?;
        match response.status {
            200 => String::from_utf8(response.body)
                .map(Some)
                .map_err(|_| format!("{origin}{path} is not UTF-8 text")),
            404 => Ok(None),
            status => Err(format!("{origin}{path}: HTTP {status}")),
        }
    };
    let mut documents = Vec::new();
    if let Some(hostname) = get("/latest/meta-data/local-hostname")? {
        let hostname = hostname.trim();
        // EC2 names are FQDNs (ip-10-0-0-7.ec2.internal): the node's name is the first label.
        let short = hostname.split('.').next().unwrap_or_default();
        if !short.is_empty() {
            documents.push(Document {
                kind: SourceKind::Imds,
                origin: format!("{origin}/latest/meta-data/local-hostname"),
                text: format!("[node]\nhostname = {}\n", toml::Value::String(short.into())),
            });
        }
    }
    if let Some(text) = get("/latest/user-data")? {
        if text.trim_start().starts_with("#cloud-config") {
            return Err(format!(
                "{origin}/latest/user-data is a cloud-config document; Shoal reads its machine \
                 configuration (TOML, as `shoalctl gen config` writes it) from user-data"
            ));
        }
        documents.push(Document {
            kind: SourceKind::Imds,
            origin: format!("{origin}/latest/user-data"),
            text,
        });
    }
    Ok((!documents.is_empty()).then_some(documents))
}

/// Asks the instance metadata service at `endpoint` (`host:port`) over HTTP.
pub fn read(endpoint: &str) -> Result<Option<Vec<Document>>, String> {
    documents(endpoint, &mut |r: &Request| {
        fetch(r, REQUEST_TIMEOUT).map_err(|e| e.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: u16, body: &str) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn clouds_are_recognised_from_smbios() {
        let ec2 = Dmi {
            sys_vendor: "Amazon EC2".into(),
            ..Dmi::default()
        };
        assert_eq!(ec2.cloud(), Some("Amazon EC2"));
        let xen = Dmi {
            sys_vendor: "Xen".into(),
            bios_version: "4.11.amazon".into(),
            ..Dmi::default()
        };
        assert_eq!(xen.cloud(), Some("Amazon EC2"));
        let nova = Dmi {
            sys_vendor: "OpenStack Foundation".into(),
            product_name: "OpenStack Nova".into(),
            ..Dmi::default()
        };
        assert_eq!(nova.cloud(), Some("OpenStack"));
        let qemu = Dmi {
            sys_vendor: "QEMU".into(),
            product_name: "Standard PC (Q35 + ICH9, 2009)".into(),
            ..Dmi::default()
        };
        assert_eq!(qemu.cloud(), None);
        assert_eq!(should_ask(Mode::Auto, &qemu), None);
        assert_eq!(
            should_ask(Mode::On, &qemu).as_deref(),
            Some("shoal.imds=on")
        );
        assert_eq!(should_ask(Mode::Off, &ec2), None);
        assert_eq!(
            should_ask(Mode::Auto, &ec2).as_deref(),
            Some("SMBIOS says Amazon EC2")
        );
    }

    #[test]
    fn dmi_strings_come_from_a_sysfs_root() {
        let root = tempfile::tempdir().unwrap();
        let dmi = root.path().join("class/dmi/id");
        std::fs::create_dir_all(&dmi).unwrap();
        std::fs::write(dmi.join("sys_vendor"), "Amazon EC2\n").unwrap();
        std::fs::write(dmi.join("product_name"), "m7i.large\n").unwrap();
        let read = Dmi::read(root.path());
        assert_eq!(read.sys_vendor, "Amazon EC2");
        assert_eq!(read.product_name, "m7i.large");
        assert_eq!(read.bios_version, "");
        assert_eq!(read.cloud(), Some("Amazon EC2"));
        assert_eq!(Dmi::read(&root.path().join("missing")), Dmi::default());
    }

    #[test]
    fn the_mode_comes_from_the_command_line() {
        assert_eq!(Mode::from_cmdline("console=ttyS0"), Ok(Mode::Auto));
        assert_eq!(Mode::from_cmdline("a shoal.imds=on b"), Ok(Mode::On));
        assert_eq!(Mode::from_cmdline("shoal.imds=off"), Ok(Mode::Off));
        assert_eq!(
            Mode::from_cmdline("shoal.imds=yes"),
            Err("shoal.imds=yes: must be auto, on or off".into())
        );
    }

    /// A scripted metadata service: records the requests, answers from `answer`.
    fn run(
        answer: impl Fn(&str, &str, Option<&str>) -> Response,
    ) -> (Result<Option<Vec<Document>>, String>, Vec<String>) {
        let mut seen = Vec::new();
        let result = documents("169.254.169.254:80", &mut |r: &Request| {
            let token = r
                .headers
                .iter()
                .find(|(n, _)| n == "X-aws-ec2-metadata-token")
                .map(|(_, v)| v.as_str());
            seen.push(format!("{} {} {:?}", r.method, r.url.target, token));
            Ok(answer(r.method, &r.url.target, token))
        });
        (result, seen)
    }

    #[test]
    fn imdsv2_asks_for_a_token_and_presents_it() {
        let (result, seen) = run(|method, path, token| match (method, path, token) {
            ("PUT", "/latest/api/token", None) => response(200, "AQAEAtoken=="),
            ("GET", "/latest/meta-data/local-hostname", Some("AQAEAtoken==")) => {
                response(200, "ip-10-0-0-7.ec2.internal")
            }
            ("GET", "/latest/user-data", Some("AQAEAtoken==")) => {
                response(200, "[cluster]\nname = \"edge\"\n")
            }
            _ => response(401, ""),
        });
        let docs = result.unwrap().unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].text, "[node]\nhostname = \"ip-10-0-0-7\"\n");
        assert_eq!(docs[1].text, "[cluster]\nname = \"edge\"\n");
        assert_eq!(docs[1].origin, "http://169.254.169.254:80/latest/user-data");
        assert!(docs.iter().all(|d| d.kind == SourceKind::Imds));
        assert_eq!(seen.len(), 3, "{seen:?}");
    }

    #[test]
    fn a_service_without_tokens_is_asked_as_imdsv1() {
        let (result, seen) = run(|method, path, token| match (method, path, token) {
            ("PUT", _, _) => response(405, ""),
            ("GET", "/latest/user-data", None) => response(200, "[cluster]\n"),
            _ => response(404, ""),
        });
        let docs = result.unwrap().unwrap();
        assert_eq!(docs.len(), 1);
        assert!(seen[1].ends_with("None"), "{seen:?}");
    }

    #[test]
    fn a_refused_token_is_an_error_not_a_downgrade() {
        let (result, seen) = run(|_, _, _| response(403, ""));
        assert_eq!(
            result.unwrap_err(),
            "http://169.254.169.254:80/latest/api/token: HTTP 403 (the session token was refused)"
        );
        assert_eq!(seen.len(), 1);
    }

    #[test]
    fn no_user_data_is_no_document_and_cloud_config_is_refused() {
        let (result, _) = run(|method, _, _| match method {
            "PUT" => response(200, "t"),
            _ => response(404, ""),
        });
        assert_eq!(result.unwrap(), None);
        let (result, _) = run(|method, path, _| match (method, path) {
            ("PUT", _) => response(200, "t"),
            (_, "/latest/user-data") => response(200, "#cloud-config\nusers: []\n"),
            _ => response(404, ""),
        });
        assert!(result.unwrap_err().contains("is a cloud-config document"));
        let (result, _) = run(|method, _, _| match method {
            "PUT" => response(200, "t"),
            _ => response(500, ""),
        });
        assert_eq!(
            result.unwrap_err(),
            "http://169.254.169.254:80/latest/meta-data/local-hostname: HTTP 500"
        );
        let (result, _) = run(|_, _, _| response(200, "two\r\nlines"));
        assert!(result.unwrap_err().contains("malformed"));
    }
}

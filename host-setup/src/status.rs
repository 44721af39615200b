//! `cairn-config status`: the booted slot, both slots' GPT bits, the config
//! source, its signature and error, the health result and whether the image
//! trusts the development key.

use std::fmt::Write as _;
use std::path::Path;

use disk_layout::Slot;
use serde_json::{Value, json};

use disk_layout::{board_files, run};
use gpt_slots::booted::{Booted, SlotAttrs, read_booted_disk};
use host_config::source::RUN_CONFIG_SIGNATURE;

#[derive(Clone, Debug, PartialEq)]
pub struct Status {
    pub booted: Result<Booted, String>,
    pub disk: Result<(String, SlotAttrs), String>,
    pub config_source: Option<String>,
    /// The config's signature state (`verified (key …)`, `unsigned …`).
    pub config_signature: Option<String>,
    pub config_error: Option<String>,
    pub health: Option<String>,
    /// `None`: keys.json unreadable.
    pub development_key: Option<bool>,
}

fn read_line(root: &Path, rel: &str) -> Option<String> {
    std::fs::read_to_string(root.join(rel))
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// keys.json as the builder writes it: a list of `{id, public, development}`
/// (a single object is accepted too). Any development key counts.
pub fn has_development_key(json_text: &str) -> Option<bool> {
    let v: Value = serde_json::from_str(json_text).ok()?;
    let dev = |k: &Value| k.get("development").and_then(Value::as_bool) == Some(true);
    match &v {
        Value::Array(keys) => Some(keys.iter().any(dev)),
        Value::Object(_) => Some(dev(&v)),
        _ => None,
    }
}

impl Status {
    pub fn gather(root: &Path) -> Status {
        let booted = Booted::read(root).map_err(|e| format!("{e:#}"));
        let disk = match &booted {
            Ok(b) => read_booted_disk(root, b)
                .map(|(d, a)| (d.display().to_string(), a))
                .map_err(|e| format!("{e:#}")),
            Err(_) => Err("booted slot unknown".into()),
        };
        let development_key = std::fs::read_to_string(root.join(board_files::KEYS_JSON))
            .ok()
            .and_then(|t| has_development_key(&t));
        Status {
            booted,
            disk,
            config_source: read_line(root, run::CONFIG_SOURCE),
            config_signature: read_line(root, RUN_CONFIG_SIGNATURE),
            config_error: read_line(root, run::CONFIG_ERROR),
            health: read_line(root, run::HEALTH_RESULT),
            development_key,
        }
    }

    pub fn to_json(&self) -> Value {
        let slots = match &self.disk {
            Ok((disk, a)) => {
                let one = |s: Slot| {
                    let x = a.get(s);
                    json!({"priority": x.priority, "tries": x.tries, "successful": x.successful})
                };
                json!({"disk": disk, "a": one(Slot::A), "b": one(Slot::B)})
            }
            Err(e) => json!({"error": e}),
        };
        json!({
            "booted_slot": self.booted.as_ref().ok().map(|b| b.slot.letter()),
            "usr_partuuid": self.booted.as_ref().ok().map(|b| b.usr_partuuid.to_string()),
            "booted_error": self.booted.as_ref().err(),
            "slots": slots,
            "config_source": self.config_source,
            "config_signature": self.config_signature,
            "config_error": self.config_error,
            "health": self.health,
            "development_key": self.development_key,
        })
    }

    pub fn to_text(&self) -> String {
        let mut s = String::new();
        // Writing to a String cannot fail.
        let _ = self.write_text(&mut s);
        s
    }

    fn write_text(&self, s: &mut String) -> std::fmt::Result {
        match self.development_key {
            Some(true) => {
                writeln!(
                    s,
                    "!!! WARNING: this image was signed with the DEVELOPMENT key."
                )?;
                writeln!(
                    s,
                    "!!! Anyone with the public repository can sign updates it accepts."
                )?;
                writeln!(s, "!!! Do not use it in production.")?;
            }
            Some(false) => {}
            None => writeln!(s, "warning: cannot read /{}", board_files::KEYS_JSON)?,
        }
        match &self.booted {
            Ok(b) => writeln!(
                s,
                "booted slot:   {} (USR PARTUUID {})",
                b.slot.letter(),
                b.usr_partuuid
            )?,
            Err(e) => writeln!(s, "booted slot:   unknown ({e})")?,
        }
        match &self.disk {
            Ok((disk, a)) => {
                writeln!(s, "disk:          {disk}")?;
                for slot in Slot::ALL {
                    let mark = match &self.booted {
                        Ok(b) if b.slot == slot => "  <- booted",
                        _ => "",
                    };
                    let x = a.get(slot);
                    let state = if x.priority == 0 {
                        "not bootable"
                    } else if x.successful {
                        "good"
                    } else if x.tries > 0 {
                        "on trial"
                    } else {
                        "failed (no tries left)"
                    };
                    writeln!(s, "slot {}:        {x} ({state}){mark}", slot.letter())?;
                }
            }
            Err(e) => writeln!(s, "slots:         unknown ({e})")?,
        }
        writeln!(
            s,
            "config source: {}",
            self.config_source
                .as_deref()
                .unwrap_or("unknown (cairn-config has not run)")
        )?;
        writeln!(
            s,
            "config signed: {}",
            self.config_signature.as_deref().unwrap_or("unknown")
        )?;
        match &self.config_error {
            Some(e) => writeln!(s, "config error:  {e}")?,
            None => writeln!(s, "config error:  none")?,
        }
        writeln!(
            s,
            "health:        {}",
            self.health.as_deref().unwrap_or("not checked yet")
        )?;
        writeln!(
            s,
            "signing key:   {}",
            match self.development_key {
                Some(true) => "DEVELOPMENT",
                Some(false) => "release",
                None => "unknown",
            }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gpt_slots::Attrs;

    #[test]
    fn development_key_detection() {
        assert_eq!(
            has_development_key(r#"[{"id":"x","development":true}]"#),
            Some(true)
        );
        assert_eq!(
            has_development_key(r#"[{"id":"x","development":false}]"#),
            Some(false)
        );
        assert_eq!(has_development_key(r#"{"development":true}"#), Some(true));
        assert_eq!(has_development_key("[]"), Some(false));
        assert_eq!(has_development_key("nope"), None);
    }

    #[test]
    fn gathers_the_config_files_cairn_config_wrote() -> anyhow::Result<()> {
        let d = tempfile::tempdir()?;
        std::fs::create_dir_all(d.path().join(run::DIR))?;
        for (rel, text) in [
            (run::CONFIG_SOURCE, "ec2 user-data\n"),
            (RUN_CONFIG_SIGNATURE, "verified (key 0123456789abcdef)\n"),
            (
                run::CONFIG_ERROR,
                "ec2 user-data: IMDSv2 token: http://169.254.169.254/latest/api/token: timed out\n",
            ),
        ] {
            std::fs::write(d.path().join(rel), text)?;
        }
        let st = Status::gather(d.path());
        assert_eq!(st.config_source.as_deref(), Some("ec2 user-data"));
        assert_eq!(
            st.config_signature.as_deref(),
            Some("verified (key 0123456789abcdef)")
        );
        let t = st.to_text();
        assert!(
            t.contains("config signed: verified (key 0123456789abcdef)\nconfig error:  ec2 user-data: IMDSv2 token"),
            "{t}"
        );
        let j = st.to_json();
        assert_eq!(j["config_signature"], "verified (key 0123456789abcdef)");
        // Before cairn-config ran.
        let st = Status::gather(&d.path().join("nothing"));
        assert!(st.to_text().contains("config signed: unknown\n"));
        Ok(())
    }

    #[test]
    fn renders_text_and_json() -> anyhow::Result<()> {
        let st = Status {
            booted: Ok(Booted {
                slot: Slot::A,
                usr_partuuid: disk_layout::Guid::parse("0b6b2bd2-2d0f-4e3b-9e9d-7a6b1c1e9f00"),
            }),
            disk: Ok((
                "/dev/vda".into(),
                SlotAttrs {
                    a: Attrs::new(1, 0, true),
                    b: Attrs::new(2, 3, false),
                },
            )),
            config_source: Some("fw_cfg opt/cairn/config".into()),
            config_signature: Some("BAD (the signatures by trusted keys do not match)".into()),
            config_error: Some("fw_cfg opt/cairn/config: bogus: unknown key".into()),
            health: None,
            development_key: Some(true),
        };
        let t = st.to_text();
        assert!(t.starts_with("!!! WARNING"), "{t}");
        assert!(
            t.contains("slot a:        prio 1 tries 0 ok 1 (good)  <- booted"),
            "{t}"
        );
        assert!(
            t.contains("slot b:        prio 2 tries 3 ok 0 (on trial)\n"),
            "{t}"
        );
        assert!(
            t.contains("config error:  fw_cfg opt/cairn/config: bogus"),
            "{t}"
        );
        assert!(
            t.contains(
                "config source: fw_cfg opt/cairn/config\nconfig signed: BAD (the signatures"
            ),
            "{t}"
        );
        let j = st.to_json();
        assert_eq!(j["booted_slot"], "a");
        assert_eq!(j["slots"]["b"]["tries"], 3);
        assert_eq!(j["development_key"], true);
        assert_eq!(j["config_source"], "fw_cfg opt/cairn/config");
        assert_eq!(
            j["config_signature"],
            "BAD (the signatures by trusted keys do not match)"
        );
        assert_eq!(
            j["config_error"],
            "fw_cfg opt/cairn/config: bogus: unknown key"
        );
        Ok(())
    }
}

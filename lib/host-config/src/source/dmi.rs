//! Which cloud the machine is on, from its DMI (SMBIOS) strings, so a cloud's
//! metadata service is only asked on that cloud.
//!
//! | cloud | DMI says |
//! |---|---|
//! | EC2 | `sys_vendor` "Amazon EC2" (Nitro), or `bios_version` ending in ".amazon" (Xen instances) |
//! | GCE | `sys_vendor` "Google", or `product_name` "Google Compute Engine" |
//! | Azure | `chassis_asset_tag` "7783-7084-3265-9085-8269-3286-77" (Hyper-V elsewhere has the same vendor and product) |
//! | OpenStack | `product_name`, `sys_vendor` or `chassis_asset_tag` starting with "OpenStack" ("OpenStack Nova", "OpenStack Compute", "OpenStack Foundation") |

use std::path::Path;

/// Where the kernel shows the DMI strings (relative to `/`).
pub const DMI_DIR: &str = "sys/class/dmi/id";

/// Azure's chassis asset tag (the same on every Azure VM).
pub const AZURE_CHASSIS_ASSET_TAG: &str = "7783-7084-3265-9085-8269-3286-77";

/// A cloud whose metadata service cairn-config knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Platform {
    Ec2,
    Gce,
    Azure,
    OpenStack,
}

impl Platform {
    pub const fn name(self) -> &'static str {
        match self {
            Platform::Ec2 => "EC2",
            Platform::Gce => "GCE",
            Platform::Azure => "Azure",
            Platform::OpenStack => "OpenStack",
        }
    }
}

/// The DMI strings the detection reads (trimmed; empty when absent, as on
/// machines without SMBIOS).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Dmi {
    pub sys_vendor: String,
    pub product_name: String,
    pub board_asset_tag: String,
    pub chassis_asset_tag: String,
    pub bios_version: String,
}

impl Dmi {
    pub fn read(root: &Path) -> Dmi {
        let dir = root.join(DMI_DIR);
        let get = |name: &str| {
            std::fs::read_to_string(dir.join(name))
                .map(|s| s.trim().to_string())
                .unwrap_or_default()
        };
        Dmi {
            sys_vendor: get("sys_vendor"),
            product_name: get("product_name"),
            board_asset_tag: get("board_asset_tag"),
            chassis_asset_tag: get("chassis_asset_tag"),
            bios_version: get("bios_version"),
        }
    }

    /// The cloud these strings name, if any.
    pub fn platform(&self) -> Option<Platform> {
        if self.sys_vendor == "Amazon EC2" || self.bios_version.ends_with(".amazon") {
            Some(Platform::Ec2)
        } else if self.sys_vendor == "Google" || self.product_name == "Google Compute Engine" {
            Some(Platform::Gce)
        } else if self.chassis_asset_tag == AZURE_CHASSIS_ASSET_TAG {
            Some(Platform::Azure)
        } else if [
            &self.product_name,
            &self.sys_vendor,
            &self.chassis_asset_tag,
        ]
        .iter()
        .any(|s| s.starts_with("OpenStack"))
        {
            Some(Platform::OpenStack)
        } else {
            None
        }
    }

    /// For messages: what the machine says it is.
    pub fn summary(&self) -> String {
        if self.sys_vendor.is_empty() && self.product_name.is_empty() {
            return "no DMI vendor or product".into();
        }
        format!(
            "sys_vendor {:?}, product_name {:?}",
            self.sys_vendor, self.product_name
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detection_table() {
        let dmi = |v: &str, p: &str, board: &str, chassis: &str, bios: &str| Dmi {
            sys_vendor: v.into(),
            product_name: p.into(),
            board_asset_tag: board.into(),
            chassis_asset_tag: chassis.into(),
            bios_version: bios.into(),
        };
        let table = [
            // EC2 Nitro (board asset tag: the instance id).
            (
                dmi(
                    "Amazon EC2",
                    "m5.large",
                    "i-0123456789abcdef0",
                    "Amazon EC2",
                    "1.0",
                ),
                Some(Platform::Ec2),
            ),
            // EC2 Xen.
            (
                dmi("Xen", "HVM domU", "", "", "4.11.amazon"),
                Some(Platform::Ec2),
            ),
            (
                dmi("Google", "Google Compute Engine", "", "", "Google"),
                Some(Platform::Gce),
            ),
            (
                dmi("", "Google Compute Engine", "", "", ""),
                Some(Platform::Gce),
            ),
            (
                dmi(
                    "Microsoft Corporation",
                    "Virtual Machine",
                    "None",
                    AZURE_CHASSIS_ASSET_TAG,
                    "Hyper-V UEFI Release v4.1",
                ),
                Some(Platform::Azure),
            ),
            // Hyper-V outside Azure.
            (
                dmi(
                    "Microsoft Corporation",
                    "Virtual Machine",
                    "None",
                    "None",
                    "Hyper-V UEFI Release v4.1",
                ),
                None,
            ),
            (
                dmi("OpenStack Foundation", "OpenStack Nova", "", "", "1.16.3"),
                Some(Platform::OpenStack),
            ),
            (
                dmi("RDO", "OpenStack Compute", "", "", ""),
                Some(Platform::OpenStack),
            ),
            (
                dmi(
                    "QEMU",
                    "Standard PC (Q35 + ICH9, 2009)",
                    "",
                    "OpenStack Nova",
                    "",
                ),
                Some(Platform::OpenStack),
            ),
            // Plain QEMU, bare metal, no SMBIOS at all.
            (
                dmi(
                    "QEMU",
                    "Standard PC (Q35 + ICH9, 2009)",
                    "",
                    "",
                    "1.16.3-debian",
                ),
                None,
            ),
            (dmi("Dell Inc.", "PowerEdge R650", "", "", "1.2.3"), None),
            (Dmi::default(), None),
        ];
        for (d, want) in table {
            assert_eq!(d.platform(), want, "{d:?}");
        }
    }

    #[test]
    fn reads_sysfs_under_a_root() -> std::io::Result<()> {
        let d = tempfile::tempdir()?;
        assert_eq!(Dmi::read(d.path()), Dmi::default());
        let dir = d.path().join(DMI_DIR);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("sys_vendor"), "Amazon EC2\n")?;
        std::fs::write(dir.join("product_name"), "t3.micro\n")?;
        let dmi = Dmi::read(d.path());
        assert_eq!(dmi.platform(), Some(Platform::Ec2));
        assert_eq!(
            dmi.summary(),
            "sys_vendor \"Amazon EC2\", product_name \"t3.micro\""
        );
        Ok(())
    }
}

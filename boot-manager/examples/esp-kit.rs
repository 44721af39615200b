//! Test-only helper for trying cairn-boot in QEMU (the image builder does
//! this for real images):
//!
//! ```text
//! esp-kit embed <in.efi> <out.efi> <seed-hex>...   # write the public keys of the seeds into the key slot
//! esp-kit sign <slot-dir> <seed-hex>                 # write <slot-dir>/boot.sig over vmlinuz, initrd, cmdline
//! ```
//!
//! Seeds are 32-byte ed25519 secret keys in hex; never use real keys here.

use disk_layout::boot_files;
use ed25519_dalek::SigningKey;
use std::path::Path;
use std::process::ExitCode;

fn seed(hex: &str) -> Result<[u8; 32], String> {
    let bytes = hex.as_bytes();
    if bytes.len() != 64 {
        return Err(format!("seed must be 64 hex digits, got {}", bytes.len()));
    }
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks(2).enumerate() {
        let s = std::str::from_utf8(pair).map_err(|e| e.to_string())?;
        out[i] = u8::from_str_radix(s, 16).map_err(|e| format!("bad seed: {e}"))?;
    }
    Ok(out)
}

fn read(p: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()))
}

fn run(args: &[String]) -> Result<(), String> {
    match args {
        [cmd, input, output, seeds @ ..] if cmd == "embed" && !seeds.is_empty() => {
            let mut bin = read(Path::new(input))?;
            let keys = seeds
                .iter()
                .map(|s| Ok(SigningKey::from_bytes(&seed(s)?).verifying_key().to_bytes()))
                .collect::<Result<Vec<_>, String>>()?;
            boot_sig::embed_keys(&mut bin, &keys).map_err(|e| e.to_string())?;
            std::fs::write(output, bin).map_err(|e| format!("{output}: {e}"))
        }
        [cmd, dir, s] if cmd == "sign" => {
            let dir = Path::new(dir);
            let kernel = read(&dir.join(boot_files::KERNEL))?;
            let initrd = read(&dir.join(boot_files::INITRD))?;
            let cmdline = read(&dir.join(boot_files::CMDLINE))?;
            let line = boot_sig::sign_line(&seed(s)?, &kernel, &initrd, &cmdline);
            let out = dir.join(boot_files::SIGNATURE);
            std::fs::write(&out, line).map_err(|e| format!("{}: {e}", out.display()))
        }
        _ => Err("usage: esp-kit embed <in.efi> <out.efi> <seed-hex>... | esp-kit sign <slot-dir> <seed-hex>".into()),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("esp-kit: {e}");
            ExitCode::FAILURE
        }
    }
}

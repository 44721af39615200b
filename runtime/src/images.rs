//! Image-level commands, delegating to the `oci-image` store and trust policy.

use anyhow::{Context, Result, bail};
use oci_image::{Image, KeyPair, PublicKey, PullOptions, Requirement, Store, TrustPolicy};
use serde_json::json;

use crate::cli::{Command, Paths, Sign, Trust};
use crate::spec::ImageDefaults;

fn store(paths: &Paths) -> Result<Store> {
    Store::open(&paths.image_store).with_context(|| {
        format!(
            "cannot open the image store {}",
            paths.image_store.display()
        )
    })
}

fn policy(paths: &Paths) -> Result<TrustPolicy> {
    TrustPolicy::load(&paths.trust_policy).with_context(|| {
        format!(
            "cannot load the image trust policy {}",
            paths.trust_policy.display()
        )
    })
}

pub fn defaults_of(image: &Image) -> ImageDefaults {
    let c = &image.config;
    ImageDefaults {
        entrypoint: c.entrypoint.clone(),
        cmd: c.cmd.clone(),
        env: c.env.clone(),
        working_dir: c.working_dir.clone(),
        user: c.user.clone(),
    }
}

/// The image facts an app needs, whatever store they come from.
#[derive(Debug, Clone)]
pub struct ResolvedImage {
    pub reference: String,
    pub digest: String,
    pub rootfs: std::path::PathBuf,
    pub defaults: crate::spec::ImageDefaults,
    pub stop_signal: Option<String>,
}

/// Finds a stored image and re-checks it against the current trust policy
/// (the policy may have changed since the image was pulled).
pub fn resolve_for_run(paths: &Paths, reference: &str) -> Result<ResolvedImage> {
    let store = store(paths)?;
    let image = store
        .get(reference)
        .with_context(|| format!("image {reference:?} is not in the store; `cairn-run pull` or `cairn-run import` it first"))?;
    store
        .verify_trust(&image, &policy(paths)?)
        .with_context(|| {
            format!(
                "image {reference:?} ({}) is not trusted by {}; see `cairn-run trust list`",
                image.digest,
                paths.trust_policy.display()
            )
        })?;
    Ok(ResolvedImage {
        reference: image.name.clone().unwrap_or_else(|| reference.to_string()),
        digest: image.digest.clone(),
        rootfs: image.rootfs.clone(),
        defaults: defaults_of(&image),
        stop_signal: image.config.stop_signal.clone(),
    })
}

fn describe(image: &Image) -> String {
    format!(
        "{} {}",
        image.name.as_deref().unwrap_or("<none>"),
        image.digest
    )
}

fn image_json(image: &Image) -> serde_json::Value {
    json!({
        "name": image.name,
        "digest": image.digest,
        "size": image.size,
        "created": image.created,
        "rootfs": image.rootfs,
        "signed": !image.signatures.is_empty(),
    })
}

/// Sizes as people read them.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

pub fn dispatch(paths: &Paths, cmd: &Command) -> Result<i32> {
    match cmd {
        Command::Pull(p) => {
            let opts = PullOptions {
                signature: p.signature.clone(),
                insecure_http: p.insecure,
                ..Default::default()
            };
            let image = store(paths)?
                .pull(&p.reference, &opts, &policy(paths)?)
                .with_context(|| format!("cannot pull {}", p.reference))?;
            println!("pulled {}", describe(&image));
        }
        Command::Import(i) => {
            let image = store(paths)?
                .import(
                    &i.path,
                    i.name.as_deref(),
                    i.signature.as_deref(),
                    &policy(paths)?,
                )
                .with_context(|| format!("cannot import {}", i.path.display()))?;
            println!("imported {}", describe(&image));
        }
        Command::Images(j) => {
            let images = store(paths)?.list().context("cannot list images")?;
            if j.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(
                        &images.iter().map(image_json).collect::<Vec<_>>()
                    )?
                );
            } else {
                println!("{:<48} {:<20} {:>10}  CREATED", "NAME", "DIGEST", "SIZE");
                for i in &images {
                    let short = i.digest.strip_prefix("sha256:").unwrap_or(&i.digest);
                    println!(
                        "{:<48} {:<20} {:>10}  {}",
                        i.name.as_deref().unwrap_or("<none>"),
                        &short[..short.len().min(12)],
                        human_size(i.size),
                        i.created.as_deref().unwrap_or("-")
                    );
                }
            }
        }
        Command::Rm(r) => {
            store(paths)?
                .remove(&r.reference)
                .with_context(|| format!("cannot remove image {}", r.reference))?;
        }
        Command::Gc => {
            let rep = store(paths)?
                .gc()
                .context("image garbage collection failed")?;
            println!(
                "removed {} image(s), {} rootfs, {} blob(s); freed {}",
                rep.removed_images,
                rep.removed_rootfs,
                rep.removed_blobs,
                human_size(rep.freed_bytes)
            );
        }
        Command::Trust(t) => trust(paths, t)?,
        Command::Sign(s) => sign(paths, s)?,
        _ => bail!("not an image command"),
    }
    Ok(0)
}

fn trust(paths: &Paths, t: &Trust) -> Result<()> {
    let path = &paths.trust_policy;
    let mut p = policy(paths)?;
    match t {
        Trust::Add(a) => {
            let req = match &a.key {
                Some(k) => Requirement::Signed(vec![
                    PublicKey::load_public(k)
                        .with_context(|| format!("cannot read public key {}", k.display()))?,
                ]),
                None => Requirement::AcceptAnything,
            };
            p.add(&a.prefix, req)
                .with_context(|| format!("cannot add a trust rule for {:?}", a.prefix))?;
            p.save(path)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        Trust::Rm { prefix } => {
            if !p.remove(prefix) {
                bail!("no trust rule for {prefix:?} in {}", path.display());
            }
            p.save(path)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        Trust::List(j) => {
            let rows: Vec<(String, String)> = p
                .list()
                .iter()
                .map(|r| {
                    let what = match &r.requirement {
                        Requirement::AcceptAnything => "accept-anything".to_string(),
                        Requirement::Signed(keys) => {
                            format!(
                                "signed by {}",
                                keys.iter()
                                    .map(|k| k.key_id())
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            )
                        }
                    };
                    (r.prefix.clone(), what)
                })
                .collect();
            if j.json {
                let v: Vec<_> = rows
                    .iter()
                    .map(|(p, w)| json!({"prefix": p, "requirement": w}))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                for (prefix, what) in rows {
                    println!("{prefix:<40} {what}");
                }
            }
        }
    }
    Ok(())
}

fn sign(paths: &Paths, s: &Sign) -> Result<()> {
    let store = store(paths)?;
    let image = store
        .get(&s.reference)
        .with_context(|| format!("image {:?} is not in the store", s.reference))?;
    let key = KeyPair::load_secret(&s.key)
        .with_context(|| format!("cannot read secret key {}", s.key.display()))?;
    let name = image.name.clone().unwrap_or_else(|| s.reference.clone());
    let sig = oci_image::sign(&name, &image.digest, &key);
    if let Some(out) = &s.out {
        sig.write(out)
            .with_context(|| format!("cannot write signature {}", out.display()))?;
        println!(
            "signature for {} written to {}",
            describe(&image),
            out.display()
        );
    } else if s.push {
        let digest = oci_image::push_signature(&name, &sig, &PullOptions::default())
            .with_context(|| format!("cannot push the signature of {name}"))?;
        println!("signature for {} pushed ({digest})", describe(&image));
    } else {
        store
            .add_signature(&image, sig)
            .context("cannot store the signature")?;
        println!("signature for {} stored with the image", describe(&image));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_table() {
        for (b, want) in [
            (0, "0 B"),
            (1023, "1023 B"),
            (1024, "1.0 KiB"),
            (5 << 20, "5.0 MiB"),
            (3 << 30, "3.0 GiB"),
        ] {
            assert_eq!(human_size(b), want);
        }
    }
}

//! `cargo xtask manifest`: packaging/daemonset.yaml against the Kubernetes API's schemas, with
//! PyPI's kubernetes-validate (which bundles the schemas of every Kubernetes release it knows).
//!
//! It is installed once into a venv under ~/.cache/nsipc-agent/, at a pinned version; the
//! validation itself needs no network, and runs without one (`unshare --net`) when we are root,
//! so that a schema it would fetch shows up as a failure here rather than in an offline CI.
//! `--strict` refuses fields the schema does not know: without it, a misspelt `hostPid` passes
//! and the pod silently runs in its own PID namespace. The check proves it can fail: a copy of
//! the manifest with that misspelling must be refused.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Output},
    time::Instant,
};

use anyhow::{Context as _, Result, bail, ensure};

use crate::{run, setup, workspace_root};

const VALIDATOR: &str = "kubernetes-validate";
const VALIDATOR_VERSION: &str = "1.37.0";
/// The oldest release still common in clusters, and the newest the pinned validator bundles.
pub const KUBERNETES_VERSIONS: &[&str] = &["1.29.0", "1.37.0"];
const MANIFEST: &str = "packaging/daemonset.yaml";

/// Validates the DaemonSet manifest against every version in [`KUBERNETES_VERSIONS`], and
/// checks that a misspelt field is refused.
pub fn check() -> Result<()> {
    let validator = ensure_validator()?;
    let started = Instant::now();
    let manifest = workspace_root().join(MANIFEST);
    for version in KUBERNETES_VERSIONS {
        let out = validate(&validator, &manifest, version)?;
        ensure!(
            out.status.success(),
            "{MANIFEST} does not validate against Kubernetes {version}:\n{}",
            said(&out)
        );
        // Both resources of the file were checked: the Namespace and the DaemonSet.
        let text = said(&out);
        for resource in ["namespace/nsipc-agent", "daemonset/nsipc-agent"] {
            ensure!(
                text.contains(&format!("passed for resource {resource}")),
                "{VALIDATOR} did not report {resource} for {version}:\n{text}"
            );
        }
    }

    // The check can fail: `hostPID` misspelt is refused, and only because of --strict.
    let original =
        fs::read_to_string(&manifest).with_context(|| format!("reading {}", manifest.display()))?;
    ensure!(
        original.contains("      hostPID: true\n"),
        "{MANIFEST} no longer has the `hostPID: true` line this check misspells"
    );
    let misspelt = workspace_root().join("target/manifest-check/daemonset-hostPid.yaml");
    fs::create_dir_all(misspelt.parent().expect("a directory"))?;
    fs::write(
        &misspelt,
        original.replace("      hostPID: true\n", "      hostPid: true\n"),
    )?;
    for version in KUBERNETES_VERSIONS {
        let out = validate(&validator, &misspelt, version)?;
        ensure!(
            !out.status.success() && said(&out).contains("'hostPid' was unexpected"),
            "{VALIDATOR} --strict accepted a DaemonSet with `hostPid` for Kubernetes \
             {version}:\n{}",
            said(&out)
        );
    }
    let lenient = run_validator(&validator, &misspelt, KUBERNETES_VERSIONS[0], false)?;
    ensure!(
        lenient.status.success(),
        "without --strict, {VALIDATOR} was expected to let `hostPid` through (which is why the \
         check is strict):\n{}",
        said(&lenient)
    );
    eprintln!(
        "xtask: {MANIFEST} valid for Kubernetes {} (strict, offline: {}), a misspelt field \
         refused; {:.2}s",
        KUBERNETES_VERSIONS.join(", "),
        if setup::is_root() {
            "unshare --net"
        } else {
            "not proven, not root"
        },
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn validate(validator: &Path, file: &Path, version: &str) -> Result<Output> {
    run_validator(validator, file, version, true)
}

/// Runs the validator on `file`, without a network when we can take it away.
fn run_validator(validator: &Path, file: &Path, version: &str, strict: bool) -> Result<Output> {
    let mut cmd = if setup::is_root() {
        let mut cmd = Command::new("unshare");
        cmd.arg("--net").arg(validator);
        cmd
    } else {
        Command::new(validator)
    };
    cmd.args(["--kubernetes-version", version]);
    if strict {
        cmd.arg("--strict");
    }
    cmd.arg(file)
        .output()
        .with_context(|| format!("running {cmd:?}"))
}

fn said(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The venv's kubernetes-validate at [`VALIDATOR_VERSION`], installed if it is not there.
fn ensure_validator() -> Result<PathBuf> {
    let home = std::env::var_os("HOME").context("HOME is not set")?;
    let venv = Path::new(&home)
        .join(".cache/nsipc-agent")
        .join(format!("{VALIDATOR}-{VALIDATOR_VERSION}"));
    let validator = venv.join("bin").join(VALIDATOR);
    if installed_version(&validator).as_deref() == Some(VALIDATOR_VERSION) {
        return Ok(validator);
    }
    eprintln!(
        "xtask: installing {VALIDATOR}=={VALIDATOR_VERSION} into {}",
        venv.display()
    );
    if venv.exists() {
        fs::remove_dir_all(&venv).with_context(|| format!("removing {}", venv.display()))?;
    }
    // Debian's python3 (python3-venv, see setup.rs), not whichever one is first on PATH.
    run(Command::new("/usr/bin/python3")
        .args(["-m", "venv"])
        .arg(&venv))?;
    run(Command::new(venv.join("bin/pip")).args([
        "install",
        "--quiet",
        "--disable-pip-version-check",
        &format!("{VALIDATOR}=={VALIDATOR_VERSION}"),
    ]))?;
    match installed_version(&validator) {
        Some(version) if version == VALIDATOR_VERSION => Ok(validator),
        other => bail!("{} says its version is {other:?}", validator.display()),
    }
}

/// What `kubernetes-validate --version` prints, if it runs.
fn installed_version(validator: &Path) -> Option<String> {
    let out = Command::new(validator).arg("--version").output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    // `kubernetes-validate 1.37.0`, or the bare version.
    text.split_whitespace().last().map(str::to_owned)
}

//! `cargo xtask deb`: the Debian package operators install: the agent in /usr/bin, its systemd
//! unit (packaging/nsipc-agent.service, least privilege), its man pages and shell completions
//! (which the agent itself makes from its command line: `nsipc-agent man DIR`, `nsipc-agent
//! completions SHELL`), the docs (the event reference and its JSON Schema, the shipping recipe).
//! Built with dpkg-deb from a staged tree, then checked: its fields, its files, and the
//! packaged agent running.

use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, ensure};

use crate::{run, workspace_root};

const PACKAGE: &str = "nsipc-agent";
/// Where the unit goes: Debian 12 still installs units under /lib (usrmerge links it).
const UNIT_PATH: &str = "lib/systemd/system/nsipc-agent.service";
const BINARY_PATH: &str = "usr/bin/nsipc-agent";
const DOC_DIR: &str = "usr/share/doc/nsipc-agent";
/// packaging/examples/, installed in DOC_DIR/examples.
const EXAMPLES: &[&str] = &[
    "journal.conf",
    "file-output.conf",
    "nsipc-agent.tmpfiles.conf",
    "nsipc-agent.logrotate",
];
const MAN_DIR: &str = "usr/share/man/man1";
/// The man pages `nsipc-agent man` writes: the command's and one per subcommand.
const MAN_PAGES: [&str; 4] = [
    "nsipc-agent.1",
    "nsipc-agent-trace.1",
    "nsipc-agent-snapshot.1",
    "nsipc-agent-check.1",
];
/// Each shell's completion script, where Debian's bash-completion, zsh and fish look for them.
const COMPLETIONS: [(&str, &str); 3] = [
    ("bash", "usr/share/bash-completion/completions/nsipc-agent"),
    ("zsh", "usr/share/zsh/vendor-completions/_nsipc-agent"),
    (
        "fish",
        "usr/share/fish/vendor_completions.d/nsipc-agent.fish",
    ),
];

/// Builds target/debian/nsipc-agent_<version>_<arch>.deb from the release build (which the
/// caller made) and checks it; returns its path.
pub fn build_and_check() -> Result<PathBuf> {
    let root = workspace_root();
    let version = env!("CARGO_PKG_VERSION");
    let arch = command_output(Command::new("dpkg").arg("--print-architecture"))?;
    let out = root.join("target/debian");
    let stage = out.join(format!("{PACKAGE}_{version}_{arch}"));
    if stage.exists() {
        fs::remove_dir_all(&stage).with_context(|| format!("removing {}", stage.display()))?;
    }
    let agent = root.join("target/release/nsipc-agent");
    install(&agent, &stage.join(BINARY_PATH), 0o755)?;
    install_man_pages(&agent, &out.join("man"), &stage.join(MAN_DIR))?;
    for (shell, path) in COMPLETIONS {
        let script = command_bytes(Command::new(&agent).args(["completions", shell]))?;
        write_bytes(&stage.join(path), &script, 0o644)?;
    }
    install(
        &root.join("packaging/nsipc-agent.service"),
        &stage.join(UNIT_PATH),
        0o644,
    )?;
    for doc in [
        "README.md",
        "docs/events.md",
        "docs/events.schema.json",
        "docs/shipping.md",
    ] {
        let name = Path::new(doc).file_name().expect("a file");
        install(&root.join(doc), &stage.join(DOC_DIR).join(name), 0o644)?;
    }
    // The shipping recipe's drop-ins and configs (docs/shipping.md), as Debian ships examples.
    for example in EXAMPLES {
        install(
            &root.join("packaging/examples").join(example),
            &stage.join(DOC_DIR).join("examples").join(example),
            0o644,
        )?;
    }
    write(&stage.join(DOC_DIR).join("copyright"), COPYRIGHT, 0o644)?;
    let control = format!(
        "Package: {PACKAGE}\n\
         Version: {version}\n\
         Architecture: {arch}\n\
         Maintainer: nsipc-agent maintainers <maintainers@example.invalid>\n\
         Depends: libc6\n\
         Section: admin\n\
         Priority: optional\n\
         Homepage: https://example.invalid/nsipc-agent\n\
         Description: eBPF tracer of Linux IPC namespaces and SysV IPC objects\n \
         Streams, as JSON Lines, the life of every IPC namespace (made, joined, freed) and of\n \
         the message queues, shared memory segments and semaphore sets inside them, with the\n \
         container (Docker, Podman, containerd, CRI-O) each event comes from. The service\n \
         (not started on install: systemctl enable --now nsipc-agent) writes the stream to the\n \
         journal.\n"
    );
    write(&stage.join("DEBIAN/control"), &control, 0o644)?;
    // Units changed on disk are read again; nothing is started or enabled on install.
    write(&stage.join("DEBIAN/postinst"), MAINTAINER_SCRIPT, 0o755)?;
    write(&stage.join("DEBIAN/postrm"), MAINTAINER_SCRIPT, 0o755)?;
    let deb = out.join(format!("{PACKAGE}_{version}_{arch}.deb"));
    run(Command::new("dpkg-deb")
        .args(["--root-owner-group", "--build"])
        .arg(&stage)
        .arg(&deb))?;
    check(&deb, version)?;
    eprintln!("xtask: {} built and checked", deb.display());
    Ok(deb)
}

const MAINTAINER_SCRIPT: &str = "#!/bin/sh\nset -e\n\
    if [ -d /run/systemd/system ]; then systemctl daemon-reload || true; fi\n";

const COPYRIGHT: &str = "\
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: nsipc-agent

Files: *
License: MIT or Apache-2.0
Comment: the userspace agent.

Files: usr/bin/nsipc-agent
License: MIT or Apache-2.0, and MIT or GPL-2.0-only
Comment: the agent embeds its eBPF object (nsipc-ebpf), which is MIT or GPL-2.0-only
 because it calls GPL-only kernel helpers.
";

/// The package has its fields, its files with their modes, and the agent it carries runs.
fn check(deb: &Path, version: &str) -> Result<()> {
    let fields = command_output(
        Command::new("dpkg-deb")
            .arg("--field")
            .arg(deb)
            .args(["Package", "Version"]),
    )?;
    ensure!(
        fields == format!("Package: {PACKAGE}\nVersion: {version}"),
        "{} has fields {fields:?}",
        deb.display()
    );
    let contents = command_output(Command::new("dpkg-deb").arg("--contents").arg(deb))?;
    let mut files = vec![
        (BINARY_PATH.to_owned(), "-rwxr-xr-x root/root"),
        (UNIT_PATH.to_owned(), "-rw-r--r-- root/root"),
        (format!("{DOC_DIR}/copyright"), "-rw-r--r-- root/root"),
        (format!("{DOC_DIR}/shipping.md"), "-rw-r--r-- root/root"),
    ];
    for example in EXAMPLES {
        files.push((
            format!("{DOC_DIR}/examples/{example}"),
            "-rw-r--r-- root/root",
        ));
    }
    for doc in ["events.md", "events.schema.json"] {
        files.push((format!("{DOC_DIR}/{doc}"), "-rw-r--r-- root/root"));
    }
    files.extend(
        MAN_PAGES
            .iter()
            .map(|page| (format!("{MAN_DIR}/{page}.gz"), "-rw-r--r-- root/root")),
    );
    files.extend(
        COMPLETIONS
            .iter()
            .map(|(_, path)| (path.to_string(), "-rw-r--r-- root/root")),
    );
    for (path, mode) in files {
        ensure!(
            contents
                .lines()
                .any(|line| line.starts_with(mode) && line.ends_with(&format!("./{path}"))),
            "{} lacks ./{path} ({mode}):\n{contents}",
            deb.display()
        );
    }
    let unpacked = deb.with_extension("unpacked");
    if unpacked.exists() {
        fs::remove_dir_all(&unpacked)?;
    }
    run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&unpacked))?;
    let agent_version = command_output(Command::new(unpacked.join(BINARY_PATH)).arg("--version"))?;
    ensure!(
        agent_version == format!("{PACKAGE} {version}"),
        "the packaged agent says {agent_version:?}"
    );
    // The pages are roff for the command they are named after; the bash script completes it.
    for page in MAN_PAGES {
        let roff = command_output(
            Command::new("gzip")
                .arg("-dc")
                .arg(unpacked.join(MAN_DIR).join(format!("{page}.gz"))),
        )?;
        let title = format!(".TH {} 1", page.trim_end_matches(".1"));
        ensure!(roff.contains(&title), "{page} has no {title:?}:\n{roff}");
    }
    let bash = fs::read_to_string(unpacked.join(COMPLETIONS[0].1))?;
    ensure!(
        bash.contains("complete -F ") && bash.contains(" nsipc-agent\n"),
        "the bash completion does not complete nsipc-agent:\n{bash}"
    );
    fs::remove_dir_all(&unpacked)?;
    Ok(())
}

/// Has the agent write its man pages into `scratch`, and puts each, compressed as Debian wants
/// them (`gzip -9n`: no name nor time in the header, so the package is reproducible), in `dir`.
fn install_man_pages(agent: &Path, scratch: &Path, dir: &Path) -> Result<()> {
    if scratch.exists() {
        fs::remove_dir_all(scratch)?;
    }
    run(Command::new(agent).arg("man").arg(scratch))?;
    for page in MAN_PAGES {
        let gzipped = command_bytes(Command::new("gzip").arg("-9nc").arg(scratch.join(page)))?;
        write_bytes(&dir.join(format!("{page}.gz")), &gzipped, 0o644)?;
    }
    let made = fs::read_dir(scratch)?.count();
    ensure!(
        made == MAN_PAGES.len(),
        "nsipc-agent man wrote {made} pages, the package ships {MAN_PAGES:?}"
    );
    fs::remove_dir_all(scratch)?;
    Ok(())
}

fn install(from: &Path, to: &Path, mode: u32) -> Result<()> {
    let bytes = fs::read(from).with_context(|| format!("reading {}", from.display()))?;
    write_bytes(to, &bytes, mode)
}

fn write(to: &Path, text: &str, mode: u32) -> Result<()> {
    write_bytes(to, text.as_bytes(), mode)
}

fn write_bytes(to: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let dir = to.parent().expect("a path in the stage");
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    fs::write(to, bytes).with_context(|| format!("writing {}", to.display()))?;
    fs::set_permissions(to, fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {}", to.display()))
}

/// A command's stdout, trimmed, when it succeeds.
fn command_output(cmd: &mut Command) -> Result<String> {
    let stdout = command_bytes(cmd)?;
    Ok(String::from_utf8_lossy(&stdout).trim().to_owned())
}

/// A command's stdout as it wrote it, when it succeeds.
fn command_bytes(cmd: &mut Command) -> Result<Vec<u8>> {
    let output = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    ensure!(
        output.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(output.stdout)
}

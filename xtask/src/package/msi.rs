//! The msi packages: for each product that runs on Windows, a `.wxs` this
//! module writes, built by msitools' `wixl` (`wixl -a x64`), then fixed up
//! with `msibuild` where wixl 0.101 (Debian 12's) falls short.
//!
//! What the MSI does:
//! - installs the exe (and `<name>.conf.example`) to
//!   `C:\Program Files\Sightline\<Product>\`;
//! - registers the service `<package>` (`<package>.exe service`, automatic
//!   start, LocalSystem) and starts it; stops and deletes it on removal.
//!   wixl cannot write failure actions: the service sets its own (restart
//!   after 5 s) when it starts (agent-core's `service.rs`). The installer
//!   waits for the old service to stop (an upgrade never starts the new
//!   agent beside the old, whose pid file it would find held) but not for
//!   the new one to start: an install without a license succeeds, the
//!   service then stops saying why in its log (and wine's msi fails a
//!   waited-for start);
//! - writes the public properties `LICENSE` and `SERVER` as the values
//!   `license` and `server.host` of `HKLM\SOFTWARE\Sightline\<Product>`,
//!   which the agent reads as the config layer under its file
//!   (`C:\ProgramData\Sightline\<name>.conf`, which the MSI never owns, so
//!   no upgrade or removal touches a user's edits);
//! - creates `C:\ProgramData\Sightline` and locks it and the registry key
//!   to SYSTEM and Administrators (`LockPermissions`, added with
//!   `msibuild -i`: wixl writes none), as ProgramData lets users create
//!   files. The service's command
//!   line never holds the license. On an upgrade without the properties
//!   the values installed before are kept: a `RegistrySearch` reads them
//!   before the old version is removed, and a custom action puts them back
//!   into the properties (the WiX "remember property" pattern);
//! - upgrades in place: `MajorUpgrade` with an upgrade code fixed per
//!   product; the old version is removed before the new one is installed.
//!
//! Reproducible bytes: every GUID is derived from the product, the version
//! and the component (FNV-1a, 128 bits), the package code from the sha256
//! of the exe and the `.wxs` (so two builds of one version differ; the
//! product code follows the version only, so each shipped build needs a
//! version bump); wixl 0.101 writes a random package code and the current time into the summary information, so the package
//! code is set again with `msibuild -s` and the two timestamps are
//! rewritten to `SOURCE_DATE_EPOCH`; the cabinet's file times come from the
//! staged files' modification times, which are set to it too.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, bail};

use super::{Binary, Context, Product};

/// Writes one msi per product in `binaries` to `ctx.out`; returns their paths.
pub(crate) fn build(ctx: &Context, binaries: &[Binary]) -> Result<Vec<PathBuf>> {
    binaries.iter().map(|b| build_one(ctx, b)).collect()
}

/// `Infra` for `infra`: the product's name in paths and the registry.
pub(crate) fn title(product: &Product) -> String {
    let mut title = product.name.to_string();
    if let Some(first) = title.get_mut(0..1) {
        first.make_ascii_uppercase();
    }
    title
}

/// The upgrade code of `product`: the same for every version, forever
/// (Windows Installer finds the version to replace by it). Derived from
/// the package name; `upgrade_codes_never_change` pins it.
pub(crate) fn upgrade_code(product: &Product) -> String {
    guid(&format!("{} upgrade code", product.package))
}

/// A GUID derived from `name`: FNV-1a over its bytes, 128 bits, marked as
/// an RFC 9562 version 8 (custom) UUID.
fn guid(name: &str) -> String {
    const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013B;
    let mut hash: u128 = 0x6C62_272E_07BB_0142_62B8_2175_6295_C58D;
    for byte in name.bytes() {
        hash ^= u128::from(byte);
        hash = hash.wrapping_mul(PRIME);
    }
    let mut b = hash.to_be_bytes();
    b[6] = (b[6] & 0x0F) | 0x80;
    b[8] = (b[8] & 0x3F) | 0x80;
    let hex: String = b.iter().fold(String::new(), |mut s, x| {
        let _ = write!(s, "{x:02X}");
        s
    });
    format!(
        "{{{}-{}-{}-{}-{}}}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// The package code of a build: a GUID derived from the sha256 of the
/// exe and of the `.wxs` (which holds the version).
fn package_code(product: &Product, exe: &[u8], wxs: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    hash.update(exe);
    hash.update(wxs);
    let digest = hash.finalize();
    let hex: String = digest.iter().fold(String::new(), |mut s, x| {
        let _ = write!(s, "{x:02x}");
        s
    });
    guid(&format!("{} package code {hex}", product.package))
}

/// Escapes text for an XML attribute.
fn xml(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The `.wxs` of `product` at `version`, its files named relative to the
/// staging folder.
pub(crate) fn wxs(product: &Product, version: &str) -> String {
    let title = title(product);
    let package = product.package;
    let name = product.name;
    let key = format!(r"SOFTWARE\Sightline\{title}");
    let id = |what: &str| guid(&format!("{package} {version} {what}"));
    // Component GUIDs stay the same across versions: the component is the
    // same thing, installed at the same place.
    let component = |what: &str| guid(&format!("{package} component {what}"));
    let summary = xml(product.summary);
    format!(
        r#"<?xml version="1.0" encoding="utf-8"?>
<!-- Written by xtask/src/package/msi.rs (cargo xtask package, msi). -->
<Wix xmlns="http://schemas.microsoft.com/wix/2006/wi">
  <Product Id="{product_code}" Name="Sightline {title}" Language="1033" Version="{version}" Manufacturer="Sightline" UpgradeCode="{upgrade}">
    <Package InstallerVersion="500" Compressed="yes" InstallScope="perMachine" Description="{summary}" Comments="{package} {version}" Manufacturer="Sightline"/>
    <Media Id="1" Cabinet="{package}.cab" EmbedCab="yes"/>
    <MajorUpgrade DowngradeErrorMessage="A newer version of Sightline {title} is already installed."/>
    <Property Id="MsiHiddenProperties" Value="LICENSE;SAVEDLICENSE"/>
    <Property Id="SAVEDLICENSE">
      <RegistrySearch Id="SavedLicense" Root="HKLM" Key="{key}" Name="license" Type="raw" Win64="yes"/>
    </Property>
    <Property Id="SAVEDSERVER">
      <RegistrySearch Id="SavedServer" Root="HKLM" Key="{key}" Name="server.host" Type="raw" Win64="yes"/>
    </Property>
    <CustomAction Id="KeepLicense" Property="LICENSE" Value="[SAVEDLICENSE]"/>
    <CustomAction Id="KeepServer" Property="SERVER" Value="[SAVEDSERVER]"/>
    <InstallExecuteSequence>
      <Custom Action="KeepLicense" Sequence="51">NOT LICENSE AND SAVEDLICENSE</Custom>
      <Custom Action="KeepServer" Sequence="52">NOT SERVER AND SAVEDSERVER</Custom>
      <RemoveExistingProducts Sequence="1401"/>
    </InstallExecuteSequence>
    <Directory Id="TARGETDIR" Name="SourceDir">
      <Directory Id="CommonAppDataFolder">
        <Directory Id="DATADIR" Name="Sightline">
          <Component Id="DataFolder" Guid="{data_folder}" Win64="yes">
            <CreateFolder/>
          </Component>
        </Directory>
      </Directory>
      <Directory Id="ProgramFiles64Folder">
        <Directory Id="SightlineFolder" Name="Sightline">
          <Directory Id="INSTALLDIR" Name="{title}">
            <Component Id="Program" Guid="{program}" Win64="yes">
              <File Id="Exe" Name="{package}.exe" Source="{package}.exe" KeyPath="yes"/>
              <File Id="ExampleConf" Name="{name}.conf.example" Source="{name}.conf.example"/>
              <ServiceInstall Id="Service" Name="{package}" DisplayName="Sightline {title}" Description="{summary}" Type="ownProcess" Start="auto" ErrorControl="normal" Arguments="service"/>
              <ServiceControl Id="StopService" Name="{package}" Stop="both" Remove="uninstall" Wait="yes"/>
              <ServiceControl Id="StartService" Name="{package}" Start="install" Wait="no"/>
            </Component>
            <Component Id="Settings" Guid="{settings}" Win64="yes">
              <RegistryValue Root="HKLM" Key="{key}" Name="license" Type="string" Value="[LICENSE]" KeyPath="yes"/>
              <RegistryValue Root="HKLM" Key="{key}" Name="server.host" Type="string" Value="[SERVER]"/>
            </Component>
          </Directory>
        </Directory>
      </Directory>
    </Directory>
    <Feature Id="Agent" Title="Sightline {title}" Level="1">
      <ComponentRef Id="Program"/>
      <ComponentRef Id="Settings"/>
      <ComponentRef Id="DataFolder"/>
    </Feature>
  </Product>
</Wix>
"#,
        product_code = id("product code"),
        upgrade = upgrade_code(product),
        program = component("program"),
        settings = component("settings"),
        data_folder = component("data folder"),
    )
}

/// `sightline-infra-<version>-x64.msi`.
pub(crate) fn file_name(product: &Product, version: &str) -> String {
    format!("{}-{version}-x64.msi", product.package)
}

fn build_one(ctx: &Context, binary: &Binary) -> Result<PathBuf> {
    let product = binary.product;
    let stage = ctx
        .out
        .join(format!(".msi-{}-{}", product.package, ctx.version));
    let _ = std::fs::remove_dir_all(&stage);
    std::fs::create_dir_all(&stage).with_context(|| format!("creating {}", stage.display()))?;
    let epoch = UNIX_EPOCH + Duration::from_secs(ctx.source_date_epoch);
    let exe = stage.join(format!("{}.exe", product.package));
    std::fs::copy(&binary.path, &exe)
        .with_context(|| format!("copying {}", binary.path.display()))?;
    let example = stage.join(format!("{}.conf.example", product.name));
    let conf = std::fs::read_to_string(product.config_source(&ctx.root))
        .with_context(|| format!("reading {}", product.config_source(&ctx.root).display()))?;
    std::fs::write(&example, windows_conf(&conf, product))?;
    for file in [&exe, &example] {
        set_mtime(file, epoch)?;
    }
    let wxs_path = stage.join(format!("{}.wxs", product.package));
    std::fs::write(&wxs_path, wxs(product, &ctx.version))?;
    let msi = ctx.out.join(file_name(product, &ctx.version));
    let _ = std::fs::remove_file(&msi);
    run(Command::new("wixl")
        .args(["-a", "x64", "-o"])
        .arg(&msi)
        .arg(&wxs_path)
        .current_dir(&stage)
        .env("SOURCE_DATE_EPOCH", ctx.source_date_epoch.to_string()))
    .context("wixl (apt-get install wixl)")?;
    // The license and server cross from the client to the installing
    // service only when they are secure properties; wixl lists only its own.
    run(Command::new("msibuild").arg(&msi).args([
        "-q",
        "UPDATE `Property` SET `Value`='LICENSE;SERVER;WIX_DOWNGRADE_DETECTED;WIX_UPGRADE_DETECTED' WHERE `Property`='SecureCustomProperties'",
    ]))?;
    lock_permissions(&msi)?;
    // A package code derived from what is packaged (the exe and the .wxs)
    // instead of wixl's random one: the same build gives the same code,
    // two different builds of one version differ to Windows Installer.
    let package_code = package_code(product, &std::fs::read(&exe)?, &std::fs::read(&wxs_path)?);
    run(Command::new("msibuild").arg(&msi).args([
        "-s",
        &format!("Sightline {} {}", title(product), ctx.version),
        "Sightline",
        "x64;1033",
        &package_code,
    ]))?;
    fix_summary_times(&msi, ctx.source_date_epoch)?;
    std::fs::remove_dir_all(&stage).with_context(|| format!("removing {}", stage.display()))?;
    Ok(msi)
}

/// Who may touch the data folder and the registry key: SYSTEM and the
/// Administrators, with every right (`GENERIC_ALL`); nobody else, not even
/// to read (the key holds the license). The `LockPermissions` rows replace
/// what the folder would inherit from `C:\ProgramData` (where Users may
/// create files) when `CreateFolders` and `WriteRegistryValues` run.
const LOCKED_TO: [&str; 2] = ["SYSTEM", "Administrators"];
const GENERIC_ALL: u32 = 0x1000_0000;

/// Adds the `LockPermissions` table (wixl 0.101 writes none): rows for the
/// data folder (`DATADIR` in `CreateFolder`) and for every registry value
/// of the `Settings` component (its key).
fn lock_permissions(msi: &Path) -> Result<()> {
    let registry = Command::new("msiinfo")
        .arg("export")
        .arg(msi)
        .arg("Registry")
        .output()
        .context("msiinfo export Registry")?;
    if !registry.status.success() {
        bail!("msiinfo export {} Registry failed", msi.display());
    }
    let registry = String::from_utf8_lossy(&registry.stdout);
    // Rows after the three header lines: Registry, Root, Key, Name, Value, Component_.
    let values: Vec<&str> = registry
        .lines()
        .skip(3)
        .filter_map(|row| {
            let cols: Vec<&str> = row.split('\t').collect();
            (cols.last() == Some(&"Settings")).then(|| cols[0])
        })
        .collect();
    if values.is_empty() {
        bail!(
            "no registry value of the Settings component in {}",
            msi.display()
        );
    }
    // An IDT file (msibuild -i): the column names, their types, the table
    // name with its primary key, then the rows; wixl's tables come the same way.
    let mut idt = String::from(
        "LockObject\tTable\tDomain\tUser\tPermission\r\n\
         s72\ts32\tS255\ts255\tI4\r\n\
         LockPermissions\tLockObject\tTable\tDomain\tUser\r\n",
    );
    let objects = std::iter::once(("DATADIR", "CreateFolder"))
        .chain(values.iter().map(|id| (*id, "Registry")));
    for (object, table) in objects {
        for user in LOCKED_TO {
            let _ = write!(idt, "{object}\t{table}\t\t{user}\t{GENERIC_ALL}\r\n");
        }
    }
    let path = msi.with_extension("LockPermissions.idt");
    std::fs::write(&path, idt).with_context(|| format!("writing {}", path.display()))?;
    run(Command::new("msibuild").arg(msi).arg("-i").arg(&path))?;
    std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
    Ok(())
}

/// The shipped config file with Windows paths in its comments: the same
/// keys, as an example to copy to `C:\ProgramData\Sightline\<name>.conf`.
fn windows_conf(conf: &str, product: &Product) -> String {
    let name = product.name;
    let mut out = format!(
        "# C:\\ProgramData\\Sightline\\{name}.conf (copy this file there to use it).\r\n\
         # The MSI's LICENSE and SERVER properties are in the registry\r\n\
         # (HKLM\\SOFTWARE\\Sightline\\{}); a key set here wins over them.\r\n",
        title(product)
    );
    for line in conf.lines().skip_while(|l| l.starts_with('#')) {
        let line = line
            .replace(
                &format!("/var/lib/sightline/{name}"),
                &format!("C:\\ProgramData\\Sightline\\{name}"),
            )
            .replace("/etc/sightline/", "C:\\ProgramData\\Sightline\\");
        // The collector comes from the MSI's SERVER (the registry): an
        // example copied as it is must not override it with 127.0.0.1.
        let line = if line.starts_with("server.host=") || line.starts_with("server.port=") {
            format!("#{line}")
        } else {
            line
        };
        out.push_str(&line);
        out.push_str("\r\n");
    }
    out
}

fn set_mtime(path: &Path, time: SystemTime) -> Result<()> {
    std::fs::File::options()
        .write(true)
        .open(path)
        .and_then(|f| f.set_modified(time))
        .with_context(|| format!("setting the time of {}", path.display()))
}

fn run(command: &mut Command) -> Result<()> {
    let output = command
        .output()
        .with_context(|| format!("running {command:?}"))?;
    if !output.status.success() {
        bail!(
            "{command:?} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// A Windows FILETIME (100 ns since 1601) of unix time `secs`.
fn filetime(secs: u64) -> u64 {
    (secs + 11_644_473_600) * 10_000_000
}

/// Rewrites the summary information's creation and last-save times, which
/// wixl sets to the time it ran, to `epoch`: the FILETIMEs of the last ten
/// minutes, whole seconds, found in the file (the summary stream is stored
/// uncompressed in the compound file) are replaced where they are. One
/// pass over the bytes.
fn fix_summary_times(msi: &Path, epoch: u64) -> Result<()> {
    let mut bytes = std::fs::read(msi)?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (low, high) = (filetime(now.saturating_sub(600)), filetime(now + 1));
    let replacement = filetime(epoch).to_le_bytes();
    let mut replaced = 0;
    let mut at = 0;
    while at + 8 <= bytes.len() {
        let mut word = [0u8; 8];
        word.copy_from_slice(&bytes[at..at + 8]);
        let value = u64::from_le_bytes(word);
        if (low..=high).contains(&value) && value % 10_000_000 == 0 {
            bytes[at..at + 8].copy_from_slice(&replacement);
            replaced += 1;
            at += 8;
        } else {
            at += 1;
        }
    }
    if replaced != 2 {
        bail!(
            "found {replaced} build timestamps in {}, where wixl writes 2; the package would not be reproducible",
            msi.display()
        );
    }
    std::fs::write(msi, bytes)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::package::PRODUCTS;

    fn infra() -> &'static Product {
        PRODUCTS.iter().find(|p| p.name == "infra").expect("infra")
    }

    /// Windows Installer finds the installed version to replace by its
    /// upgrade code: a changed one would install beside it instead.
    #[test]
    fn upgrade_codes_never_change() {
        assert_eq!(
            upgrade_code(infra()),
            "{8B1860C5-6217-8BCE-8A33-9F6C635762C0}"
        );
    }

    /// Copied unchanged to C:\ProgramData\Sightline, the example must not
    /// override the collector the MSI's SERVER property set.
    #[test]
    fn the_windows_example_leaves_the_server_to_the_installer() {
        let conf = std::fs::read_to_string(
            infra().config_source(&Path::new(env!("CARGO_MANIFEST_DIR")).join("..")),
        )
        .expect("deploy/config/infra.conf");
        let example = windows_conf(&conf, infra());
        assert!(example.contains("#server.host=127.0.0.1\r\n"), "{example}");
        assert!(example.contains("#server.port=6600\r\n"), "{example}");
        assert!(
            !example.lines().any(|l| l.starts_with("server.")),
            "{example}"
        );
        assert!(example.contains("license=\r\n"), "{example}");
    }

    /// Two builds of one version with different exes must not share a
    /// package code (Windows Installer would take one for the other).
    #[test]
    fn package_codes_follow_the_content() {
        let wxs = wxs(infra(), "0.1.0");
        let a = package_code(infra(), b"exe one", wxs.as_bytes());
        assert_eq!(a, package_code(infra(), b"exe one", wxs.as_bytes()));
        assert_ne!(a, package_code(infra(), b"exe two", wxs.as_bytes()));
        let next = super::wxs(infra(), "99.0.0");
        assert_ne!(a, package_code(infra(), b"exe one", next.as_bytes()));
    }

    #[test]
    fn product_codes_differ_by_version_and_are_stable() {
        let a = wxs(infra(), "0.1.0");
        let b = wxs(infra(), "99.0.0");
        assert_eq!(a, wxs(infra(), "0.1.0"));
        let code = |w: &str| {
            w.split("Product Id=\"")
                .nth(1)
                .and_then(|r| r.split('"').next())
                .map(str::to_string)
        };
        assert_ne!(code(&a), code(&b));
        assert!(a.contains(&upgrade_code(infra())) && b.contains(&upgrade_code(infra())));
    }
}

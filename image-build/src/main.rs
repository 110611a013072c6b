//! `shoal-image-build`: builds Shoal's boot artefacts from a profile.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use shoal_image_build::{BuildOptions, Compression, ProgressMode, binaries, build};

/// Build Shoal images: kernel, initramfs, erofs root image, iPXE script and manifest.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Log more (-v: info, -vv: debug, -vvv: trace). Logs go to stderr.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Build a profile into an output directory.
    Build {
        /// Profile name (in image-build/profiles/) or path to a profile .toml.
        #[arg(long, short, default_value = "default")]
        profile: String,
        /// Output directory [default: <workspace>/out/<profile>].
        #[arg(long)]
        out: Option<PathBuf>,
        /// Take prebuilt static binaries from this directory instead of running cargo.
        #[arg(long)]
        binaries_dir: Option<PathBuf>,
        /// Debian package cache: the kernel, package files [default: <workspace>/.cache/shoal].
        #[arg(long)]
        cache: Option<PathBuf>,
        /// Debian kernel package to use instead of the profile's.
        #[arg(long)]
        kernel_package: Option<String>,
        /// Initramfs compression instead of the profile's: none, zstd, lz4, gzip, optionally
        /// with a level (zstd:19).
        #[arg(long, value_parser = Compression::parse)]
        initramfs_compression: Option<Compression>,
        /// Sign an update.bundle with this key file (see `keygen`) instead of the profile's
        /// `update.signing_key`.
        #[arg(long)]
        signing_key: Option<PathBuf>,
        /// Plain progress lines even on a terminal.
        #[arg(long, conflicts_with = "quiet")]
        plain: bool,
        /// No progress output.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Print a `boot.ipxe` for an image built in DIR that gives its nodes their machine
    /// configuration URL (`shoal.config=`): serve it instead of the build's own. `${mac}`,
    /// `${uuid}`, `${serial}` and `${hostname}` in the URL are filled in by iPXE at boot.
    Ipxe {
        /// The build's output directory (with its manifest.json).
        dir: PathBuf,
        /// Where nodes fetch their configuration, e.g. http://10.0.0.1/nodes/${mac}.toml.
        #[arg(long)]
        config_url: String,
    },
    /// Create an update signing key: the key file (mode 0600, refused if it exists) and its
    /// public key on stdout, for a profile's `update.trusted_keys` or the machine
    /// configuration's `update.trusted_keys`.
    Keygen {
        /// Where to write the key file.
        file: PathBuf,
    },
    /// Check that binaries are statically linked (exit status 1 if any is not).
    CheckStatic {
        /// The binaries.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => tracing::Level::WARN,
        1 => tracing::Level::INFO,
        2 => tracing::Level::DEBUG,
        _ => tracing::Level::TRACE,
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(level)
        .with_target(false)
        .init();
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Build {
            profile,
            out,
            binaries_dir,
            cache,
            kernel_package,
            initramfs_compression,
            signing_key,
            plain,
            quiet,
        } => {
            let progress = match (quiet, plain) {
                (true, _) => ProgressMode::Quiet,
                (_, true) => ProgressMode::Plain,
                _ => ProgressMode::Auto,
            };
            let options = BuildOptions {
                profile: profile.clone(),
                out_dir: out,
                binaries_dir,
                cache_dir: cache,
                kernel_package,
                initramfs_compression,
                source_date_epoch: None,
                progress,
                signing_key,
            };
            let out_dir = options.out_dir.clone();
            let manifest =
                build(&options).with_context(|| format!("building profile {profile}"))?;
            let out_dir =
                out_dir.unwrap_or_else(|| shoal_image_build::default_out_dir(&manifest.profile));
            println!(
                "{} (kernel {} from {} {}), modules: early {}, full {}",
                out_dir.display(),
                manifest.kernel.release,
                manifest.kernel.package,
                manifest.kernel.version,
                manifest.modules.early,
                manifest.modules.full
            );
            for artefact in &manifest.artefacts {
                println!(
                    "  {:<14} {:>12} bytes  sha256 {}",
                    artefact.name, artefact.size, artefact.sha256
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Ipxe { dir, config_url } => {
            print!("{}", shoal_image_build::ipxe_script(&dir, &config_url)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Keygen { file } => {
            use std::io::Write as _;
            use std::os::unix::fs::OpenOptionsExt as _;
            let (key, text) = shoal_update::bundle::SigningKey::generate()?;
            let mut out = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&file)
                .with_context(|| format!("creating {}", file.display()))?;
            out.write_all(text.as_bytes())
                .and_then(|()| out.sync_all())
                .with_context(|| format!("writing {}", file.display()))?;
            println!("{}", key.public());
            Ok(ExitCode::SUCCESS)
        }
        Command::CheckStatic { files } => {
            let mut failed = false;
            for file in &files {
                match binaries::check_static(file) {
                    Ok(()) => println!("{}: static", file.display()),
                    Err(e) => {
                        eprintln!("{e}");
                        failed = true;
                    }
                }
            }
            Ok(if failed {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

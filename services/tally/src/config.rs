//! One layered configuration for every subcommand. From lowest to highest precedence:
//!
//! 1. defaults (in the flag definitions);
//! 2. a TOML file, `--config FILE` or `TALLY_CONFIG`, whose keys are the long flag names
//!    (`http-listen = "0.0.0.0:8080"`, `scylla-nodes = ["a:9042", "b:9042"]`);
//! 3. `TALLY_*` environment variables;
//! 4. command-line flags.
//!
//! The file is read before the command line is parsed: each of its settings that is neither on
//! the command line nor in the environment is added to the command line, so clap validates
//! every layer alike. `--dump-config` prints the effective settings of a subcommand, with where each came
//! from, secrets redacted, and exits. `docs/configuration.md` is generated from the same
//! definitions ([`reference`]) and a test keeps it current.

use anyhow::{Context, bail};
use clap::parser::ValueSource;
use clap::{ArgMatches, Command};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Largest configuration file read.
const FILE_LEN_MAX: u64 = 1024 * 1024;

/// Names whose values are never printed.
fn is_secret(name: &str) -> bool {
    ["password", "secret", "token"].iter().any(|s| name.contains(s))
}

/// The configuration file named by `--config FILE`, `--config=FILE` or `TALLY_CONFIG`.
fn file_named(args: &[String]) -> Option<String> {
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        if arg == "--config" {
            return args.next().cloned();
        }
        if let Some(path) = arg.strip_prefix("--config=") {
            return Some(path.to_owned());
        }
    }
    std::env::var("TALLY_CONFIG").ok()
}

/// `args` with the settings of the configuration file (if one is named) that neither `args`
/// nor the environment give, added as flags of the subcommand; and the names of those flags.
pub fn with_file(cli: &Command, args: Vec<String>) -> anyhow::Result<(Vec<String>, BTreeSet<String>)> {
    let Some(path) = file_named(&args) else { return Ok((args, BTreeSet::new())) };
    let subcommand = args.iter().skip(1).find_map(|arg| cli.find_subcommand(arg));
    let Some(subcommand) = subcommand else { return Ok((args, BTreeSet::new())) };
    let known: BTreeMap<&str, &clap::Arg> =
        subcommand.get_arguments().filter_map(|arg| Some((arg.get_long()?, arg))).collect();
    let given =
        |long: &str| args.iter().any(|a| a == &format!("--{long}") || a.starts_with(&format!("--{long}=")));
    let (mut extended, mut added) = (args.clone(), BTreeSet::new());
    for (key, value) in read(Path::new(&path))? {
        let Some(arg) = known.get(key.as_str()) else {
            bail!(
                "{path}: {key:?} is not a setting of tally {} (settings are its long flag names; see docs/configuration.md)",
                subcommand.get_name()
            );
        };
        let in_env = arg.get_env().is_some_and(|env| std::env::var_os(env).is_some());
        if given(&key) || in_env {
            continue;
        }
        match arg.get_action().takes_values() {
            true => extended.extend([format!("--{key}"), value]),
            false if value == "true" => extended.push(format!("--{key}")),
            false => {}
        }
        added.insert(key);
    }
    Ok((extended, added))
}

/// The file's settings as flag name and text value; values that are not text, numbers,
/// booleans or lists of them are errors.
fn read(path: &Path) -> anyhow::Result<Vec<(String, String)>> {
    let size = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?.len();
    if size > FILE_LEN_MAX {
        bail!("{}: {size} bytes; a configuration file is at most {FILE_LEN_MAX}", path.display());
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let table: toml::Table = text.parse().with_context(|| format!("{} is not TOML", path.display()))?;
    let mut found = Vec::new();
    for (key, value) in table {
        let text = match value {
            toml::Value::Array(items) => {
                items.iter().map(scalar).collect::<Option<Vec<_>>>().map(|v| v.join(","))
            }
            other => scalar(&other),
        };
        let text = text.with_context(|| {
            format!("{}: {key}: use text, a number, a boolean or a list of them", path.display())
        })?;
        found.push((key, text));
    }
    Ok(found)
}

fn scalar(value: &toml::Value) -> Option<String> {
    match value {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Float(f) => Some(f.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The effective settings of the subcommand `matches` ran, one TOML line each with where it
/// came from; secrets redacted.
pub fn dump(cli: &Command, matches: &ArgMatches, from_file: &BTreeSet<String>) -> String {
    let Some((name, sub)) = matches.subcommand() else { return String::new() };
    let command = cli.find_subcommand(name).expect("the subcommand that ran");
    let mut out = format!("# tally {name}: effective configuration\n");
    for arg in command.get_arguments() {
        let (Some(long), id) = (arg.get_long(), arg.get_id().as_str()) else { continue };
        if long == "dump-config" || long == "config" {
            continue;
        }
        let values: Vec<String> = sub
            .get_raw(id)
            .map(|v| v.map(|v| v.to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        let env = arg.get_env().map(|e| e.to_string_lossy().into_owned());
        let source = match sub.value_source(id) {
            Some(ValueSource::CommandLine) if from_file.contains(long) => "file".to_owned(),
            Some(ValueSource::CommandLine) => "flag".to_owned(),
            Some(ValueSource::EnvVariable) => format!("env {}", env.unwrap_or_default()),
            Some(ValueSource::DefaultValue) => "default".to_owned(),
            _ => "unset".to_owned(),
        };
        if values.is_empty() {
            out.push_str(&format!("# {long} is not set\n"));
            continue;
        }
        let value = match (is_secret(long), values.as_slice()) {
            (true, [one]) if !one.is_empty() => "\"<redacted>\"".to_owned(),
            (_, [one]) => toml::Value::String(one.clone()).to_string(),
            (_, many) => {
                toml::Value::Array(many.iter().cloned().map(toml::Value::String).collect()).to_string()
            }
        };
        out.push_str(&format!("{long} = {value}  # {source}\n"));
    }
    out
}

/// The reference page of every subcommand's settings (docs/configuration.md, kept current by
/// a test).
#[cfg(test)]
pub fn reference(cli: &Command) -> String {
    let mut out = String::from(
        "# Configuration reference\n\n\
         Generated from the flag definitions (`services/tally/src`); a test fails when this page\n\
         is out of date (`TALLY_UPDATE_DOCS=1 cargo test -p tally --bin tally` rewrites it).\n\n\
         Every setting is a flag, a `TALLY_*` environment variable, and a key of the optional\n\
         TOML file (`--config FILE` or `TALLY_CONFIG`; keys are the flag names). Precedence:\n\
         flag, then environment, then file, then default. `--dump-config` prints the effective\n\
         settings with where each came from (secrets redacted) and exits.\n",
    );
    for command in cli.get_subcommands() {
        let rows: Vec<String> = command
            .get_arguments()
            .filter_map(|arg| {
                let long = arg.get_long()?;
                let env = arg.get_env().map_or(String::new(), |e| format!("`{}`", e.to_string_lossy()));
                let default: Vec<String> =
                    arg.get_default_values().iter().map(|v| v.to_string_lossy().into_owned()).collect();
                let default =
                    if default.is_empty() { String::new() } else { format!("`{}`", default.join(",")) };
                let help = arg
                    .get_help()
                    .map_or(String::new(), |h| h.to_string().replace('\n', " ").replace('|', "\\|"));
                Some(format!("| `--{long}` | {env} | {default} | {help} |"))
            })
            .collect();
        if rows.is_empty() {
            continue;
        }
        out.push_str(&format!("\n## tally {}\n\n", command.get_name()));
        out.push_str("| flag | environment | default | meaning |\n|---|---|---|---|\n");
        out.push_str(&rows.join("\n"));
        out.push('\n');
    }
    out
}

//! gunicorn-style configuration sources, turned into command-line flags
//! before the one declaration (`config.rs`) parses them: a Python config
//! file (`-c FILE`, `python:MODULE`, or `./ferrule.conf.py`, else
//! `./gunicorn.conf.py`), then `GUNICORN_CMD_ARGS`, then `FERRULE_CMD_ARGS`,
//! then the command line, each later one winning (gunicorn's order).
//!
//! A file's names are settings' long flag names with `_` for `-`, or their
//! aliases (gunicorn's `keepalive`, `preload_app`, `accesslog`, `errorlog`,
//! `loglevel`, `pidfile`). A name ferrule does not have is never dropped
//! silently: a warning names it, or, for a setting with no meaning here, an
//! info line says why.

use clap::{Arg, ArgAction};
use pyo3::prelude::*;

use crate::config::{self, is_switch};

/// A config file's setting as `ferrule._config.load` gives it: its name,
/// its kind ("bool", "list" or "scalar") and its values as strings.
type FileSetting = (String, String, Vec<String>);

/// What reading the sources said, for the log once it is configured, and
/// the words each source gave, for `--print-config`.
#[derive(Debug, Default)]
pub struct Notices {
    pub info: Vec<String>,
    pub warnings: Vec<String>,
    /// Each source's flags, lowest first: (its name, its words).
    pub sources: Vec<(String, Vec<String>)>,
}

impl Notices {
    /// Where the setting `arg` took its value from: the last source that
    /// gives it, else its environment variable, else its default.
    pub fn source_of(&self, arg: &Arg, from_env: bool) -> String {
        if let Some((name, _)) = self
            .sources
            .iter()
            .rev()
            .find(|(_, words)| mentions(words, arg))
        {
            return name.clone();
        }
        match (from_env, arg.get_env()) {
            (true, Some(var)) => var.to_string_lossy().into_owned(),
            _ => "default".to_string(),
        }
    }
}

/// Config file names with no counterpart in ferrule, and why none is needed.
const NOT_NEEDED: &[(&str, &str)] = &[
    (
        "reload_engine",
        "--reload watches the loaded sources with inotify",
    ),
    (
        "enable_stdio_inheritance",
        "ferrule does not daemonize, so workers keep the standard streams",
    ),
];

/// The value `argv` gives the flag `long` (`--ini FILE`, `--ini=FILE`).
fn named_value(argv: &[String], long: &str) -> Option<String> {
    let mut args = argv.iter();
    let inline = format!("{long}=");
    while let Some(arg) = args.next() {
        if arg == long {
            return args.next().cloned();
        }
        if let Some(value) = arg.strip_prefix(&inline) {
            return Some(value.to_string());
        }
    }
    None
}

/// The config file `-c`/`--config` names in `argv`, if it does.
fn named_config(argv: &[String]) -> Option<String> {
    let mut args = argv.iter();
    while let Some(arg) = args.next() {
        if arg == "-c" {
            return args.next().cloned();
        }
    }
    named_value(argv, "--config")
}

/// The config file to read: the one the command line names, else the one
/// the *_CMD_ARGS name, else the first of ./ferrule.conf.py and
/// ./gunicorn.conf.py that exists.
fn config_path(argv: &[String], later: &[String]) -> Option<String> {
    named_config(argv)
        .or_else(|| named_config(later))
        .or_else(|| {
            ["ferrule.conf.py", "gunicorn.conf.py"]
                .into_iter()
                .find(|p| std::path::Path::new(p).is_file())
                .map(String::from)
        })
}

/// The setting a config file name stands for.
fn setting_for<'a>(args: &'a [Arg], name: &str) -> Option<&'a Arg> {
    let flag = name.replace('_', "-");
    args.iter().filter(|a| a.get_long().is_some()).find(|a| {
        a.get_long() == Some(flag.as_str())
            || a.get_all_aliases()
                .is_some_and(|aliases| aliases.contains(&flag.as_str()))
    })
}

/// Whether `tokens` (command-line words) give the setting `arg`.
pub fn mentions(tokens: &[String], arg: &Arg) -> bool {
    let long = arg.get_long().unwrap_or_default();
    let mut names: Vec<String> = vec![format!("--{long}")];
    if let Some(aliases) = arg.get_all_aliases() {
        names.extend(aliases.iter().map(|a| format!("--{a}")));
    }
    tokens.iter().any(|t| {
        names
            .iter()
            .any(|n| t == n || t.starts_with(&format!("{n}=")))
            || arg
                .get_short()
                .is_some_and(|s| t.starts_with(&format!("-{s}")) && !t.starts_with("--"))
    })
}

/// `--preload true` as `--preload=true`: an on/off setting takes its value
/// only after `=` (so `--reload app` keeps `app` as the APP), but gunicorn
/// users also write the value as the next word.
fn join_switch_values(words: Vec<String>, switches: &[Arg]) -> Vec<String> {
    const BOOLISH: &[&str] = &[
        "true", "false", "yes", "no", "on", "off", "1", "0", "y", "n", "t", "f",
    ];
    let mut out = Vec::with_capacity(words.len());
    let mut words = words.into_iter().peekable();
    while let Some(word) = words.next() {
        let names_switch = word.strip_prefix("--").is_some_and(|name| {
            switches.iter().any(|a| {
                a.get_long() == Some(name)
                    || a.get_all_aliases().is_some_and(|al| al.contains(&name))
            })
        });
        let value_follows = words
            .peek()
            .is_some_and(|next| BOOLISH.contains(&next.to_ascii_lowercase().as_str()));
        if names_switch && value_follows {
            let value = words.next().unwrap_or_default();
            out.push(format!("{word}={value}"));
        } else {
            out.push(word);
        }
    }
    out
}

/// The argument vector with every source in place: the config file's
/// settings as flags, then the *_CMD_ARGS words, then `argv`. A setting
/// that takes several values (`bind`) is taken whole from the last source
/// that gives it, not added up.
pub fn expand(py: Python<'_>, argv: Vec<String>) -> Result<(Vec<String>, Notices), String> {
    let command = config::command();
    let args: Vec<Arg> = command.get_arguments().cloned().collect();
    let switches: Vec<Arg> = args.iter().filter(|a| is_switch(a)).cloned().collect();
    let argv = join_switch_values(argv, &switches);
    let mut notices = Notices::default();
    let helper = py
        .import("ferrule._config")
        .map_err(|e| format!("loading ferrule._config: {e}"))?;
    let mut later: Vec<String> = Vec::new();
    let mut cmd_args = Vec::new();
    for var in ["GUNICORN_CMD_ARGS", "FERRULE_CMD_ARGS"] {
        if let Ok(text) = std::env::var(var) {
            let words: Vec<String> = helper
                .call_method1("split_args", (text,))
                .and_then(|w| w.extract())
                .map_err(|e| format!("{var}: {e}"))?;
            let words = join_switch_values(words, &switches);
            later.extend(words.iter().cloned());
            cmd_args.push((var.to_string(), words));
        }
    }
    // Sources, lowest first: the uWSGI ini file, the config file, the
    // *_CMD_ARGS, the command line.
    let mut sources: Vec<(String, Vec<String>)> = Vec::new();
    if let Some(spec) = named_value(&argv, "--ini").or_else(|| named_value(&later, "--ini")) {
        sources.push(read_ini(py, &spec, &mut notices)?);
    }
    if let Some(path) = config_path(&argv, &later) {
        sources.push(read_config_file(py, &helper, &path, &args, &mut notices)?);
    }
    sources.extend(cmd_args);
    sources.push(("command line".to_string(), argv));
    // A setting that takes several values (`bind`) is taken whole from the
    // last source that gives it, not added up across the files.
    for i in 0..sources.len() {
        let after: Vec<String> = sources[i + 1..]
            .iter()
            .flat_map(|(_, words)| words.iter().cloned())
            .collect();
        let (name, words) = &mut sources[i];
        if name != "command line" && !name.ends_with("_CMD_ARGS") {
            *words = drop_overridden(std::mem::take(words), &after, &args);
        }
    }
    let words = sources
        .iter()
        .flat_map(|(_, words)| words.iter().cloned())
        .collect();
    notices.sources = sources;
    Ok((words, notices))
}

/// `words` (a file's flags, each `--long VALUE` or `--long=VALUE`) without
/// the settings of several values that `after` gives.
fn drop_overridden(words: Vec<String>, after: &[String], args: &[Arg]) -> Vec<String> {
    let mut kept = Vec::with_capacity(words.len());
    let mut words = words.into_iter();
    while let Some(word) = words.next() {
        let (flag, inline) = match word.split_once('=') {
            Some((flag, _)) => (flag.to_string(), true),
            None => (word.clone(), false),
        };
        let overridden = args.iter().any(|a| {
            matches!(a.get_action(), ArgAction::Append)
                && a.get_long().is_some_and(|l| flag == format!("--{l}"))
                && mentions(after, a)
        });
        if overridden {
            if !inline {
                words.next();
            }
            continue;
        }
        kept.push(word);
    }
    kept
}

/// The uWSGI ini file `spec` (FILE or FILE:SECTION) as a source.
fn read_ini(
    py: Python<'_>,
    spec: &str,
    notices: &mut Notices,
) -> Result<(String, Vec<String>), String> {
    let loaded = py
        .import("ferrule._uwsgi_ini")
        .and_then(|m| m.call_method1("load", (spec,)))
        .map_err(|e| {
            if e.get_type(py).name().is_ok_and(|n| n == "IniError") {
                e.value(py).to_string()
            } else {
                format!(
                    "--ini {spec}: reading the file failed\n{}",
                    crate::wsgi::call::format_exception(py, &e)
                )
            }
        })?;
    let (words, info, warnings): (Vec<String>, Vec<String>, Vec<String>) =
        loaded.extract().map_err(|e| format!("--ini {spec}: {e}"))?;
    notices
        .info
        .push(format!("Loaded uWSGI options from {spec}"));
    notices.info.extend(info);
    notices.warnings.extend(warnings);
    Ok((spec.to_string(), words))
}

/// The Python config file at `path` as a source.
fn read_config_file(
    py: Python<'_>,
    helper: &Bound<'_, PyModule>,
    path: &str,
    args: &[Arg],
    notices: &mut Notices,
) -> Result<(String, Vec<String>), String> {
    let loaded = helper.call_method1("load", (path,)).map_err(|e| {
        format!(
            "-c {path}: the config file failed\n{}",
            crate::wsgi::call::format_exception(py, &e)
        )
    })?;
    let (settings, hooks, unsupported): (Vec<FileSetting>, Vec<String>, Vec<(String, String)>) =
        loaded.extract().map_err(|e| format!("-c {path}: {e}"))?;
    notices
        .info
        .push(format!("Loaded configuration from {path}"));
    let mut from_file = Vec::new();
    for (name, kind, values) in settings {
        // gunicorn's `sendfile = False` is ferrule's --no-sendfile.
        if name == "sendfile" && kind == "bool" {
            if values.first().map(String::as_str) == Some("false") {
                from_file.push("--no-sendfile=true".to_string());
            }
            continue;
        }
        let Some(arg) = setting_for(args, &name) else {
            match NOT_NEEDED.iter().find(|(n, _)| *n == name) {
                Some((_, why)) => notices
                    .info
                    .push(format!("{path}: {name} is not needed: {why}")),
                None => notices.warnings.push(format!(
                    "{path}: '{name}' is not a ferrule setting and was ignored \
                     (`ferrule --help` lists the settings; docs/migrating.md \
                     says what to use instead of each gunicorn setting)"
                )),
            }
            continue;
        };
        if ["config", "ini"].contains(&arg.get_id().as_str()) {
            continue;
        }
        let long = format!("--{}", arg.get_long().unwrap_or_default());
        match kind.as_str() {
            // An on/off setting takes its value after `=`, whatever Python
            // type the file gave it (`reload = os.environ.get("DEV", "false")`).
            _ if is_switch(arg) => {
                let value = values.first().map_or("true", String::as_str);
                from_file.push(format!("{long}={value}"));
            }
            _ => {
                for value in values {
                    from_file.push(long.clone());
                    from_file.push(value);
                }
            }
        }
    }
    if !hooks.is_empty() {
        notices
            .info
            .push(format!("{path}: hooks {}", hooks.join(", ")));
    }
    for (name, why) in unsupported {
        notices
            .warnings
            .push(format!("{path}: '{name}' was ignored: {why}"));
    }
    Ok((path.to_string(), from_file))
}

/// A setting's effective value: its config file name, its values as
/// strings (none when unset), whether it takes several, and where the
/// value came from.
pub struct Effective {
    pub name: String,
    /// Its other config-file names (gunicorn's `keepalive`, `accesslog`...).
    pub aliases: Vec<String>,
    pub values: Vec<String>,
    pub many: bool,
    pub source: String,
}

/// Settings whose values are secrets.
const SECRETS: &[&str] = &["ssl-keyfile-password"];

/// Every setting's effective value, from the expanded `argv`.
pub fn effective_settings(
    argv: &[String],
    notices: &Notices,
) -> Result<Vec<Effective>, clap::Error> {
    let command = config::command();
    let matches = command
        .clone()
        .try_get_matches_from(std::iter::once("ferrule".to_string()).chain(argv.iter().cloned()))?;
    let mut settings = Vec::new();
    for arg in command.get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        if arg.is_hide_set()
            || ["config", "ini", "print-config", "check-config", "version"].contains(&long)
        {
            continue;
        }
        let id = arg.get_id().as_str();
        let values = matches
            .get_raw(id)
            .map(|values| {
                values
                    .map(|v| v.to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        let from_env = matches.value_source(id) == Some(clap::parser::ValueSource::EnvVariable);
        // A secret is said to be set, never shown (server.cfg, --print-config).
        let values = if SECRETS.contains(&long) && !values.is_empty() {
            vec!["(set; not shown)".to_string()]
        } else {
            values
        };
        settings.push(Effective {
            name: long.replace('-', "_"),
            aliases: arg
                .get_all_aliases()
                .unwrap_or_default()
                .iter()
                .map(|a| a.replace('-', "_"))
                .collect(),
            values,
            many: matches!(arg.get_action(), ArgAction::Append)
                || arg.get_value_delimiter().is_some(),
            source: notices.source_of(arg, from_env),
        });
    }
    Ok(settings)
}

/// `--print-config`: every setting's effective value and where it came
/// from, one a line.
pub fn print_config(argv: &[String], notices: &Notices) -> Result<(), clap::Error> {
    for setting in effective_settings(argv, notices)? {
        let value = if setting.values.is_empty() {
            "(not set)".to_string()
        } else {
            setting.values.join(",")
        };
        println!("{} = {value}  ({})", setting.name, setting.source);
    }
    Ok(())
}

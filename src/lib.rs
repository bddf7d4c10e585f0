//! ferrule: a WSGI (PEP 3333) server with a Rust core.
//!
//! Layout, each layer using only those below it:
//! - `process`: the master and a worker after fork;
//! - `runtime`: a worker's serving (tokio runtime, accept loops) and the
//!   front end of each protocol, the one place that knows which exist;
//! - `driver`: the request driver every front end uses, and the lane its
//!   connections run on;
//! - `wsgi`: the PEP 3333 bridge (one environ builder, the objects given to
//!   the application, the walk over its response);
//! - `exchange`: one request's state shared by the driver and the Python
//!   objects, with the application side's blocking I/O;
//! - `proto`: pure protocol code (bytes in, values out);
//! - beside them: `net` (listeners and sockets), `config` (every setting,
//!   declared once), `log` (the one logger), `liveness` (the page a worker
//!   shares with its master), `metrics` (what the page records for
//!   Prometheus, and the scrape's listener).

pub mod access_log;
pub mod config;
pub mod config_file;
pub mod driver;
pub mod exchange;
pub mod liveness;
pub mod log;
pub mod metrics;
pub mod net;
pub mod process;
pub mod proto;
pub mod runtime;
pub mod wsgi;

use clap::error::ErrorKind;
use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;

use config::Config;

/// Exit status when a worker cannot boot, or workers crash in a loop
/// (gunicorn's WORKER_BOOT_ERROR).
pub const EXIT_WORKER_BOOT_ERROR: i32 = 3;
/// Exit status when the application cannot be loaded (gunicorn's APP_LOAD_ERROR).
pub const EXIT_APP_LOAD_ERROR: i32 = 4;
/// Exit status for a bad command line or setting.
pub const EXIT_USAGE: i32 = 2;

fn parse_config(argv: Vec<String>) -> Result<Config, clap::Error> {
    config::parse(argv)
}

/// Loads the application the way `ferrule APP` names it, through
/// `ferrule._loader`, which makes import failures explain themselves.
/// Applies --chdir and --pythonpath (once per process).
pub fn prepare_path(py: Python<'_>, config: &Config) -> PyResult<()> {
    py.import("ferrule._loader")?.call_method1(
        "prepare_path",
        (config.chdir.clone(), config.pythonpath.clone()),
    )?;
    Ok(())
}

/// Loads APP and the applications of --mount; with mounts, the result is
/// the dispatcher over them (`wsgi::mounts`).
pub fn load_app(py: Python<'_>, config: &Config) -> PyResult<Py<PyAny>> {
    let root = config
        .root_app()
        .map(|spec| load_one_app(py, config, spec))
        .transpose()?;
    let mounts = load_mounts(py, config)?;
    with_mounts(py, mounts, root)
}

fn load_one_app(py: Python<'_>, config: &Config, spec: &str) -> PyResult<Py<PyAny>> {
    let loader = py.import("ferrule._loader")?;
    let app = loader.call_method1(
        "load_app",
        (spec, config.chdir.clone(), config.pythonpath.clone()),
    )?;
    Ok(app.unbind())
}

/// The applications of --mount under a prefix, as (prefix, application).
fn load_mounts(py: Python<'_>, config: &Config) -> PyResult<Vec<(String, Py<PyAny>)>> {
    let mut mounts = Vec::new();
    for mount in config.prefix_mounts().map_err(PyValueError::new_err)? {
        let app = load_one_app(py, config, &mount.app).map_err(|err| {
            // Which mount failed leads its report.
            let report = err
                .value(py)
                .getattr("report")
                .and_then(|r| r.extract::<String>())
                .unwrap_or_else(|_| wsgi::call::format_exception(py, &err));
            let text = format!("--mount {}={}: {report}", mount.prefix, mount.app);
            py.import("ferrule._loader")
                .and_then(|loader| loader.getattr("AppLoadError"))
                .and_then(|class| class.call1((text,)))
                .map_or_else(|e| e, PyErr::from_value)
        })?;
        mounts.push((mount.prefix.clone(), app));
    }
    Ok(mounts)
}

/// The application to serve: `root` alone, or with `mounts` (prefix,
/// application) the dispatcher over them.
fn with_mounts(
    py: Python<'_>,
    mounts: Vec<(String, Py<PyAny>)>,
    root: Option<Py<PyAny>>,
) -> PyResult<Py<PyAny>> {
    match root {
        Some(root) if mounts.is_empty() => Ok(root),
        root => Ok(Py::new(py, wsgi::mounts::Mounts::new(mounts, root))?.into_any()),
    }
}

/// Logs why the application (or hooks module) named `spec` failed to load:
/// the loader's report (exception, traceback, sys.path), else the traceback.
pub fn report_load_error(py: Python<'_>, spec: &str, err: &PyErr) {
    let text = match err.value(py).getattr("report") {
        Ok(report) => report
            .extract::<String>()
            .unwrap_or_else(|_| err.to_string()),
        Err(_) => wsgi::call::format_exception(py, err),
    };
    log_at!(Critical, "Failed to load application {spec:?}\n{text}");
}

/// Tells `hooks` (a `ferrule._hooks.Hooks`) that the moment `name` has
/// come; it calls the user's hook, if defined, and logs the hook's own
/// failure. A failure here (ferrule's) is logged too; neither stops the
/// server.
pub fn call_hook<A>(py: Python<'_>, hooks: Option<&Py<PyAny>>, name: &str, args: A)
where
    A: for<'py> pyo3::call::PyCallArgs<'py>,
{
    let Some(hooks) = hooks else { return };
    if let Err(err) = hooks.bind(py).call_method1(name, args) {
        log_at!(
            Error,
            "Hook {name} failed\n{}",
            wsgi::call::format_exception(py, &err)
        );
    }
}

/// Whether `hooks` defines the hook `name`.
pub fn has_hook(py: Python<'_>, hooks: &Py<PyAny>, name: &str) -> bool {
    hooks
        .bind(py)
        .call_method1("has", (name,))
        .and_then(|b| b.extract())
        .unwrap_or(false)
}

/// `ferrule._ferrule.log(level, message)`: the error log, for the
/// `server.log` and `worker.log` hooks receive.
#[pyfunction(name = "log")]
fn log_from_python(level: &str, message: &str) -> PyResult<()> {
    let level = <config::LogLevel as clap::ValueEnum>::from_str(level, true)
        .map_err(|_| PyValueError::new_err(format!("unknown log level {level:?}")))?;
    log::log(level, message);
    Ok(())
}

/// The command line: `ferrule [OPTIONS] APP`. Returns the exit status.
#[pyfunction]
fn main(py: Python<'_>, argv: Vec<String>) -> i32 {
    let (argv, notices) = match config_file::expand(py, argv) {
        Ok(expanded) => expanded,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_USAGE;
        }
    };
    let config = match parse_config(argv.clone()) {
        Ok(config) => config,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { EXIT_USAGE } else { 0 };
        }
    };
    if config.print_settings_reference {
        print!("{}", config::settings_reference());
        return 0;
    }
    if config.print_metrics_reference {
        print!("{}", metrics::text::reference());
        return 0;
    }
    if config.print_config {
        return match config_file::print_config(&argv, &notices) {
            Ok(()) => 0,
            Err(e) => {
                let _ = e.print();
                EXIT_USAGE
            }
        };
    }
    let Some(spec) = config.app_label() else {
        let _ = config::command()
            .error(
                ErrorKind::MissingRequiredArgument,
                "the APP argument is required (e.g. `ferrule myproject.wsgi`), unless --mount names the applications",
            )
            .print();
        return EXIT_USAGE;
    };
    if let Err(e) = config
        .prefix_mounts()
        .and(config.static_routes())
        .and(config.metrics_address().map(drop))
        .and(config.http2_limits().map(drop))
        .and(runtime::server::prepare_tls(&config))
    {
        let _ = config::command()
            .error(ErrorKind::ValueValidation, e)
            .print();
        return EXIT_USAGE;
    }
    if let Err(e) = log::configure(
        config.log_level,
        &config.error_logfile,
        config.access_logfile.as_deref(),
        // A CGI script's stdout is its response.
        config.capture_output && !config.cgi,
    ) {
        eprintln!("error: {e}");
        return EXIT_USAGE;
    }
    log::set_access_format(config.access_logformat.clone());
    // -e KEY=VALUE: through os.environ, which the application reads (and
    // which sets the process environment the workers inherit). The TLS key's
    // password, read already, leaves it: the application, hooks and the
    // programs they run never see it.
    if let Err(e) = py.import("os").and_then(|os| {
        let environ = os.getattr("environ")?;
        let password_var = process::upgrade::KEY_PASSWORD_VAR.to_string_lossy();
        environ.call_method1("pop", (password_var.as_ref(), py.None()))?;
        config
            .env
            .iter()
            .try_for_each(|(key, value)| environ.set_item(key, value))
    }) {
        eprintln!("error: --env: {e}");
        return EXIT_USAGE;
    }
    for line in &notices.info {
        log_at!(Info, "{line}");
    }
    if config.daemon {
        log_at!(
            Critical,
            "--daemon: ferrule does not detach itself; run it in the foreground under \
             systemd (Type=simple; README: systemd), supervisord or docker, or with nohup"
        );
        return EXIT_USAGE;
    }
    if config.worker_tmp_dir.is_some() {
        log_at!(
            Info,
            "--worker-tmp-dir is not needed: workers report liveness through shared memory, not a file"
        );
    }
    if config.no_sendfile {
        wsgi::call::disable_sendfile();
    }
    for line in &notices.warnings {
        log_at!(Warning, "{line}");
    }
    let settings = match config_file::effective_settings(&argv, &notices) {
        Ok(settings) => settings,
        Err(e) => {
            let _ = e.print();
            return EXIT_USAGE;
        }
    };
    if config.check_config {
        if process::master::load_hooks(py, &config, &settings).is_err() {
            return 1;
        }
        return match prepare_path(py, &config).and_then(|()| load_app(py, &config)) {
            Ok(_) => {
                log_at!(Info, "configuration, hooks and application {spec:?} load");
                0
            }
            Err(err) => {
                report_load_error(py, &spec, &err);
                1
            }
        };
    }
    if config.cgi {
        return runtime::cgi::run(py, &config, &spec);
    }
    process::master::run(py, &config, &spec, &settings, None)
}

/// `ferrule.serve(app, ...)`: serves an application object until stopped.
/// `argv` holds the settings as command-line flags (built by the Python
/// wrapper from its keyword arguments).
#[pyfunction]
fn serve(py: Python<'_>, app: Py<PyAny>, argv: Vec<String>) -> PyResult<()> {
    let config = parse_config(argv).map_err(|e| PyValueError::new_err(e.render().to_string()))?;
    log::configure(
        config.log_level,
        &config.error_logfile,
        config.access_logfile.as_deref(),
        config.capture_output,
    )
    .map_err(PyValueError::new_err)?;
    if config.no_sendfile {
        wsgi::call::disable_sendfile();
    }
    log::set_access_format(config.access_logformat.clone());
    if config.mount.iter().any(|m| m.prefix.is_empty()) {
        return Err(PyValueError::new_err(
            "keyword 'mount': the application passed to serve() is the one for '/'",
        ));
    }
    let app = if config.mount.is_empty() {
        app
    } else {
        prepare_path(py, &config)?;
        with_mounts(py, load_mounts(py, &config)?, Some(app))?
    };
    // Several workers: a master forks them with the application already
    // imported (as --preload), and serves until stopped.
    let workers = config.worker_count().map_err(PyValueError::new_err)?;
    if config.hooks.is_some() && workers <= 1 {
        return Err(PyValueError::new_err(
            "keyword 'hooks': server hooks are called by a master and its workers; \
             pass workers=2 or more, or run your set-up code before serve()",
        ));
    }
    if workers > 1 {
        return match process::master::run(py, &config, "ferrule.serve()", &[], Some(app)) {
            0 => Ok(()),
            status => Err(PyOSError::new_err(format!(
                "the server stopped with status {status}; the error log says why"
            ))),
        };
    }
    let listeners = runtime::server::open_listeners(&config).map_err(PyOSError::new_err)?;
    runtime::server::raise_descriptor_limit(config.worker_connections);
    runtime::server::run(py, &config, app, listeners, None)
        .map(drop)
        .map_err(PyOSError::new_err)
}

/// The settings as `ferrule.serve()` keywords: (keyword, value name or
/// "" for an on/off setting, meaning), for its error messages and
/// `help(ferrule.serve)`.
#[pyfunction]
fn settings_keywords() -> Vec<(String, String, String)> {
    config::command()
        .get_arguments()
        .filter(|a| !a.is_hide_set() && a.get_long().is_some() && a.get_env().is_some())
        .map(|a| {
            let value = if config::is_switch(a) {
                String::new()
            } else {
                a.get_value_names()
                    .and_then(|v| v.first())
                    .map(|v| v.to_string())
                    .unwrap_or_default()
            };
            (
                a.get_long().unwrap_or_default().replace('-', "_"),
                value,
                a.get_help().map(|h| h.to_string()).unwrap_or_default(),
            )
        })
        .collect()
}

/// The settings reference table (Markdown), as the README shows it.
#[pyfunction]
fn settings_reference() -> String {
    config::settings_reference()
}

// The GIL is relied on (docs/architecture.md, "Free-threaded CPython"), so a
// free-threaded interpreter keeps it enabled while this module is loaded.
#[pymodule(gil_used = true)]
fn _ferrule(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_function(wrap_pyfunction!(main, m)?)?;
    m.add_function(wrap_pyfunction!(serve, m)?)?;
    m.add_function(wrap_pyfunction!(settings_reference, m)?)?;
    m.add_function(wrap_pyfunction!(settings_keywords, m)?)?;
    m.add_function(wrap_pyfunction!(log_from_python, m)?)?;
    m.add_class::<wsgi::streams::FileWrapper>()?;
    m.add_class::<wsgi::streams::ErrorStream>()?;
    m.add_class::<wsgi::input::Input>()?;
    m.add(
        "ClientDisconnected",
        m.py().get_type::<wsgi::input::ClientDisconnected>(),
    )?;
    m.add_class::<wsgi::start_response::StartResponse>()?;
    m.add_class::<wsgi::start_response::Write>()?;
    Ok(())
}
